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
  2^exp_times steps (IRNet eq. 10-11), as repeated sparse products instead of matrix squaring;
* :func:`walk_to_image`, :func:`walk_to_labels`: the walked maps brought to the image and the
  background plane, IRNet's pseudo-labels.

Differences from the reference code (``jiwoon-ahn/irn``; what is equal is tested on its outputs
in tests/test_reference_irn.py: directions, paths, affinities, T, the walk, the walk's labels):

* Paths: the reference's thick paths by default; ``path='thin'`` (:func:`path_points`,
  :class:`IRNetConfig` / :class:`WalkConfig`) uses the one-pixel digital line instead, which leaks
  through diagonal boundaries — kept to show why the reference's paths are thick.
* Training pairs: the reference pairs only its ``PathIndex`` sources (not the bottom r_f rows nor
  the side r_f columns of each 512-px crop, r_f = radius - 1); the package pairs every pixel of the
  grid by default, because on the toy world's 16×16 grid the reference's rule would drop 62 % of
  the sources at radius 5. ``sources='reference'`` (:class:`IRNetConfig`) restores it.
* The walk: the reference squares a dense (HW)² float32 T; maps larger than ``max_dense`` pixels
  walk 2^exp_times sparse steps in float64 instead (memory), equal within 1e-10 of the
  reference's float64 walk; ``pair_dtype=None`` walks them in float32 (6e-5 of the maximum off).
* The network (:class:`IRNet`) is a simplified two-branch head, and the relation labels, losses
  and optimiser follow the reference's code as read, untested against its outputs (no golden data
  covers them); the notebooks' learning rates are paper 001's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed, params
from .cache import artifact_path, cached, checkpoint_path, params_key
from .cam import (
    SmallBackbone,
    _MobileNetV2Features,
    classifier_probs,
    confident_image_mask,
    crf_cam_labels,
    crf_label_map,
    dataset_tags,
    load_cams,
)
from .data import (
    AUGMENTS,
    images_to_tensor,
    item_rng,
    random_scale_crop_flip,
    same_size_batches,
    strong_augment,
)
from .errors import ParameterError, check_choice
from .io import folder_complete, read_mask, write_mask
from .labels import IGNORE
from .metrics import ConfusionMeter
from .parallel import finish_folder, pending, set_worker_state, shard_spec, worker_state
from .pretrained import torchvision_classifier
from .train import fit, poly_schedule, seed_everything

# ------------------------------------------------------------------------------------------------
# Pairs and paths
# ------------------------------------------------------------------------------------------------


def pair_offsets(radius: int, half: bool = True) -> list:
    """Offsets (dy, dx) with 0 < dy² + dx² < radius²: with ``half=True`` the directions of IRNet's
    ``PathIndex`` (tested on its outputs, in another order: it groups them by path length). ``half=True``
    keeps one of each pair of opposite offsets (dy > 0, or dy == 0 and dx > 0), so every unordered
    pixel pair is counted once; ``half=False`` keeps both directions. Ordered by (dy, dx)."""
    r = int(np.ceil(radius))
    out = []
    for dy in range(0 if half else -r, r + 1):
        for dx in range(-r, r + 1):
            if 0 < dy * dy + dx * dx < radius * radius and (not half or dy > 0 or dx > 0):
                out.append((dy, dx))
    return out


PATHS = ("thick", "thin")


def path_points(dy: int, dx: int, path: str = "thick") -> list:
    """The grid points between (0, 0) and (dy, dx) whose boundary values decide the pair's affinity
    (IRNet eq. 4's "path"), both ends included.

    ``'thick'`` (default): every point (y, x) of the segment's bounding box whose squared distance
    to the line through (0, 0) and (dy, dx) is below 1, i.e. (dy·x - dx·y)² < dy² + dx²: the pixels
    the reference's ``PathIndex`` keeps (tested on its outputs). A diagonal step then includes both
    pixels beside the diagonal, so a one-pixel 8-connected boundary line cannot be slipped through.
    ``'thin'``: one point per step along the longer axis, the other coordinate rounded
    (``floor(v + 0.5)``): the digital line, which leaks through such a boundary (a deliberate
    simplification kept for notebook 04's comparison). Both are symmetric: the path of (-dy, -dx)
    is the negated path of (dy, dx). Points are sorted from (0, 0) outwards."""
    check_choice("path", path, PATHS)
    if dy == 0 and dx == 0:
        return [(0, 0)]
    if path == "thin":
        m = max(abs(dy), abs(dx))
        return [(int(np.floor(k * dy / m + 0.5)), int(np.floor(k * dx / m + 0.5))) for k in range(m + 1)]
    length_sq = dy * dy + dx * dx
    pts = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
           if (dy * x - dx * y) ** 2 < length_sq]
    return sorted(pts, key=lambda p: (abs(p[0]) + abs(p[1]), p))


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
                    bg_threshold: float | None = 0.05, crf_params="irn_labels") -> np.ndarray:
    """IRNet's inter-pixel relation labels from normalised CAMs (K, H, W) of one image: the
    background plane at ``fg_threshold`` + label CRF gives the confident foreground, the plane at
    ``bg_threshold`` + label CRF the confident background; pixels confident in neither are 255.
    ``bg_threshold=None`` (a dataset without a background class):
    :func:`relation_labels_without_background`. Returns (H, W) int64: 0 background, c + 1 for
    class c, 255 unsure."""
    if bg_threshold is None:
        return relation_labels_without_background(image, cams, fg_threshold, crf_params)
    fg = crf_cam_labels(image, cams, fg_threshold, params=crf_params)
    bg = crf_cam_labels(image, cams, bg_threshold, params=crf_params)
    out = np.where(fg == 0, IGNORE, fg)
    out[(bg == 0) & (fg == 0)] = 0      # background only where both say so (IRN's cam_to_ir_label
    #                                     as read; no golden data covers this step)
    return out.astype(np.int64)


