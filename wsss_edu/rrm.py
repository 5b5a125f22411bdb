"""RRM (paper 003, Zhang et al., AAAI 2020): reliable region mining and the dense energy loss.

Reliable regions (the paper's eqs. 2-7), from a classifier's CAMs, per image:

* :func:`wsss_edu.cam.multiscale_cam` (eq. 2: the sum over scales, the average up to a constant
  that eq. 3 removes) and :func:`wsss_edu.cam.normalize_cams` (eq. 3: each class by its max);
* :func:`background_probability` (eq. 4) and :func:`cam_probabilities` ([P_bg, P_fg]);
* :func:`crf_label` (eq. 5), or the reference code's two CRFs (:func:`two_crf_label`);
* :func:`top_fraction_labels` (eq. 6: alpha chosen per class so that a fraction of its pixels is
  kept);
* :func:`reliable_labels` (eq. 7: keep a label only where the CAM and the CRF agree);
* :func:`reliable_region_labels`: eqs. 4-7 in one call.

The dense energy loss (eqs. 10-14): :func:`gaussian_kernel` (eq. 11), :func:`soft_filter`
(eq. 14) and :func:`dense_energy_loss` (eqs. 12-13), exact and chunked so memory stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .labels import IGNORE


def background_probability(p_fg: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Eq. (4): P_bg = (1 - max_c P_fg^c)^gamma, from the normalised CAMs ``p_fg`` (N, K, H, W)
    → (N, 1, H, W). gamma > 1 shrinks the background score, so only pixels far from every class
    stay background (AffinityNet's convention, which the reference code follows; the paper's
    typeset eq. 4 places the exponent ambiguously)."""
    return (1 - p_fg.amax(1, keepdim=True).clamp(0, 1)) ** gamma


def cam_probabilities(p_fg: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """[P_bg, P_fg] (N, 1 + K, H, W): eq. (4)'s background in front of the normalised CAMs (eq. 3),
    channel 0 = background, c + 1 = class c (the label convention of the whole package)."""
    return torch.cat([background_probability(p_fg, gamma), p_fg], 1)


def top_fraction_labels(probs: torch.Tensor, present, fraction: float = 0.4,
                        min_score: float = 0.1) -> torch.Tensor:
    """Eq. (6) with the paper's choice of alpha "such that 40 % of the pixels are labelled", per
    class as the reference code does: each pixel takes the argmax over the ``present`` channels of
    ``probs`` (1 + K, H, W) (background included); within each class's argmax region, only the
    ``fraction`` of its pixels with the highest score (and above ``min_score``) keep the label,
    the rest become 255: alpha is the class's score at that rank, and pixels tied with it are kept
    too (a flat background, P_bg = 1 wherever no CAM fires, is kept whole). Returns (H, W) int64."""
    present = torch.as_tensor(list(present), dtype=torch.long)
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
        alpha = score[region].topk(keep).values[-1]      # the class's own alpha
        out[region & (score >= alpha)] = c
    return out


def crf_label(image: np.ndarray, probs: torch.Tensor, present, crf_params="irn_labels") -> torch.Tensor:
    """Eq. (5): the dense CRF's label map for [P_bg, P_fg] over the ``present`` channels (the
    image's classes and the background; the reference uses AffinityNet's CRF settings). ``image``
    (H, W, 3) uint8, ``probs`` (1 + K, H, W). Returns (H, W) int64 class indices."""
    from .crf import crf_on_scores

    present = np.asarray(list(present))
    q = crf_on_scores(image, np.ascontiguousarray(probs[present].cpu().numpy(), np.float32), crf_params)
    return torch.as_tensor(present[q.argmax(0)], dtype=torch.long)


def two_crf_label(image: np.ndarray, p_fg: torch.Tensor, present, gammas=(4.0, 32.0),
                  crf_params="irn_labels") -> torch.Tensor:
    """The reference code's variant of eq. (5): two CRFs, one with a strong background (gamma
    ``gammas[0]``) whose foreground labels are kept as confident foreground, one with a weak
    background (``gammas[1]``) whose background labels are kept as confident background; pixels
    neither keeps are 255. ``p_fg`` (K, H, W) normalised CAMs of one image."""
    strong = crf_label(image, cam_probabilities(p_fg[None], gammas[0])[0], present, crf_params)
    weak = crf_label(image, cam_probabilities(p_fg[None], gammas[1])[0], present, crf_params)
    out = torch.full_like(strong, IGNORE)
    out[weak == 0] = 0
    out[strong != 0] = strong[strong != 0]
    return out


def reliable_labels(cam_label: torch.Tensor, crf_label_map: torch.Tensor) -> torch.Tensor:
    """Eq. (7): the CAM label where it agrees with the CRF label, 255 elsewhere (and wherever
    either is 255)."""
    agree = (cam_label == crf_label_map) & (cam_label != IGNORE)
    return torch.where(agree, cam_label, torch.full_like(cam_label, IGNORE))


def reliable_region_labels(image: np.ndarray, p_fg: torch.Tensor, classes, gamma: float = 4.0,
                           fraction: float = 0.4, crf_params="irn_labels", two_crf=None) -> dict:
    """Eqs. (4-7) for one image: ``p_fg`` (K, H, W) normalised multi-scale CAMs, ``classes`` the
    image's tags as 0-based foreground indices. Returns the CAM label (eq. 6), the CRF label
    (eq. 5; the reference's two-CRF variant with ``two_crf=(4, 32)``) and the reliable label
    (eq. 7), each (H, W) int64 in the package's convention (0 background, c + 1 class c, 255
    unlabelled)."""
    present = [0] + [int(c) + 1 for c in classes]
    probs = cam_probabilities(p_fg[None], gamma)[0]
    cam_l = top_fraction_labels(probs, present, fraction)
    crf_l = (two_crf_label(image, p_fg, present, two_crf, crf_params) if two_crf
             else crf_label(image, probs, present, crf_params))
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
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=image.device),
                            torch.arange(w, dtype=dtype, device=image.device), indexing="ij")
    pos = torch.stack([xs, ys]) / sigma_xy
    return torch.cat([pos, image.to(dtype) / sigma_rgb]).reshape(5, -1).T


