"""IRNet (Ahn, Cho & Kwak, CVPR 2019), step 2 of paper 001: inter-pixel relations learned from
CAMs, and the random walk that spreads the CAMs up to the learned class boundaries.

Everything works on a grid at the feature stride (4), with pixel pairs given by *offsets*: pixel
``(y, x)`` is paired with ``(y + dy, x + dx)`` for every offset within a radius. Pair quantities are
stored as (..., P, H, W) tensors (one plane per offset, indexed by the first pixel), computed with
shifted slices: memory is O(P · H · W), never (H · W)², so a 500×375 image at stride 4 walks in a
few MB (the reference builds the dense (HW)² transition matrix: ~0.5 GB per copy in fp32).

* :func:`pair_offsets` / :func:`path_points`: the pairs within a radius and the grid points on the
  segment between the two pixels of a pair (IRNet's ``PathIndex``);
* :func:`relation_labels`: confident foreground / background from CAMs (two thresholds + CRF);
* :func:`pair_label_masks`: background-positive, foreground-positive and negative pairs;
* :func:`pair_affinity`: a_ij = 1 - max of the boundary map B on the path between i and j
  (IRNet eq. 4);
* :func:`affinity_loss`, :func:`displacement_loss`: IRNet eq. 5-8;
* :class:`IRNet`: boundary and displacement branches on a frozen backbone;
* :func:`random_walk`: T = column-normalised A^beta (with self-loops), CAMs times (1 - B) walked
  2^exp_times steps (IRNet eq. 10-11), as repeated sparse products instead of matrix squaring.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .labels import IGNORE

# ------------------------------------------------------------------------------------------------
# Pairs and paths
# ------------------------------------------------------------------------------------------------


def pair_offsets(radius: int, half: bool = True) -> list:
    """Offsets (dy, dx) with 0 < dy² + dx² < radius², as IRNet's ``PathIndex``. ``half=True``
    keeps one of each pair of opposite offsets (dy > 0, or dy == 0 and dx > 0), so every unordered
    pixel pair is counted once; ``half=False`` keeps both directions. Ordered by (dy, dx)."""
    r = int(np.ceil(radius))
    out = []
    for dy in range(0 if half else -r, r + 1):
        for dx in range(-r, r + 1):
            if 0 < dy * dy + dx * dx < radius * radius and (not half or dy > 0 or dx > 0):
                out.append((dy, dx))
    return out


def path_points(dy: int, dx: int) -> list:
    """The grid points on the segment from (0, 0) to (dy, dx), both ends included: one point per
    step along the longer axis, the other coordinate rounded to the nearest integer (halves up:
    ``floor(v + 0.5)``, which makes the path from j to i the same pixels as from i to j)."""
    m = max(abs(dy), abs(dx))
    if m == 0:
        return [(0, 0)]
    return [(int(np.floor(k * dy / m + 0.5)), int(np.floor(k * dx / m + 0.5))) for k in range(m + 1)]


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` where that falls outside."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy:ye + dy, xs + dx:xe + dx]
    return out


def shifted(x: torch.Tensor, offsets, fill: float = 0.0) -> torch.Tensor:
    """The partner of every pixel for each offset: (..., H, W) -> (..., P, H, W) with
    ``out[..., p, y, x] = x[..., y + dy_p, x + dx_p]`` (``fill`` outside the image)."""
    return torch.stack([_shift(x, dy, dx, fill) for dy, dx in offsets], -3)


# ------------------------------------------------------------------------------------------------
# Labels for the pairs
# ------------------------------------------------------------------------------------------------


def relation_labels(image: np.ndarray, cams: torch.Tensor, fg_threshold: float = 0.30,
                    bg_threshold: float = 0.05, crf_params="irn_labels") -> np.ndarray:
    """IRNet's inter-pixel relation labels from normalised CAMs (K, H, W) of one image: the
    background plane at ``fg_threshold`` + label CRF gives the confident foreground, the plane at
    ``bg_threshold`` + label CRF the confident background; pixels confident in neither are 255.
    Returns (H, W) int64: 0 background, c + 1 for class c, 255 unsure."""
    from .cam import crf_cam_labels

    fg = crf_cam_labels(image, cams, fg_threshold, params=crf_params)
    bg = crf_cam_labels(image, cams, bg_threshold, params=crf_params)
    out = np.where(fg == 0, IGNORE, fg)
    out[bg == 0] = 0
    return out.astype(np.int64)


def pair_label_masks(labels: torch.Tensor, offsets) -> tuple:
    """Which pairs teach what (IRNet §3.2), from a label map (..., H, W) with 255 = unsure:
    background positives (both background), foreground positives (both the same class c > 0) and
    negatives (both labelled, different classes). Returns three bool tensors (..., P, H, W);
    pairs leaving the image or touching an unsure pixel are in none."""
    a = labels.unsqueeze(-3).expand(*labels.shape[:-2], len(offsets), *labels.shape[-2:])
    b = shifted(labels, offsets, fill=IGNORE)
    valid = (a != IGNORE) & (b != IGNORE)
    same = valid & (a == b)
    return same & (a == 0), same & (a > 0), valid & (a != b)


# ------------------------------------------------------------------------------------------------
# Affinities and losses
# ------------------------------------------------------------------------------------------------


def pair_affinity(boundary: torch.Tensor, offsets) -> torch.Tensor:
    """IRNet eq. 4: a_ij = 1 - max_{k on the path from i to j} B(k), for every pixel i and offset
    (j = i + offset). ``boundary`` (..., H, W) in [0, 1]; pairs leaving the image get 0 (the
    outside counts as boundary, as the reference pads with 1). Returns (..., P, H, W)."""
    planes = []
    for dy, dx in offsets:
        peak = None
        for py, px in path_points(dy, dx):
            b = _shift(boundary, py, px, 1.0)
            peak = b if peak is None else torch.maximum(peak, b)
        planes.append(1 - peak)
    return torch.stack(planes, -3)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the pairs in ``mask``; 0 for an empty mask."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def affinity_loss(aff: torch.Tensor, pos_bg, pos_fg, neg, eps: float = 1e-5) -> torch.Tensor:
    """IRNet eq. 5-7: -log a on positive pairs (background and foreground averaged separately,
    each weighted 1/2) and -log(1 - a) on negative pairs, the two halves averaged:
    L = (L_bg / 2 + L_fg / 2 + L_neg) / 2. An empty set contributes 0."""
    l_bg = _masked_mean(-torch.log(aff + eps), pos_bg)
    l_fg = _masked_mean(-torch.log(aff + eps), pos_fg)
    l_neg = _masked_mean(-torch.log(1 - aff + eps), neg)
    return (l_bg / 2 + l_fg / 2 + l_neg) / 2


def displacement_loss(disp: torch.Tensor, offsets, pos_fg, pos_bg) -> tuple:
    """IRNet eq. 8-9 on a displacement field ``disp`` (N, 2, H, W) (dy, dx in grid cells): two
    pixels i, j of one object should point at one centroid, x_i + D_i = x_j + D_j, so for
    foreground pairs |D_i - D_j - (x_j - x_i)|_1 is minimised; for background pairs |D_i - D_j|_1.
    Each is averaged over pairs and over the two components, as the reference. Returns
    (L_fg, L_bg)."""
    off = torch.tensor(offsets, dtype=disp.dtype, device=disp.device)          # (P, 2)
    d_j = torch.stack([shifted(disp[:, k], offsets) for k in range(2)], 1)      # (N, 2, P, H, W)
    delta = disp.unsqueeze(2) - d_j                                              # D_i - D_j
    err_fg = (delta - off.T[None, :, :, None, None]).abs().sum(1)
    err_bg = delta.abs().sum(1)
    return _masked_mean(err_fg, pos_fg) / 2, _masked_mean(err_bg, pos_bg) / 2


# ------------------------------------------------------------------------------------------------
# The random walk
# ------------------------------------------------------------------------------------------------


def transition_weights(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0) -> tuple:
    """The transition matrix of IRNet eq. 10 in pair form. Affinities a_ij (:func:`pair_affinity`)
    for both directions of every offset within ``radius`` plus a self-loop (a_ii = 1), raised to
    ``beta`` and divided by their sum over i for each j, so T is column-stochastic:
    ``T[i, j] = a_ij^beta / sum_k a_kj^beta``. Returns (offsets incl. (0, 0), weights (..., P, H, W))
    where ``weights[..., p, y, x]`` = T[(y, x) + offset_p, (y, x)]."""
    pairs = pair_offsets(radius, half=False)
    aff = pair_affinity(boundary, pairs)              # symmetric paths: a(j, j+o) = a(j+o, j)
    aff = torch.cat([torch.ones_like(aff[..., :1, :, :]), aff], -3).clamp(min=0) ** beta
    return [(0, 0)] + pairs, aff / aff.sum(-3, keepdim=True).clamp(min=1e-12)


def transition_matrix(offsets, weights: torch.Tensor) -> torch.Tensor:
    """The dense T (..., HW, HW) from the pair form of :func:`transition_weights` (scattered, no
    loop over pixels): ``T[i, j]`` = weight of offset p at pixel j where i = j + offset_p."""
    *batch, p, h, w = weights.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    t = weights.new_zeros(*batch, h * w, h * w)
    for k, (dy, dx) in enumerate(offsets):
        ok = ((yy + dy >= 0) & (yy + dy < h) & (xx + dx >= 0) & (xx + dx < w)).flatten()
        j = (yy * w + xx).flatten()[ok]
        i = ((yy + dy) * w + xx + dx).flatten()[ok]
        t[..., i, j] = weights[..., k, :, :].flatten(-2)[..., ok]
    return t


def random_walk(cams: torch.Tensor, boundary: torch.Tensor, radius: int = 5, beta: float = 10.0,
                exp_times: int = 8, max_dense: int = 1024) -> torch.Tensor:
    """IRNet eq. 11: the CAMs (K, H, W), first damped by (1 - B), walked 2^exp_times steps:
    v <- v T, i.e. ``v_new[j] = sum_i v[i] T[i, j]`` with T from :func:`transition_weights`. Each
    step is a sum over P shifted copies (memory O(K·P·H·W)); it equals multiplying by the matrix T
    squared ``exp_times`` times, as the reference does. Batched: ``cams`` (N, K, H, W) with
    ``boundary`` (N, H, W). Maps of at most ``max_dense`` pixels (the toy world's) take the
    reference's route instead, T squared ``exp_times`` times as a dense matrix, which is faster
    there; both give the same result (tested). Returns the shape of ``cams``."""
    offsets, w = transition_weights(boundary, radius, beta)
    h, wd = boundary.shape[-2:]
    if h * wd <= max_dense:
        t = transition_matrix(offsets, w)
        for _ in range(exp_times):
            t = t @ t
        v = (cams * (1 - boundary).unsqueeze(-3)).flatten(-2)      # (..., K, HW)
        return (v @ t).view_as(cams)
    v = cams * (1 - boundary).unsqueeze(-3)          # (..., K, H, W) times (..., 1, H, W)
    w = w.unsqueeze(-4)                               # (..., 1, P, H, W): the same for every class
    for _ in range(2 ** exp_times):
        v = (shifted(v, offsets) * w).sum(-3)
    return v


def walk_to_labels(walked: torch.Tensor, keys, bg_threshold: float = 0.25, size=None) -> torch.Tensor:
    """Pseudo-labels from walked CAMs (K, h, w) as IRNet: upsample to ``size`` (bilinear), divide
    by the global maximum, put a background plane at ``bg_threshold`` in front, argmax; only the
    image's classes ``keys`` (indices into K) compete. Returns (H, W) int64 in 0..K."""
    keys = torch.as_tensor(keys, dtype=torch.long)
    v = walked[keys][None]
    if size is not None:
        v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
    v = v[0] / v.max().clamp(min=1e-12)
    lab = torch.cat([torch.full_like(v[:1], bg_threshold), v]).argmax(0)
    ids = torch.cat([torch.zeros(1, dtype=torch.long), keys + 1])
    return ids[lab]


# ------------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------------


def backbone_stages(source, weights: str | None = None) -> list:
    """The frozen feature stages IRNet reads: a trained :class:`wsss_edu.cam.CAMClassifier` with
    the small backbone (its stages; the quick profile has no ImageNet network, so it reuses step 1's
    classifier) or ``'resnet50'`` (torchvision's, output stride 16 as IRNet: conv1 + layer1
    (stride 4), layer2, layer3, layer4 dilated)."""
    from .cam import SmallBackbone

    if isinstance(source, str):
        if source != "resnet50":
            raise ValueError(f"backbone {source!r} is not valid; choose 'resnet50' or a trained "
                             "small CAMClassifier")
        from torchvision.models import ResNet50_Weights, resnet50

        net = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1 if weights == "imagenet" else None,
                       replace_stride_with_dilation=[False, False, True])
        return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
                net.layer2, net.layer3, net.layer4]
    body = source.backbone
    if not isinstance(body, SmallBackbone):
        raise ValueError("backbone_stages takes a small CAMClassifier or 'resnet50'")
    mods = list(body.body)
    return [nn.Sequential(*mods[i:i + 6]) for i in range(0, len(mods), 6)]