def relation_labels_without_background(image: np.ndarray, cams: torch.Tensor,
                                       fg_threshold: float = 0.30, crf_params="irn_labels") -> np.ndarray:
    """Relation labels for a dataset without a background class (MSRC: grass, sky, road are
    classes; not in IRNet, which assumes VOC's background): each pixel takes the image's class
    whose CAM is the largest there, refined by the label CRF among the image's classes only
    (:func:`wsss_edu.cam.crf_cam_labels` with no plane); it is confident where that class's own
    CAM reaches ``fg_threshold`` (the threshold IRNet's foreground plane uses), unsure (255)
    elsewhere. With no background label, every training pair is a same-class positive or a
    different-class negative (:func:`pair_label_masks`'s background set stays empty).
    Returns (H, W) int64: c + 1 for class c, 255 unsure."""
    lab = crf_cam_labels(image, cams, None, params=crf_params)
    k = torch.as_tensor(lab - 1).clamp(min=0)
    own = torch.gather(cams, 0, k[None].to(torch.long))[0].numpy()   # the winner's own CAM
    return np.where((lab > 0) & (own >= fg_threshold), lab, IGNORE).astype(np.int64)


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


def pair_affinity(boundary: torch.Tensor, offsets, path: str = "thick") -> torch.Tensor:
    """IRNet eq. 4: a_ij = 1 - max_{k on the path from i to j} B(k), for every pixel i and offset
    (j = i + offset), with the path of :func:`path_points` (``path``: 'thick', the reference's
    pixels, or 'thin'). ``boundary`` (..., H, W) in [0, 1]; pairs leaving the image get 0 (the
    outside counts as boundary, as the reference's walk pads with 1 and crops those pairs away).
    Equals the reference's ``edge_to_affinity`` on every pair inside the image (tested on its
    outputs). Returns (..., P, H, W)."""
    planes = []
    for dy, dx in offsets:
        peak = None
        for py, px in path_points(dy, dx, path):
            b = _shift(boundary, py, px, 1.0)
            peak = b if peak is None else torch.maximum(peak, b)
        planes.append(1 - peak)
    return torch.stack(planes, -3)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the pairs in ``mask``; 0 for an empty mask. Training on several
    processes, the mean over the pairs of the *global* batch (:func:`wsss_edu.distributed.batch_mean`):
    the loss balances its pair sets by their counts, which differ from rank to rank."""
    if distributed.active():
        return distributed.batch_mean((x * mask).sum(), mask.sum())
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
    Each is averaged over pairs and over the two components (IRN's train_irn as read; not tested
    against its outputs). Returns (L_fg, L_bg)."""
    off = torch.tensor(offsets, dtype=disp.dtype, device=disp.device)          # (P, 2)
    d_j = torch.stack([shifted(disp[:, k], offsets) for k in range(2)], 1)      # (N, 2, P, H, W)
    delta = disp.unsqueeze(2) - d_j                                              # D_i - D_j
    err_fg = (delta - off.T[None, :, :, None, None]).abs().sum(1)
    err_bg = delta.abs().sum(1)
    return _masked_mean(err_fg, pos_fg) / 2, _masked_mean(err_bg, pos_bg) / 2


# ------------------------------------------------------------------------------------------------
# The random walk
# ------------------------------------------------------------------------------------------------


def transition_weights(boundary: torch.Tensor, radius: int = 5, beta: float = 10.0,
                       path: str = "thick") -> tuple:
    """The transition matrix of IRNet eq. 10 in pair form. Affinities a_ij (:func:`pair_affinity`)
    for both directions of every offset within ``radius`` plus a self-loop (a_ii = 1), raised to
    ``beta`` and divided by their sum over i for each j, so T is column-stochastic
    (the reference's ``to_transition_matrix`` on its dense affinities, tested on its outputs):
    ``T[i, j] = a_ij^beta / sum_k a_kj^beta``. Returns (offsets incl. (0, 0), weights (..., P, H, W))
    where ``weights[..., p, y, x]`` = T[(y, x) + offset_p, (y, x)]."""
    pairs = pair_offsets(radius, half=False)
    aff = pair_affinity(boundary, pairs, path)        # symmetric paths: a(j, j+o) = a(j+o, j)
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
                exp_times: int = 8, max_dense: int = 1024, path: str = "thick",
                pair_dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """IRNet eq. 11: the CAMs (K, H, W), first damped by (1 - B), walked 2^exp_times steps:
    v <- v T, i.e. ``v_new[j] = sum_i v[i] T[i, j]`` with T from :func:`transition_weights`
    (reference: ``propagate_to_edge``; equal within its float32 rounding, tested on its outputs).
    Batched: ``cams`` (N, K, H, W) with ``boundary`` (N, H, W). Returns the shape and dtype of
    ``cams``, not normalised.

    Two routes, the same result. Maps of at most ``max_dense`` pixels (the toy world's) take the
    reference's: the dense T squared ``exp_times`` times, in the input's dtype. Larger maps take
    the pair route: 2^exp_times sums over the P shifted copies (memory O(K·P·H·W) instead of the
    dense (HW)² matrix, ~0.5 GB per copy for a 500×375 image), computed in ``pair_dtype``
    (default float64, T included): 256 sequential float32 steps drift from the exact walk by
    6e-5 of its maximum (2.5e-4 of a value, outside the reference's tolerance rtol 1e-4), five
    times the reference's own float32 error, while float64 stays within 1e-10 of the reference's
    float64 walk (measured in tests/test_reference_irn.py). ``pair_dtype=None`` walks in the
    input's dtype (half the memory, that error)."""
    h, wd = boundary.shape[-2:]
    dense = h * wd <= max_dense
    dtype = cams.dtype if dense or pair_dtype is None else pair_dtype
    offsets, w = transition_weights(boundary.to(dtype), radius, beta, path)
    if dense:
        t = transition_matrix(offsets, w)
        for _ in range(exp_times):
            t = t @ t
        v = (cams * (1 - boundary).unsqueeze(-3)).flatten(-2)      # (..., K, HW)
        return (v @ t).view_as(cams)
    v = cams.to(dtype) * (1 - boundary.to(dtype)).unsqueeze(-3)   # (..., K, H, W) times (..., 1, H, W)
    w = w.unsqueeze(-4)                               # (..., 1, P, H, W): the same for every class
    for _ in range(2 ** exp_times):
        v = (shifted(v, offsets) * w).sum(-3)
    return v.to(cams.dtype)