def gaussian_kernel(fi: torch.Tensor, fj: torch.Tensor) -> torch.Tensor:
    """Eq. (11) without its normaliser 1/W: G(i, j) = exp(-|D_i - D_j|²/2σ_d² - |I_i - I_j|²/2σ_r²)
    between the rows of ``fi`` (n, 5) and ``fj`` (m, 5) of :func:`pixel_features` → (n, m)."""
    # |a - b|² = |a|² + |b|² - 2 a·b: one matrix product, no (n, m, 5) temporary (in float32 the
    # rounding is ~3e-4 in the exponent for 0-255 colours over sigma_rgb = 15)
    d2 = fi.pow(2).sum(1)[:, None] + fj.pow(2).sum(1)[None, :] - 2 * fi @ fj.T
    return torch.exp(-0.5 * d2.clamp(min=0))


def soft_filter(probs: torch.Tensor, labels: torch.Tensor, detach: bool = True) -> torch.Tensor:
    """Eq. (14): S(i) = 1 - max_c P(i) on labelled pixels (``labels`` != 255), 1 elsewhere; a
    confident labelled pixel is left to the cross-entropy. ``probs`` (C, H, W) → (H, W).
    ``detach``: treat S as a constant (the reference's backward does)."""
    s = 1 - probs.amax(0)
    s = s.detach() if detach else s
    return torch.where(labels != IGNORE, s, torch.ones_like(s))


def dense_energy_loss(probs: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None = None,
                      sigma_xy: float = 100.0, sigma_rgb: float = 15.0, weight: float = 1.0,
                      normalize: bool = True, chunk: int = 1024, detach_filter: bool = True) -> torch.Tensor:
    """Eqs. (12-13), exactly: sum over i of S(i) · sum over j != i of G(i, j) · sum_c P_c(i)(1 - P_c(j)),
    for softmax outputs ``probs`` (N, C, H, W) and ``images`` (N, 3, H, W) on the 0-255 scale;
    ``labels`` (N, H, W) for S (eq. 14; None: S ≡ 1). Averaged over the batch, times ``weight``;
    ``normalize`` divides by the number of pixels H·W (eq. 11's 1/W, taken as a per-pixel mean, so
    the value does not grow with the image). O((HW)²) work but only ``chunk`` × HW memory, in the
    backward pass too (each chunk of G is recomputed there: activation checkpointing).

    Why the reference's loss is negative: since sum_c P_c = 1, the inner sum equals
    g_i - <P(i), (G P)(i)> with g_i = sum_{j != i} G(i, j), which does not depend on P. The
    reference drops that constant and minimises -S(i)<P(i), (G P)(i)>, so its loss is negative and
    has the same gradient (with S detached); this function keeps it, so E >= 0."""
    n, c, h, w = probs.shape
    total = probs.new_zeros(())
    for b in range(n):
        p = probs[b].reshape(c, -1).T                          # (HW, C)
        f = pixel_features(images[b], sigma_xy, sigma_rgb).to(p.dtype)
        s = (soft_filter(probs[b], labels[b], detach_filter).reshape(-1) if labels is not None
             else p.new_ones(h * w))
        e = p.new_zeros(())
        for start in range(0, h * w, chunk):
            stop = min(start + chunk, h * w)
            args = (f, p, s, start, stop)
            if torch.is_grad_enabled() and p.requires_grad:   # recompute G in backward: memory
                e = e + checkpoint(_energy_rows, *args, use_reentrant=False)   # stays chunk × HW
            else:
                e = e + _energy_rows(*args)
        total = total + (e / (h * w) if normalize else e)
    return weight * total / n


