"""RRM (paper 003, Zhang et al., AAAI 2020): reliable region mining and the dense energy loss.

Reliable regions (the paper's eqs. 2-7), from a classifier's CAMs, per image, under two rules
(:func:`reliable_region_labels`'s ``rule``):

* eqs. 2-3: :func:`wsss_edu.cam.multiscale_cam` (the sum over scales, the average up to a constant
  that eq. 3 removes) and :func:`wsss_edu.cam.normalize_cams` (each class by its max);
* ``rule='reference'`` (the default): the original code's ``tool/myTool.py::compute_seg_label``
  (zbf1991/RRM), reproduced exactly (in numpy float32, as it computes): the two CRFs
  (:func:`reference_crf_marginals`), their label (:func:`reference_crf_label`), the CAM argmax
  map (:func:`reference_cam_argmax`), the CAM-sure region (:func:`reference_class_sure_region`,
  :func:`reference_cam_sure_region`), the CRF-sure region (:func:`reference_crf_sure_region`),
  all in :func:`reference_reliable_labels`;
* ``rule='paper'``: the literal reading of eqs. 4-7: :func:`background_probability` (eq. 4) and
  :func:`cam_probabilities` ([P_bg, P_fg]); :func:`crf_label` (eq. 5), or two CRFs
  (:func:`two_crf_label`); :func:`top_fraction_labels` (eq. 6: alpha chosen per class so that a
  fraction of its pixels is kept); :func:`reliable_labels` (eq. 7: keep a label only where the
  CAM and the CRF agree).

Differences from the reference code (what it does; what this package does by default; the
argument that switches it):

1. *Which pixels keep a label.* Reference: the label comes from the CRFs alone, and a pixel keeps
   it if it is CAM-sure for *some* class (not necessarily its own) and CRF-sure; the CAM label and
   the CRF label never have to agree. Eq. 7 instead keeps only pixels where the two labels agree.
   Default: the reference (``rule='reference'``), because it is the code the authors released
   with the paper, the one its users run and reproduce; ``rule='paper'`` gives eq. 7.
2. *The CAM side's cut.* Reference: per class, the values > 0.1 inside its argmax region, sorted,
   ``thr = sorted[int(0.6 n)]``, sure = CAM > thr (strict: the value at the cut and its ties are
   dropped, about the top 40 %); the comparisons are float32 (``> 0.1`` means ``> float32(0.1)``).
   Eq. 6 / ``rule='paper'``: the top ``round(0.4 n)`` values, ties with alpha kept (>=). Both
   rules read ``fraction`` (the reference's position is ``int(n · (1 - fraction))``, which for 0.4
   is bit for bit the reference's ``int(n · 0.6)``: ``1 - 0.4 == 0.6`` in float64).
3. *The background on the CAM side.* Reference: sure = (1 - max cam)^32 > 0.8 inside the
   background's argmax region, not a fraction. ``rule='paper'``: the same top-fraction rule as the
   classes, on (1 - max cam)^gamma.
4. *gamma on the CAM side.* Reference: the argmax regions come from [(1 - max cam)^32, cams], for
   every class. ``rule='paper'``: ``gamma`` (4). Under ``rule='reference'`` the CAM side takes the
   second (weak-background) CRF's gamma, ``two_crf[1]`` (default 32).
5. *The CRF label.* Reference: two CRFs, on [(1 - max cam)^4, cams] and [(1 - max cam)^32, cams]
   of the image's classes only; label = the gamma-4 CRF's foreground argmax, 255 where that is
   background, then 0 wherever the gamma-32 CRF's argmax is background (so the gamma-32
   background wins over a gamma-4 foreground). ``rule='paper'``: one CRF at ``gamma`` (eq. 5), or
   with ``two_crf=(4, 32)`` :func:`two_crf_label`, whose gamma-4 foreground wins instead. Under
   ``rule='reference'`` the two gammas are ``two_crf``, else (``gamma``, 32): the defaults are the
   reference's 4 and 32.
6. *The CRF-confidence filter.* Reference: a pixel is dropped unless the largest of [gamma-32
   background marginal, gamma-4 foreground marginals] is >= 0.8. ``rule='paper'``: no such filter.
7. *Which classes contribute CAM-sure pixels.* Reference: only the classes (background included)
   that win somewhere in the gamma-4 CRF's argmax. A foreground class that wins there but has no
   CAM value > 0.1 inside its CAM argmax region makes the reference crash (IndexError on an empty
   sort); here it contributes no sure pixel (its CRF pixels are then kept only where another
   class makes them CAM-sure). An image without tags crashes the reference too (the max of an
   empty stack); here it is all background, under both rules.
8. *The CAMs themselves.* Reference: the ReLU'd CAMs of the training step's own forward pass on
   the crop plus three no-grad passes at scales 0.5, 1.5, 2, averaged at the feature map's size,
   no flip, upsampled, times the tags, divided by (max + 1e-5). Here: :func:`rrm_loss` computes
   them with :func:`wsss_edu.cam.multiscale_cam` at ``cam_scales`` with flips, in eval mode, each
   scale upsampled to the image before summing, then :func:`wsss_edu.cam.normalize_cams` (clamp at
   0, times the tags, divided by max + 1e-5). Not switchable beyond ``cam_scales``
   (:class:`~wsss_edu.steps.rrm_step.RRMConfig`); the reliable-region functions take whatever CAMs they are given.
9. *Tags.* Reference: ``cam_label.astype(np.uint8)``, so a soft tag below 1 is dropped; here any
   tag > 0 counts (:func:`batch_reliable_labels`).

The dense energy loss (eqs. 10-14): :func:`gaussian_kernel` (eq. 11), :func:`soft_filter`
(eq. 14) and :func:`dense_energy_loss` (eqs. 12-13), exact and chunked so memory stays bounded;
:func:`reference_energy_weight` converts the reference code's weight.

The network (Fig. 1, Algorithm 1): :class:`RRMNet` (shared backbone, classification and
segmentation branches), :func:`rrm_loss` (one step: labels from the current CAMs, then
L_cls + L_ce + L_energy), :class:`SegmentationBranch` (the network seen as a plain segmenter).
Training it (started from step 1's classifier, cached, several in worker processes), the
two-step variant's pseudo-labels and notebook 07's profiles: :mod:`wsss_edu.steps.rrm_step`.

Datasets without a background class (``has_background`` False,
:class:`~wsss_edu.steps.rrm_step.RRMConfig` and
:attr:`wsss_edu.datasets.SegDataset.has_background`; MSRC, where grass, sky and road are classes).
The paper and its code assume VOC's background; here one flag decides, in one place per function:

* :func:`cam_probabilities`: the normalised CAMs alone, label c = class c (no eq. 4, no + 1 shift;
  :func:`present_labels` gives an image's label values under either convention);
* the reliable regions (:func:`reliable_region_labels`, :func:`batch_reliable_labels`):
  :func:`reliable_labels_without_background` — the CAM side keeps the top ``fraction`` of each
  tagged class's argmax region (:func:`cam_labels_without_background`, eq. 6 with no background
  term), the CRF side is one CRF over the tagged classes' CAMs
  (:func:`crf_marginals_without_background`, :func:`crf_labels_without_background`, with the
  reference's CRF-sure filter under ``rule='reference'``), and a pixel keeps its label where the
  two agree (eq. 7); ``gamma`` and ``two_crf`` have no role (they only shape P_bg);
* :class:`RRMNet`: the segmentation branch predicts K classes (K + 1 with a background);
  :meth:`RRMNet.mask_logits` / :class:`SegmentationBranch` give the dataset's mask convention
  (class c = c + 1) for evaluation;
* eq. (9): :func:`labelled_cross_entropy` (one mean over the reliable pixels) instead of
  :func:`split_cross_entropy`, whose split needs a background;
* :func:`~wsss_edu.steps.rrm_step.write_pseudo_labels`: restricted to the image's tags only, written as c + 1 (the masks').

The network may be step 1's ImageNet MobileNetV2 (:func:`~wsss_edu.steps.rrm_step.rrm_config` takes the classifier's
backbone, its frozen blocks and its frozen batch norms; the segmentation branch reads the shared
stride-16 features).
"""