def walk_to_image(walked: torch.Tensor, size, stride: int = 4) -> torch.Tensor:
    """Walked maps (K, h, w) on the feature grid brought to the image, as IRNet's
    ``make_sem_seg_labels`` does (tested on its outputs): upsampled by ``stride`` (bilinear,
    align_corners=False), cropped to ``size`` (H, W) from the top-left (the grid has
    ceil(H / stride) cells, so the upsampled map covers the image and a little more), divided by
    the global maximum over classes and pixels. Resizing straight to (H, W) instead would differ
    wherever a side is not a multiple of ``stride`` (10 % of a 45×61 image's labels).
    Returns (K, H, W)."""
    h, w = walked.shape[-2:]
    if h * stride < size[0] or w * stride < size[1]:
        raise ValueError(f"walked maps of {h}×{w} cells at stride {stride} do not cover an image of "
                         f"{size[0]}×{size[1]}: the grid must have ceil(side / {stride}) cells")
    v = F.interpolate(walked[None], scale_factor=stride, mode="bilinear", align_corners=False)
    v = v[0, :, :size[0], :size[1]]
    return v / v.max().clamp(min=1e-12)


def walk_to_labels(walked: torch.Tensor, keys, bg_threshold: float | None = 0.25, size=None,
                   stride: int = 4) -> torch.Tensor:
    """Pseudo-labels from walked CAMs (K, h, w) as IRNet: the image's classes ``keys`` (indices
    into K) brought to the image ``size`` (:func:`walk_to_image`; ``size=None``: stay on the grid,
    divided by the global maximum), a background plane at ``bg_threshold`` in front, argmax.
    ``bg_threshold=None`` (a dataset without a background class): no plane, the argmax over the
    image's classes. Returns (H, W) int64 in 0..K (0 background, k + 1 for channel k)."""
    keys = torch.as_tensor(keys, dtype=torch.long)
    v = walked[keys]
    v = walk_to_image(v, size, stride) if size is not None else v / v.max().clamp(min=1e-12)
    if bg_threshold is None:
        return keys[v.argmax(0)] + 1
    lab = torch.cat([torch.full_like(v[:1], bg_threshold), v]).argmax(0)
    ids = torch.cat([torch.zeros(1, dtype=torch.long), keys + 1])
    return ids[lab]


# ------------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------------


def backbone_stages(source, weights: str | None = None) -> list:
    """The frozen feature stages IRNet reads: a trained :class:`wsss_edu.cam.CAMClassifier` with
    the small backbone (its stages; the quick profile has no ImageNet network, so it reuses step 1's
    classifier) or the MobileNetV2 one (its blocks cut where the stride changes: 24 channels at
    stride 4, 32 at 8, 96 at 16, then the dilated 160/320/1280-channel blocks, still 16), or
    ``'resnet50'`` (torchvision's, output stride 16 as IRNet: conv1 + layer1 (stride 4), layer2,
    layer3, layer4 dilated)."""
    if isinstance(source, str):
        if source != "resnet50":
            raise ValueError(f"backbone {source!r} is not valid; choose 'resnet50' or a trained "
                             "small CAMClassifier")
        net = torchvision_classifier("resnet50", weights, replace_stride_with_dilation=[False, False, True])
        return [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
                net.layer2, net.layer3, net.layer4]
    body = source.backbone
    if isinstance(body, _MobileNetV2Features):
        b = body.body
        return [b[:4], b[4:7], b[7:14], b[14:]]
    if not isinstance(body, SmallBackbone):
        raise ValueError("backbone_stages takes a small or MobileNetV2 CAMClassifier, or 'resnet50'")
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


SOURCES = ("all", "reference")


def reference_source_mask(h: int, w: int, radius: float) -> torch.Tensor:
    """The pixels of an (h, w) grid that IRNet's ``PathIndex`` pairs with their partners during
    training (tested on its outputs): rows 0 .. h - r_f - 1 and columns r_f .. w - r_f - 1, with
    r_f = ceil(radius) - 1, so that every partner of the half disc stays on the grid. The pairs
    from the bottom r_f rows and the side r_f columns are never used. (h, w) bool."""
    rf = int(np.ceil(radius)) - 1
    m = torch.zeros(h, w, dtype=torch.bool)
    m[:max(0, h - rf), rf:max(rf, w - rf)] = True
    return m


def irnet_loss(model: IRNet, batch, offsets, path: str = "thick", sources: str = "all",
               radius: float | None = None) -> torch.Tensor:
    """IRNet's training loss on a batch {'image', 'relation'} (relation labels at the output
    stride, 255 = unsure): (L_aff_pos + L_aff_neg) / 2 + (L_D_fg + L_D_bg) / 2 (the combination
    of IRN's train_irn as read; not tested against its outputs). Pairs from every pixel of the
    grid (``sources='all'``) or only from the reference's source pixels (``'reference'``,
    :func:`reference_source_mask` for the ``radius`` the offsets were drawn with); affinities
    along ``path`` (:func:`path_points`)."""
    check_choice("sources", sources, SOURCES)
    boundary, disp = model(batch["image"])
    pos_bg, pos_fg, neg = pair_label_masks(batch["relation"], offsets)
    if sources == "reference":      # ``radius``: the one ``offsets`` were drawn with
        keep = reference_source_mask(*batch["relation"].shape[-2:], radius).to(pos_bg.device)
        pos_bg, pos_fg, neg = pos_bg & keep, pos_fg & keep, neg & keep
    l_aff = affinity_loss(pair_affinity(boundary, offsets, path), pos_bg, pos_fg, neg)
    l_fg, l_bg = displacement_loss(disp, offsets, pos_fg, pos_bg)
    return l_aff + (l_fg + l_bg) / 2