def _energy_rows(f, p, s, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop of eq. (13): sum over those i of S(i) sum_{j != i} G(i, j) sum_c P_c(i)(1 - P_c(j))."""
    g = gaussian_kernel(f[start:stop], f)                      # (rows, HW)
    idx = torch.arange(start, stop, device=g.device)
    g[idx - start, idx] = 0                                    # j != i
    gq = g @ (1 - p)                                           # sum_j G(i, j) (1 - P_c(j))
    return (s[start:stop] * (p[start:stop] * gq).sum(1)).sum()   # no cancellation: E >= 0


# ------------------------------------------------------------------------------------------------
# The network and its joint loss (paper 003, Fig. 1 and Algorithm 1)
# ------------------------------------------------------------------------------------------------

class RRMNet(torch.nn.Module):
    """One network, two branches on a shared backbone (:class:`wsss_edu.cam.CAMClassifier`'s):
    classification (GAP, a 1x1 convolution without bias: the CAMs) and segmentation (two 3x3
    convolutions dilated by ``dilation``: the paper's 12 on ResNet-38; 2 suits the quick profile's
    small backbone at 64 px). ``num_classes``: foreground classes K; the segmentation branch
    predicts K + 1 (background first). ``forward`` returns (class logits (N, K), segmentation
    logits (N, K + 1, H, W) at the input's size, backbone features)."""

    def __init__(self, num_classes: int, backbone: str = "small", weights=None, dilation: int = 12,
                 seg_channels: int = 256, **kwargs):
        super().__init__()
        from .cam import CAMClassifier

        self.classifier_net = CAMClassifier(num_classes, backbone, weights, **kwargs)
        c, d = self.classifier_net.backbone.out_channels, dilation
        self.seg_head = torch.nn.Sequential(
            torch.nn.Conv2d(c, seg_channels, 3, padding=d, dilation=d), torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(seg_channels, num_classes + 1, 3, padding=d, dilation=d))
        self.stride = self.classifier_net.stride

    def forward(self, x):
        import torch.nn.functional as F

        f = self.classifier_net.features(x)
        logits = self.classifier_net.classifier(f.mean((2, 3), keepdim=True)).flatten(1)
        seg = F.interpolate(self.seg_head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, seg, f

    def cam(self, x):
        return self.classifier_net.cam(x)

    def segment(self, x):
        """One-step prediction: the segmentation branch's logits (N, K + 1, H, W)."""
        return self.forward(x)[1]


def split_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (9) as the reference computes it: the cross-entropy of the background pixels averaged
    over them, plus that of the foreground pixels averaged over them (255 ignored), so the many
    background pixels do not drown the few foreground ones. 0 for a part with no pixel."""
    import torch.nn.functional as F

    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")
    out = ce.new_zeros(())
    for part in (target == 0, (target != 0) & (target != IGNORE)):
        if part.any():
            out = out + ce[part].mean()
    return out


def batch_reliable_labels(images: np.ndarray, cams: torch.Tensor, tags: torch.Tensor, gamma: float = 4.0,
                          fraction: float = 0.4, crf_params="irn_labels", two_crf=None) -> torch.Tensor:
    """Eqs. (3-7) for a batch: ``cams`` (N, K, H, W) multi-scale CAMs (not normalised), ``tags``
    (N, K) multi-hot, ``images`` (N, H, W, 3) uint8 → reliable labels (N, H, W) int64."""
    from .cam import normalize_cams

    p_fg = normalize_cams(cams.float().cpu(), tags.cpu())
    out = [reliable_region_labels(images[i], p_fg[i], torch.nonzero(tags[i]).flatten().tolist(), gamma,
                                  fraction, crf_params, two_crf)["reliable"] for i in range(len(images))]
    return torch.stack(out)


def rrm_loss(model: RRMNet, batch: dict, cam_scales=(1.0,), gamma: float = 4.0, fraction: float = 0.4,
             crf_params="irn_labels", two_crf=None, energy_weight: float = 1.0, energy_scale: float = 0.5,
             sigma_xy: float = 100.0, sigma_rgb: float = 15.0, joint: bool = True, chunk: int = 1024) -> dict:
    """Algorithm 1, one step: the labels recomputed from the network's current CAMs (no gradient;
    ``cam_scales`` × flip, eq. 2), then L = L_cls + L_ce + L_energy (eq. 8; ``joint=False``: no
    energy term, Table 2's "CE loss" column). L_cls: multi-label soft margin on the image tags;
    L_ce: :func:`split_cross_entropy` on the reliable labels; L_energy: :func:`dense_energy_loss` of
    the segmentation branch's softmax at ``energy_scale`` of the resolution (the reference: half),
    with sigma_xy scaled the same way. Returns {'loss', 'cls', 'ce', 'energy', 'labelled'}."""
    import torch.nn.functional as F

    from .cam import multiscale_cam
    from .data import tensor_to_images

    x, tags = batch["image"], batch["labels"].float()
    logits, seg, _ = model(x)
    with torch.no_grad():
        cams = multiscale_cam(model.cam, x, cam_scales, flip=True)
        rgb = tensor_to_images(x.detach().cpu())
        target = batch_reliable_labels(rgb, cams, tags > 0, gamma, fraction, crf_params, two_crf).to(x.device)
    l_cls = F.multilabel_soft_margin_loss(logits, tags)
    l_ce = split_cross_entropy(seg, target)
    l_energy = seg.new_zeros(())
    if joint:
        probs = seg.float().softmax(1)
        img = torch.as_tensor(rgb, device=x.device).permute(0, 3, 1, 2).float()
        lab = target
        if energy_scale != 1:
            size = [max(1, round(s * energy_scale)) for s in seg.shape[-2:]]
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
            lab = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
        l_energy = energy_weight * dense_energy_loss(probs, img, lab, sigma_xy * energy_scale, sigma_rgb,
                                                     chunk=chunk)
    loss = l_cls + l_ce + l_energy
    return {"loss": loss, "cls": l_cls.detach(), "ce": l_ce.detach(), "energy": l_energy.detach(),
            "labelled": (target != IGNORE).float().mean()}


class SegmentationBranch(torch.nn.Module):
    """An :class:`RRMNet` seen as a plain segmenter (forward → segmentation logits), for
    :func:`wsss_edu.pseudo.evaluate` and TTA: the one-step prediction."""

    def __init__(self, net: RRMNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.segment(x)


@dataclass(frozen=True)
class RRMConfig:
    """Everything that decides an RRM training run (its cache key with the data). Quick-profile
    defaults: the small backbone from scratch with Adam; the paper's: ResNet-38 (here a torchvision
    backbone), SGD lr 1e-3, crop 321, random scale 0.7-1.3, sigma_xy 100 / sigma_rgb 15 at half
    resolution."""
    backbone: str = "small"
    weights: str | None = None
    width: int = 16
    dilation: int = 2
    seg_channels: int = 128
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    crop: int | None = None
    scale: tuple = (0.7, 1.3)
    cam_scales: tuple = (1.0,)
    gamma: float = 4.0
    fraction: float = 0.4
    crf_params: str = "irn_labels"
    two_crf: tuple | None = None
    joint: bool = True
    energy_weight: float = 1.0
    energy_scale: float = 0.5
    sigma_xy: float = 100.0
    sigma_rgb: float = 15.0
    seed: int = 0


def train_rrm(dataset, cfg: RRMConfig, device=None, workers: int = 0, checkpoint=None,
              progress: bool = True) -> RRMNet:
    """Train an :class:`RRMNet` end to end on ``dataset`` (samples with 'image' and the image
    tags 'labels'; masks, if any, are never used) with :func:`rrm_loss`. Returns it in eval mode."""
    from functools import partial

    from torch.utils.data import DataLoader

    from .data import SegTransformDataset
    from .errors import check_choice
    from .train import fit, poly_schedule, seed_everything

    check_choice("optimizer", cfg.optimizer, ("sgd", "adam"))
    seed_everything(cfg.seed)
    kw = {"width": cfg.width} if cfg.backbone == "small" else {}
    net = RRMNet(len(dataset.classes) - 1, cfg.backbone, cfg.weights, cfg.dilation, cfg.seg_channels, **kw)
    loader = DataLoader(SegTransformDataset(dataset, crop=cfg.crop, scale=cfg.scale, flip=True),
                        batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) >= cfg.batch_size,
                        num_workers=workers)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss = partial(_rrm_step_loss, cfg=cfg)
    fit(net, loader, loss, opt, cfg.epochs, device, poly_schedule(opt, cfg.epochs * len(loader)),
        checkpoint=checkpoint, progress=progress, desc=f"RRM ({len(dataset)} images)")
    return net.eval()


def _rrm_step_loss(model, batch, cfg: RRMConfig):
    return rrm_loss(model, batch, cfg.cam_scales, cfg.gamma, cfg.fraction, cfg.crf_params, cfg.two_crf,
                    cfg.energy_weight, cfg.energy_scale, cfg.sigma_xy, cfg.sigma_rgb, cfg.joint)["loss"]