from __future__ import annotations

import numpy as np
import torch

from . import distributed
from .cam import CAMClassifier, multiscale_cam, normalize_cams
from .crf import crf_on_scores
from .data import tensor_to_images
from .errors import ParameterError, check_choice
from .labels import IGNORE

RULES = ("reference", "paper")


def background_probability(p_fg: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Eq. (4): P_bg = (1 - max_c P_fg^c)^gamma, from the normalised CAMs ``p_fg`` (N, K, H, W)
    → (N, 1, H, W). gamma > 1 shrinks the background score, so only pixels far from every class
    stay background (AffinityNet's convention, which the reference code follows; the paper's
    typeset eq. 4 places the exponent ambiguously). ``rule='paper'``'s version (torch; the max is
    clamped to [0, 1]); ``rule='reference'`` computes the same formula in numpy float32 with the
    reference's two gammas (:func:`reference_crf_marginals`, :func:`reference_cam_argmax`)."""
    return (1 - p_fg.amax(1, keepdim=True).clamp(0, 1)) ** gamma


def cam_probabilities(
    p_fg: torch.Tensor, gamma: float = 4.0, has_background: bool = True
) -> torch.Tensor:
    """[P_bg, P_fg] (N, 1 + K, H, W): eq. (4)'s background in front of the normalised CAMs (eq. 3),
    channel 0 = background, c + 1 = class c (the label convention of the whole package).
    ``has_background=False`` (a dataset whose every pixel is one of its classes, e.g. MSRC): no
    P_bg — eq. (4) scores "none of the classes", which such a dataset does not have — so the
    probabilities are the normalised CAMs themselves, (N, K, H, W), channel c = class c (``gamma``
    unused)."""
    if not has_background:
        return p_fg
    return torch.cat([background_probability(p_fg, gamma), p_fg], 1)


def present_labels(classes, has_background: bool = True) -> list:
    """The label values (channels of :func:`cam_probabilities`) an image with the tags ``classes``
    (0-based class indices) may take: the background and its classes, [0, c + 1, ...]; without a
    background, its classes alone, [c, ...] (no + 1 shift)."""
    if not has_background:
        return [int(c) for c in classes]
    return [0] + [int(c) + 1 for c in classes]


def labels_to_mask(labels, has_background: bool = True):
    """A label map of this module (numpy array or tensor; 255 unlabelled) in the dataset's mask
    convention, to compare with its masks or draw beside them: itself with a background (0
    background, c + 1 class c); without one (labels c = class c) shifted to c + 1, 255 kept."""
    if has_background:
        return labels
    if isinstance(labels, torch.Tensor):
        return torch.where(labels == IGNORE, labels, labels + 1)
    labels = np.asarray(labels)
    return np.where(labels == IGNORE, labels, labels + 1).astype(labels.dtype)


# ------------------------------------------------------------------------------------------------
# rule='paper': the literal reading of eqs. 4-7
# ------------------------------------------------------------------------------------------------


def top_fraction_labels(
    probs: torch.Tensor, present, fraction: float = 0.4, min_score: float = 0.1
) -> torch.Tensor:
    """Eq. (6) with the paper's choice of alpha "such that 40 % of the pixels are labelled", per
    class: each pixel takes the argmax over the ``present`` channels of ``probs`` (1 + K, H, W)
    (background included); within each class's argmax region, only the ``fraction`` of its pixels
    above ``min_score`` with the highest score keep the label, the rest become 255: alpha is the
    class's score at rank ``round(fraction · n)``, and pixels tied with it are kept too (a flat
    background, P_bg = 1 wherever no CAM fires, is kept whole). Returns (H, W) int64.

    ``rule='paper'``'s CAM label: the same rule for every class, background included, as eq. (6)
    reads. The reference code (:func:`reference_cam_sure_region`) differs: its argmax regions use
    P_bg at gamma 32 whatever ``probs`` used; its cut for a class is strict, ``score >
    sorted[int(0.6 n)]`` (the value at the cut and its ties are dropped); its background keeps
    P_bg(gamma 32) > 0.8 instead of a fraction; it only looks at the classes that win in its
    gamma-4 CRF; and it compares in float32."""
    present = torch.as_tensor(list(present), dtype=torch.long, device=probs.device)
    sub = probs[present]
    score, idx = sub.max(0)
    label = present[idx]
    out = torch.full_like(label, IGNORE)
    for c in present.tolist():
        region = (label == c) & (score > min_score)
        n = int(region.sum())
        keep = int(round(fraction * n))
        if keep == 0:
            continue
        alpha = score[region].topk(keep).values[-1]  # the class's own alpha
        out[region & (score >= alpha)] = c
    return out


def crf_label(
    image: np.ndarray, probs: torch.Tensor, present, crf_params="rrm_train"
) -> torch.Tensor:
    """Eq. (5): the dense CRF's label map for [P_bg, P_fg] over the ``present`` channels (the
    image's classes and the background; the paper and the reference use AffinityNet's CRF settings,
    the ``'rrm_train'`` preset). ``image`` (H, W, 3) uint8, ``probs`` (1 + K, H, W). Returns (H, W)
    int64 class indices on ``probs``' device. ``rule='paper'``'s CRF label (one CRF, at the CAM
    side's gamma); the reference runs two (:func:`reference_crf_label`)."""
    present = np.asarray(list(present))
    q = crf_on_scores(
        image, np.ascontiguousarray(probs[present].cpu().numpy(), np.float32), crf_params
    )
    return torch.as_tensor(present[q.argmax(0)], dtype=torch.long, device=probs.device)


def two_crf_label(
    image: np.ndarray, p_fg: torch.Tensor, present, gammas=(4.0, 32.0), crf_params="rrm_train"
) -> torch.Tensor:
    """``rule='paper'`` with ``two_crf``: eq. (5) run twice, as the reference does, one CRF with a
    strong background (gamma ``gammas[0]``) whose foreground labels are kept as confident
    foreground, one with a weak background (``gammas[1]``) whose background labels are kept as
    confident background; pixels neither keeps are 255. ``p_fg`` (K, H, W) normalised CAMs of one
    image. Not the reference's combination: where the two disagree (gamma-4 foreground, gamma-32
    background) this keeps the foreground, the reference the background
    (:func:`reference_crf_label`); and this label then goes through eq. (7)'s agreement test, not
    the reference's CAM-sure / CRF-sure filters."""
    strong = crf_label(image, cam_probabilities(p_fg[None], gammas[0])[0], present, crf_params)
    weak = crf_label(image, cam_probabilities(p_fg[None], gammas[1])[0], present, crf_params)
    out = torch.full_like(strong, IGNORE)
    out[weak == 0] = 0
    out[strong != 0] = strong[strong != 0]
    return out