class IRNet(nn.Module):
    """IRNet's two branches on frozen backbone stages (IRNet §4.1, simplified): each stage's
    features are projected (1x1 conv, GroupNorm, ReLU) and resized to stride 4, then
    concatenated; the boundary branch maps them to B in [0, 1] (1x1 conv, sigmoid), the
    displacement branch to D (3x3 conv, GroupNorm, ReLU, 1x1 conv to 2 channels: dy, dx in grid
    cells). The reference uses all five ResNet stages for B and the last three, upsampled step by
    step, for D. ``forward(x)`` returns (B (N, h, w), D (N, 2, h, w)) with h = ceil(H / 4)."""

    def __init__(self, stages, width: int = 32, stride: int = 4):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        for p in self.stages.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            chans, x = [], torch.zeros(1, 3, 32, 32)
            self.stages.eval()
            for st in self.stages:
                x = st(x)
                chans.append(x.shape[1])
        groups = 4 if width % 4 == 0 else 1

        def proj(c):
            return nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(groups, width),
                                 nn.ReLU(inplace=True))
        self.boundary_proj = nn.ModuleList([proj(c) for c in chans])
        self.disp_proj = nn.ModuleList([proj(c) for c in chans])
        cat = width * len(chans)
        self.boundary_head = nn.Conv2d(cat, 1, 1)
        self.disp_head = nn.Sequential(nn.Conv2d(cat, width, 3, padding=1, bias=False),
                                       nn.GroupNorm(groups, width), nn.ReLU(inplace=True),
                                       nn.Conv2d(width, 2, 1))
        self.stride = stride

    def train(self, mode: bool = True):
        super().train(mode)
        self.stages.eval()            # frozen, batch norm statistics included
        return self

    def features(self, x):
        with torch.no_grad():
            feats = []
            for st in self.stages:
                x = st(x)
                feats.append(x)
        return feats

    def forward(self, x):
        size = (-(-x.shape[-2] // self.stride), -(-x.shape[-1] // self.stride))
        feats = self.features(x)

        def fuse(projs):
            return torch.cat([F.interpolate(p(f), size=size, mode="bilinear", align_corners=False)
                              for p, f in zip(projs, feats)], 1)
        boundary = torch.sigmoid(self.boundary_head(fuse(self.boundary_proj)))[:, 0]
        disp = self.disp_head(fuse(self.disp_proj))
        return boundary, disp

    def param_groups(self, lr_boundary: float = 0.005, lr_displacement: float = 0.05) -> list:
        """The two learning rates of paper 001 (0.005 boundary, 0.05 displacement; IRNet: 0.1, 1.0)."""
        b = list(self.boundary_proj.parameters()) + list(self.boundary_head.parameters())
        d = list(self.disp_proj.parameters()) + list(self.disp_head.parameters())
        return [{"params": b, "lr": lr_boundary}, {"params": d, "lr": lr_displacement}]


def irnet_loss(model: IRNet, batch, offsets) -> torch.Tensor:
    """IRNet's training loss on a batch {'image', 'relation'} (relation labels at the output
    stride, 255 = unsure): (L_aff_pos + L_aff_neg) / 2 + (L_D_fg + L_D_bg) / 2, as the reference."""
    boundary, disp = model(batch["image"])
    pos_bg, pos_fg, neg = pair_label_masks(batch["relation"], offsets)
    l_aff = affinity_loss(pair_affinity(boundary, offsets), pos_bg, pos_fg, neg)
    l_fg, l_bg = displacement_loss(disp, offsets, pos_fg, pos_bg)
    return l_aff + (l_fg + l_bg) / 2
