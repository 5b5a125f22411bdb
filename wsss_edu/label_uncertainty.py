"""Paper 000 — Neven et al., "Weakly-supervised semantic segmentation by learning label
uncertainty" (poster; arXiv 2110.05926): aleatoric logits, online bootstrapping on box labels,
and the multi-class Monte-Carlo loss.

No public code exists for this paper, so every choice it leaves open is an explicit argument here
(see reference/methods.md §1): the bootstrapping threshold ``tau`` and ``slope``, what the flipped
target y* is, whether the weight W is detached, and where the uncertain loss applies.

Equation numbers refer to the poster's displayed formulas in reading order:
(1) E[p] = sigmoid(mu / sqrt(1 + pi sigma^2 / 8));  (2) the BCE of E[p];
(3) W = sigmoid((tau - sigma^2) / 0.2);  (4) L = W BCE(mu, y) + (1 - W) BCE(mu, y*);
(5) E[p] = integral of softmax(l) P(l) dl for l ~ N(mu, diag sigma^2);  (6) L = -log E[p]_y;
(7) y = argmax(mu) if max(sigma^2) > tau else y.

The experiments of the paper's Tables 1 and 2 (notebooks 02 and 02b), which train networks with
these losses, are a cached step of their own: :mod:`wsss_edu.steps.lu_experiments`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import resize_sample
from .datasets import get_dataset
from .errors import check_choice
from .labels import IGNORE
from .models import UNet
from .progress import bar as progress_bar

# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------


class AleatoricUNet(nn.Module):
    """A U-Net with two per-pixel heads: the logit mean ``mu`` and the logit variance ``sigma2``
    (kept positive by a softplus, plus ``min_variance``). ``num_logits`` = 1 for binary
    segmentation, C for C classes. ``forward`` returns ``(mu, sigma2)``, each (N, num_logits, H, W).
    """

    def __init__(
        self,
        num_logits: int = 1,
        width: int = 16,
        depth: int = 3,
        min_variance: float = 1e-4,
        initial_variance: float | None = None,
    ):
        super().__init__()
        self.num_logits = num_logits
        self.min_variance = min_variance
        self.body = UNet(2 * num_logits, width=width, depth=depth)
        if initial_variance is not None:  # sigma^2 starts near this value on every pixel
            raw = math.log(math.expm1(max(initial_variance - min_variance, 1e-6)))
            with torch.no_grad():
                self.body.head.bias[num_logits:] = raw

    def forward(self, x):
        out = self.body(x)
        mu, raw = out[:, : self.num_logits], out[:, self.num_logits :]
        return mu, positive_variance(raw, self.min_variance)


def positive_variance(raw: torch.Tensor, min_variance: float = 1e-4) -> torch.Tensor:
    """sigma^2 = softplus(raw) + min_variance: positive, smooth, and linear for large raw values
    (an exp head overflows when the network learns large uncertainties)."""
    return F.softplus(raw) + min_variance


# ------------------------------------------------------------------------------------------------
# Binary: expected probability and the uncertain BCE
# ------------------------------------------------------------------------------------------------


def expected_logit(mu: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """The logit of E[sigmoid(l)], l ~ N(mu, sigma^2), in the probit approximation of eq. (1):
    mu / sqrt(1 + pi sigma^2 / 8). Working on this logit keeps the BCE numerically stable."""
    return mu / torch.sqrt(1.0 + math.pi * sigma2 / 8.0)


def expected_probability(mu: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Eq. (1): E[sigmoid(l)] ≈ sigmoid(mu / sqrt(1 + pi sigma^2 / 8)) for l ~ N(mu, sigma^2).

    Measured against Gauss-Hermite quadrature: at most 4.4e-3 off for |mu| <= 3, sigma^2 <= 4, and
    at most 1.3e-2 for |mu| <= 6, sigma^2 <= 30 (largest for large |mu| and sigma^2 together)."""
    return torch.sigmoid(expected_logit(mu, sigma2))