def reliable_labels(cam_label: torch.Tensor, crf_label_map: torch.Tensor) -> torch.Tensor:
    """Eq. (7): the CAM label where it agrees with the CRF label, 255 elsewhere (and wherever
    either is 255). ``rule='paper'``'s final step; the reference never compares the two labels
    (:func:`reference_reliable_labels`)."""
    agree = (cam_label == crf_label_map) & (cam_label != IGNORE)
    return torch.where(agree, cam_label, torch.full_like(cam_label, IGNORE))


# ------------------------------------------------------------------------------------------------
# rule='reference': zbf1991/RRM's tool/myTool.py::compute_seg_label, step by step, in numpy float32
# ------------------------------------------------------------------------------------------------

REFERENCE_GAMMAS = (4.0, 32.0)  # the two CRFs' background exponents (compute_seg_label's 4 and 32)
REFERENCE_MIN_SCORE = 0.1  # a class's CAM values that enter its cut
REFERENCE_SURE_BACKGROUND = 0.8  # CAM-sure background: P_bg(gamma 32) > 0.8
REFERENCE_SURE_CRF = 0.8  # CRF-sure: top marginal >= 0.8


def _float32_cams(p_fg) -> np.ndarray:
    """``p_fg`` (K, H, W), a tensor or an array, as a numpy float32 array (the reference's dtype:
    torch's float32 CAMs handed to numpy)."""
    if isinstance(p_fg, torch.Tensor):
        p_fg = p_fg.detach().cpu().numpy()
    return np.ascontiguousarray(p_fg, dtype=np.float32)


def _classes(classes) -> list:
    """The image's tags as sorted, distinct 0-based foreground indices (the reference walks its
    tag vector in increasing class order)."""
    return sorted({int(c) for c in classes})


def reference_crf_marginals(
    image: np.ndarray, p_fg, classes, gamma: float, crf_params="rrm_train"
) -> np.ndarray:
    """Eqs. (4-5) as the reference's ``_crf_with_alpha``: the dense CRF's marginals for
    [P_bg, P_fg of the image's classes], P_bg = (1 - max over those classes)^gamma, in numpy
    float32 (no clamp, no renormalisation; ``unary_from_softmax``'s clip to [1e-5, 1] inside
    :func:`wsss_edu.crf.crf_on_scores`), scattered to (1 + K, H, W) float32: channel 0 background,
    c + 1 class c, the absent classes 0. ``p_fg`` (K, H, W) normalised CAMs, ``classes`` 0-based.
    The reference calls it twice, gamma 4 ('crf_la', confident foreground) and 32 ('crf_ha',
    confident background); eq. (5) runs one CRF at the CAM side's gamma.
    With no class, the CRF has only the background channel (all 1)."""
    cams = _float32_cams(p_fg)
    cls = _classes(classes)
    out = np.zeros((cams.shape[0] + 1,) + cams.shape[1:], np.float32)
    if not cls:
        out[0] = 1
        return out
    v = cams[cls]
    bg = np.power(1 - v.max(0, keepdims=True), np.float32(gamma))  # float32, as numpy on float32
    q = crf_on_scores(image, np.concatenate([bg, v]), crf_params)
    out[0] = q[0]
    out[[c + 1 for c in cls]] = q[1:]
    return out


def reference_crf_label(crf_la: np.ndarray, crf_ha: np.ndarray) -> np.ndarray:
    """The reference's CRF label (its variant of eq. 5 with two CRFs): argmax of the gamma-4
    marginals ``crf_la`` (1 + K, H, W); where that is background, 255; then 0 wherever the
    gamma-32 marginals ``crf_ha`` have their argmax on the background — the gamma-32 background
    wins over a gamma-4 foreground (:func:`two_crf_label`, ``rule='paper'``'s two CRFs, keeps the
    foreground there). (H, W) int64, before the sure-region filters."""
    la, ha = crf_la.argmax(0), crf_ha.argmax(0)
    out = np.where(la == 0, IGNORE, la).astype(np.int64)
    out[ha == 0] = 0
    return out


def reference_cam_argmax(p_fg, classes, gamma: float = 32.0) -> tuple:
    """The reference's CAM map for the CAM-sure regions: ``cam_all`` = [(1 - max cam)^gamma,
    cams], (1 + K, H, W) float32, the absent classes' channels 0 (so the max includes their zeros,
    as the reference's), and its argmax ``cam_img`` (H, W) int64 (ties to the lower channel). Eq.
    (4)'s P_bg and eq. (6)'s argmax, but at gamma 32 (the reference hard-codes it) where the paper
    says gamma 4."""
    cams = _float32_cams(p_fg)
    cam_np = np.zeros_like(cams)
    cls = _classes(classes)
    cam_np[cls] = cams[cls]
    bg = np.power(1 - cam_np.max(0, keepdims=True), np.float32(gamma))
    cam_all = np.concatenate([bg, cam_np])
    return cam_all, cam_all.argmax(0)


def reference_cut_position(n: int, fraction: float = 0.4) -> int:
    """Where the reference cuts a class's n sorted CAM values: ``int(n · (1 - fraction))``; for
    the reference's 0.4 this is bit for bit its ``int(n · 0.6)`` (``1 - 0.4 == 0.6`` in float64,
    checked for every n up to 10^6 in the tests)."""
    return int(n * (1.0 - float(fraction)))


def reference_class_sure_region(
    score: np.ndarray,
    region: np.ndarray,
    fraction: float = 0.4,
    min_score: float = REFERENCE_MIN_SCORE,
) -> np.ndarray:
    """Eq. (6) for one foreground class, the reference's way: of the class's CAM ``score``
    (H, W) float32 inside its argmax ``region`` (H, W) bool, the values > ``min_score`` (compared
    in float32: a value equal to float32(0.1) is not above 0.1) are sorted, thr = sorted[
    :func:`reference_cut_position`], and sure = score > thr (strict) inside the region: about the
    top ``fraction`` of them, minus the value at the cut and its ties. Eq. (6) as
    :func:`top_fraction_labels` reads it keeps round(fraction · n) pixels and the ties at alpha.
    No value > ``min_score`` in the region: the reference raises IndexError (an empty sort);
    here no pixel is sure. The same for ``fraction`` 0 (the cut falls past the end)."""
    score = np.asarray(score)
    s = np.where(region, score, score.dtype.type(0))
    vals = np.sort(s[s > score.dtype.type(min_score)])
    pos = reference_cut_position(vals.size, fraction)
    if pos >= vals.size:  # no candidate (the reference's IndexError), or fraction 0
        return np.zeros(s.shape, bool)
    return s > vals[pos]