# ------------------------------------------------------------------------------------------------
# Step 2 end to end, cached: what notebook 04 builds and notebook 05 reuses
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IRNetConfig:
    """Everything that decides step 2's network (the cache key of its weights).

    Relation labels: CAM planes ``fg_threshold`` / ``bg_threshold`` + label CRF, on the training
    images whose every tag has a classifier probability above ``confidence`` (paper 001).
    Training: pairs within ``radius`` grid cells at stride 4, SGD with momentum and polynomial
    decay at ``lr_boundary`` / ``lr_displacement`` (IRNet 0.1 / 1.0; paper 001 says 0.005 / 0.05),
    ``crop``: random rescale in ``scale`` + crop (real datasets; None: whole images, flipped).
    ``path``: the pixels between two pixels whose boundary values give their affinity, in the
    training loss (:func:`path_points`: 'thick', the reference's, or 'thin'); ``sources``: the
    pixels whose pairs teach ('all', or 'reference': :func:`reference_source_mask`). ``augment``:
    'flip' or 'strong' (paper 001: "the same strong data augmentation as in the classification
    step", :func:`wsss_edu.data.strong_augment`); ``copy_scales``: paper 001's copies of every
    training image rescaled by each factor (0.5, 1, 1.5, 2), or None (each image once)."""
    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    confidence: float = 0.8
    radius: int = 5
    epochs: int = 5
    batch_size: int = 16
    lr_boundary: float = 0.1
    lr_displacement: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    width: int = 32
    crop: int | None = None
    scale: tuple = (0.5, 1.5)
    seed: int = 0
    path: str = "thick"
    sources: str = "all"
    augment: str = "flip"
    copy_scales: tuple | None = None


@dataclass(frozen=True)
class WalkConfig:
    """The random walk's settings (IRNet's defaults): pairs within ``radius`` at stride 4,
    affinities to the power ``beta``, T squared ``exp_times`` times, background plane
    ``bg_threshold`` on the walked maps; ``path``: the affinities' paths (:func:`path_points`)."""
    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    bg_threshold: float = 0.25
    path: str = "thick"


