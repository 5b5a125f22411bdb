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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from tqdm.auto import tqdm
import torch.nn as nn
import torch.nn.functional as F

from .cache import artifact_path, load_artifact, save_artifact
from .data import images_to_tensor, resize_sample
from .datasets import get_dataset
from .errors import check_choice
from .labels import IGNORE
from .metrics import ConfusionMeter, auroc
from .models import UNet
from .parallel import map_jobs
from .train import seed_everything

# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------


class AleatoricUNet(nn.Module):
    """A U-Net with two per-pixel heads: the logit mean ``mu`` and the logit variance ``sigma2``
    (kept positive by a softplus, plus ``min_variance``). ``num_logits`` = 1 for binary
    segmentation, C for C classes. ``forward`` returns ``(mu, sigma2)``, each (N, num_logits, H, W).
    """

    def __init__(self, num_logits: int = 1, width: int = 16, depth: int = 3,
                 min_variance: float = 1e-4, initial_variance: float | None = None):
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
        mu, raw = out[:, :self.num_logits], out[:, self.num_logits:]
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


def mc_expected_probability(mu: torch.Tensor, sigma2: torch.Tensor, samples: int = 10000,
                            generator: torch.Generator | None = None) -> torch.Tensor:
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


def bootstrapped_bce(mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor, tau: float,
                     slope: float = 0.2, target: str = "hard_belief",
                     detach_weight: bool = True) -> torch.Tensor:
    """Eq. (4), per pixel: W BCE(mu, y) + (1 - W) BCE(mu, y*), W from eq. (3).

    ``detach_weight=False`` lets the gradient reach sigma^2 through W: then raising sigma^2 is a
    way to swap an expensive label for a cheap y*, and the network learns to disagree everywhere
    (measured: collapse to all-background). Detached, W only selects the target.
    """
    w = bootstrap_weight(sigma2, tau, slope)
    if detach_weight:
        w = w.detach()
    y_star = flipped_target(y, mu, target)
    return (w * F.binary_cross_entropy_with_logits(mu, y, reduction="none")
            + (1 - w) * F.binary_cross_entropy_with_logits(mu, y_star, reduction="none"))


REGIONS = ("everywhere", "boxes")


def combined_loss(mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor,
                  uncertain: torch.Tensor, valid: torch.Tensor | None = None, tau: float = 1.0,
                  slope: float = 0.2, target: str = "hard_belief", detach_weight: bool = True,
                  bootstrap: bool = True, uncertainty_trains_mu: bool = True) -> torch.Tensor:
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
        loss = loss + torch.where(unc, bootstrapped_bce(mu, sigma2, y, tau, slope, target,
                                                        detach_weight), torch.zeros_like(plain))
    return (loss * valid).sum() / valid.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------------
# Multi-class: the Monte-Carlo loss and bootstrapped targets
# ------------------------------------------------------------------------------------------------


def mc_log_expected_softmax(mu: torch.Tensor, sigma2: torch.Tensor, samples: int = 16,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """log E[softmax(l)] over the class axis (dim 1) for l ~ N(mu, diag sigma^2), by Monte-Carlo
    with ``samples`` draws (eq. 5), as a log-mean-exp of log-softmax samples:
    logsumexp_t(log_softmax(mu + sigma eps_t)) - log T. (Averaging the cross-entropy over samples
    instead would be a different loss, an upper bound of eq. 6.) Differentiable in mu and sigma^2."""
    eps = torch.randn((samples,) + tuple(mu.shape), generator=generator, dtype=mu.dtype,
                      device=mu.device)
    logp = F.log_softmax(mu.unsqueeze(0) + sigma2.sqrt().unsqueeze(0) * eps, dim=2)
    return torch.logsumexp(logp, dim=0) - math.log(samples)


def mc_expected_softmax(mu, sigma2, samples: int = 16, generator=None) -> torch.Tensor:
    """E[softmax(l)] (eq. 5) by Monte-Carlo."""
    return mc_log_expected_softmax(mu, sigma2, samples, generator).exp()


def bootstrapped_targets(mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor, tau: float,
                         allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (7): the target becomes argmax(mu) where max_c sigma^2_c > tau (and ``allowed``, e.g.
    inside boxes), else stays y. Ignored pixels (255) stay ignored."""
    switch = sigma2.detach().amax(1) > tau
    if allowed is not None:
        switch = switch & allowed
    switch = switch & (y != IGNORE)
    return torch.where(switch, mu.detach().argmax(1), y)


def mc_uncertain_ce(mu: torch.Tensor, sigma2: torch.Tensor, y: torch.Tensor, samples: int = 16,
                    generator=None) -> torch.Tensor:
    """Eq. (6) per pixel: -log E[softmax(l)]_y with E from :func:`mc_log_expected_softmax`;
    0 where y is 255 (ignored)."""
    logp = mc_log_expected_softmax(mu, sigma2, samples, generator)
    safe = torch.where(y == IGNORE, torch.zeros_like(y), y)
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    return torch.where(y == IGNORE, torch.zeros_like(nll), nll)


def multiclass_loss(mu, sigma2, y, uncertain, tau: float = 1.0, samples: int = 16,
                    bootstrap: bool = True, generator=None,
                    uncertainty_trains_mu: bool = True) -> torch.Tensor:
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
    sigma_term = torch.where(uncertain, mc_uncertain_ce(mu.detach(), sigma2, y, samples, generator), 0.0)
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


def mixed_supervision_arrays(dataset, n_pixel_perfect: int, classes: dict, indices=None,
                             seed: int = 0, size=None) -> dict:
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
    for j, i in enumerate(tqdm(indices, desc="building the mixed set", leave=False)):
        s = dataset[i] if size is None else resize_sample(dataset[i], size)
        m = remap_mask(s["mask"], classes)
        boxes = rasterize_boxes(s["boxes"], s["box_labels"], m.shape, classes)
        images.append(s["image"])
        masks.append(m)
        targets.append(m if pp[j] else boxes)
        in_box.append(np.zeros(m.shape, bool) if pp[j] else boxes > 0)
    return {"image": np.stack(images), "target": np.stack(targets), "mask": np.stack(masks),
            "in_box": np.stack(in_box), "pixel_perfect": pp}


REAL_CLASS_NAMES = {"cityscapes": {"car": "car", "person": "person"},
                    "camvid": {"car": "car", "person": "pedestrian"},
                    "msrc": {"car": "car", "person": "body"}}
"""The poster's classes ('car', 'person') under their names in each real dataset."""

TOY_CLASS_PROBS = {("car",): {"car": 0.85}, ("car", "person"): {"car": 0.85, "person": 0.6}}
"""How often each class appears in the toy scenes of Table 1 (car) and Table 2 (car + person)."""


def load_mixed_set(dataset: str, classes, n_pixel_perfect: int | None, split: str = "train",
                   n: int = 200, size: int = 48, data_root="", seed: int = 0, **toy_knobs) -> dict:
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
            raise ValueError(f"{sorted(toy_knobs)} are toy-world settings; dataset={dataset!r} takes none")
        names = [REAL_CLASS_NAMES[dataset][c] for c in classes]
        ds = get_dataset(dataset, data_root, split=split, classes=tuple(names))
        ids, resize = [ds.classes.index(c) for c in names], (size, 2 * size)
    n = min(n, len(ds))
    if n_pixel_perfect is None:
        n_pixel_perfect = max(1, round(n * 500 / 2780))
    return mixed_supervision_arrays(ds, n_pixel_perfect, {c: k + 1 for k, c in enumerate(ids)},
                                    range(n), seed=seed, size=resize)


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


def combined_loss_surface(mu, sigma2, y: float = 1.0, tau: float = 1.0, slope: float = 0.2,
                          target: str = "flip") -> np.ndarray:
    """The value of the combined binary loss (eq. 2 + eq. 4) at every (mu, sigma^2) of a grid, for
    one label ``y``: the landscape a pixel's prediction moves on."""
    mu_t, s2_t = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    y_t = torch.full_like(mu_t, float(y))
    return (uncertain_bce(mu_t, s2_t, y_t)
            + bootstrapped_bce(mu_t, s2_t, y_t, tau, slope, target)).numpy()


def plot_logit_distribution(mu: float = -1.0, sigma2: float = 2.0, tau: float = 1.0,
                            y: float = 1.0, samples: int = 20000, seed: int = 0):
    """Three panels for one pixel: the logit distribution N(mu, sigma^2); the distribution of
    sigmoid(l) with its Monte-Carlo mean against eq. (1); and the loss terms for label ``y``
    (uncertain BCE, bootstrap weight W, bootstrapped BCE). Returns the figure."""
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    mu_t, s2_t = torch.tensor(float(mu), dtype=torch.float64), torch.tensor(float(sigma2), dtype=torch.float64)
    l = mu_t + s2_t.sqrt() * torch.randn(samples, generator=g, dtype=torch.float64)
    p = torch.sigmoid(l)
    fig, ax = plt.subplots(1, 3, figsize=(12, 2.8))
    ax[0].hist(l.numpy(), bins=60, density=True, color="tab:blue", alpha=0.7)
    ax[0].axvline(mu, color="k", ls="--")
    ax[0].set_title(f"logit l ~ N({mu:.1f}, {sigma2:.1f})"); ax[0].set_xlabel("l")
    ax[1].hist(p.numpy(), bins=50, range=(0, 1), density=True, color="tab:orange", alpha=0.7)
    ax[1].axvline(p.mean().item(), color="k", label=f"Monte-Carlo mean {p.mean().item():.3f}")
    ax[1].axvline(expected_probability(mu_t, s2_t).item(), color="tab:red", ls="--",
                  label=f"eq. (1) {expected_probability(mu_t, s2_t).item():.3f}")
    ax[1].set_title("p = sigmoid(l)"); ax[1].legend(fontsize=7); ax[1].set_xlabel("p")
    yt = torch.tensor(float(y), dtype=torch.float64)
    terms = {"plain BCE(mu, y)": F.binary_cross_entropy_with_logits(mu_t, yt).item(),
             "BCE(E[p], y)  eq. 2": uncertain_bce(mu_t, s2_t, yt).item(),
             "W  eq. 3": bootstrap_weight(s2_t, tau).item(),
             "bootstrapped  eq. 4": bootstrapped_bce(mu_t, s2_t, yt, tau, target="flip").item()}
    ax[2].barh(list(terms), list(terms.values()), color=["gray", "tab:orange", "tab:green", "tab:purple"])
    ax[2].set_title(f"label y = {y:g}, tau = {tau:g}")
    for k, v in enumerate(terms.values()):
        ax[2].text(v, k, f" {v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
# Experiments (notebook 02): one training routine for every row of the paper's Tables 1 and 2
# ------------------------------------------------------------------------------------------------

METHODS = ("all_pp", "pp_only", "boxes_bce", "ignore_box", "ours")
METHOD_COLORS = {"all_pp": "gray", "pp_only": "tab:blue", "boxes_bce": "tab:red",
                 "ignore_box": "tab:orange", "ours": "tab:green"}
"""One colour per row of the tables, the same in every figure of notebooks 02 and 02b."""


def method_names(n_train: int, n_pp: int) -> dict:
    """Readable names of the rows of Table 1/2 for ``n_train`` training images of which ``n_pp``
    are pixel-perfect."""
    return {"all_pp": f"all PP ({n_train})", "pp_only": f"PP only ({n_pp})",
            "boxes_bce": f"{n_pp} PP + boxes, BCE", "ignore_box": f"{n_pp} PP + boxes, ignore interiors",
            "ours": f"{n_pp} PP + boxes, ours"}


@dataclass
class BootstrapConfig:
    """Every choice the poster leaves open, in one place. Defaults: the poster's tau and slope, and
    the readings that avoid the failures notebook 02 shows (eq. 2 trains sigma^2 only, y* = the hard
    belief, W detached, the uncertain loss inside boxes). Notebook 02's binary table uses
    ``warmup_epochs`` = 3/4 of the epochs and ``tau=0.5``: see its text for why and how robust."""
    tau: float = 1.0
    slope: float = 0.2
    target: str = "hard_belief"
    detach_weight: bool = True
    region: str = "boxes"
    warmup_epochs: int = 3
    """Epochs at the start without bootstrapping: the uncertain loss (eq. 2 / eq. 6) alone inside
    boxes, so that the network has a belief to bootstrap to and, when bootstrapping starts, sigma^2
    already marks where it disagrees with the boxes. With ``uncertainty_trains_mu=False`` that loss
    trains sigma^2 only and mu ignores box interiors; with True it also pulls mu towards the box
    labels, damped by sigma^2 (the aleatoric loss alone, before bootstrapping is switched on)."""
    uncertainty_trains_mu: bool = False
    warmup_on_boxes: bool = False
    """During the warm-up, mu learns the box labels with plain BCE / CE (the "boxes" row) while
    sigma^2 learns from the uncertain loss on a detached mu; bootstrapping then starts from a
    network that has seen every object's box (multi-class: a thin class is then learned at all)."""
    mc_samples: int = 8
    """Monte-Carlo samples of the multi-class loss (eq. 5-6)."""
    initial_variance: float | None = None
    """sigma^2 at initialisation (None: softplus(0) ~ 0.69, whatever the head's bias starts at)."""


def method_loss(method: str, mu, sigma2, target, in_box, epoch: int, cfg: BootstrapConfig,
                multiclass: bool = False, generator=None):
    """The training loss of one row of Table 1/2 for a batch. ``target`` holds masks on
    pixel-perfect images and rasterised boxes elsewhere (255 = ignore); ``in_box`` marks box
    interiors of box-labelled images.

    * 'all_pp', 'pp_only', 'boxes_bce': plain BCE / CE on the target (the data decides the row);
    * 'ignore_box': box interiors ignored (a natural baseline the poster does not list);
    * 'ours': during ``cfg.warmup_epochs`` the uncertain loss without bootstrapping inside boxes
      (with ``uncertainty_trains_mu=False``: mu ignores box interiors while sigma^2 learns from
      eq. 2 / eq. 6; with ``cfg.warmup_on_boxes``: mu learns the boxes, as the 'boxes_bce'
      row); then the uncertain + bootstrapped loss inside boxes (binary:
      :func:`combined_loss`; multi-class: :func:`multiclass_loss`), plain BCE / CE elsewhere.
    """
    check_choice("method", method, METHODS)
    check_choice("region", cfg.region, REGIONS)
    valid = target != IGNORE
    y = torch.where(valid, target, torch.zeros_like(target)).float()  # binary target, 0 at ignore
    warm = method == "ours" and epoch < cfg.warmup_epochs
    if warm and cfg.warmup_on_boxes:
        return _box_warmup_loss(mu, sigma2, target, y, in_box, valid, multiclass, cfg, generator)
    if warm and not multiclass:
        # eq. (2) alone inside boxes: it trains sigma^2, and mu only if cfg.uncertainty_trains_mu
        # (otherwise box interiors carry no gradient to mu: it learns from the certain pixels)
        return combined_loss(mu[:, 0], sigma2[:, 0], y, in_box, valid, bootstrap=False,
                             uncertainty_trains_mu=cfg.uncertainty_trains_mu)
    if warm:  # multi-class: the same warm-up as above (eq. 6 without eq. 7)
        return multiclass_loss(mu, sigma2, target, in_box, cfg.tau, cfg.mc_samples, False,
                               generator, uncertainty_trains_mu=cfg.uncertainty_trains_mu)
    if method == "ignore_box":
        valid = valid & ~in_box
    if method != "ours":
        if multiclass:
            t = torch.where(valid, target, torch.full_like(target, IGNORE))
            return F.cross_entropy(mu, t, ignore_index=IGNORE)
        per = F.binary_cross_entropy_with_logits(mu[:, 0], y, reduction="none")
        return (per * valid).sum() / valid.sum().clamp(min=1)
    unc = in_box if cfg.region == "boxes" else valid
    if multiclass:
        return multiclass_loss(mu, sigma2, target, unc, cfg.tau, cfg.mc_samples, True, generator,
                               cfg.uncertainty_trains_mu)
    return combined_loss(mu[:, 0], sigma2[:, 0], y, unc, valid, cfg.tau, cfg.slope, cfg.target,
                         cfg.detach_weight, True, cfg.uncertainty_trains_mu)


def _box_warmup_loss(mu, sigma2, target, y, in_box, valid, multiclass, cfg, generator):
    """The warm-up of ``cfg.warmup_on_boxes``: plain BCE / CE of mu on the targets (boxes on
    box-labelled images), plus the uncertain loss (eq. 2 / eq. 6) of a detached mu inside boxes,
    which trains sigma^2 only. ``y``: the binary target (0 where ignored)."""
    if multiclass:
        plain = F.cross_entropy(mu, target, ignore_index=IGNORE, reduction="none")
        unc = mc_uncertain_ce(mu.detach(), sigma2, target, cfg.mc_samples, generator)
    else:
        plain = F.binary_cross_entropy_with_logits(mu[:, 0], y, reduction="none")
        unc = uncertain_bce(mu[:, 0].detach(), sigma2[:, 0], y)
    loss = plain + torch.where(in_box, unc, torch.zeros_like(unc))
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def experiment_arrays(arrays: dict, method: str) -> dict:
    """The training arrays a method sees: 'all_pp' trains on every true mask, 'pp_only' on the
    pixel-perfect images alone, the others on the mixed set."""
    check_choice("method", method, METHODS)
    if method == "all_pp":
        return {**arrays, "target": arrays["mask"], "in_box": np.zeros_like(arrays["in_box"])}
    if method == "pp_only":
        keep = arrays["pixel_perfect"]
        return {k: v[keep] for k, v in arrays.items()}
    return arrays


@torch.no_grad()
def predict_labels(net, images: torch.Tensor, batch_size: int = 100):
    """Hard labels, sigma^2 and mu of an :class:`AleatoricUNet` for normalised images (binary:
    mu > 0; multi-class: argmax mu)."""
    net.eval()
    device = next(net.parameters()).device
    mus, s2s = [], []
    for i in range(0, len(images), batch_size):
        mu, s2 = net(images[i:i + batch_size].to(device))
        mus.append(mu.float().cpu())
        s2s.append(s2.float().cpu())
    mu, s2 = torch.cat(mus), torch.cat(s2s)
    labels = (mu[:, 0] > 0).long() if mu.shape[1] == 1 else mu.argmax(1)
    return labels, s2, mu


BATCH_SIZE = 16
"""Images per batch of :func:`train_experiment` (notebooks 02 and 02b)."""


def train_experiment(arrays: dict, val: dict, method: str, num_logits: int = 1, epochs: int = 15,
                     seed: int = 0, cfg: BootstrapConfig | None = None, width: int = 8,
                     lr: float = 2e-3, batch_size: int = BATCH_SIZE, watch=None,
                     device="cpu", pp_per_batch: int | None = None, eval_every: int = 1,
                     progress: bool = True, lr_schedule: str = "cosine"):
    """Train one :class:`AleatoricUNet` for one row of Table 1 (``num_logits=1``) or Table 2
    (``num_logits`` = number of classes) and return ``(net, history)``; ``history['miou']`` holds
    the validation IoU of the object class (binary) or the mIoU (multi-class) after every epoch,
    ``history['iou']`` the IoU of every class (background first).
    An epoch is the same number of optimiser steps for every method (one pass over the whole
    mixed set): 'pp_only' cycles through its few images rather than training less.
    ``watch`` (images, (N, H, W, 3) uint8) adds ``history['watch']``: per epoch, the predicted
    labels and sigma^2 of those images (the labels evolving, for figures; also in a worker).
    The data stay on the CPU; each batch is moved to ``device``, where the network trains.
    ``pp_per_batch`` (methods on the mixed set only): every batch holds that many pixel-perfect
    images (cycled) and box-labelled ones for the rest, instead of a plain shuffle.
    ``eval_every``: validate after every that many epochs and after the last (``history['epoch']``
    lists them, 1-based); ``eval_every=epochs`` validates once, at the end (a table's row needs no
    curve). Every validation also records ``history['pred_share']``, the share of the validation
    pixels of known label (not 255) predicted as each class (background first), and
    ``history['fg_share']``, the share predicted as any object class; ``history['true_share']`` and
    ``history['true_fg_share']`` hold the same shares of the true masks (for :func:`collapsed`).
    ``lr_schedule`` (:data:`LR_SCHEDULES`, :func:`lr_factor`): 'cosine' (the default) anneals the
    learning rate once over all epochs, 'constant' keeps it, 'restart' anneals it over the first
    ``cfg.warmup_epochs`` epochs and again, from ``lr``, over the rest (for every method, so that
    the rows stay comparable)."""
    cfg = cfg or BootstrapConfig()
    data = experiment_arrays(arrays, method)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    x = images_to_tensor(data["image"])
    target = torch.as_tensor(data["target"]).long()
    in_box = torch.as_tensor(data["in_box"])
    xv, mv = images_to_tensor(val["image"]), torch.as_tensor(val["mask"]).long()
    device = torch.device(device)
    net = AleatoricUNet(num_logits, width=width, initial_variance=cfg.initial_variance).to(device)
    mc_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr)
    per_epoch = (len(arrays["image"]) + batch_size - 1) // batch_size
    steps = epochs * per_epoch
    sched = _lr_scheduler(opt, lr_schedule, steps, min(max(cfg.warmup_epochs, 0), epochs) * per_epoch)
    multiclass = num_logits > 1
    n_cls = num_logits if multiclass else 2
    history = {"epoch": [], "miou": [], "iou": [], "pred_share": [], "fg_share": []} \
        | ({} if watch is None else {"watch": []})
    history["true_share"] = _class_shares(mv, n_cls)
    history["true_fg_share"] = 1.0 - history["true_share"][0]
    xw = None if watch is None else images_to_tensor(watch)
    balanced = bool(pp_per_batch) and method in ("boxes_bce", "ignore_box", "ours")
    if balanced:
        pp = torch.as_tensor(np.flatnonzero(data["pixel_perfect"]))
        bb = torch.as_tensor(np.flatnonzero(~data["pixel_perfect"]))
        k = min(pp_per_batch, batch_size)
    for epoch in tqdm(range(epochs), desc=f"{method} seed {seed}", leave=False, disable=not progress):
        net.train()
        if balanced:
            pp_order = _cycled_permutation(pp, per_epoch * k, gen).view(per_epoch, k)
            bb_order = _cycled_permutation(bb, per_epoch * (batch_size - k), gen).view(per_epoch, -1)
            order = torch.cat([pp_order, bb_order], 1).flatten()
        else:
            order = _cycled_permutation(torch.arange(len(x)), per_epoch * batch_size, gen)
        for b in range(0, per_epoch * batch_size, batch_size):
            j = order[b:b + batch_size]
            xb, tb, ib = x[j].to(device), target[j].to(device), in_box[j].to(device)
            if torch.rand(1, generator=gen).item() < 0.5:
                xb, tb, ib = xb.flip(-1), tb.flip(-1), ib.flip(-1)
            mu, s2 = net(xb)
            loss = method_loss(method, mu, s2, tb, ib, epoch, cfg, multiclass, mc_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % max(eval_every, 1) == 0 or epoch == epochs - 1:
            pred, _, _ = predict_labels(net, xv)
            meter = ConfusionMeter(n_cls).update(mv, pred)
            history["epoch"].append(epoch + 1)
            history["miou"].append(float(meter.iou[1]) if not multiclass else meter.miou)
            history["iou"].append([float(v) for v in meter.iou])
            shares = _class_shares(mv, n_cls, pred)
            history["pred_share"].append(shares)
            history["fg_share"].append(1.0 - shares[0])
        if xw is not None:
            labels, s2, _ = predict_labels(net, xw)
            history["watch"].append((labels.numpy().astype(np.uint8), s2.numpy()))
    return net, history


LR_SCHEDULES = ("cosine", "constant", "restart")


def lr_factor(step: int, steps: int, schedule: str = "cosine", restart: int = 0) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``steps``, as a fraction of the
    peak: 'cosine', 0.5 (1 + cos(pi step / steps)), one annealing over the whole training (with
    notebook 02's warm-up of 12 epochs of 16, bootstrapping runs at 15 % of the peak and below);
    'constant', 1; 'restart', a cosine over the first ``restart`` steps (the warm-up) and another,
    from the peak again, over the rest (a cosine when ``restart`` is 0 or ``steps``)."""
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "constant":
        return 1.0
    if schedule == "restart" and 0 < restart < steps:
        if step >= restart:
            step, steps = step - restart, steps - restart
        else:
            steps = restart
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))


def _lr_scheduler(opt, schedule: str, steps: int, restart: int):
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "cosine":  # torch's own: the numbers of the notebooks, bit for bit
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # quiet final epochs
    return torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, steps=steps, schedule=schedule,
                                                          restart=restart))


def _class_shares(mask: torch.Tensor, n_cls: int, pred: torch.Tensor | None = None) -> list:
    """The share of the pixels of known label (``mask`` != 255) that are of each class: in
    ``mask`` itself, or in the prediction ``pred`` on those pixels."""
    known = mask != IGNORE
    labels = (mask if pred is None else pred.to(mask.device))[known].long().clamp(0, n_cls - 1)
    counts = torch.bincount(labels, minlength=n_cls)[:n_cls].double()
    return [float(v) for v in counts / max(int(known.sum()), 1)]


COLLAPSE_FRACTION = 0.1
"""A run whose predictions call foreground on fewer than this fraction of the pixels the true masks
do is collapsed (:func:`collapsed`)."""


def collapsed(history: dict, at: int = -1, fraction: float = COLLAPSE_FRACTION) -> bool:
    """Whether a run of :func:`train_experiment` had collapsed to "no object anywhere" at its
    validation ``at`` (an index into ``history['epoch']``; default: the last): its predicted
    foreground share of the validation pixels (``history['fg_share']``, every object class
    together) is below ``fraction`` of the true one (``history['true_fg_share']``). With 0.1, a
    collapsed run's IoU is at most 0.1; IoU 0 with no pixel called foreground is the extreme case.
    A validation set without foreground never counts as collapsed. (Multi-class: a run that loses
    one class but keeps another is not collapsed; its per-class IoU shows it.)"""
    true = float(history["true_fg_share"])
    return bool(true > 0 and float(history["fg_share"][at]) < fraction * true)


def _labelled(arrays: dict, ignore_interiors: bool) -> np.ndarray:
    """The pixels a row's loss has a label for: not 255 and, when ``ignore_interiors``, not inside a
    box of a box-labelled image."""
    labelled = arrays["target"] != IGNORE
    return labelled & ~arrays["in_box"] if ignore_interiors else labelled


def labelled_object_share(arrays: dict, ignore_interiors: bool) -> float:
    """The share of object pixels (any class but background) among the pixels a row's loss has a
    label for, in a mixed set (:func:`mixed_supervision_arrays`): with box interiors ignored (the
    'ignore_box' row and the warm-up of 'ours') only the pixel-perfect images label objects while
    every image labels background, so the share falls far below the true one. The cause of the
    collapses of :func:`collapsed` (``tools/collapse_check.py``)."""
    labelled = _labelled(arrays, ignore_interiors)
    return float(((arrays["target"] > 0) & labelled).sum() / max(int(labelled.sum()), 1))


def batches_without_object(arrays: dict, batch_size: int, ignore_interiors: bool, draws: int = 2000,
                           seed: int = 0) -> float:
    """The share of random batches (``batch_size`` images drawn without replacement, ``draws``
    times, seeded) in which no pixel the loss has a label for is an object
    (:func:`labelled_object_share`): a batch that only ever says "background"."""
    labelled = _labelled(arrays, ignore_interiors)
    has = ((arrays["target"] > 0) & labelled).reshape(len(labelled), -1).any(1)
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(has), min(batch_size, len(has)), replace=False) for _ in range(draws)])
    return float((~has[picks].any(1)).mean())


def drop_collapsed(items, flags) -> tuple:
    """The ``items`` (one per run: scores, curves) of the runs whose ``flags`` (:func:`collapsed`)
    are False, and a note for the row of a table: '' when no run collapsed, ' (1 of 3 collapsed)'
    when some did (they are left out), ' (all 3 collapsed)' when all did (all are kept then, so
    that the row still shows what they reached)."""
    items, flags = list(items), [bool(f) for f in flags]
    if len(items) != len(flags):
        raise ValueError(f"{len(items)} runs but {len(flags)} collapse flags")
    n = sum(flags)
    if n == 0:
        return items, ""
    if n == len(items):
        return items, f" (all {n} collapsed)"
    return [x for x, f in zip(items, flags) if not f], f" ({n} of {len(items)} collapsed)"


def _cycled_permutation(items: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` items drawn as successive random permutations of ``items`` (each used once per pass)."""
    reps = (n + len(items) - 1) // max(len(items), 1)
    return torch.cat([items[torch.randperm(len(items), generator=gen)] for _ in range(reps)])[:n]


def uncertainty_auroc(sigma2, positive, negative) -> float:
    """How well sigma^2 ranks the pixels of ``positive`` (e.g. background inside boxes: the box label
    is wrong) above those of ``negative`` (object pixels inside boxes: the label is right): the area
    under the ROC curve (:func:`wsss_edu.metrics.auroc`). 1 = the uncertainty marks exactly the
    wrong labels; 0.5 = it knows nothing."""
    return auroc(sigma2, positive, negative)


def _experiment(kwargs):
    return train_experiment(**kwargs, progress=False)[1]


def experiment_key(job: dict) -> dict:
    """What decides a :func:`train_experiment` run's history, as a JSON-able cache key: its keyword
    arguments, each array by a digest of its content (dtype, shape, bytes), a config as its fields."""
    import dataclasses
    import hashlib

    def key(v):
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            head = f"{a.dtype.str}{a.shape}".encode()
            return "sha1:" + hashlib.sha1(head + a.tobytes()).hexdigest()[:16]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {"config": type(v).__name__} | key(dataclasses.asdict(v))
        if isinstance(v, dict):
            return {str(k): key(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [key(x) for x in v]
        return v

    return key(dict(job))


def _as_numpy(obj):
    """A stored history back as :func:`train_experiment` returned it: tensors as NumPy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _as_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_as_numpy(v) for v in obj]
    return obj


def run_experiments(jobs: list, processes: int = 1, desc: str = "experiments",
                    output_dir=None) -> list:
    """Run many :func:`train_experiment` calls (``jobs``: dicts of its keyword arguments) and return
    their histories, in order; ``processes`` > 1 runs them in worker processes
    (:func:`wsss_edu.parallel.map_jobs`: the threads split between them).
    ``output_dir``: keep each history in its artifact cache (``cache/experiments``, keyed by
    :func:`experiment_key`), so a rerun of the notebook trains only what is not there yet."""
    if output_dir is None:
        return map_jobs(_experiment, jobs, processes, desc)
    def stored(path):
        try:
            return _as_numpy(load_artifact(path)) if path.exists() else None
        except Exception:  # an interrupted or foreign file: train again
            return None

    keys = [experiment_key(j) for j in jobs]
    paths = [artifact_path(output_dir, "experiments", k) for k in keys]
    histories = [stored(p) for p in paths]
    todo = [i for i, h in enumerate(histories) if h is None]
    trained = map_jobs(_experiment, [jobs[i] for i in todo], processes, desc, done=len(jobs) - len(todo))
    for i, h in zip(todo, trained):
        save_artifact(paths[i], h, keys[i])
        histories[i] = _as_numpy(load_artifact(paths[i]))
    return histories