def reference_cam_sure_region(
    p_fg,
    classes,
    crf_classes,
    gamma: float = 32.0,
    fraction: float = 0.4,
    min_score: float = REFERENCE_MIN_SCORE,
    bg_threshold: float = REFERENCE_SURE_BACKGROUND,
) -> tuple:
    """The reference's CAM side (its reading of eqs. 4 and 6): the union over ``crf_classes``
    (label indices, 0 background, c + 1 class c: the reference takes the classes of the gamma-4
    CRF's argmax) of each class's sure pixels in :func:`reference_cam_argmax` (``gamma``, 32):
    a foreground class by :func:`reference_class_sure_region`, the background where P_bg >
    ``bg_threshold`` (float32, strict) inside its argmax region. Returns (cam-sure (H, W) bool,
    ``cam_img`` (H, W) int64). Eq. (6) instead keeps the top fraction of every class, background
    included, of the argmax at gamma 4, and eq. (7) then asks the CRF to agree."""
    cam_all, cam_img = reference_cam_argmax(p_fg, classes, gamma)
    sure = np.zeros(cam_img.shape, bool)
    for c in sorted({int(c) for c in crf_classes}):
        region = cam_img == c
        if c == 0:
            sure |= region & (cam_all[0] > np.float32(bg_threshold))
        else:
            sure |= reference_class_sure_region(cam_all[c], region, fraction, min_score)
    return sure, cam_img


def reference_crf_sure_region(
    crf_la: np.ndarray, crf_ha: np.ndarray, threshold: float = REFERENCE_SURE_CRF
) -> np.ndarray:
    """The reference's CRF confidence filter (not in the paper's equations): sure where the
    largest of [the gamma-32 CRF's background marginal, the gamma-4 CRF's foreground marginals]
    is >= ``threshold`` (0.8), compared in float64 as the reference's arrays are. (H, W) bool."""
    q = np.concatenate([crf_ha[:1], crf_la[1:]]).astype(np.float64)
    return q.max(0) >= threshold


def reference_reliable_labels(
    image: np.ndarray,
    p_fg,
    classes,
    gammas=REFERENCE_GAMMAS,
    fraction: float = 0.4,
    crf_params="rrm_train",
    cam_gamma=None,
) -> dict:
    """The reference's ``compute_seg_label`` (its eqs. 4-7), exactly: ``image`` (H, W, 3) uint8
    RGB, ``p_fg`` (K, H, W) normalised CAMs (computed in float32), ``classes`` the image's tags as
    0-based indices. ``gammas``: the two CRFs' (4, 32); ``cam_gamma``: the CAM side's (None:
    ``gammas[1]``, the reference's 32); ``fraction``: the CAM cut (0.4). Steps:

    1. :func:`reference_crf_marginals` at gammas[0] ('crf_la') and gammas[1] ('crf_ha');
    2. :func:`reference_crf_label` (label = gamma-4 foreground, gamma-32 background);
    3. :func:`reference_cam_sure_region` for the classes of argmax(crf_la);
    4. :func:`reference_crf_sure_region`;
    5. the label, 255 wherever not CAM-sure or not CRF-sure.

    Returns numpy arrays: 'reliable' (H, W) int64 (0 background, c + 1 class c, 255), 'crf' (step
    2), 'cam' (the CAM argmax where CAM-sure, else 255: the reference's analogue of eq. 6's
    label), 'cam_sure', 'crf_sure' (H, W) bool, 'cam_argmax' (H, W) int64, 'crf_la', 'crf_ha'
    (1 + K, H, W) float32."""
    cam_gamma = gammas[1] if cam_gamma is None else cam_gamma
    crf_la = reference_crf_marginals(image, p_fg, classes, gammas[0], crf_params)
    crf_ha = reference_crf_marginals(image, p_fg, classes, gammas[1], crf_params)
    crf_l = reference_crf_label(crf_la, crf_ha)
    cam_sure, cam_img = reference_cam_sure_region(
        p_fg, classes, np.unique(crf_la.argmax(0)), cam_gamma, fraction
    )
    crf_sure = reference_crf_sure_region(crf_la, crf_ha)
    final = np.where(cam_sure & crf_sure, crf_l, IGNORE).astype(np.int64)
    return {
        "cam": np.where(cam_sure, cam_img, IGNORE).astype(np.int64),
        "crf": crf_l,
        "reliable": final,
        "cam_sure": cam_sure,
        "crf_sure": crf_sure,
        "cam_argmax": cam_img.astype(np.int64),
        "crf_la": crf_la,
        "crf_ha": crf_ha,
    }


def reference_cam_labels(p_fg, classes, gamma: float = 32.0, fraction: float = 0.4) -> np.ndarray:
    """The reference rule's CAM side alone (no CRF; ``source='cam'`` of :func:`batch_reliable_labels`,
    the paper's Table 2 "CAM" row, which the reference code does not contain): the CAM argmax
    (:func:`reference_cam_argmax`) where CAM-sure for the background or any tagged class
    (:func:`reference_cam_sure_region` over all of them), 255 elsewhere. (H, W) int64."""
    sure, cam_img = reference_cam_sure_region(
        p_fg, classes, [0] + [c + 1 for c in _classes(classes)], gamma, fraction
    )
    return np.where(sure, cam_img, IGNORE).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# A dataset without a background class (MSRC): eqs. 5-7 with no P_bg
# ------------------------------------------------------------------------------------------------


def tagged_argmax(p_fg, classes) -> tuple:
    """Each pixel's CAM argmax among the image's ``classes`` (0-based, at least one) only: (its
    score (H, W) float32, its class (H, W) int64, label c = class c), from ``p_fg`` (K, H, W) in
    numpy float32. Untagged channels never win; ties go to the lower class (where every tagged CAM
    is 0 the score is 0, below any cut)."""
    cams = _float32_cams(p_fg)
    cls = np.asarray(_classes(classes), np.int64)
    sub = cams[cls]
    idx = sub.argmax(0)
    return np.take_along_axis(sub, idx[None], 0)[0], cls[idx]


def cam_labels_without_background(
    p_fg,
    classes,
    fraction: float = 0.4,
    rule: str = "reference",
    min_score: float = REFERENCE_MIN_SCORE,
) -> torch.Tensor:
    """Eq. (6) on a dataset without a background class: each pixel takes the argmax of the
    normalised CAMs ``p_fg`` (K, H, W) among the image's ``classes`` (:func:`tagged_argmax`), and
    within each class's argmax region only about the top ``fraction`` of its values above
    ``min_score`` keep the label (c = class c), the rest 255. The cut is the rule's:
    ``'reference'`` :func:`reference_class_sure_region` (strict, at position int(n (1 -
    fraction)), float32), ``'paper'`` :func:`top_fraction_labels` (round(fraction · n) values,
    ties with alpha kept).

    Where it differs from the background rules: no background term at all. Eq. (4)'s P_bg
    scores "none of the classes", which such a dataset does not have: the argmax regions are the
    classes' alone (no gamma), and neither the reference's CAM-sure background ((1 - max cam)^32
    > 0.8) nor the paper's top fraction of P_bg has anything to select. Every tagged class
    contributes (the reference rule with a background only looks at the classes that win in its
    CRF; under eq. 7's agreement a class the CRF never picks keeps no pixel either way).
    No tag: all 255 (no background to fall back on). (H, W) int64 on ``p_fg``'s device."""
    device = p_fg.device if isinstance(p_fg, torch.Tensor) else None
    cls = _classes(classes)
    cams = _float32_cams(p_fg)
    if not cls:
        return torch.full(cams.shape[1:], IGNORE, dtype=torch.long, device=device)
    if rule == "paper":
        return top_fraction_labels(torch.as_tensor(cams, device=device), cls, fraction, min_score)
    _, label = tagged_argmax(cams, cls)
    sure = np.zeros(label.shape, bool)
    for c in cls:
        sure |= reference_class_sure_region(cams[c], label == c, fraction, min_score)
    return torch.as_tensor(np.where(sure, label, IGNORE).astype(np.int64), device=device)