def labels_at_stride(labels: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """A label map (..., H, W) on the network's output grid (ceil(H / stride) cells per side):
    the label at the centre pixel of each cell (a nearest-neighbour rescale, as IRN's is read); cells
    whose centre falls outside the image are 255."""
    h, w = labels.shape[-2:]
    oh, ow = -(-h // stride), -(-w // stride)
    c = stride // 2
    out = labels.new_full((*labels.shape[:-2], oh, ow), IGNORE)
    sub = labels[..., c::stride, c::stride]
    out[..., :sub.shape[-2], :sub.shape[-1]] = sub
    return out


def write_relation_labels(dataset, cam_folder, folder, indices, cfg: IRNetConfig,
                          progress: bool = True, processes: int = 1, shard=None) -> int:
    """IRNet's relation labels (:func:`relation_labels`) of the images ``indices`` of ``dataset``
    (samples with 'image', 'name'; ``dataset.num_classes`` counts the background) from their CAMs
    in ``cam_folder``, one grey PNG per image in ``folder`` (0 bg, c + 1 class c, 255 unsure).
    Images whose PNG exists are skipped (resumable); ``processes`` > 1 spreads the CRFs over
    that many processes; ``shard`` ((i, n) or 'i/n'; default: ``WSSS_SHARD``, else all): this
    machine's share of ``indices`` (:func:`wsss_edu.parallel.shard`). Returns the number written."""
    from tqdm.auto import tqdm

    names = dataset.names
    todo = pending(indices, lambda i: Path(folder) / f"{names[i]}.png", shard)
    bar = tqdm(total=len(todo), desc="relation labels", disable=not progress, leave=False)
    job = dict(dataset=dataset, cam_folder=cam_folder, folder=folder, cfg=cfg)
    if processes > 1 and len(todo) > 16:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunks = [todo[c:c + 16] for c in range(0, len(todo), 16)]
        # spawn, not fork: a forked child of a process that has run torch can hang on its locks;
        # the dataset travels once per worker (initializer), the jobs carry indices only
        with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn"),
                                 initializer=set_worker_state, initargs=(job,)) as pool:
            for n in pool.map(_relation_chunk, chunks):
                bar.update(n)
    else:
        for i in todo:
            bar.update(_relation_chunk([i], job))
    bar.close()
    return len(todo)


def _relation_chunk(indices, job=None) -> int:
    job = job or worker_state()
    dataset, cfg = job["dataset"], job["cfg"]
    for i in indices:
        s = dataset[i]
        cams = load_cams(job["cam_folder"], s["name"], dataset.num_classes - 1)
        rel = relation_labels(s["image"], cams, cfg.fg_threshold, cfg.bg_threshold)
        write_mask(Path(job["folder"]) / f"{s['name']}.png", rel.astype(np.uint8))
    return len(indices)


class RelationDataset(torch.utils.data.Dataset):
    """Training samples of IRNet: {'image': float (3, H, W), 'relation': long (H/4, W/4)} for the
    images ``indices`` of ``dataset``, relation labels read from the PNGs of
    :func:`write_relation_labels`. ``crop``: random rescale in ``scale``, crop and flip (the
    labels follow, padded with 255); None: whole images, flipped at random. ``augment='strong'``:
    :func:`wsss_edu.data.strong_augment` first. ``copy_scales``: every image once per factor,
    rescaled by it (labels by nearest neighbour) before the rest — paper 001's enlarged set.
    :func:`relation_dataset` builds one from an :class:`IRNetConfig`."""

    def __init__(self, dataset, folder, indices, crop: int | None = None, scale=(0.5, 1.5),
                 stride: int = 4, augment: str = "flip", copy_scales=None):
        check_choice("augment", augment, AUGMENTS)
        self.dataset, self.folder, self.indices = dataset, Path(folder), np.asarray(indices)
        self.crop, self.scale, self.stride, self.augment = crop, scale, stride, augment
        self.copy_scales = tuple(copy_scales) if copy_scales else (None,)

    def __len__(self):
        return len(self.indices) * len(self.copy_scales)

    def __getitem__(self, j):
        from PIL import Image

        index, factor = divmod(j, len(self.copy_scales))
        s = self.dataset[int(self.indices[index])]
        img, rel = s["image"], read_mask(self.folder / f"{s['name']}.png")
        factor = self.copy_scales[factor]
        if factor is not None and factor != 1:
            h, w = rel.shape
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            img = np.array(Image.fromarray(np.asarray(img, np.uint8)).resize(size, Image.BILINEAR))
            rel = np.array(Image.fromarray(rel).resize(size, Image.NEAREST))
        gen = item_rng()
        if self.augment == "strong":
            img, rel = strong_augment(np.asarray(img, np.uint8), rel, gen)
        if self.crop is not None:
            img, rel = random_scale_crop_flip(img, rel, self.crop, self.scale, gen)
        elif gen.random() < 0.5:
            img, rel = np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(rel[:, ::-1])
        rel = labels_at_stride(torch.from_numpy(rel.astype(np.int64)), self.stride)
        return {"image": images_to_tensor(img)[0], "relation": rel}


def relation_dataset(dataset, folder, indices, cfg: IRNetConfig) -> RelationDataset:
    """IRNet's training samples as ``cfg`` says (crop, scale, augmentation, copies)."""
    return RelationDataset(dataset, folder, indices, crop=cfg.crop, scale=cfg.scale, augment=cfg.augment,
                           copy_scales=cfg.copy_scales)


def train_irnet(stages, dataset, cfg: IRNetConfig, device=None, workers: int = 0,
                checkpoint=None, progress: bool = True) -> IRNet:
    """Train IRNet's two branches on frozen ``stages`` (:func:`backbone_stages`) with the samples of
    a :class:`RelationDataset`: :func:`irnet_loss` over pairs within ``cfg.radius``, SGD with
    polynomial decay (power 0.9, IRN's PolyOptimizer's) and momentum ``cfg.momentum`` (that
    optimiser's is its weight decay, 1e-4: the full profile's value, :data:`STEP2_PROFILE`).
    Returns the network in eval mode."""
    from torch.utils.data import DataLoader

    seed_everything(cfg.seed)
    net = IRNet(stages, cfg.width)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) >= cfg.batch_size,
                        num_workers=workers)
    opt = torch.optim.SGD(net.param_groups(cfg.lr_boundary, cfg.lr_displacement),
                          lr=cfg.lr_boundary, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = poly_schedule(opt, cfg.epochs * len(loader))
    offsets = pair_offsets(cfg.radius)
    fit(net, loader, lambda m, b: irnet_loss(m, b, offsets, cfg.path, cfg.sources, cfg.radius), opt, cfg.epochs, device, sched,
        checkpoint=checkpoint, progress=progress, desc=f"IRNet ({len(dataset)} images)")
    return net.eval()


@torch.no_grad()
def boundary_map(net: IRNet, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """The class boundary map B (N, h, w) of normalised images (N, 3, H, W), averaged with the
    mirrored image's (IRNet's inference)."""
    net.eval()
    b, _ = net(images)
    if flip:
        b = (b + net(images.flip(-1))[0].flip(-1)) / 2
    return b.float()


def walk_inputs(net: IRNet, dataset, cam_folder, indices=None, flip: bool = True,
                batch_size: int = 32, device=None, progress: bool = True) -> list:
    """What the random walk needs for the images ``indices`` of ``dataset``: per image a dict with
    the boundary map 'boundary' (h, w) (:func:`boundary_map`), its CAMs on the same stride-4 grid
    'cams' (k, h, w) for its classes 'keys' (k,) only (bilinear from the CAM folder's full-size
    maps), and the image 'size' (H, W). Batched where image sizes agree."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device)
    k = dataset.num_classes - 1
    idx = list(range(len(dataset)) if indices is None else indices)
    out = []
    bar = tqdm(total=len(idx), desc="boundary maps", disable=not progress, leave=False)
    for _, group in same_size_batches(dataset, batch_size, idx):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        bnd = boundary_map(net, x, flip).cpu()
        for s, b in zip(group, bnd):
            keys = torch.nonzero(torch.as_tensor(s["labels"]) > 0).flatten()
            c = load_cams(cam_folder, s["name"], k)[keys]
            c = (F.interpolate(c[None], size=b.shape, mode="bilinear", align_corners=False)[0]
                 if len(keys) else c.new_zeros(0, *b.shape))
            out.append({"boundary": b, "cams": c, "keys": keys, "size": tuple(s["image"].shape[:2])})
        bar.update(len(group))
    bar.close()
    return out


def walk_all(inputs, walk: WalkConfig, batch_size: int = 64, device=None):
    """Random-walk the CAMs of every entry of :func:`walk_inputs` (:func:`random_walk`), batched
    over entries of one grid size (CAMs padded with zero maps, which stay zero). Yields
    (position in ``inputs``, walked maps (k, h, w) on the CPU)."""
    device = torch.device(device or "cpu")
    j = 0
    while j < len(inputs):
        shape = inputs[j]["boundary"].shape
        e = j
        while e < len(inputs) and e - j < batch_size and inputs[e]["boundary"].shape == shape:
            e += 1
        group = inputs[j:e]
        kmax = max(1, max(len(g["keys"]) for g in group))
        cams = torch.zeros(len(group), kmax, *shape)
        for n, g in enumerate(group):
            cams[n, :len(g["keys"])] = g["cams"]
        bnd = torch.stack([g["boundary"] for g in group])
        walked = random_walk(cams.to(device), bnd.to(device), walk.radius, walk.beta,
                             walk.exp_times, path=walk.path).cpu()
        for n, g in enumerate(group):
            yield j + n, walked[n, :len(g["keys"])]
        j = e


def walk_labels(walked: torch.Tensor, keys, size, bg_threshold: float | None) -> np.ndarray:
    """Pseudo-labels (H, W) int64 from one image's walked maps of its classes ``keys`` (class
    indices among the K foreground classes): :func:`walk_to_labels` (``bg_threshold=None``: no
    background plane), all 0 when the image has no class."""
    if len(keys) == 0:
        return np.zeros(size, np.int64)
    ids = np.concatenate([[0], np.asarray(keys) + 1])
    return ids[walk_to_labels(walked, torch.arange(len(keys)), bg_threshold, size).numpy()]


def walk_confusions(dataset, indices, inputs, walk: WalkConfig, bg_thresholds=None,
                    crf: bool = False, device=None) -> list:
    """Confusion meters of the walked pseudo-labels against 'mask' for the images ``indices`` of
    ``dataset`` (``inputs`` from :func:`walk_inputs` on the same images, in order), one meter per
    background threshold (default: ``walk.bg_threshold``) from one walk. ``crf``: score the labels
    after a label CRF (:func:`wsss_edu.cam.crf_label_map`) instead."""
    ts = [walk.bg_threshold] if bg_thresholds is None else list(bg_thresholds)
    meters = [ConfusionMeter(dataset.num_classes) for _ in ts]
    for j, walked in walk_all(inputs, walk, device=device):
        g, s = inputs[j], dataset[indices[j]]
        for m, t in zip(meters, ts):
            lab = walk_labels(walked, g["keys"], g["size"], t)
            m.update(s["mask"], crf_label_map(s["image"], lab, g["keys"].numpy(), background=t is not None)
                     if crf else lab)
    return meters


def confident_images(model, dataset, confidence: float = 0.8, progress: bool = True) -> np.ndarray:
    """Indices of the images of ``dataset`` whose every tag gets a classifier probability above
    ``confidence`` (paper 001's filter for IRNet's training images,
    :func:`wsss_edu.cam.confident_image_mask`). None passing raises an error naming the fix."""
    probs = classifier_probs(model, dataset, progress=progress)
    tags = torch.as_tensor(dataset_tags(dataset))
    idx = np.flatnonzero(confident_image_mask(probs, tags, confidence).numpy())
    if len(idx) == 0:
        raise ParameterError(f"no training image passes the confidence filter ({confidence}): lower "
                             "CONFIDENCE (0 keeps every image) or train step 1's classifier longer")
    return idx


def cached_confident_images(output_dir, model, dataset, cam_folder, confidence: float = 0.8,
                            progress: bool = True) -> np.ndarray:
    """:func:`confident_images` of the classifier whose CAMs are in ``cam_folder`` (its name keys
    the data and the classifier) from the artifact cache under ``output_dir``, or computed (a
    forward pass over every training image) and stored."""
    key = {"cams": Path(cam_folder).name, "confidence": confidence}
    found = cached(output_dir, "confident_images", key,
                   lambda: [int(i) for i in confident_images(model, dataset, confidence, progress)])
    return np.asarray(found, np.int64)


def step2_key(cam_folder, cfg: IRNetConfig, backbone: str, weights=None, **extra) -> dict:
    """The cache key of step 2's artifacts: the CAMs they start from (their folder, itself keyed
    by data, classifier and CAM parameters), the IRNet settings and the backbone (and its
    weights)."""
    import dataclasses

    return {"cams": Path(cam_folder).name, "irnet": dataclasses.asdict(cfg), "backbone": backbone,
            "weights": weights, **extra}


def cached_relation_labels(output_dir, dataset, cam_folder, indices, cfg: IRNetConfig,
                           progress: bool = True, processes: int = 1, shard=None) -> Path:
    """The relation-label folder of (CAMs, ``cfg``'s thresholds, ``indices``) under
    ``output_dir``/cache/relations, written by :func:`write_relation_labels` (over ``processes``
    processes; this machine's ``shard`` of the images, default ``WSSS_SHARD``) if not complete;
    complete once every image's PNG is there (:func:`wsss_edu.parallel.finish_folder`)."""
    key = {"cams": Path(cam_folder).name, "fg": cfg.fg_threshold, "bg": cfg.bg_threshold,
           "images": params_key({"i": [int(i) for i in indices]})}
    folder = artifact_path(output_dir, "relations", key).with_suffix("")
    if not folder_complete(folder):
        spec = shard_spec(shard)
        write_relation_labels(dataset, cam_folder, folder, indices, cfg, progress, processes, spec)
        finish_folder(folder, [dataset.names[i] for i in indices], ".png", spec)
    return folder


def cached_step2(output_dir, stages, dataset, key: dict, cfg: IRNetConfig, device=None,
                 workers: int = 0, progress: bool = True) -> IRNet:
    """Step 2's network for ``key`` (:func:`step2_key`) from the artifact cache under
    ``output_dir``, or trained (:func:`train_irnet` on the :class:`RelationDataset` ``dataset``,
    resumable) and stored. ``stages``: the frozen backbone (:func:`backbone_stages`). Trains on every
    visible GPU, or on ``WSSS_TRAIN_PROCESSES`` processes (:func:`wsss_edu.distributed.trained_state`)."""
    def compute():   # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "irnet", key)
        return distributed.trained_state(train_irnet, stages=stages, dataset=dataset, cfg=cfg, device=device,
                             workers=workers, checkpoint=ckpt, progress=progress)

    state = cached(output_dir, "irnet", key, compute)
    net = IRNet(stages, cfg.width)
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()


def pseudo_label_folder(output_dir, key: dict, walk: WalkConfig) -> Path:
    """Where the walked pseudo-labels of (step 2 ``key``, ``walk``) live: a folder of PNGs."""
    import dataclasses

    return artifact_path(output_dir, "pseudo_labels", {**key, "walk": dataclasses.asdict(walk)}) \
        .with_suffix("")


def cached_pseudo_labels(output_dir, net: IRNet, dataset, cam_folder, key: dict, walk: WalkConfig,
                         chunk: int = 256, device=None, progress: bool = True, shard=None) -> Path:
    """Step 2's output: the random-walk pseudo-labels of every image of ``dataset`` as grey PNGs
    named after the images (0 background, c + 1 class c), in :func:`pseudo_label_folder`. Works
    through the images ``chunk`` at a time (memory bounded) and skips PNGs already written, so an
    interrupted pass resumes; a 'complete' marker says the folder is whole. ``shard`` ((i, n) or
    'i/n'; default: ``WSSS_SHARD``, else all): this machine's share of the images when several
    share the output folder; the marker comes once every image is there."""
    from tqdm.auto import tqdm

    folder = pseudo_label_folder(output_dir, key, walk)
    if folder_complete(folder):
        return folder
    names, spec = dataset.names, shard_spec(shard)
    todo = pending(range(len(dataset)), lambda i: folder / f"{names[i]}.png", spec)
    bar = tqdm(total=len(todo), desc="random walk", disable=not progress, leave=False)
    for c in range(0, len(todo), chunk):
        idx = todo[c:c + chunk]
        inputs = walk_inputs(net, dataset, cam_folder, idx, device=device, progress=False)
        for j, walked in walk_all(inputs, walk, device=device):
            g = inputs[j]
            lab = walk_labels(walked, g["keys"], g["size"], walk.bg_threshold)
            write_mask(folder / f"{names[idx[j]]}.png", lab.astype(np.uint8))
            bar.update(1)
    bar.close()
    finish_folder(folder, names, ".png", spec)
    return folder


def pseudo_label_confusion(dataset, folder, indices=None):
    """The confusion meter of a pseudo-label folder (PNGs named after the images) against the
    samples' 'mask' (255 ignored). A missing PNG raises an error naming the step that writes it."""
    meter = ConfusionMeter(dataset.num_classes)
    for i in (range(len(dataset)) if indices is None else indices):
        s = dataset[i]
        path = Path(folder) / f"{s['name']}.png"
        if not path.exists():
            raise FileNotFoundError(f"no pseudo-label for image {s['name']!r} in {folder}: run "
                                    "notebook 04 (wsss_edu.irnet.cached_pseudo_labels) first")
        meter.update(s["mask"], read_mask(path))
    return meter


# The walk settings searched on the validation split: {name: (quick, full)}; full = IRNet's only.
WALK_GRID = dict(WALK_RADII=([2, 3, 5], [5]), WALK_EXP_TIMES=([1, 2, 4, 8], [8]),
                 WALK_BETAS=([4, 10], [10]), WALK_BG=([0.1, 0.2, 0.25, 0.3, 0.4, 0.5], [0.25]))
# MSRC's photos give 80x54-cell grids (the toy world's: 16x16), walked by the pair route
# (random_walk): 2^exp_times steps each; the quick grid stays small to fit a laptop's minutes.
WALK_GRID_DATASETS = {"msrc": dict(WALK_RADII=([5], [5]), WALK_EXP_TIMES=([4, 6], [8]),
                                   WALK_BETAS=([10], [10]))}


def choose_walk(net: IRNet, val_dataset, val_cam_folder, radii, exp_times, betas, bg_thresholds,
                device=None, progress: bool = True, path: str = "thick") -> tuple:
    """The walk settings with the best mIoU of the walked pseudo-labels on a labelled *validation*
    split, over the grid radii × exp_times × betas × bg_thresholds (:func:`walk_confusions`), the
    affinities along ``path`` (:func:`path_points`).
    Returns (best :class:`WalkConfig`, {(radius, exp_times, beta, bg): mIoU})."""
    import itertools

    from tqdm.auto import tqdm

    inputs = walk_inputs(net, val_dataset, val_cam_folder, device=device, progress=progress)
    idx = list(range(len(val_dataset)))
    grid = {}
    for r, t, b in tqdm(list(itertools.product(radii, exp_times, betas)), desc="walk grid",
                        disable=not progress, leave=False):
        for bg, m in zip(bg_thresholds, walk_confusions(val_dataset, idx, inputs, WalkConfig(r, b, t, path=path),
                                                        bg_thresholds, device=device)):
            grid[(r, t, b, bg)] = m.miou
    r, t, b, bg = max(grid, key=grid.get)
    return WalkConfig(radius=r, beta=b, exp_times=t, bg_threshold=bg, path=path), grid


def cached_walk_choice(output_dir, net: IRNet, val_dataset, val_cam_folder, key: dict, grid: dict,
                       device=None, progress: bool = True, path: str = "thick") -> tuple:
    """:func:`choose_walk` over ``grid`` ({'WALK_RADII', 'WALK_EXP_TIMES', 'WALK_BETAS',
    'WALK_BG'}: lists) for the network of ``key``, from the artifact cache or searched and stored.
    Returns (best :class:`WalkConfig`, {(radius, exp_times, beta, bg): val mIoU})."""
    def search():
        walk, scores = choose_walk(net, val_dataset, val_cam_folder, grid["WALK_RADII"],
                                   grid["WALK_EXP_TIMES"], grid["WALK_BETAS"], grid["WALK_BG"],
                                   device, progress, path)
        return {"walk": [walk.radius, walk.beta, walk.exp_times, walk.bg_threshold, walk.path],
                "grid": [list(k) + [v] for k, v in scores.items()]}

    found = cached(output_dir, "walk_choice", {**key, "grid": grid, "val_cams": Path(val_cam_folder).name,
                                               "path": path}, search)
    return WalkConfig(*found["walk"]), {tuple(r[:4]): r[4] for r in found["grid"]}


# IRNet's knobs as notebooks 04-06 take them: {name: (quick, full)} (params.profile_values).
# IR_MOMENTUM: IRN's PolyOptimizer passes its weight decay (1e-4) into SGD's momentum slot, so the
# reference trains with no momentum to speak of; the full profile takes that value, with IRN's
# learning rates, so that they mean what they mean there (with 0.9 the effective step is 10x).
# The quick profile keeps 0.9, the value its learning rate and epochs were set with (a few hundred
# steps on a small frozen backbone); with 1e-4 there, notebook 04's labels fall from 0.488 to
# 0.463 mIoU on train (measured, see 04's text). IR_AUGMENT / IR_COPY_SCALES: paper 001's strong
# augmentation and rescaled copies (0.5, 1, 1.5, 2) in the full profile; the quick profile leaves
# them out (a 64-px scene at 0.5 is 32 px, 8×8 cells at stride 4, and four copies cost 4× the time).
STEP2_PROFILE = dict(IR_BACKBONE=("classifier", "resnet50"), IR_EPOCHS=(5, 3), IR_RADIUS=(5, 10),
                     IR_BATCH=(16, 32), IR_CROP=(None, 512), IR_MOMENTUM=(0.9, 1e-4),
                     IR_AUGMENT=("flip", "strong"), IR_COPY_SCALES=(None, (0.5, 1.0, 1.5, 2.0)))
# Where a real dataset's values differ: {dataset: {name: (quick, full)}} (params.for_dataset).
# MSRC's quick profile: IRNet's branches on step 1's frozen MobileNetV2 (ImageNet, fine-tuned on
# the tags), random 224-px crops of its ~320x213 photos (rescaled 0.5-1.5).
STEP2_DATASETS = {"msrc": dict(IR_EPOCHS=(3, 3), IR_BATCH=(8, 16), IR_CROP=(224, 320))}


def without_plane_if_no_background(cfg: IRNetConfig, grid: dict, has_background: bool) -> tuple:
    """(``cfg``, ``grid``) as a dataset with or without a background class needs them: without
    one, no background plane anywhere — ``cfg.bg_threshold`` None (the relation labels of
    :func:`relation_labels_without_background`) and the walk grid's ``WALK_BG`` [None]."""
    if has_background:
        return cfg, grid
    return dataclasses.replace(cfg, bg_threshold=None), {**grid, "WALK_BG": [None]}


def step2_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 04's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`STEP2_PROFILE` and :data:`WALK_GRID`, with :data:`STEP2_DATASETS` and
    :data:`WALK_GRID_DATASETS`'s values)."""
    table = (params.for_dataset(STEP2_PROFILE, STEP2_DATASETS, dataset)
             | params.for_dataset(WALK_GRID, WALK_GRID_DATASETS, dataset))
    return params.profile_values(profile, table, **knobs)


def step2_config(profile: str, seed: int, CONFIDENCE: float = 0.8, IR_LR: float = 0.1,
                 WEIGHTS="imagenet", IR_PATH: str = "thick", IR_SOURCES: str = "all",
                 dataset: str = "toy", **knobs) -> tuple:
    """Notebook 04's IRNet settings from its parameters (same names; ``knobs``: the
    :data:`STEP2_PROFILE` names, None = the profile's value on ``dataset``,
    :data:`STEP2_DATASETS`): (:class:`IRNetConfig`, backbone, backbone weights) as :func:`step2`
    takes them. The displacement branch learns at 10 x IR_LR. (On a dataset without a background
    class, :func:`step2` sets ``bg_threshold=None``.)"""
    v = step2_values(profile, dataset, **knobs)
    cfg = IRNetConfig(confidence=CONFIDENCE, radius=v["IR_RADIUS"], epochs=v["IR_EPOCHS"],
                      batch_size=v["IR_BATCH"], lr_boundary=IR_LR, lr_displacement=10 * IR_LR,
                      momentum=v["IR_MOMENTUM"], crop=v["IR_CROP"], seed=seed, path=IR_PATH,
                      sources=IR_SOURCES, augment=v["IR_AUGMENT"],
                      copy_scales=tuple(v["IR_COPY_SCALES"]) if v["IR_COPY_SCALES"] else None)
    return cfg, v["IR_BACKBONE"], WEIGHTS if v["IR_BACKBONE"] == "resnet50" else None


@dataclass
class Step2:
    """Notebook 04's result as later notebooks need it: the trained network, its cache key, the
    walk chosen on val (with the grid's scores) and the pseudo-label folder of the training split
    (the chosen walk's, or at the background threshold :func:`step2` was given)."""
    net: IRNet
    key: dict
    walk: WalkConfig
    grid: dict
    folder: Path


def step2(setup, st, cfg: IRNetConfig, backbone: str = "classifier", weights=None,
          walk_grid: dict | None = None, workers: int = 0, progress: bool = True,
          labels_bg: float | None = None) -> Step2:
    """Notebook 04 in one call, from step 1's result ``st`` (:func:`wsss_edu.cam.step1`): relation
    labels of the confident images, IRNet on the frozen ``backbone`` ('classifier': step 1's
    stages; 'resnet50'), the walk chosen on val over ``walk_grid`` (:data:`WALK_GRID`'s names ->
    lists; None: the profile's defaults) and the training split's pseudo-labels. Everything comes
    from the cache when notebook 04 ran with the same parameters. ``workers``: DataLoader workers,
    and processes for the relation labels' CRFs. ``labels_bg``: the background threshold of the
    returned pseudo-labels (the chosen walk with that plane; None: the walk's own, chosen on val) —
    notebooks 05-06 train step 3 on paper 001's 0.3. On a dataset without a background class
    (``st.has_background`` False) nothing has a background plane: ``cfg.bg_threshold`` and
    ``WALK_BG`` become None (:func:`relation_labels_without_background`) and ``labels_bg`` does
    not apply."""
    check = ("classifier", "resnet50")
    if backbone not in check:
        raise ValueError(f"backbone {backbone!r} is not valid; choose one of {check}")
    g = {k: v for k, v in step2_values(setup.profile, setup.dataset, **(walk_grid or {})).items()
         if k in WALK_GRID}
    cfg, g = without_plane_if_no_background(cfg, g, st.has_background)
    labels_bg = labels_bg if st.has_background else None
    confident = cached_confident_images(setup.output_dir, st.model, st.train_view, st.folder, cfg.confidence, progress)
    rel = cached_relation_labels(setup.output_dir, st.train_view, st.folder, confident, cfg, progress,
                                 processes=max(1, workers))
    stages = backbone_stages(st.model if backbone == "classifier" else "resnet50", weights)
    key = step2_key(st.folder, cfg, backbone, weights)
    data = relation_dataset(st.train_view, rel, confident, cfg)
    net = cached_step2(setup.output_dir, stages, data, key, cfg, setup.device, workers, progress)

    walk, grid = cached_walk_choice(setup.output_dir, net, st.val_view, st.val_folder, key, g,
                                    setup.device, progress, cfg.path)
    labelled = walk if labels_bg is None else dataclasses.replace(walk, bg_threshold=labels_bg)
    folder = cached_pseudo_labels(setup.output_dir, net, st.train_view, st.folder, key, labelled,
                                  device=setup.device, progress=progress)
    return Step2(net, key, walk, grid, folder)
