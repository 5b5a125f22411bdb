"""Statistics of a segmentation dataset (any loader's samples): class frequencies, tag
co-occurrence, how much of its box an object fills, label costs. Notebook 00 draws them for the toy
world and for a real dataset alike."""

from __future__ import annotations

import numpy as np

from .labels import IGNORE
from .progress import bar as progress_bar

# Annotation time per image or per object, in seconds, from the literature:
# Bearman et al., "What's the point: semantic segmentation with point supervision" (ECCV 2016):
# image-level tags 20.0 s/image, full masks 239.7 s/image (PASCAL VOC);
# Papadopoulos et al., "Extreme clicking for efficient object annotation" (ICCV 2017):
# a box takes 34.5 s by the classic drawing protocol, 7.0 s by extreme clicking.
LABEL_COST_SECONDS = {
    "tags_per_image": 20.0,
    "masks_per_image": 239.7,
    "box_drawn": 34.5,
    "box_extreme_clicking": 7.0,
}


def _samples(dataset, limit):
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in progress_bar(range(n), desc="reading samples", leave=False):
        yield dataset[i]


def tag_frequency(dataset, limit: int | None = None, key: str = "labels") -> np.ndarray:
    """Fraction of images tagged with each foreground class (K,)."""
    tags = np.stack([s[key] for s in _samples(dataset, limit)])
    return tags.mean(0)


def pixel_frequency(dataset, num_classes: int, limit: int | None = None) -> np.ndarray:
    """Fraction of labelled (non-ignore) pixels of each class (num_classes,)."""
    counts = np.zeros(num_classes, np.int64)
    for s in _samples(dataset, limit):
        m = s["mask"]
        counts += np.bincount(m[m != IGNORE].ravel(), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def cooccurrence(dataset, limit: int | None = None) -> np.ndarray:
    """P(tag j | tag i) as a (K, K) matrix, from the true tags (``labels_clean`` when present)."""
    tags = np.stack([s.get("labels_clean", s["labels"]) for s in _samples(dataset, limit)])
    both = tags.T @ tags
    return both / np.maximum(np.diag(both)[:, None], 1)


def box_fill_fraction(dataset, num_classes: int, limit: int | None = None) -> np.ndarray:
    """Mean fraction of a box's pixels that belong to the box's own class, per class (NaN for
    classes without boxes): 1 − this is the error of using the box itself as the mask."""
    sums, counts = np.zeros(num_classes), np.zeros(num_classes)
    for s in _samples(dataset, limit):
        for (x0, y0, x1, y1), c in zip(s["boxes"], s["box_labels"]):
            inside = s["mask"][y0:y1, x0:x1]
            valid = inside != IGNORE
            if valid.sum() == 0:
                continue
            sums[c] += (inside[valid] == c).mean()
            counts[c] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def label_cost_hours(dataset, limit: int | None = None, box_protocol: str = "box_drawn") -> dict:
    """Estimated annotation time (hours) of the whole dataset under each label type, with the
    per-label times of :data:`LABEL_COST_SECONDS`. Boxes per image are counted on the first
    ``limit`` images (all by default) and scaled to the dataset's size."""
    n_read, n_box = 0, 0
    for s in _samples(dataset, limit):
        n_read += 1
        n_box += len(s["boxes"])
    n_img = len(dataset)
    boxes = n_box / max(n_read, 1) * n_img
    c = LABEL_COST_SECONDS
    return {
        "tags": n_img * c["tags_per_image"] / 3600,
        "boxes": boxes * c[box_protocol] / 3600,
        "masks": n_img * c["masks_per_image"] / 3600,
    }


def mean_std(values) -> str:
    """'mean ± std' of a list of scores (population std, three decimals), '–' for none: one row of
    the tools' seed tables."""
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) else "–"