def crf_marginals_without_background(
    image: np.ndarray, p_fg, classes, crf_params="rrm_train"
) -> np.ndarray:
    """Eq. (5) on a dataset without a background class: one dense CRF on the image's classes'
    normalised CAMs alone, [P_fg^c for c in ``classes``] (the unary -log clip(p, 1e-5) of
    :func:`wsss_edu.crf.crf_on_scores`, no renormalisation, as :func:`reference_crf_marginals`),
    its marginals scattered to (K, H, W) float32, channel c = class c, untagged channels 0.
    The reference's two CRFs differ only in the exponent of P_bg (4: confident foreground, 32:
    confident background); with no P_bg they would be one and the same CRF, so one is run. One
    class: a one-label CRF (all 1); no class: all 0."""
    cams = _float32_cams(p_fg)
    cls = _classes(classes)
    out = np.zeros(cams.shape, np.float32)
    if cls:
        out[cls] = crf_on_scores(image, cams[cls], crf_params)
    return out


def crf_labels_without_background(
    q: np.ndarray, classes, threshold: float | None = REFERENCE_SURE_CRF
) -> np.ndarray:
    """The CRF side's label from :func:`crf_marginals_without_background`'s marginals ``q``
    (K, H, W): the argmax among the tagged ``classes`` (c = class c), 255 where the largest
    marginal is below ``threshold`` (the reference's CRF-sure filter, >= 0.8 compared in float64;
    its background term, the gamma-32 CRF's background marginal, does not exist here). ``threshold``
    None: no filter (eq. 5 as ``rule='paper'`` reads it). No class: all 255. (H, W) int64."""
    cls = np.asarray(_classes(classes), np.int64)
    if not cls.size:
        return np.full(q.shape[1:], IGNORE, np.int64)
    sub = q[cls].astype(np.float64)
    label = cls[sub.argmax(0)]
    if threshold is not None:
        label = np.where(sub.max(0) >= threshold, label, IGNORE)
    return label.astype(np.int64)


def reliable_labels_without_background(
    image: np.ndarray,
    p_fg,
    classes,
    fraction: float = 0.4,
    crf_params="rrm_train",
    rule: str = "reference",
) -> dict:
    """Eqs. (5-7) for one image of a dataset without a background class
    (:attr:`wsss_edu.datasets.SegDataset.has_background` False, e.g. MSRC: grass, sky and road
    are classes). ``image`` (H, W, 3) uint8, ``p_fg`` (K, H, W) normalised CAMs, ``classes`` the
    image's tags (0-based). Labels: c = class c (no background, no + 1 shift), 255 unlabelled.

    * CAM side: :func:`cam_labels_without_background` (eq. 6, no background term; ``rule``'s cut);
    * CRF side: one CRF over the tagged classes' CAMs (:func:`crf_marginals_without_background`;
      the two-CRF rule exists only to weigh the background at two strengths), its argmax among the
      tags, under ``rule='reference'`` kept only where CRF-sure (top marginal >= 0.8,
      :func:`crf_labels_without_background`);
    * reliable: eq. (7), the label where the two sides agree (:func:`reliable_labels`), 255
      elsewhere.

    Under ``rule='reference'`` this is not the reference code's final step (which keeps the CRF
    label wherever a pixel is CAM-sure for *some* class and CRF-sure, without asking the two
    labels to agree, :func:`reference_reliable_labels`): the reference has no rule for a dataset
    without a background, so the paper's eq. (7) decides, with the reference's CAM cut and its
    CRF-sure filter kept. No ``gamma``, no ``two_crf``: they only shape P_bg. No tag: all 255.

    Returns tensors on ``p_fg``'s device: 'cam', 'crf' (each side's label), 'reliable' (H, W)
    int64; 'cam_sure', 'crf_sure' (H, W) bool; 'crf_q' (K, H, W) float32 marginals."""
    check_choice("rule", rule, RULES)
    device = p_fg.device if isinstance(p_fg, torch.Tensor) else None
    cam_l = cam_labels_without_background(p_fg, classes, fraction, rule)
    q = crf_marginals_without_background(image, p_fg, classes, crf_params)
    sure = REFERENCE_SURE_CRF if rule == "reference" else None
    crf_l = torch.as_tensor(crf_labels_without_background(q, classes, sure), device=device)
    return {
        "cam": cam_l,
        "crf": crf_l,
        "reliable": reliable_labels(cam_l, crf_l),
        "cam_sure": cam_l != IGNORE,
        "crf_sure": crf_l != IGNORE,
        "crf_q": torch.as_tensor(q, device=device),
    }


def reliable_region_labels(
    image: np.ndarray,
    p_fg: torch.Tensor,
    classes,
    gamma: float = 4.0,
    fraction: float = 0.4,
    crf_params="rrm_train",
    two_crf=None,
    rule: str = "reference",
    has_background: bool = True,
) -> dict:
    """Eqs. (4-7) for one image: ``p_fg`` (K, H, W) normalised multi-scale CAMs, ``classes`` the
    image's tags as 0-based foreground indices. Labels (H, W) int64 in the package's convention (0
    background, c + 1 class c, 255 unlabelled), tensors on ``p_fg``'s device.

    ``has_background=False`` (a dataset without a background class): labels c = class c, by
    :func:`reliable_labels_without_background` under ``rule`` (``gamma`` unused; ``two_crf``
    refused: there is no background to run two CRFs for).

    ``rule='reference'`` (default): the original code's ``compute_seg_label``
    (:func:`reference_reliable_labels`), exactly with the defaults (gamma 4, two_crf None or
    (4, 32), fraction 0.4, crf_params 'rrm_train'); its two CRFs use gammas ``two_crf`` or
    (``gamma``, 32), its CAM side the second of them; ``fraction`` sets its cut. Returns 'reliable' (the final
    label), 'crf' (the two CRFs' label), 'cam' (the CAM argmax where CAM-sure), 'cam_sure',
    'crf_sure' (bool), 'cam_argmax', 'crf_la', 'crf_ha' ((1 + K, H, W) float32 marginals).

    ``rule='paper'``: the literal equations: 'cam' (eq. 6, :func:`top_fraction_labels` at
    ``gamma``), 'crf' (eq. 5, :func:`crf_label`; :func:`two_crf_label` with ``two_crf=(4, 32)``)
    and 'reliable' (eq. 7, :func:`reliable_labels`)."""
    check_choice("rule", rule, RULES)
    if not has_background:
        if two_crf:
            raise ParameterError(
                f"two_crf={tuple(two_crf)!r} needs a background class (its two CRFs weigh "
                "P_bg at two strengths); on a dataset without one use two_crf=None"
            )
        return reliable_labels_without_background(image, p_fg, classes, fraction, crf_params, rule)
    if rule == "reference":
        gammas = tuple(two_crf) if two_crf else (gamma, REFERENCE_GAMMAS[1])
        out = reference_reliable_labels(image, p_fg, classes, gammas, fraction, crf_params)
        return {k: torch.as_tensor(v, device=p_fg.device) for k, v in out.items()}
    present = present_labels(classes)
    probs = cam_probabilities(p_fg[None], gamma)[0]
    cam_l = top_fraction_labels(probs, present, fraction)
    crf_l = (
        two_crf_label(image, p_fg, present, two_crf, crf_params)
        if two_crf
        else crf_label(image, probs, present, crf_params)
    )
    return {"cam": cam_l, "crf": crf_l, "reliable": reliable_labels(cam_l, crf_l)}


