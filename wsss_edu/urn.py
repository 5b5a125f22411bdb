"""URN (paper 002, Li et al., AAAI 2022): uncertainty from response scaling, used as loss weights
when a segmentation network is retrained on noisy pseudo-masks.

The pipeline (the paper's Fig. 3): a network trained on pseudo-masks predicts, over the training
images, the averaged softmax P (multi-scale + flip: :func:`wsss_edu.models.tta_probs`); then, per
image (:func:`urn_steps` runs them in order and keeps every intermediate result):

* :func:`crf_marginals` and :func:`cyclic_pseudo_mask`: CRF(P) and its argmax M_c, the new training
  target (PMM's cyclic pseudo-mask);
* :func:`present_classes` (eq. 5) keeps the channels of the classes present in a mask;
* :func:`scale_response` (eq. 6) raises one channel to a power, the others unchanged;
* :func:`scaled_masks` (eqs. 7-8) runs the dense CRF on every scaled map and takes the binary mask
  of the scaled class;
* :func:`scaling_variance` (eq. 9), :func:`uncertainty_map` (eq. 10): the variance over the factors,
  max over classes, min-max normalised per image → U;
* :func:`weight_to_uint8` (eq. 11): W = 1 - U as the byte stored in the PNG;
* :func:`loss_weight` (eqs. 11-12): Y = 1 where W >= t else t;

and the retraining loss :func:`weighted_cross_entropy` (eq. 13), with the probability-weight baseline
of Table 5 (:func:`probability_weight`). :func:`write_label_and_weight` /
:func:`read_label_and_weight` store W next to the cyclic mask in one PNG.
The pass over a whole training set (P, then these steps per image in worker processes, a
resumable folder) and notebook 06's profiles are :mod:`wsss_edu.steps.urn_step`.

Differences from the reference code (XMed-Lab/URN ``5e56e5e``, ``EncoderDecoder.aug_test``, the
uncertainty block). ``tests/test_reference_urn.py`` checks every step against that code's outputs
on two 48×64 three-class cases (CRF(P), cyclic mask, present classes, per-class variances, U, the
weight byte, the array written), and the same rule, written out in the test, on cases beyond
them (an absent channel, five classes). What differs, and the switch:

* **Normalisation** (eq. 10). Reference: ``(U - U.min()) / (U.max() - U.min() + 1e-6)``, float64.
  Package default: the same (:func:`uncertainty_map` ``eps=1e-6``, float64); ``eps=0`` is the plain
  min-max of the paper's Norm (an image whose U is constant then gets 0). The eps makes the most
  uncertain level 0.999996 rather than 1.
* **Weight to a byte.** Reference: ``((1 - u) * 255).astype(uint8)``, truncation. Package default:
  the same (:func:`weight_to_uint8` ``rounding='truncate'``); ``rounding='round'`` rounds to the
  nearest byte (the package's behaviour before; e.g. W = 0.375 gives 95 truncated, 96 rounded).
* **Which classes are present** (eq. 5). Reference: the classes of argmax(CRF(P)) with the CRF run
  over **all** channels, and that argmax is the cyclic mask. Package: :func:`urn_uncertainty` /
  :func:`urn_steps` default ``present_from='crf'``, the same; ``present_from='pseudo_mask'`` reads
  eq. (5) literally (the classes of the pseudo-mask M the network was trained on; the cyclic mask
  is then the argmax of the CRF over those channels only). :func:`~wsss_edu.steps.urn_step.uncertainty_pass` keeps
  ``present_from='pseudo_mask'`` as its default, the behaviour notebook 06's cached folders were
  computed with.
* **Which classes are scaled.** Reference: every present class, the background included.
  Package: :func:`urn_uncertainty` / :func:`urn_steps` default ``include_background=True``, the
  same; ``False`` scales only the foreground classes (eq. 9: "for each foreground category"; the
  background channel still enters every CRF). :func:`~wsss_edu.steps.urn_step.uncertainty_pass` keeps its default ``False``.
* **Storage.** Reference: ``cv2.imwrite`` of ``np.stack([label, weight, weight], 2)``, a 3-channel
  PNG, BGR order, so B = label and G = R = weight as PIL reads it (mode 'RGB'). Package default: a
  2-channel PNG, mode 'LA' (grey = label, alpha = weight); ``layout='RGB'`` of
  :func:`write_label_and_weight` / :func:`~wsss_edu.steps.urn_step.uncertainty_pass` writes the reference's file, and
  :func:`read_label_and_weight` reads both. The reference's array is int64 (numpy promotes the
  stack); the shared reference notes say, from memory and unchecked, that OpenCV casts it to
  int32 and saturates to uint8, so labels and weights 0-255 survive.
* **P** (the input). Reference: softmax averaged over scales 0.5-1.75, each with its h-flip
  (:data:`~wsss_edu.steps.urn_step.URN_TTA_SCALES`, the default of :func:`~wsss_edu.steps.urn_step.uncertainty_pass`'s ``scales``); not checked
  against the reference here (the golden files start from P).
* **Eq. (9)'s variance.** Reference: ``np.var`` (population, 1/N); the paper writes 1/(N-1).
  Package default: 1/N (:func:`scaling_variance` ``ddof=0``); U does not depend on it after Norm
  except through the eps.
* **Eq. (12)'s threshold** (downstream, not in the golden files). The shared reference notes say
  the reference's loss sets w = 0.05 where ``w <= 0.05``; :func:`loss_weight` follows the
  equation, Y = t where W < t. They differ only where W equals t exactly, which a stored byte
  b/255 never does for t = 0.05 (0.05 · 255 is not an integer). No switch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .crf import crf_on_scores_rescaled
from .errors import DataFileError, ParameterError, check_choice
from .io import atomic_path

VOC_FACTORS = (0.15, 0.2, 0.25, 4.0, 5.0, 6.0)  # the paper's S for PASCAL VOC
COCO_FACTORS = (0.4, 0.5, 0.6, 2.0, 3.0, 4.0)  # and for MS COCO
T_DEFAULT = 0.05  # eq. (12)'s t, Table 3's best
FACTOR_SETS = {"voc": VOC_FACTORS, "coco": COCO_FACTORS}


def factors_named(factors) -> tuple:
    """The scale factors S of eq. (7): 'voc' or 'coco' (the paper's sets), or a list of positive
    numbers, as a tuple of floats."""
    if isinstance(factors, str):
        check_choice("FACTORS", factors, FACTOR_SETS)
        return FACTOR_SETS[factors]
    out = tuple(float(f) for f in factors)
    if not out or min(out) <= 0:
        raise ParameterError(
            f"FACTORS={factors!r}: give 'voc', 'coco' or a list of positive numbers "
            "(< 1 widens a class's response, > 1 narrows it)"
        )
    return out


def check_pseudo_mask_folder(folder, dataset) -> Path:
    """``folder`` as a Path, after checking it holds a PNG pseudo-mask ``<name>.png`` for every
    image of ``dataset``; the error names the first missing file and how many are missing."""
    folder = Path(folder)
    missing = [n for n in dataset.names if not (folder / f"{n}.png").exists()]
    if missing:
        raise DataFileError(
            f"{folder} lacks the pseudo-mask of {len(missing)} of {len(dataset)} "
            f"training images (first: {missing[0]}.png); point PSEUDO_LABELS at a "
            "folder with one grey PNG per image (class index per pixel, 255 = "
            "ignore), e.g. notebook 04's, or use PSEUDO_LABELS='irnet'"
        )
    return folder


PRESENT_FROM = ("crf", "pseudo_mask")  # where urn_steps takes the present classes (eq. 5) from
NORM_EPS = 1e-6  # the reference's + 1e-6 in eq. (10)'s min-max
ROUNDINGS = ("truncate", "round")  # W → byte: the reference's astype(uint8), or nearest
LAYOUTS = ("LA", "RGB")  # the package's 2-channel PNG, or the reference's 3-channel one


def present_classes(
    mask: np.ndarray, include_background: bool = True, ignore_index: int = 255
) -> np.ndarray:
    """Eq. (5): the classes that appear in ``mask`` (H, W), sorted (int64); only their channels of
    the prediction enter the scaling CRFs. The paper takes them from the pseudo-mask M; the
    reference takes ``list(set(...))`` of the cyclic mask argmax(CRF(P)) (sorted, background
    included): pass that mask for the reference's reading (:func:`urn_steps` does, with
    ``present_from='crf'``). ``include_background=False`` drops class 0 (eq. 9 scales "each
    foreground category"); ``ignore_index`` is never a class."""
    classes = np.unique(np.asarray(mask)).astype(np.int64)
    classes = classes[classes != ignore_index]
    return classes if include_background else classes[classes != 0]


def scale_response(probs, channel: int, factor: float):
    """Eq. (6): ``probs`` (C, H, W) with channel ``channel`` raised to the power ``factor`` and the
    other channels unchanged (no renormalisation; the reference does the same on a copy of the
    present channels). A factor < 1 widens that class's response (fewer missed pixels), > 1 narrows
    it (fewer false positives). numpy or torch in, the same out."""
    out = probs.copy() if isinstance(probs, np.ndarray) else probs.clone()
    out[channel] = probs[channel] ** factor
    return out


def scaled_masks(
    image: np.ndarray,
    probs: np.ndarray,
    channels,
    factors=VOC_FACTORS,
    crf_params="urn",
    crf_scale: float = 1.0,
) -> np.ndarray:
    """Eqs. (7-8): for each channel c in ``channels`` (indices into ``probs``, (C', H, W)) and each
    factor n, the binary mask argmax(CRF(scale_response(probs, c, n))) == c, as a bool array
    (len(channels), len(factors), H, W). The reference does this with ``probs`` = the present
    channels of P and c an index into them. ``image``: (H, W, 3) uint8; ``crf_params``: a
    :data:`wsss_edu.crf.PRESETS` name or :class:`wsss_edu.crf.CRFParams`. ``crf_params=None``
    skips the CRF (argmax of the scaled map itself: for tests and the figure that shows why the
    CRF matters). ``crf_scale`` < 1 runs each CRF on a coarser grid
    (:func:`wsss_edu.crf.crf_on_scores_rescaled`; the reference: 1)."""
    probs = np.asarray(probs, np.float32)
    out = np.zeros((len(channels), len(factors)) + probs.shape[1:], bool)
    for i, c in enumerate(channels):
        for j, f in enumerate(factors):
            scaled = scale_response(probs, int(c), f)
            if crf_params is not None:
                scaled = crf_on_scores_rescaled(image, scaled, crf_params, crf_scale)
            out[i, j] = scaled.argmax(0) == int(c)
    return out


def scaling_variance(masks, ddof: int = 0) -> np.ndarray:
    """Eq. (9): the variance of the binary masks over the scale factors (axis 1 of
    (classes, factors, H, W)) → (classes, H, W) float64. The paper writes 1/(N-1) (``ddof=1``);
    the default is the population variance the reference computes (``np.var``: with N binary masks
    of which k are on, k(N-k)/N²). Eq. (10)'s min-max removes the constant factor (up to its eps),
    so U hardly depends on it."""
    return np.asarray(masks, np.float64).var(axis=1, ddof=ddof)


def uncertainty_map(variance: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Eq. (10): U = Norm(max over classes of ``variance`` (classes, H, W)), (H, W) float64, with
    the reference's min-max ``(U - U.min()) / (U.max() - U.min() + eps)``, eps = 1e-6 (the most
    uncertain level comes out 0.999996, not 1). ``eps=0`` is the plain min-max of the paper's Norm
    (the package's behaviour before), with U = 0 where the image's variance is constant; with
    eps > 0 a constant image gives 0 by itself. Kept in float64: the byte of :func:`weight_to_uint8`
    truncates, and float32 could move a value across an integer."""
    u = np.asarray(variance, np.float64).max(axis=0)
    lo, hi = u.min(), u.max()
    if eps == 0:
        return (u - lo) / (hi - lo) if hi > lo else np.zeros_like(u)
    return (u - lo) / (hi - lo + eps)


def loss_weight(uncertainty, t: float = T_DEFAULT, split: float | None = None):
    """Eqs. (11-12): W = 1 - U, and the final weight Y = 1 where W >= t, else t. With t = 1 every
    pixel weighs 1 (plain cross-entropy). Read literally, t = 0 gives Y = 1 everywhere too (every
    W >= 0), although the paper's Table 3 describes its t = 0 row as "dropping all the uncertain
    pixels". ``split`` separates the two roles of t: Y = 1 where W >= ``split``, else t (default
    ``split = t``, the equation); ``t=0, split=0.05`` drops exactly the pixels t = 0.05 down-weights,
    the reading of Table 3's last row. numpy or torch in, the same out."""
    w = 1 - uncertainty
    split = t if split is None else split
    if isinstance(w, torch.Tensor):
        return torch.where(w >= split, torch.ones_like(w), torch.full_like(w, t))
    return np.where(w >= split, 1.0, t).astype(np.float32)


def crf_marginals(
    image: np.ndarray, probs: np.ndarray, channels=None, crf_params="urn", crf_scale: float = 1.0
) -> np.ndarray:
    """The dense CRF on the unscaled P: CRF(P[channels]) (C', H, W) float32 (all channels when
    ``channels`` is None, as the reference's first CRF; ``crf_params=None``: P[channels] itself;
    ``crf_scale`` as in :func:`scaled_masks`). Its argmax is the cyclic pseudo-mask
    (:func:`cyclic_pseudo_mask`)."""
    probs = np.asarray(probs, np.float32)
    sub = probs if channels is None else probs[np.asarray(channels)]
    return (
        crf_on_scores_rescaled(image, sub, crf_params, crf_scale) if crf_params is not None else sub
    )


def cyclic_pseudo_mask(
    image: np.ndarray, probs: np.ndarray, channels=None, crf_params="urn", crf_scale: float = 1.0
):
    """The cyclic pseudo-mask M_c = argmax(CRF(P)) (PMM; the paper's retraining target), over the
    ``channels`` of P (all when None, the reference's), as class indices (H, W) uint8."""
    channels = np.arange(len(probs)) if channels is None else np.asarray(channels)
    return channels[crf_marginals(image, probs, channels, crf_params, crf_scale).argmax(0)].astype(
        np.uint8
    )


class URNSteps:
    """Every intermediate result of :func:`urn_steps` for one image (attributes):

    * ``marginals`` (C', H, W) float32: CRF(P) over the channels the cyclic mask is taken from
      (all channels with ``present_from='crf'``, the present ones with 'pseudo_mask'; None when
      the pseudo-mask is empty); the reference's ``crf_Q`` with 'crf';
    * ``cyclic`` (H, W) uint8: the cyclic pseudo-mask (255 everywhere when nothing is present);
    * ``classes`` int64: the present classes (eq. 5), the reference's ``labels`` with 'crf';
    * ``scaled`` int64: the classes whose channel was scaled (all of ``classes``, or their
      foreground ones with ``include_background=False``);
    * ``variance`` (len(scaled), H, W) float64: eq. (9) per scaled class, the reference's ``u_c``;
    * ``u`` (H, W) float64: eq. (10), the reference's ``u``;
    * ``weight`` (H, W) uint8: W = 1 - U as stored (:func:`weight_to_uint8`), the reference's
      ``weight``."""

    def __init__(self, marginals, cyclic, classes, scaled, variance, u, weight):
        self.marginals, self.cyclic, self.classes, self.scaled = marginals, cyclic, classes, scaled
        self.variance, self.u, self.weight = variance, u, weight

    def __repr__(self):
        return (
            f"URNSteps(classes={self.classes.tolist()}, scaled={self.scaled.tolist()}, "
            f"shape={self.cyclic.shape})"
        )


def urn_steps(
    image: np.ndarray,
    probs: np.ndarray,
    pseudo_mask: np.ndarray | None = None,
    factors=VOC_FACTORS,
    crf_params="urn",
    include_background: bool = True,
    present_from: str = "crf",
    eps: float = NORM_EPS,
    rounding: str = "truncate",
    crf_scale: float = 1.0,
) -> URNSteps:
    """Eqs. (5-11) for one image, every step kept (:class:`URNSteps`). ``probs``: the averaged
    softmax P (C, H, W) over all classes, background at 0.

    ``present_from='crf'`` (default, the reference): the cyclic mask is argmax(CRF(P)) over all
    channels and the present classes are its classes (``pseudo_mask`` is not used and may be
    None). ``'pseudo_mask'`` (eq. 5 as written): the classes of ``pseudo_mask`` (255 = ignore),
    and the cyclic mask the argmax of the CRF over their channels; an empty pseudo-mask gives
    cyclic = 255 and U = 0. Then, for each scaled class (all present ones with
    ``include_background=True``, the reference; only the foreground ones with False) and factor,
    the masks of eqs. (6-8) on the present channels, the variance (eq. 9), U (eq. 10, ``eps``) and
    the stored byte of W (``rounding``). Cost: 1 CRF + len(factors) per scaled class;
    ``crf_scale`` < 1 runs them on a coarser grid (:func:`scaled_masks`; the reference: 1)."""
    check_choice("present_from", present_from, PRESENT_FROM)
    check_choice("rounding", rounding, ROUNDINGS)
    probs = np.asarray(probs, np.float32)
    shape = probs.shape[1:]
    if present_from == "crf":
        marginals = crf_marginals(image, probs, None, crf_params, crf_scale)
        cyclic = marginals.argmax(0).astype(np.uint8)
        classes = present_classes(cyclic)
    else:
        if pseudo_mask is None:
            raise ValueError("present_from='pseudo_mask' needs the pseudo_mask")
        classes = present_classes(pseudo_mask)
        if len(classes) == 0:  # nothing labelled: nothing to learn from this image either way
            empty = np.zeros((0,) + shape)
            return URNSteps(
                None,
                np.full(shape, 255, np.uint8),
                classes,
                classes,
                empty,
                np.zeros(shape),
                np.full(shape, 255, np.uint8),
            )
        marginals = crf_marginals(image, probs, classes, crf_params, crf_scale)
        cyclic = classes[marginals.argmax(0)].astype(np.uint8)
    scaled = classes if include_background else classes[classes != 0]
    idx = [int(np.flatnonzero(classes == c)[0]) for c in scaled]
    masks = scaled_masks(image, probs[classes], idx, factors, crf_params, crf_scale)
    variance = scaling_variance(masks)
    u = uncertainty_map(variance, eps) if len(scaled) else np.zeros(shape)
    return URNSteps(
        marginals, cyclic, classes, scaled, variance, u, weight_to_uint8(1 - u, rounding)
    )


def urn_uncertainty(
    image: np.ndarray,
    probs: np.ndarray,
    pseudo_mask: np.ndarray | None = None,
    factors=VOC_FACTORS,
    crf_params="urn",
    include_background: bool = True,
    present_from: str = "crf",
    eps: float = NORM_EPS,
    crf_scale: float = 1.0,
):
    """Eqs. (5-10) for one image: the cyclic pseudo-mask (H, W) uint8 and U (H, W) float64
    (:func:`urn_steps`, whose docstring explains the options; the defaults follow the reference:
    present classes from argmax(CRF(P)), the background scaled too, eps = 1e-6). ``probs``: the
    averaged softmax P (C, H, W) of the network trained on ``pseudo_mask``."""
    s = urn_steps(
        image,
        probs,
        pseudo_mask,
        factors,
        crf_params,
        include_background,
        present_from,
        eps,
        crf_scale=crf_scale,
    )
    return s.cyclic, s.u


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Eq. (13): per-pixel cross-entropy times the weight Y, averaged over **all** pixels, the
    ignored ones included (they add 0), as the reference code does: with many ignored pixels the
    loss is smaller than the mean over labelled pixels. ``logits`` (N, C, H, W), ``target`` (N, H, W),
    ``weight`` (N, H, W)."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return (ce * weight.to(ce.dtype)).mean()


TABLE_LOSS = "weighted"  # the one loss of every row of Tables 3 and 5 (pseudo.LOSSES)


def table_rows(t_grid, t: float, urn_folder, probability_folder) -> dict:
    """The retraining rows of paper 002's Tables 5 and 3: {row name: (loss, t, split, folder)} for
    :class:`~wsss_edu.steps.urn_step.URNLabeled` and :class:`wsss_edu.steps.segmenter_step.SegmenterConfig`. Every row is the same loss
    with the same reduction (:func:`weighted_cross_entropy`, :data:`TABLE_LOSS`): 'plain' is Y = 1
    (t = 1), Table 3's baseline; 'probability' reads the weight stored in ``probability_folder``;
    't = x' uses eq. (12) (``t = 0``: the pixels ``t`` down-weights dropped, :func:`loss_weight`'s
    ``split``); ``probability_folder=None`` leaves the probability row out. A plain row trained with the mean over labelled pixels instead would differ from
    the others by the batch's labelled fraction wherever crops are padded with 255."""
    rows = {"plain": (TABLE_LOSS, 1.0, None, urn_folder)}
    if probability_folder is not None:  # None: no probability row
        rows["probability"] = (TABLE_LOSS, None, None, probability_folder)
    rows |= {
        f"t = {x:g}": (TABLE_LOSS, x, t if x == 0 else None, urn_folder) for x in t_grid if x != 1
    }
    return rows


def probability_weight(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Table 5's baseline weight read as the softmax of the network being trained: its own
    probability of the target class, detached (no gradient flows through the weight); 0 on
    ignored pixels. (N, H, W). The other reading, F_S's probability of the label (the network
    that gives U), is :func:`label_probability`."""
    p = logits.detach().float().softmax(1)
    t = target.clone()
    t[t == ignore_index] = 0
    w = p.gather(1, t[:, None].long())[:, 0]
    return torch.where(target == ignore_index, torch.zeros_like(w), w)


def label_probability(probs: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """P's probability of each pixel's label, (H, W) float32 from ``probs`` (C, H, W) and ``label``
    (H, W); 0 where the label is ignored. Table 5's weight read as the softmax of F_S's
    prediction (the network whose P gives U), detached by construction."""
    probs = np.asarray(probs, np.float32)
    lab = np.where(label == ignore_index, 0, label).astype(np.int64)
    p = np.take_along_axis(probs, lab[None], 0)[0]
    return np.where(label == ignore_index, 0, p).astype(np.float32)


def weight_to_uint8(w: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """W in [0, 1] (clipped) as the uint8 stored in the PNG: ``rounding='truncate'`` (default)
    int(255·W), the reference's ``((1 - u) * 255).astype(uint8)``; ``'round'`` round(255·W), the
    package's behaviour before (e.g. W = 0.375: 95 truncated, 96 rounded). A stored byte b read
    back as b/255 (float32 or float64) gives b again either way."""
    check_choice("rounding", rounding, ROUNDINGS)
    x = np.clip(np.asarray(w, np.float64), 0, 1) * 255
    return (np.round(x) if rounding == "round" else np.floor(x)).astype(np.uint8)


def label_weight_array(label: np.ndarray, weight: np.ndarray, layout: str = "LA") -> np.ndarray:
    """The pixel array of the label + weight PNG from ``label`` (H, W) and the stored ``weight``
    byte (H, W) (:func:`weight_to_uint8`), uint8, in PIL's channel order: ``layout='LA'`` (H, W, 2)
    [label, weight], the package's file; ``'RGB'`` (H, W, 3) [weight, weight, label], the
    reference's file (it hands [label, weight, weight] to ``cv2.imwrite``, which reads the channels
    as BGR). Labels must be 0-255."""
    check_choice("layout", layout, LAYOUTS)
    label, weight = np.asarray(label), np.asarray(weight)
    if label.shape != weight.shape:
        raise ValueError(f"label {label.shape} and weight {weight.shape} differ in size")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(
            f"labels must lie in 0..255 to be stored; got {label.min()}..{label.max()}"
        )
    label, weight = label.astype(np.uint8), weight.astype(np.uint8)
    channels = [label, weight] if layout == "LA" else [weight, weight, label]
    return np.ascontiguousarray(np.stack(channels, -1))


def write_label_and_weight(
    path, label: np.ndarray, w: np.ndarray, rounding: str = "truncate", layout: str = "LA"
) -> None:
    """One PNG holding the cyclic pseudo-mask and W = 1 - U (:func:`weight_to_uint8` with
    ``rounding``), written atomically (a half-written file never looks done). ``layout``
    (:func:`label_weight_array`): 'LA' (default) grey = label, alpha = W; 'RGB' the reference's
    3-channel file, B = label, G = R = W. W rather than Y is stored, so any t can be applied when
    reading (:func:`read_label_and_weight` reads both layouts)."""
    from PIL import Image

    label = np.asarray(label)
    if label.shape != np.shape(w):
        raise ValueError(f"label {label.shape} and weight {np.shape(w)} differ in size")
    im = Image.fromarray(label_weight_array(label, weight_to_uint8(w, rounding), layout))
    assert im.mode == layout, im.mode  # PIL infers 'LA' from 2 uint8 channels, 'RGB' from 3
    with atomic_path(path) as tmp:  # a name of its own: shards may overlap
        im.save(tmp, format="PNG")


def read_label_and_weight(path):
    """The (label uint8 (H, W), W float32 (H, W) in [0, 1]) of a label + weight PNG, exactly the
    stored bytes (PNG is lossless; W = byte / 255). Two layouts: the package's (mode 'LA': grey =
    label, alpha = W, :func:`write_label_and_weight`) and the reference's (mode 'RGB': B = label,
    G = R = W, as ``cv2.imwrite`` of [label, weight, weight] leaves it). An RGB file whose R and G
    differ, or any other mode, is refused."""
    from PIL import Image

    layouts = (
        "expected a label + weight PNG: mode 'LA' (grey = label, alpha = weight, what "
        "wsss_edu.urn writes) or the reference's mode 'RGB' (B = label, G = R = weight)"
    )
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in LAYOUTS:
                raise DataFileError(
                    f"{path} has mode {mode}; {layouts}. Run the uncertainty pass "
                    "(wsss_edu.steps.urn_step.uncertainty_pass) to write one"
                )
            arr = np.asarray(im)
    except OSError as e:
        raise DataFileError(
            f"cannot read {path}: {e}. Remove it and run the uncertainty pass again "
            "(it resumes, rewriting only missing files)."
        ) from e
    if mode == "LA":
        return np.ascontiguousarray(arr[..., 0]), arr[..., 1].astype(np.float32) / 255
    if not np.array_equal(arr[..., 0], arr[..., 1]):
        raise DataFileError(
            f"{path} is an RGB PNG whose R and G channels differ "
            f"({int((arr[..., 0] != arr[..., 1]).sum())} pixels), so it is not a "
            f"label + weight file; {layouts}"
        )
    return np.ascontiguousarray(arr[..., 2]), arr[..., 0].astype(np.float32) / 255