def mc_expected_probability(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    samples: int = 10000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """E[sigmoid(l)] by Monte-Carlo over ``samples`` draws of l ~ N(mu, sigma^2): the quantity
    eq. (1) approximates (for checking it, and for teaching)."""
    eps = torch.randn((samples,) + tuple(mu.shape), generator=generator, dtype=mu.dtype)
    return torch.sigmoid(mu + sigma2.sqrt() * eps).mean(0)


def uncertain_bce(mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. (2), per pixel: BCE(E[p], y) with E[p] from eq. (1); no reduction. Raising sigma^2
    pulls E[p] towards 1/2, so where the network disagrees with y it can lower this loss by
    becoming uncertain instead of by agreeing."""
    return F.binary_cross_entropy_with_logits(expected_logit(mu, sigma2), y, reduction="none")


# ------------------------------------------------------------------------------------------------
# Binary: online bootstrapping
# ------------------------------------------------------------------------------------------------

FLIP_TARGETS = ("flip", "hard_belief", "soft_belief")


def bootstrap_weight(sigma2: torch.Tensor, tau: float, slope: float = 0.2) -> torch.Tensor:
    """Eq. (3): W = sigmoid((tau - sigma^2) / slope), about 1 (trust the label) for sigma^2 below
    tau and about 0 (trust the flipped target) above. The poster's slope is 0.2."""
    return torch.sigmoid((tau - sigma2) / slope)


def flipped_target(y: torch.Tensor, mu: torch.Tensor, kind: str = "hard_belief") -> torch.Tensor:
    """The target y* of eq. (4), detached. The poster calls it the "flipped" target, "the network's
    belief"; three readings:

    * ``'flip'``: 1 - y, the label flipped, wherever the weight says so;
    * ``'hard_belief'``: 1[mu > 0], the network's own hard decision (equal to 1 - y exactly where
      the network disagrees with y, and to y where it agrees: Reed et al.'s hard bootstrapping);
    * ``'soft_belief'``: sigmoid(mu), the network's probability (Reed et al.'s soft bootstrapping).
    """
    check_choice("flip target", kind, FLIP_TARGETS)
    if kind == "flip":
        return 1.0 - y
    if kind == "hard_belief":
        return (mu.detach() > 0).to(y.dtype)
    return torch.sigmoid(mu.detach())


def bootstrapped_bce(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    y: torch.Tensor,
    tau: float,
    slope: float = 0.2,
    target: str = "hard_belief",
    detach_weight: bool = True,
) -> torch.Tensor:
    """Eq. (4), per pixel: W BCE(mu, y) + (1 - W) BCE(mu, y*), W from eq. (3).

    ``detach_weight=False`` lets the gradient reach sigma^2 through W: then raising sigma^2 is a
    way to swap an expensive label for a cheap y*, and the network learns to disagree everywhere
    (measured: collapse to all-background). Detached, W only selects the target.
    """
    w = bootstrap_weight(sigma2, tau, slope)
    if detach_weight:
        w = w.detach()
    y_star = flipped_target(y, mu, target)
    return w * F.binary_cross_entropy_with_logits(mu, y, reduction="none") + (
        1 - w
    ) * F.binary_cross_entropy_with_logits(mu, y_star, reduction="none")


REGIONS = ("everywhere", "boxes")


def combined_loss(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    y: torch.Tensor,
    uncertain: torch.Tensor,
    valid: torch.Tensor | None = None,
    tau: float = 1.0,
    slope: float = 0.2,
    target: str = "hard_belief",
    detach_weight: bool = True,
    bootstrap: bool = True,
    uncertainty_trains_mu: bool = True,
) -> torch.Tensor:
    """The combined binary loss, averaged over valid pixels:

    * where ``uncertain`` is True (e.g. inside the boxes of box-labelled images): the uncertain BCE
      of eq. (2), which trains sigma^2, plus (if ``bootstrap``) the bootstrapped BCE of eq. (4),
      which trains mu towards y or y*;
    * elsewhere (pixel-perfect labels, outside boxes): the plain BCE(mu, y).

    ``uncertain`` all True gives the 'everywhere' reading; ``valid`` masks ignored pixels (255).

    ``uncertainty_trains_mu=False`` detaches mu inside eq. (2), so eq. (2) trains sigma^2 only and
    mu is trained by eq. (4) alone. Why it matters: eq. (2)'s gradient on mu always points at the
    label, damped only by 1/sqrt(1 + pi sigma^2 / 8), while a confident network's own belief as
    target gives almost no gradient; so with the default, a background pixel inside a box drifts to
    the box's class however uncertain it is (measured on the toy world: the boxes-BCE solution).
    """
    valid = torch.ones_like(y, dtype=torch.bool) if valid is None else valid
    unc = uncertain & valid
    plain = F.binary_cross_entropy_with_logits(mu, y, reduction="none")
    mu_unc = mu if uncertainty_trains_mu else mu.detach()
    loss = torch.where(unc, uncertain_bce(mu_unc, sigma2, y), plain)
    if bootstrap:
        loss = loss + torch.where(
            unc,
            bootstrapped_bce(mu, sigma2, y, tau, slope, target, detach_weight),
            torch.zeros_like(plain),
        )
    return (loss * valid).sum() / valid.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------
# Multi-class: the Monte-Carlo loss and bootstrapped targets
# ------------------------------------------------------------------------------------------------


def mc_log_expected_softmax(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    samples: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log E[softmax(l)] over the class axis (dim 1) for l ~ N(mu, diag sigma^2), by Monte-Carlo
    with ``samples`` draws (eq. 5), as a log-mean-exp of log-softmax samples:
    logsumexp_t(log_softmax(mu + sigma eps_t)) - log T. (Averaging the cross-entropy over samples
    instead would be a different loss, an upper bound of eq. 6.) Differentiable in mu and sigma^2."""
    eps = torch.randn(
        (samples,) + tuple(mu.shape), generator=generator, dtype=mu.dtype, device=mu.device
    )
    logp = F.log_softmax(mu.unsqueeze(0) + sigma2.sqrt().unsqueeze(0) * eps, dim=2)
    return torch.logsumexp(logp, dim=0) - math.log(samples)


def mc_expected_softmax(mu, sigma2, samples: int = 16, generator=None) -> torch.Tensor:
    """E[softmax(l)] (eq. 5) by Monte-Carlo."""
    return mc_log_expected_softmax(mu, sigma2, samples, generator).exp()


def bootstrapped_targets(
    mu: torch.Tensor,
    sigma2: torch.Tensor,
    y: torch.Tensor,
    tau: float,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. (7): the target becomes argmax(mu) where max_c sigma^2_c > tau (and ``allowed``, e.g.
    inside boxes), else stays y. Ignored pixels (255) stay ignored."""
    switch = sigma2.detach().amax(1) > tau
    if allowed is not None:
        switch = switch & allowed
    switch = switch & (y != IGNORE)
    return torch.where(switch, mu.detach().argmax(1), y)


def mc_uncertain_ce(
    mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor, samples: int = 16, generator=None
) -> torch.Tensor:
    """Eq. (6) per pixel: -log E[softmax(l)]_y with E from :func:`mc_log_expected_softmax`;
    0 where y is 255 (ignored)."""
    logp = mc_log_expected_softmax(mu, sigma2, samples, generator)
    safe = torch.where(y == IGNORE, torch.zeros_like(y), y)
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    return torch.where(y == IGNORE, torch.zeros_like(nll), nll)


def multiclass_loss(
    mu,
    sigma2,
    y,
    uncertain,
    tau: float = 1.0,
    samples: int = 16,
    bootstrap: bool = True,
    generator=None,
    uncertainty_trains_mu: bool = True,
) -> torch.Tensor:
    """The multi-class loss, averaged over non-ignored pixels.

    * ``uncertainty_trains_mu=True`` (the literal reading): where ``uncertain`` (inside boxes of
      box-labelled images), the Monte-Carlo uncertain CE (eq. 6) against the bootstrapped target
      (eq. 7, if ``bootstrap``); elsewhere the plain CE of mu.
    * ``False`` (the multi-class counterpart of :func:`combined_loss`'s): inside boxes, eq. 6 on a
      detached mu against the box label trains sigma^2 only, and mu is trained by the plain CE
      against the bootstrapped target (eq. 7); without ``bootstrap`` mu ignores box interiors
      (the warm-up). Elsewhere the plain CE of mu.
    """
    valid = y != IGNORE
    if uncertainty_trains_mu:
        target = bootstrapped_targets(mu, sigma2, y, tau, uncertain) if bootstrap else y
        unc = mc_uncertain_ce(mu, sigma2, target, samples, generator)
        plain = F.cross_entropy(mu, target, ignore_index=IGNORE, reduction="none")
        loss = torch.where(uncertain, unc, plain)
        return (loss * valid).sum() / valid.sum().clamp(min=1)
    sigma_term = torch.where(
        uncertain, mc_uncertain_ce(mu.detach(), sigma2, y, samples, generator), 0.0
    )
    if bootstrap:
        target = bootstrapped_targets(mu, sigma2, y, tau, uncertain)
    else:
        target = torch.where(uncertain, torch.full_like(y, IGNORE), y)
    mu_term = F.cross_entropy(mu, target, ignore_index=IGNORE, reduction="none")
    return ((sigma_term + mu_term) * valid).sum() / valid.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------
# Box labels
# ------------------------------------------------------------------------------------------------


def rasterize_boxes(boxes, box_labels, shape, classes=None) -> np.ndarray:
    """A label map (uint8) from boxes: inside a box = its class, elsewhere 0. Where boxes overlap,
    the smaller box wins (small objects usually stand in front). ``classes`` maps dataset class
    ids to output ids (a dict; boxes of unmapped classes are dropped)."""
    out = np.zeros(shape, np.uint8)
    boxes = np.asarray(boxes).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in np.argsort(-areas, kind="stable"):
        c = int(box_labels[k])
        if classes is not None:
            if c not in classes:
                continue
            c = classes[c]
        x0, y0, x1, y1 = boxes[k]
        out[y0:y1, x0:x1] = c
    return out


def remap_mask(mask: np.ndarray, classes: dict) -> np.ndarray:
    """Keep the classes in ``classes`` ({dataset id: output id}), others become background (0);
    255 stays 255."""
    lut = np.zeros(256, np.uint8)
    lut[255] = IGNORE
    for src, dst in classes.items():
        lut[src] = dst
    return lut[mask]


def mixed_supervision_arrays(
    dataset, n_pixel_perfect: int, classes: dict, indices=None, seed: int = 0, size=None
) -> dict:
    """The mixed training set: ``n_pixel_perfect`` images keep their (remapped) mask; the others
    get their rasterised boxes as the target. Returns stacked arrays:
    ``image`` (N, H, W, 3), ``target`` (N, H, W; 255 = ignore), ``mask`` (the true remapped mask,
    for evaluation and figures), ``in_box`` (N, H, W; True inside a box of a box-labelled image),
    ``pixel_perfect`` (N,). Which images are pixel-perfect is a seeded permutation. ``size`` =
    (height, width) resizes every sample first (real datasets; see :func:`data.resize_sample`)."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    perm = np.random.default_rng(seed).permutation(len(indices))
    pp = np.zeros(len(indices), bool)
    pp[perm[:n_pixel_perfect]] = True
    images, targets, masks, in_box = [], [], [], []
    for j, i in enumerate(progress_bar(indices, desc="building the mixed set", leave=False)):
        s = dataset[i] if size is None else resize_sample(dataset[i], size)
        m = remap_mask(s["mask"], classes)
        boxes = rasterize_boxes(s["boxes"], s["box_labels"], m.shape, classes)
        images.append(s["image"])
        masks.append(m)
        targets.append(m if pp[j] else boxes)
        in_box.append(np.zeros(m.shape, bool) if pp[j] else boxes > 0)
    return {
        "image": np.stack(images),
        "target": np.stack(targets),
        "mask": np.stack(masks),
        "in_box": np.stack(in_box),
        "pixel_perfect": pp,
    }


REAL_CLASS_NAMES = {
    "cityscapes": {"car": "car", "person": "person"},
    "camvid": {"car": "car", "person": "pedestrian"},
    "msrc": {"car": "car", "person": "body"},
}
"""The poster's classes ('car', 'person') under their names in each real dataset."""

TOY_CLASS_PROBS = {("car",): {"car": 0.85}, ("car", "person"): {"car": 0.85, "person": 0.6}}
"""How often each class appears in the toy scenes of Table 1 (car) and Table 2 (car + person)."""


def load_mixed_set(
    dataset: str,
    classes,
    n_pixel_perfect: int | None,
    split: str = "train",
    n: int = 200,
    size: int = 48,
    data_root="",
    seed: int = 0,
    **toy_knobs,
) -> dict:
    """The mixed set of Table 1 (``classes=['car']``) or Table 2 (``['car', 'person']``) from the
    toy world or a real dataset: :func:`mixed_supervision_arrays` on the first ``n`` images of
    ``split``, with output ids 1, 2, ... in the order of ``classes`` (0 = background).
    ``size``: the toy world's side, or the height real images are resized to (width 2x, as
    Cityscapes and CamVid are wide). ``n_pixel_perfect=None``: the poster's fraction, 500 PP
    images of Cityscapes' 2,780 (18 %). ``toy_knobs``: other toy-world settings (e.g.
    ``box_noise=0.1``, or ``class_probs={'car': 0.25}`` for a rarer car than
    :data:`TOY_CLASS_PROBS`; see :class:`wsss_edu.toy.ToyWorldConfig`)."""
    classes = tuple(classes)
    if dataset == "toy":
        check_choice("classes", classes, tuple(TOY_CLASS_PROBS))
        knobs = {"class_probs": TOY_CLASS_PROBS[classes]} | toy_knobs
        ds = get_dataset("toy", split=split, n=n, seed=seed, size=size, **knobs)
        ids, resize = [ds.classes.index(c) for c in classes], None
    else:
        check_choice("dataset", dataset, ("toy",) + tuple(REAL_CLASS_NAMES))
        if toy_knobs:
            raise ValueError(
                f"{sorted(toy_knobs)} are toy-world settings; dataset={dataset!r} takes none"
            )
        names = [REAL_CLASS_NAMES[dataset][c] for c in classes]
        ds = get_dataset(dataset, data_root, split=split, classes=tuple(names))
        ids, resize = [ds.classes.index(c) for c in names], (size, 2 * size)
    n = min(n, len(ds))
    if n_pixel_perfect is None:
        n_pixel_perfect = max(1, round(n * 500 / 2780))
    return mixed_supervision_arrays(
        ds, n_pixel_perfect, {c: k + 1 for k, c in enumerate(ids)}, range(n), seed=seed, size=resize
    )


# ------------------------------------------------------------------------------------------------
# Teaching figures and references (notebook 01)
# ------------------------------------------------------------------------------------------------


def quadrature_expected_probability(mu, sigma2, points: int = 100) -> np.ndarray:
    """E[sigmoid(l)], l ~ N(mu, sigma^2), by Gauss-Hermite quadrature: a deterministic, accurate
    reference for eq. (1) (NumPy arrays in and out)."""
    x, w = np.polynomial.hermite.hermgauss(points)
    mu, sigma2 = np.asarray(mu, np.float64), np.asarray(sigma2, np.float64)
    l = mu[..., None] + np.sqrt(2 * sigma2)[..., None] * x
    return (w / np.sqrt(np.pi) / (1 + np.exp(-l))).sum(-1)


def combined_loss_surface(
    mu, sigma2, y: float = 1.0, tau: float = 1.0, slope: float = 0.2, target: str = "flip"
) -> np.ndarray:
    """The value of the combined binary loss (eq. 2 + eq. 4) at every (mu, sigma^2) of a grid, for
    one label ``y``: the landscape a pixel's prediction moves on."""
    mu_t, s2_t = (
        torch.as_tensor(mu, dtype=torch.float64),
        torch.as_tensor(sigma2, dtype=torch.float64),
    )
    y_t = torch.full_like(mu_t, float(y))
    return (
        uncertain_bce(mu_t, s2_t, y_t) + bootstrapped_bce(mu_t, s2_t, y_t, tau, slope, target)
    ).numpy()


def plot_logit_distribution(
    mu: float = -1.0,
    sigma2: float = 2.0,
    tau: float = 1.0,
    y: float = 1.0,
    samples: int = 20000,
    seed: int = 0,
):
    """Three panels for one pixel: the logit distribution N(mu, sigma^2); the distribution of
    sigmoid(l) with its Monte-Carlo mean against eq. (1); and the loss terms for label ``y``
    (uncertain BCE, bootstrap weight W, bootstrapped BCE). Returns the figure."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    mu_t, s2_t = (
        torch.tensor(float(mu), dtype=torch.float64),
        torch.tensor(float(sigma2), dtype=torch.float64),
    )
    l = mu_t + s2_t.sqrt() * torch.randn(samples, generator=g, dtype=torch.float64)
    p = torch.sigmoid(l)
    fig, ax = plt.subplots(1, 3, figsize=(12, 2.8))
    ax[0].hist(l.numpy(), bins=60, density=True, color="tab:blue", alpha=0.7)
    ax[0].axvline(mu, color="k", ls="--")
    ax[0].set_title(f"logit l ~ N({mu:.1f}, {sigma2:.1f})")
    ax[0].set_xlabel("l")
    ax[1].hist(p.numpy(), bins=50, range=(0, 1), density=True, color="tab:orange", alpha=0.7)
    ax[1].axvline(p.mean().item(), color="k", label=f"Monte-Carlo mean {p.mean().item():.3f}")
    ax[1].axvline(
        expected_probability(mu_t, s2_t).item(),
        color="tab:red",
        ls="--",
        label=f"eq. (1) {expected_probability(mu_t, s2_t).item():.3f}",
    )
    ax[1].set_title("p = sigmoid(l)")
    ax[1].legend(fontsize=7)
    ax[1].set_xlabel("p")
    yt = torch.tensor(float(y), dtype=torch.float64)
    terms = {
        "plain BCE(mu, y)": F.binary_cross_entropy_with_logits(mu_t, yt).item(),
        "BCE(E[p], y)  eq. 2": uncertain_bce(mu_t, s2_t, yt).item(),
        "W  eq. 3": bootstrap_weight(s2_t, tau).item(),
        "bootstrapped  eq. 4": bootstrapped_bce(mu_t, s2_t, yt, tau, target="flip").item(),
    }
    ax[2].barh(
        list(terms), list(terms.values()), color=["gray", "tab:orange", "tab:green", "tab:purple"]
    )
    ax[2].set_title(f"label y = {y:g}, tau = {tau:g}")
    for k, v in enumerate(terms.values()):
        ax[2].text(v, k, f" {v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig
