"""The toy world: a seeded, procedural generator of small RGB scenes with every kind of label.

It is built so that the phenomena of the four papers show up at 64-96 px in CPU minutes:

* ``person`` co-occurs with, and stands in front of, the other classes (LID's 'person', paper 001);
  its image-level tag can be dropped for a chosen fraction of images (``missing_label_rate``).
* ``car`` objects fill only part of their box (a body, a cabin and wheels): a box used as a mask is
  wrong on about a third of its pixels (paper 000's box experiments).
* ``boat`` always floats on ``water``, a background region that appears rarely without boats, so a
  classifier's CAM for 'boat' leaks into the water (context bias, papers 001-003).
* ``cat`` and ``dog`` share the same body (shape and fur); only their heads differ, so the
  discriminative part is small and a CAM covers the head, not the whole animal (papers 001-003).
* ``bottle`` is small and, by default, rarer (class imbalance, paper 001).

Every image is generated from its own random stream, seeded by (seed, split, index): the same seed
gives identical arrays, any image can be made alone, and the splits never share a stream.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ParameterError, check_choice
from .io import write_image, write_mask
from .labels import IGNORE, make_sample, voc_palette

CLASSES = ("background", "person", "car", "boat", "cat", "dog", "bottle")
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 1000, "val": 200, "test": 200}
_SPLIT_ID = {s: i + 1 for i, s in enumerate(SPLITS)}

# How often each class appears in an image (before ``imbalance`` is applied).
DEFAULT_CLASS_PROBS = {
    "person": 0.45,
    "car": 0.35,
    "boat": 0.3,
    "cat": 0.3,
    "dog": 0.3,
    "bottle": 0.25,
}


@dataclass
class ToyWorldConfig:
    """Every knob of the toy world. ``ToyDataset(**knobs)`` accepts the same names."""

    size: int = 96
    """Image side in pixels (square images)."""
    class_probs: dict = field(default_factory=lambda: dict(DEFAULT_CLASS_PROBS))
    """Probability that each foreground class appears in an image."""
    imbalance: float = 1.0
    """>1 makes classes geometrically rarer in the order of ``CLASSES`` (person most frequent): the
    last class is ``imbalance`` times rarer than the first."""
    water_without_boat: float = 0.1
    """Probability of a water region in an image without a boat (boats always have water)."""
    person_overlap: float = 0.7
    """Probability that a person is placed in front of another object when there is one."""
    missing_label_class: str = "person"
    missing_label_rate: float = 0.0
    """Fraction of images whose image-level tag for ``missing_label_class`` is dropped (the mask,
    boxes and instances stay true)."""
    pixel_perfect: float = 1.0
    """Fraction of images whose mask is pixel-perfect (``pixel_label`` True); the rest are meant to
    be used through their boxes (paper 000's PP/BB split). The choice is a seeded permutation."""
    tag_noise: float = 0.0
    """Probability of flipping each image-level tag."""
    mask_noise: float = 0.0
    """Strength (0-1) of corruption of ``mask``: objects dilated/eroded and shifted, spurious blobs;
    the clean mask stays in ``mask_clean``."""
    box_noise: float = 0.0
    """Box jitter as a fraction of the box size."""
    border: int = 1
    """Width in pixels of the ignore (255) band at object borders, on each side of the edge (0: none)."""
    pixel_noise: float = 12.0
    """Standard deviation of the Gaussian pixel noise (0-255 scale)."""

    def __post_init__(self):
        if not 16 <= int(self.size) <= 4096:
            raise ParameterError(f"size={self.size} is out of range; choose 16 <= size <= 4096")
        unknown = set(self.class_probs) - set(CLASSES[1:])
        if unknown:
            raise ParameterError(
                f"class_probs has unknown classes {sorted(unknown)}; valid: {list(CLASSES[1:])}"
            )
        check_choice("missing_label_class", self.missing_label_class, CLASSES[1:])
        for name in (
            "water_without_boat",
            "person_overlap",
            "missing_label_rate",
            "pixel_perfect",
            "tag_noise",
            "mask_noise",
            "box_noise",
        ):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ParameterError(f"{name}={v} is out of range; choose a value in [0, 1]")
        if self.imbalance < 1.0:
            raise ParameterError(f"imbalance={self.imbalance} is out of range; choose >= 1")

    def effective_class_probs(self) -> np.ndarray:
        """Per-class appearance probabilities (K,) after ``imbalance``."""
        p = np.array([self.class_probs.get(c, DEFAULT_CLASS_PROBS[c]) for c in CLASSES[1:]])
        k = len(p)
        return p * float(self.imbalance) ** (-np.arange(k) / max(k - 1, 1))


def knob_names() -> list[str]:
    """Names of the toy world's knobs (the fields of :class:`ToyWorldConfig`)."""
    return [f.name for f in dataclasses.fields(ToyWorldConfig)]


def make_config(**knobs) -> ToyWorldConfig:
    """A :class:`ToyWorldConfig` from keyword knobs; an unknown name lists the valid ones."""
    bad = set(knobs) - set(knob_names())
    if bad:
        raise ParameterError(
            f"unknown toy-world knob(s) {sorted(bad)}; valid knobs: {knob_names()}"
        )
    return ToyWorldConfig(**knobs)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: disjoint across splits, independent of the split size."""
    check_choice("split", split, SPLITS)
    return np.random.default_rng([int(seed), _SPLIT_ID[split], int(index), 0x70F])


# --------------------------------------------------------------------------------------------
# Drawing primitives: boolean masks on a coordinate grid (yy, xx in pixels)
# --------------------------------------------------------------------------------------------


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0):
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        dy, dx = yy - cy, xx - cx
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _rect(yy, xx, y0, x0, y1, x1):
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def _trapezoid(yy, xx, y0, y1, cx, half_top, half_bottom):
    """Rows y0..y1; the half-width goes linearly from ``half_top`` (at y0) to ``half_bottom``."""
    t = np.clip((yy - y0) / max(y1 - y0, 1e-6), 0, 1)
    half = half_top + (half_bottom - half_top) * t
    return (yy >= y0) & (yy < y1) & (np.abs(xx - cx) <= half)


def _triangle(yy, xx, p0, p1, p2):
    """Filled triangle with vertices (y, x)."""

    def side(a, b):
        return (b[1] - a[1]) * (yy - a[0]) - (b[0] - a[0]) * (xx - a[1])

    d0, d1, d2 = side(p0, p1), side(p1, p2), side(p2, p0)
    neg = (d0 < 0) | (d1 < 0) | (d2 < 0)
    pos = (d0 > 0) | (d1 > 0) | (d2 > 0)
    return ~(neg & pos)


def _hsv(h, s, v):
    """One HSV colour (each in 0-1) to RGB 0-255."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array([r, g, b]) * 255.0


# --------------------------------------------------------------------------------------------
# The objects. Each returns a list of (part mask, colour or texture) and draws nothing itself.
# --------------------------------------------------------------------------------------------


def _fur(rng, yy, xx, s):
    """The shared cat/dog fur: brownish-grey stripes of random orientation and frequency."""
    base = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.45, 0.75))
    dark = base * rng.uniform(0.45, 0.65)
    ang = rng.uniform(0, np.pi)
    freq = rng.uniform(0.5, 0.9) / (s / 96)
    w = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 6.3))
    return base[None, None, :] * w[..., None] + dark[None, None, :] * (1 - w[..., None])


def _animal_body(rng, yy, xx, s, cy, cx, scale):
    """Body, legs and tail shared by cat and dog; returns (body mask, head centre, head radius)."""
    rx, ry = 0.20 * s * scale, 0.10 * s * scale
    face = rng.choice([-1, 1])
    body = _ellipse(yy, xx, cy, cx, ry, rx)
    leg_w, leg_h = 0.035 * s * scale, 0.10 * s * scale
    for off in (-0.6, 0.55):
        x0 = cx + off * rx
        body |= _rect(yy, xx, cy + 0.3 * ry, x0 - leg_w / 2, cy + ry + leg_h, x0 + leg_w / 2)
    tail_x = cx - face * rx * 1.05
    body |= _ellipse(yy, xx, cy - 0.6 * ry, tail_x, 0.25 * ry, 0.35 * rx, angle=0.6 * face)
    head_r = 0.075 * s * scale
    hc = (cy - 0.9 * ry, cx + face * (rx + 0.3 * head_r))
    return body, hc, head_r, face


def _draw_cat(rng, yy, xx, s, cy, cx, scale):
    body, (hy, hx), r, face = _animal_body(rng, yy, xx, s, cy, cx, scale)
    fur = _fur(rng, yy, xx, s)
    head = _ellipse(yy, xx, hy, hx, r, r)
    ears = _triangle(
        yy,
        xx,
        (hy - 1.9 * r, hx - 0.7 * r),
        (hy - 0.4 * r, hx - 1.0 * r),
        (hy - 0.5 * r, hx - 0.1 * r),
    ) | _triangle(
        yy,
        xx,
        (hy - 1.9 * r, hx + 0.7 * r),
        (hy - 0.4 * r, hx + 1.0 * r),
        (hy - 0.5 * r, hx + 0.1 * r),
    )
    eyes = _ellipse(yy, xx, hy - 0.1 * r, hx - 0.4 * r, 0.22 * r, 0.16 * r) | _ellipse(
        yy, xx, hy - 0.1 * r, hx + 0.4 * r, 0.22 * r, 0.16 * r
    )
    head_col = _hsv(0.08, 0.8, 0.95)  # bright ginger head: the discriminative part
    return [(body, fur), (head | ears, head_col), (eyes, np.array([60.0, 220.0, 60.0]))]


def _draw_dog(rng, yy, xx, s, cy, cx, scale):
    body, (hy, hx), r, face = _animal_body(rng, yy, xx, s, cy, cx, scale)
    fur = _fur(rng, yy, xx, s)
    head = _ellipse(yy, xx, hy, hx, r, 1.1 * r) | _ellipse(
        yy, xx, hy + 0.35 * r, hx + face * 0.9 * r, 0.5 * r, 0.7 * r
    )
    ears = _ellipse(yy, xx, hy + 0.3 * r, hx - 1.0 * r, 0.9 * r, 0.35 * r) | _ellipse(
        yy, xx, hy + 0.3 * r, hx + 1.0 * r, 0.9 * r, 0.35 * r
    )
    nose = _ellipse(yy, xx, hy + 0.2 * r, hx + face * 1.5 * r, 0.25 * r, 0.25 * r)
    head_col = np.array([235.0, 225.0, 205.0])  # pale cream head: the discriminative part
    return [
        (body, fur),
        (head, head_col),
        (ears, np.array([90.0, 55.0, 30.0])),
        (nose, np.array([15.0, 15.0, 15.0])),
    ]


def _draw_person(rng, yy, xx, s, cy, cx, scale):
    h = 0.42 * s * scale  # whole height
    shirt = _hsv(rng.uniform(0, 1), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.95))
    trousers = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.45))
    skin = _hsv(rng.uniform(0.04, 0.09), rng.uniform(0.3, 0.6), rng.uniform(0.55, 0.95))
    top = cy - h / 2
    head_r = 0.1 * h
    torso = _trapezoid(yy, xx, top + 2 * head_r, top + 0.6 * h, cx, 0.13 * h, 0.16 * h)
    arms = _rect(yy, xx, top + 2.3 * head_r, cx - 0.22 * h, top + 0.55 * h, cx - 0.15 * h) | _rect(
        yy, xx, top + 2.3 * head_r, cx + 0.15 * h, top + 0.55 * h, cx + 0.22 * h
    )
    legs = _rect(yy, xx, top + 0.6 * h, cx - 0.13 * h, top + h, cx - 0.02 * h) | _rect(
        yy, xx, top + 0.6 * h, cx + 0.02 * h, top + h, cx + 0.13 * h
    )
    head = _ellipse(yy, xx, top + head_r, cx, head_r * 1.1, head_r)
    return [(torso | arms, shirt), (legs, trousers), (head, skin)]


def _draw_car(rng, yy, xx, s, cy, cx, scale):
    w, hgt = 0.42 * s * scale, 0.2 * s * scale
    col = _hsv(
        rng.choice([0.0, 0.6, 0.15, 0.33, 0.0]) + rng.uniform(-0.03, 0.03) % 1,
        rng.uniform(0.6, 1.0),
        rng.uniform(0.55, 0.95),
    )
    y_top, y_bot = cy - hgt / 2, cy + hgt / 2
    body = _rect(yy, xx, y_top + 0.42 * hgt, cx - w / 2, y_bot - 0.12 * hgt, cx + w / 2)
    body &= ~(
        _rect(yy, xx, y_top + 0.42 * hgt, cx - w / 2, y_top + 0.55 * hgt, cx - 0.4 * w)
        | _rect(yy, xx, y_top + 0.42 * hgt, cx + 0.4 * w, y_top + 0.55 * hgt, cx + w / 2)
    )
    cabin = _trapezoid(
        yy, xx, y_top, y_top + 0.43 * hgt, cx + rng.uniform(-0.05, 0.05) * w, 0.2 * w, 0.3 * w
    )
    window = _trapezoid(yy, xx, y_top + 0.08 * hgt, y_top + 0.38 * hgt, cx, 0.14 * w, 0.22 * w)
    wr = 0.16 * hgt * 1.4
    wheels = _ellipse(yy, xx, y_bot - wr, cx - 0.3 * w, wr, wr) | _ellipse(
        yy, xx, y_bot - wr, cx + 0.3 * w, wr, wr
    )
    shade = 0.85 + 0.15 * np.cos((yy - y_top) / max(hgt, 1) * 6.0)
    paint = col[None, None, :] * shade[..., None]
    return [
        (body | cabin, paint),
        (window, np.array([150.0, 200.0, 230.0])),
        (wheels, np.array([25.0, 25.0, 25.0])),
    ]


def _draw_boat(rng, yy, xx, s, cy, cx, scale):
    w, hgt = 0.36 * s * scale, 0.10 * s * scale
    hull_col = rng.choice(
        [
            np.array([120.0, 70.0, 35.0]),
            np.array([235.0, 235.0, 230.0]),
            np.array([170.0, 30.0, 30.0]),
        ]
    )
    hull = _trapezoid(yy, xx, cy - hgt / 2, cy + hgt / 2, cx, w / 2, 0.35 * w)
    mast_h = 0.28 * s * scale
    mast_x = cx + rng.uniform(-0.1, 0.1) * w
    mast = _rect(
        yy,
        xx,
        cy - hgt / 2 - mast_h,
        mast_x - max(0.008 * s, 0.6),
        cy - hgt / 2,
        mast_x + max(0.008 * s, 0.6),
    )
    side = rng.choice([-1, 1])
    sail = _triangle(
        yy,
        xx,
        (cy - hgt / 2 - mast_h * 0.95, mast_x + side * 0.02 * s),
        (cy - hgt / 2 - 0.1 * mast_h, mast_x + side * 0.02 * s),
        (cy - hgt / 2 - 0.1 * mast_h, mast_x + side * 0.38 * w),
    )
    sail_col = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.85, 1.0))
    return [(hull, hull_col), (mast, np.array([60.0, 40.0, 20.0])), (sail, sail_col)]


def _draw_bottle(rng, yy, xx, s, cy, cx, scale):
    h, w = 0.34 * s * scale, 0.11 * s * scale
    col = rng.choice(
        [
            np.array([30.0, 120.0, 50.0]),
            np.array([110.0, 60.0, 20.0]),
            np.array([60.0, 110.0, 170.0]),
        ]
    )
    body = _rect(yy, xx, cy - 0.1 * h, cx - w / 2, cy + h / 2, cx + w / 2)
    shoulder = _trapezoid(yy, xx, cy - 0.3 * h, cy - 0.1 * h, cx, 0.2 * w, w / 2)
    neck = _rect(yy, xx, cy - h / 2, cx - 0.2 * w, cy - 0.3 * h, cx + 0.2 * w)
    gloss = 0.7 + 0.6 * np.exp(-(((xx - cx + 0.2 * w) / max(0.15 * w, 0.5)) ** 2))
    glass = np.clip(col[None, None, :] * gloss[..., None], 0, 255)
    label = _rect(yy, xx, cy + 0.05 * h, cx - w / 2, cy + 0.25 * h, cx + w / 2)
    return [(body | shoulder | neck, glass), (label, np.array([240.0, 230.0, 200.0]))]


_DRAW = {
    "person": _draw_person,
    "car": _draw_car,
    "boat": _draw_boat,
    "cat": _draw_cat,
    "dog": _draw_dog,
    "bottle": _draw_bottle,
}
_SCALE = {
    "person": (0.8, 1.25),
    "car": (0.8, 1.2),
    "boat": (0.8, 1.2),
    "cat": (0.8, 1.2),
    "dog": (0.8, 1.2),
    "bottle": (0.8, 1.2),
}


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def _background(rng, yy, xx, s):
    """A busy but object-free background: a sky-to-ground gradient, low-frequency blotches and
    a few distractor stripes/patches whose colours overlap the objects' colours."""
    top = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.5), rng.uniform(0.5, 0.95))
    bottom = _hsv(rng.uniform(0.0, 1.0), rng.uniform(0.1, 0.6), rng.uniform(0.25, 0.7))
    t = (yy / s)[..., None]
    img = top[None, None] * (1 - t) + bottom[None, None] * t
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(0, s, 2)
        r = rng.uniform(0.1, 0.35) * s
        blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
        img = (
            img * (1 - 0.6 * blob)
            + _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.9))[None, None]
            * 0.6
            * blob
        )
    for _ in range(rng.integers(0, 3)):  # distractor patches (rectangles/ellipses, no class)
        cy, cx = rng.uniform(0, s, 2)
        ry, rx = rng.uniform(0.03, 0.12, 2) * s
        m = (
            _rect(yy, xx, cy - ry, cx - rx, cy + ry, cx + rx)
            if rng.random() < 0.5
            else _ellipse(yy, xx, cy, cx, ry, rx)
        )
        img[m] = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
    return img


def _water(rng, yy, xx, s):
    """The water region (a band at the bottom) and its rippled blue texture."""
    level = rng.uniform(0.5, 0.7) * s
    wave = level + 0.02 * s * np.sin(xx / s * rng.uniform(6, 12) + rng.uniform(0, 6.3))
    region = yy >= wave
    base = _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.5, 0.85), rng.uniform(0.45, 0.8))
    ripple = 0.85 + 0.15 * np.sin(yy * rng.uniform(1.2, 2.0) * 96 / s + 2 * np.sin(xx * 0.3))
    return region, base[None, None] * ripple[..., None], level


def _choose_classes(rng, cfg: ToyWorldConfig) -> list[str]:
    p = cfg.effective_class_probs()
    present = [c for c, pc in zip(CLASSES[1:], p) if rng.random() < pc]
    if not present:  # every image holds at least one object, as in VOC
        present = [CLASSES[1 + rng.choice(len(p), p=p / p.sum())]]
    if len(present) > 3:  # keep scenes readable at 64-96 px
        present = list(rng.choice(present, 3, replace=False))
    return present


# Rough half-extents (dy_up, dy_down, dx) of each class at scale 1, as fractions of the image side.
_EXTENT = {
    "person": (0.21, 0.21, 0.1),
    "car": (0.1, 0.1, 0.21),
    "boat": (0.33, 0.05, 0.18),
    "cat": (0.2, 0.2, 0.27),
    "dog": (0.2, 0.2, 0.27),
    "bottle": (0.17, 0.17, 0.055),
}


def _extent_box(cls, cy, cx, scale, s):
    up, down, half = (e * s * scale for e in _EXTENT[cls])
    return np.array([cx - half, cy - up, cx + half, cy + down])