# ------------------------------------------------------------------------------------------------
# The dense energy loss (eqs. 10-14)
# ------------------------------------------------------------------------------------------------


def pixel_features(image: torch.Tensor, sigma_xy: float, sigma_rgb: float) -> torch.Tensor:
    """Each pixel of ``image`` (3, H, W), RGB on the 0-255 scale, as the vector
    (x / sigma_xy, y / sigma_xy, r / sigma_rgb, g / sigma_rgb, b / sigma_rgb), (H·W, 5), so that
    eq. (11)'s exponent is -|f_i - f_j|² / 2."""
    _, h, w = image.shape
    dtype = image.dtype if image.is_floating_point() else torch.float32
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dtype, device=image.device),
        torch.arange(w, dtype=dtype, device=image.device),
        indexing="ij",
    )
    pos = torch.stack([xs, ys]) / sigma_xy
    return torch.cat([pos, image.to(dtype) / sigma_rgb]).reshape(5, -1).T


def gaussian_kernel(fi: torch.Tensor, fj: torch.Tensor) -> torch.Tensor:
    """Eq. (11) without its normaliser 1/W: G(i, j) = exp(-|D_i - D_j|²/2σ_d² - |I_i - I_j|²/2σ_r²)
    between the rows of ``fi`` (n, 5) and ``fj`` (m, 5) of :func:`pixel_features` → (n, m).
    The exponent is floored at -60: G below e^-60 ≈ 9e-27 reads as 9e-27 (the exact values, and
    their products with small probabilities, would be subnormal floats, which CPUs process about
    ten times slower; summed over every pair the difference stays below 1e-17 of the pair mean)."""
    # -|a - b|²/2 = a·b - |a|²/2 - |b|²/2 as one matrix product of augmented rows, no (n, m, 5)
    # temporary (in float32 the rounding is ~3e-4 in the exponent for 0-255 colours over sigma_rgb 15)
    hi, hj = -0.5 * fi.pow(2).sum(1, keepdim=True), -0.5 * fj.pow(2).sum(1, keepdim=True)
    a = torch.cat([fi, hi, torch.ones_like(hi)], 1)
    b = torch.cat([fj, torch.ones_like(hj), hj], 1)
    return (a @ b.T).clamp_(-60.0, 0.0).exp_()


def soft_filter(probs: torch.Tensor, labels: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """Eq. (14): S(i) = 1 - max_c P(i) on labelled pixels (``labels`` != 255), 1 elsewhere; a
    confident labelled pixel is left to the cross-entropy. ``probs`` (C, H, W) → (H, W).
    ``detach``: treat S as a constant (the reference's backward does)."""
    s = 1 - probs.amax(0)
    s = s.detach() if detach else s
    return torch.where(labels != IGNORE, s, torch.ones_like(s))


ENERGY_NORMALIZATIONS = ("pairs", "pixels", "none")


def dense_energy_loss(
    probs: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    sigma_xy: float = 100.0,
    sigma_rgb: float = 15.0,
    weight: float = 1.0,
    normalize: str = "pairs",
    chunk: int = 1024,
    detach_filter: bool = True,
) -> torch.Tensor:
    """Eqs. (12-13), exactly: sum over i of S(i) · sum over j != i of G(i, j) · sum_c P_c(i)(1 - P_c(j)),
    for softmax outputs ``probs`` (N, C, H, W) and ``images`` (N, 3, H, W) on the 0-255 scale;
    ``labels`` (N, H, W) for S (eq. 14; None: S ≡ 1). Averaged over the batch, times ``weight``.
    ``normalize`` reads eq. (11)'s 1/W: ``'pairs'`` divides by (H·W)², the number of pairs, so the
    value lies in [0, 1) and — with sigma_xy scaled with the image — does not change with the
    resolution (a weight transfers from one image size to another, see
    :func:`reference_energy_weight`); ``'pixels'`` divides by H·W; ``'none'`` is the plain sum,
    as the reference code. O((HW)²) work but only ``chunk`` × HW memory: G is never stored whole,
    and the backward pass needs no second pass over it (:class:`_PairwiseEnergy`).

    Why the reference's loss is negative: since sum_c P_c = 1, the inner sum equals
    g_i - <P(i), (G P)(i)> with g_i = sum_{j != i} G(i, j), which does not depend on P. The
    reference drops that constant and minimises -S(i)<P(i), (G P)(i)>, so its loss is negative;
    with S held constant the two have the same gradient with respect to the logits (the dropped
    term's gradient, S(i) g_i, is the same for every class of pixel i, and the softmax cancels it).
    (The reference's hand-written backward, -2 S(i) (G P)(i), is that gradient only where S ≡ 1.)
    This function keeps the constant, so E >= 0. It runs in float32 even inside an autocast region
    (bfloat16 would round the kernel's exponents of hundreds to whole units)."""
    check_choice("normalize", normalize, ENERGY_NORMALIZATIONS)
    with torch.autocast(probs.device.type, enabled=False):
        return _dense_energy(
            probs if probs.dtype == torch.float64 else probs.float(),
            images.to(torch.float64 if probs.dtype == torch.float64 else torch.float32),
            labels,
            sigma_xy,
            sigma_rgb,
            weight,
            normalize,
            chunk,
            detach_filter,
        )


def _dense_energy(
    probs, images, labels, sigma_xy, sigma_rgb, weight, normalize, chunk, detach_filter
):
    n, c, h, w = probs.shape
    norm = {"pairs": float(h * w) ** 2, "pixels": float(h * w), "none": 1.0}[normalize]
    total = probs.new_zeros(())
    for b in range(n):
        p = probs[b].reshape(c, -1).T  # (HW, C)
        f = pixel_features(images[b], sigma_xy, sigma_rgb).to(p.dtype)
        s = (
            soft_filter(probs[b], labels[b], detach_filter).reshape(-1)
            if labels is not None
            else p.new_ones(h * w)
        )
        total = total + _PairwiseEnergy.apply(p, s, f, chunk) / norm
    return weight * total / n


class _PairwiseEnergy(torch.autograd.Function):
    """E = sum_i S_i sum_{j != i} G_ij sum_c P_ic (1 - P_jc) = sum_i S_i <P_i, g_i - (G P)_i>, for
    P (HW, C), S (HW,) and pixel features f (HW, 5), G built ``chunk`` rows at a time. G is
    symmetric, so the gradients need only G (1 - P) and G (S P), gathered in the same pass:
    dE/dP_k = S_k (G (1 - P))_k - (G (S P))_k and dE/dS_k = <P_k, (G (1 - P))_k>."""

    @staticmethod
    def forward(ctx, p, s, f, chunk):
        hw = p.shape[0]
        rhs = torch.cat([1 - p, s[:, None] * p], 1)  # [1 - P, S P]
        out = torch.empty_like(rhs)
        for start in range(0, hw, chunk):
            stop = min(start + chunk, hw)
            g = gaussian_kernel(f[start:stop], f)  # (rows, HW)
            idx = torch.arange(start, stop, device=g.device)
            g[idx - start, idx] = 0  # j != i
            out[start:stop] = g @ rhs
        c = p.shape[1]
        q, gsp = out[:, :c], out[:, c:]  # q_ic = sum_j G_ij (1 - P_jc), without cancellation
        ctx.save_for_backward(p, s, q, gsp)
        return (s * (p * q).sum(1)).sum()  # no cancellation: E >= 0

    @staticmethod
    def backward(ctx, grad):
        p, s, q, gsp = ctx.saved_tensors
        grad_p = grad * (s[:, None] * q - gsp) if ctx.needs_input_grad[0] else None
        grad_s = grad * (p * q).sum(1) if ctx.needs_input_grad[1] else None
        return grad_p, grad_s, None, None


def reference_energy_weight(
    weight: float = 1e-7, side: float = 321 * 0.5, lattice_gain: float = 0.55
) -> float:
    """The weight of the pair-normalised energy (:func:`dense_energy_loss` with
    ``normalize='pairs'``) that gives the reference code's gradient: the reference multiplies the
    plain sum over pixel pairs by ``weight`` (1e-7) on ``side`` × ``side`` images (its 321-px crops
    at half resolution) with a permutohedral-lattice filter whose output is about ``lattice_gain``
    times the exact Gaussian sum (reference/methods.md §4). Its loss is weight · gain · (side²)² ·
    (mean over pairs), so the same strength on the pair mean is that product (≈ 37); with
    sigma_xy scaled with the image, it carries over to any image size."""
    return weight * lattice_gain * float(side) ** 4


# ------------------------------------------------------------------------------------------------
# The network and its joint loss (paper 003, Fig. 1 and Algorithm 1)
# ------------------------------------------------------------------------------------------------

NO_BACKGROUND_LOGIT = -1e4
"""The logit :meth:`RRMNet.mask_logits` gives the background channel of a network without one:
it never wins an argmax, and its softmax probability is 0 (e^-10000 underflows)."""


class RRMNet(torch.nn.Module):
    """One network, two branches on a shared backbone (:class:`wsss_edu.cam.CAMClassifier`'s):
    classification (GAP, a 1x1 convolution without bias: the CAMs) and segmentation (two 3x3
    convolutions dilated by ``dilation``: the paper's 12 on ResNet-38; 2 suits the quick profile's
    small backbone at 64 px). ``num_classes``: foreground classes K; the segmentation branch
    predicts K + 1 (background first), or K with ``has_background=False`` (a dataset whose every
    pixel is one of its classes: channel c = class c). ``forward`` returns (class logits (N, K),
    segmentation logits (N, K + 1 or K, H, W) at the input's size, backbone features).

    Any backbone of :class:`wsss_edu.cam.CAMClassifier` (``kwargs``: its ``width`` / ``depth`` /
    ``freeze_bn``): with step 1's ImageNet MobileNetV2 (``'mobilenet_v2'``) the segmentation
    branch reads the same dilated stride-16 features (1280 channels) as the CAMs — the shared
    backbone of the paper's Fig. 1, which reads ResNet-38's stride 8: a stride-8 MobileNetV2 would
    cost about four times its last blocks on a CPU, and the branch's logits are upsampled to the
    image anyway. ``seg_channels`` sets the branch's cost (its first convolution is 9 · 1280 ·
    ``seg_channels`` multiply-adds a feature pixel)."""

    def __init__(
        self,
        num_classes: int,
        backbone: str = "small",
        weights=None,
        dilation: int = 12,
        seg_channels: int = 256,
        has_background: bool = True,
        **kwargs,
    ):
        super().__init__()
        self.classifier_net = CAMClassifier(num_classes, backbone, weights, **kwargs)
        self.has_background = bool(has_background)
        c, d = self.classifier_net.backbone.out_channels, dilation
        self.seg_head = torch.nn.Sequential(
            torch.nn.Conv2d(c, seg_channels, 3, padding=d, dilation=d),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(
                seg_channels, num_classes + int(self.has_background), 3, padding=d, dilation=d
            ),
        )
        self.stride = self.classifier_net.stride

    def forward(self, x):
        import torch.nn.functional as F

        f = self.classifier_net.features(x)
        logits = self.classifier_net.classifier(f.mean((2, 3), keepdim=True)).flatten(1)
        seg = F.interpolate(
            self.seg_head(f), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return logits, seg, f

    def cam(self, x):
        return self.classifier_net.cam(x)

    def segment(self, x):
        """One-step prediction: the segmentation branch's logits (N, K + 1, H, W); (N, K, H, W),
        channel c = class c, without a background."""
        return self.forward(x)[1]

    def mask_logits(self, x):
        """The segmentation logits in the dataset's mask convention, (N, K + 1, H, W), channel
        c + 1 = class c: :meth:`segment` itself with a background; without one (the branch's K
        channels), a constant channel 0 at :data:`NO_BACKGROUND_LOGIT` in front — the background
        exists by name only in such a dataset's masks (MSRC's class c is mask value c + 1), so
        evaluation, TTA and CRF post-processing need no special case."""
        seg = self.segment(x)
        if self.has_background:
            return seg
        return torch.cat(
            [seg.new_full((seg.shape[0], 1) + seg.shape[2:], NO_BACKGROUND_LOGIT), seg], 1
        )

    frozen_bn = False  # set by freeze_reference_layers: batch norms stay in eval mode in train()
    has_background = True  # set in __init__ (the class default: networks pickled before it existed)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def param_groups(self, lr: float, head_factor: float = 10.0) -> list:
        """The backbone at ``lr``, the two branches' layers at ``head_factor`` × ``lr`` (the
        reference trains its new layers 10× faster); frozen parameters left out."""
        body = [p for p in self.classifier_net.backbone.parameters()]
        ids = {id(p) for p in body}
        heads = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        return [
            {"params": [p for p in body if p.requires_grad], "lr": lr},
            {"params": heads, "lr": head_factor * lr},
        ]


def freeze_reference_layers(net: RRMNet) -> int:
    """What the RRM reference code never trains: every batch norm (running statistics fixed —
    :meth:`RRMNet.train` keeps them in eval mode — and affine parameters fixed) and the backbone's
    first convolution (ResNet-38's conv1a; here the stem). Returns the number of parameters frozen."""
    frozen = []
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            frozen += list(m.parameters())
    first = next(m for m in net.classifier_net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    frozen += list(first.parameters())
    for p in frozen:
        p.requires_grad_(False)
    net.frozen_bn = True
    net.train(net.training)
    return sum(p.numel() for p in frozen)


def labelled_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (9) on a dataset without a background class: the plain cross-entropy averaged over the
    reliable pixels (255 ignored; 0 with none). :func:`split_cross_entropy`'s two means (the
    reference's background part and foreground part) exist to keep the many background pixels
    from drowning the few object ones; without a background there is nothing to split off, every
    labelled pixel is a class like the others. On several processes, the mean over the global
    batch's labelled pixels."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")
    return distributed.batch_mean(ce.sum(), (target != IGNORE).sum())


def segmentation_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, has_background: bool = True
) -> torch.Tensor:
    """Eq. (9) as :func:`rrm_loss` takes it: :func:`split_cross_entropy` with a background,
    :func:`labelled_cross_entropy` without one."""
    return (
        split_cross_entropy(logits, target)
        if has_background
        else labelled_cross_entropy(logits, target)
    )


def split_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (9) as the reference computes it: the cross-entropy of the background pixels averaged
    over them, plus that of the foreground pixels averaged over them (255 ignored), so the many
    background pixels do not drown the few foreground ones. 0 for a part with no pixel. On several
    processes, each part's mean over the global batch's pixels."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")
    out = ce.new_zeros(())
    parts = (target == 0, (target != 0) & (target != IGNORE))
    if distributed.active():  # each part's mean over the global batch's pixels
        return sum((distributed.batch_mean(ce[part].sum(), part.sum()) for part in parts), out)
    for part in parts:
        if part.any():
            out = out + ce[part].mean()
    return out


LABEL_SOURCES = ("rrm", "cam")


def batch_reliable_labels(
    images: np.ndarray,
    cams: torch.Tensor,
    tags: torch.Tensor,
    gamma: float = 4.0,
    fraction: float = 0.4,
    crf_params="rrm_train",
    two_crf=None,
    source: str = "rrm",
    rule: str = "reference",
    has_background: bool = True,
) -> torch.Tensor:
    """Eqs. (3-7) for a batch: ``cams`` (N, K, H, W) multi-scale CAMs (not normalised), ``tags``
    (N, K) multi-hot, ``images`` (N, H, W, 3) uint8 → labels (N, H, W) int64: ``source`` 'rrm'
    the reliable labels (:func:`reliable_region_labels` under ``rule``), 'cam' the CAM side alone
    (no CRF: the paper's Table 2 "CAM" row): under ``rule='paper'`` eq. (6)'s labels, the same top
    fraction of each class (:func:`top_fraction_labels`), under ``rule='reference'`` the
    reference's CAM-sure pixels of the background and every tagged class
    (:func:`reference_cam_labels`). ``has_background=False``: labels c = class c, 'rrm' by
    :func:`reliable_labels_without_background`, 'cam' by :func:`cam_labels_without_background`
    (no background term, ``gamma`` unused)."""
    check_choice("source", source, LABEL_SOURCES)
    check_choice("rule", rule, RULES)
    p_fg = normalize_cams(cams.float().cpu(), tags.cpu())
    out = []
    for i in range(len(images)):
        classes = torch.nonzero(tags[i]).flatten().tolist()
        if not has_background and source == "cam":
            out.append(cam_labels_without_background(p_fg[i], classes, fraction, rule))
        elif not has_background:
            out.append(
                reliable_region_labels(
                    images[i],
                    p_fg[i],
                    classes,
                    gamma,
                    fraction,
                    crf_params,
                    two_crf,
                    rule,
                    has_background=False,
                )["reliable"]
            )
        elif source == "cam" and rule == "reference":
            cam_gamma = two_crf[1] if two_crf else REFERENCE_GAMMAS[1]
            out.append(torch.as_tensor(reference_cam_labels(p_fg[i], classes, cam_gamma, fraction)))
        elif source == "cam":
            present = present_labels(classes)
            out.append(
                top_fraction_labels(cam_probabilities(p_fg[i : i + 1], gamma)[0], present, fraction)
            )
        else:
            out.append(
                reliable_region_labels(
                    images[i], p_fg[i], classes, gamma, fraction, crf_params, two_crf, rule
                )["reliable"]
            )
    return torch.stack(out)


def rrm_loss(
    model: RRMNet,
    batch: dict,
    cam_scales=(1.0,),
    gamma: float = 4.0,
    fraction: float = 0.4,
    crf_params="rrm_train",
    two_crf=None,
    energy_weight: float | None = None,
    energy_scale: float = 0.5,
    sigma_xy: float = 100.0,
    sigma_rgb: float = 15.0,
    joint: bool = True,
    chunk: int = 1024,
    source: str = "rrm",
    rule: str = "reference",
    has_background: bool | None = None,
) -> dict:
    """Algorithm 1, one step: the labels recomputed from the network's current CAMs (no gradient;
    ``cam_scales`` × flip, eq. 2), then L = L_cls + L_ce + L_energy (eq. 8; ``joint=False``: no
    energy term, Table 2's "CE loss" column). L_cls: multi-label soft margin on the image tags;
    L_ce: :func:`split_cross_entropy` on the reliable labels; L_energy: :func:`dense_energy_loss` of
    the segmentation branch's softmax at ``energy_scale`` of the resolution (the reference: half),
    with sigma_xy scaled the same way, normalised over the pixel pairs; ``energy_weight`` None:
    :func:`reference_energy_weight`. ``source``: the labels, 'rrm' (the reliable labels) or 'cam'
    (the CAM side alone); ``rule``: 'reference' (the original code's rule) or 'paper' (eqs. 4-7
    literally), see :func:`batch_reliable_labels`. ``has_background`` (None: the model's,
    :attr:`RRMNet.has_background`): False for a dataset without a background class — labels
    c = class c (:func:`reliable_labels_without_background`) and L_ce the plain cross-entropy over
    the reliable pixels (:func:`labelled_cross_entropy`: eq. 9's split needs a background).
    The CAMs are computed with batch norm in eval mode (the running statistics, as the reference's
    frozen batch norm; the extra forward passes do not update them). A batch's 'valid' map (the
    crop's padding is False, see :class:`wsss_edu.data.SegTransformDataset`) keeps the padding
    out of both losses, as the reference's crop mask does.
    Returns {'loss', 'cls', 'ce', 'energy', 'labelled', 'target'}."""
    import torch.nn.functional as F

    x, tags = batch["image"], batch["labels"].float()
    valid = batch.get("valid")
    if has_background is None:
        has_background = getattr(model, "has_background", True)
    logits, seg, _ = model(x)
    with torch.no_grad():
        training = model.training
        model.eval()
        cams = multiscale_cam(model.cam, x, cam_scales, flip=True)
        model.train(training)
        rgb = tensor_to_images(x.detach().cpu())
        target = batch_reliable_labels(
            rgb, cams, tags > 0, gamma, fraction, crf_params, two_crf, source, rule, has_background
        ).to(x.device)
        if valid is not None:
            target[~valid.bool()] = IGNORE
    l_cls = F.multilabel_soft_margin_loss(logits, tags)
    l_ce = segmentation_cross_entropy(seg, target, has_background)
    l_energy = seg.new_zeros(())
    if joint:
        probs = seg.float().softmax(1)
        if valid is not None:  # padded pixels: P = 0, no pair through them moves P
            probs = probs * valid[:, None].to(probs.dtype)
        img = torch.as_tensor(rgb, device=x.device).permute(0, 3, 1, 2).float()
        lab = target
        if energy_scale != 1:
            size = [max(1, round(s * energy_scale)) for s in seg.shape[-2:]]
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
            lab = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
        weight = reference_energy_weight() if energy_weight is None else energy_weight
        l_energy = weight * dense_energy_loss(
            probs, img, lab, sigma_xy * energy_scale, sigma_rgb, chunk=chunk
        )
    loss = l_cls + l_ce + l_energy
    return {
        "loss": loss,
        "cls": l_cls.detach(),
        "ce": l_ce.detach(),
        "energy": l_energy.detach(),
        "labelled": (target != IGNORE).float().mean(),
        "target": target,
    }


class SegmentationBranch(torch.nn.Module):
    """An :class:`RRMNet` seen as a plain segmenter (forward → segmentation logits in the dataset's
    mask convention, :meth:`RRMNet.mask_logits`), for :func:`wsss_edu.steps.segmenter_step.evaluate` and TTA:
    the one-step prediction."""

    def __init__(self, net: RRMNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.mask_logits(x)