def _box_overlap(a, b):
    """Intersection area over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / max(area, 1e-6)


def _place(rng, cls, s, level, water, anchor, taken, tries=8):
    """Centre (cy, cx) and scale of an object. Boats float on the water line; land objects stand
    above it; a person may stand in front of ``anchor`` (another object's centre); other objects
    take the least-overlapping of a few candidate spots, so none hides another completely."""
    lo, hi = _SCALE[cls]
    scale = rng.uniform(lo, hi)
    if cls == "person" and anchor is not None:
        oy, ox = anchor
        cy = oy + rng.uniform(-0.05, 0.1) * s
        cx = ox + rng.choice([-1, 1]) * rng.uniform(0.05, 0.18) * s
        return float(np.clip(cy, 0.3 * s, 0.75 * s)), float(np.clip(cx, 0.15 * s, 0.85 * s)), scale
    best, best_ov = None, np.inf
    for _ in range(tries):
        if cls == "boat":
            cy = rng.uniform(level + 0.02 * s, min(level + 0.12 * s, 0.92 * s))
        elif water:
            cy = rng.uniform(0.3 * s, max(level - 0.08 * s, 0.32 * s))
        else:
            cy = rng.uniform(0.35, 0.75) * s
        cx = rng.uniform(0.22, 0.78) * s
        box = _extent_box(cls, cy, cx, scale, s)
        ov = max((_box_overlap(box, t) for t in taken), default=0.0)
        if ov < best_ov:
            best, best_ov = (cy, cx), ov
        if ov < 0.1:
            break
    return best[0], best[1], scale


def render_scene(rng: np.random.Generator, cfg: ToyWorldConfig):
    """Draw one scene. Returns (image uint8 (S,S,3), semantic mask without ignore band (uint8),
    instance ids (int32), list of instance classes, whether the scene has water)."""
    s = int(cfg.size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    img = _background(rng, yy, xx, s)
    present = _choose_classes(rng, cfg)
    water = "boat" in present or rng.random() < cfg.water_without_boat
    level = 0.65 * s
    if water:
        region, tex, level = _water(rng, yy, xx, s)
        img = np.where(region[..., None], tex, img)
    sem = np.zeros((s, s), np.uint8)
    inst = np.zeros((s, s), np.int32)
    order = [c for c in present if c != "person"] + (["person"] if "person" in present else [])
    placed, taken, inst_classes = [], [], []
    for cls in order:
        n_inst = 2 if (cls in ("car", "bottle", "person") and rng.random() < 0.3) else 1
        for _ in range(n_inst):
            anchor = None
            if cls == "person" and placed and rng.random() < cfg.person_overlap:
                anchor = placed[rng.integers(len(placed))]
            cy, cx, scale = _place(rng, cls, s, level, water, anchor, taken)
            parts = _DRAW[cls](rng, yy, xx, s, cy, cx, scale)
            whole = np.zeros((s, s), bool)
            for m, col in parts:
                col = np.asarray(col, np.float32)
                img[m] = col[m] if col.ndim == 3 else col
                whole |= m
            if not whole.any():
                continue
            inst_classes.append(cls)
            inst[whole] = len(inst_classes)
            sem[whole] = CLASSES.index(cls)
            taken.append(_extent_box(cls, cy, cx, scale, s))
            if cls != "person":
                placed.append((cy, cx))
    img = img + rng.normal(0.0, cfg.pixel_noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), sem, inst, inst_classes, bool(water)


def ignore_band(sem: np.ndarray, width: int) -> np.ndarray:
    """Boolean band of ``width`` pixels on each side of every edge between two labels where one of
    them is foreground (VOC's void outline)."""
    if width <= 0:
        return np.zeros(sem.shape, bool)
    edge = np.zeros(sem.shape, bool)
    dv = (sem[1:, :] != sem[:-1, :]) & ((sem[1:, :] > 0) | (sem[:-1, :] > 0))
    dh = (sem[:, 1:] != sem[:, :-1]) & ((sem[:, 1:] > 0) | (sem[:, :-1] > 0))
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    band = edge.copy()
    for _ in range(width - 1):  # grow by one pixel (4-neighbourhood) per step
        grown = band.copy()
        grown[1:, :] |= band[:-1, :]
        grown[:-1, :] |= band[1:, :]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    return band


def _shift(a, dy, dx, fill):
    out = np.full_like(a, fill)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def corrupt_mask(rng, sem: np.ndarray, strength: float) -> np.ndarray:
    """A noisy version of a semantic mask, like a pseudo-mask: each class region is shifted and
    grown or shrunk by up to ``strength``·5 % of the image side, and a few spurious blobs of a
    present class appear. ``strength`` 0 returns the mask unchanged."""
    if strength <= 0:
        return sem.copy()
    s = sem.shape[0]
    out = np.zeros_like(sem)
    k = max(1, int(round(strength * 0.05 * s)))
    classes = [c for c in np.unique(sem) if c not in (0, IGNORE)]
    for c in classes:
        region = sem == c
        region = _shift(region, int(rng.integers(-k, k + 1)), int(rng.integers(-k, k + 1)), False)
        for _ in range(int(rng.integers(0, k + 1))):
            nb = [_shift(region, dy, dx, False) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            region = (
                (region | nb[0] | nb[1] | nb[2] | nb[3])
                if rng.random() < 0.5
                else (region & nb[0] & nb[1] & nb[2] & nb[3])
            )
        out[region] = c
    yy, xx = np.mgrid[0:s, 0:s]
    for _ in range(rng.poisson(2 * strength)):
        if not classes:
            break
        cy, cx = rng.uniform(0, s, 2)
        r = rng.uniform(0.03, 0.08) * s
        out[_ellipse(yy, xx, cy, cx, r, r)] = rng.choice(classes)
    return out


def make_toy_sample(
    seed: int, split: str, index: int, cfg: ToyWorldConfig, pixel_label: bool = True
) -> dict:
    """One sample of the toy world in the package's sample format (see :mod:`wsss_edu.labels`),
    plus ``mask_clean`` (the true mask; equal to ``mask`` unless ``mask_noise`` > 0),
    ``labels_clean`` (the true tags) and ``has_water`` (the boat's context region is present)."""
    rng = image_rng(seed, split, index)
    image, sem, inst, inst_classes, water = render_scene(rng, cfg)
    band = ignore_band(sem, cfg.border)
    mask_clean = np.where(band, IGNORE, sem).astype(np.uint8)
    # Boxes: one per visible instance (its pixels, band included); an instance whose pixels all
    # fell into the ignore band has no class in the mask, so no tag and no box.
    sample = make_sample(
        image,
        mask_clean,
        f"{split}_{index:06d}",
        len(CLASSES),
        instances=inst,
        pixel_label=pixel_label,
    )
    sample["mask_clean"] = mask_clean
    sample["labels_clean"] = sample["labels"].copy()
    sample["has_water"] = water

    def knob_rng(k):  # one stream per knob: turning one knob on never changes another's draws
        return np.random.default_rng([int(seed), _SPLIT_ID[split], int(index), 0xBAD, k])

    if cfg.mask_noise > 0:
        noisy = corrupt_mask(knob_rng(1), sem, cfg.mask_noise)
        sample["mask"] = np.where(ignore_band(noisy, cfg.border), IGNORE, noisy).astype(np.uint8)
    labels = sample["labels"].copy()
    miss = CLASSES.index(cfg.missing_label_class) - 1
    if cfg.missing_label_rate > 0 and knob_rng(2).random() < cfg.missing_label_rate:
        labels[miss] = 0.0
    if cfg.tag_noise > 0:
        flip = knob_rng(3).random(len(labels)) < cfg.tag_noise
        labels[flip] = 1.0 - labels[flip]
    sample["labels"] = labels
    if cfg.box_noise > 0 and len(sample["boxes"]):
        b = sample["boxes"].astype(np.float64)
        wh = np.concatenate([b[:, 2:] - b[:, :2]] * 2, axis=1)
        b = b + knob_rng(4).normal(0, cfg.box_noise, b.shape) * wh
        s = cfg.size
        b[:, :2] = np.clip(np.round(b[:, :2]), 0, s - 1)
        b[:, 2:] = np.clip(np.maximum(np.round(b[:, 2:]), b[:, :2] + 1), 1, s)
        sample["boxes"] = b.astype(np.int64)
    return sample


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


def _split_seed_key(seed: int, split: str) -> int:
    return zlib.crc32(f"{seed}:{split}".encode())


class ToyDataset:
    """The toy world as a dataset of samples (a torch-compatible map-style dataset).

    ``ToyDataset(split, n, seed, **knobs)``: ``n`` images of ``split`` (default: 1000 train, 200 val,
    200 test), generated lazily and cached in memory; knobs are the fields of
    :class:`ToyWorldConfig` (``size``, ``missing_label_rate``, ``pixel_perfect``, ...).
    """

    classes = list(CLASSES)
    num_classes = len(CLASSES)
    has_background = True  # the sea and sky behind the objects are class 0

    def __init__(
        self,
        split: str = "train",
        n: int | None = None,
        seed: int = 0,
        transform=None,
        cache: bool = True,
        **knobs,
    ):
        check_choice("split", split, SPLITS)
        self.split, self.seed = split, int(seed)
        self.n = DEFAULT_SIZES[split] if n is None else int(n)
        if self.n < 0:
            raise ParameterError(f"n={n} is out of range; choose n >= 0")
        self.config = make_config(**knobs)
        self.transform = transform
        self._cache = {} if cache else None
        self.palette = voc_palette()
        perm = np.random.default_rng(_split_seed_key(self.seed, split)).permutation(self.n)
        n_pp = int(round(self.config.pixel_perfect * self.n))
        self._pixel_perfect = np.zeros(self.n, bool)
        self._pixel_perfect[perm[:n_pp]] = True

    @property
    def names(self) -> list[str]:
        return [f"{self.split}_{i:06d}" for i in range(self.n)]

    @property
    def pixel_perfect(self) -> np.ndarray:
        """Boolean (n,): which images have a pixel-perfect mask (the rest: boxes only)."""
        return self._pixel_perfect.copy()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        i = i % self.n
        if self._cache is not None and i in self._cache:
            sample = self._cache[i]
        else:
            sample = make_toy_sample(
                self.seed, self.split, i, self.config, bool(self._pixel_perfect[i])
            )
            if self._cache is not None:
                self._cache[i] = sample
        sample = dict(sample)
        return self.transform(sample) if self.transform else sample

    def arrays(self, keys=("image", "mask", "labels")) -> dict:
        """The whole split stacked into arrays: {key: array with a leading image axis}."""
        samples = [self[i] for i in range(self.n)]
        return {k: np.stack([s[k] for s in samples]) for k in keys}


def _write_voc_xml(path: Path, name: str, sample: dict) -> None:
    """A VOC-style annotation: 1-based inclusive box corners, one <object> per box."""
    h, w = sample["mask"].shape
    objs = "".join(
        f"<object><name>{CLASSES[c]}</name><difficult>0</difficult><bndbox><xmin>{b[0] + 1}</xmin>"
        f"<ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b, c in zip(sample["boxes"], sample["box_labels"])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>\n"
    )


def write_voc_layout(
    root, n_train: int = 200, n_val: int = 50, n_test: int = 0, seed: int = 0, **knobs
) -> Path:
    """Write the toy world in PASCAL VOC 2012's folder layout under ``root/VOCdevkit/VOC2012``:
    JPEGImages (JPEG, quality 95), SegmentationClass (palette PNGs, 255 border),
    SegmentationObject (instance PNGs, 255 border), Annotations (boxes as VOC XML), ImageSets/Segmentation/{train,val,test,
    train_aug}.txt and a ``classes.txt`` naming the toy classes, so the VOC loader reads it.
    Masks are written exactly; images go through JPEG like VOC's. Returns the VOC2012 folder."""
    lost = sorted(
        k
        for k in ("missing_label_rate", "tag_noise", "pixel_perfect", "mask_noise")
        if k in knobs and knobs[k] != getattr(ToyWorldConfig(), k)
    )
    if lost:
        raise ParameterError(
            f"VOC's layout cannot hold the knob(s) {lost}: its loader derives tags from the masks and "
            "treats every mask as pixel-perfect and clean. Write the world without them and apply "
            "them in memory (ToyDataset), or use knobs that change the scenes (size, class_probs, "
            "imbalance, water_without_boat, person_overlap, box_noise, border, pixel_noise)"
        )
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    pal = voc_palette()
    lists = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n <= 0:
            continue
        ds = ToyDataset(split, n=n, seed=seed, cache=False, **knobs)
        ids = []
        for i in range(n):
            smp = ds[i]
            name = smp["name"]
            write_image(voc / "JPEGImages" / f"{name}.jpg", smp["image"])
            write_mask(voc / "SegmentationClass" / f"{name}.png", smp["mask"], pal)
            obj = np.where(smp["mask"] == IGNORE, IGNORE, np.minimum(smp["instances"], 254)).astype(
                np.uint8
            )
            write_mask(voc / "SegmentationObject" / f"{name}.png", obj, pal)
            _write_voc_xml(voc / "Annotations" / f"{name}.xml", name, smp)
            ids.append(name)
        lists[split] = ids
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    for split, ids in lists.items():
        (sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if "train" in lists:
        (sets / "train_aug.txt").write_text("\n".join(lists["train"]) + "\n")
    (voc / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return voc
