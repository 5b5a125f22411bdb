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

Step 2 as the notebooks run it — relation labels written per image, the network trained and
cached, the walk's settings chosen on val, the pseudo-label folders, the profiles — is
:mod:`wsss_edu.steps.irnet_step`.

Differences from the reference code (``jiwoon-ahn/irn``; what is equal is tested on its outputs
in tests/test_reference_irn.py: directions, paths, affinities, T, the walk, the walk's labels):

* Paths: the reference's thick paths by default; ``path='thin'`` (:func:`path_points`,
  :class:`~wsss_edu.steps.irnet_step.IRNetConfig` / :class:`~wsss_edu.steps.irnet_step.WalkConfig`) uses the one-pixel digital line instead, which leaks
  through diagonal boundaries — kept to show why the reference's paths are thick.
* Training pairs: the reference pairs only its ``PathIndex`` sources (not the bottom r_f rows nor
  the side r_f columns of each 512-px crop, r_f = radius - 1); the package pairs every pixel of the
  grid by default, because on the toy world's 16×16 grid the reference's rule would drop 62 % of
  the sources at radius 5. ``sources='reference'`` (:class:`~wsss_edu.steps.irnet_step.IRNetConfig`) restores it.
* The walk: the reference squares a dense (HW)² float32 T; maps larger than ``max_dense`` pixels
  walk 2^exp_times sparse steps in float64 instead (memory), equal within 1e-10 of the
  reference's float64 walk; ``pair_dtype=None`` walks them in float32 (6e-5 of the maximum off).
* The network (:class:`IRNet`) is a simplified two-branch head, and the relation labels, losses
  and optimiser follow the reference's code as read, untested against its outputs (no golden data
  covers them); the notebooks' learning rates are paper 001's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .cam import SmallBackbone, _MobileNetV2Features, crf_cam_labels
from .errors import check_choice
from .labels import IGNORE
from .pretrained import torchvision_classifier

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
        return [
            (int(np.floor(k * dy / m + 0.5)), int(np.floor(k * dx / m + 0.5))) for k in range(m + 1)
        ]
    length_sq = dy * dy + dx * dx
    pts = [
        (y, x)
        for y in range(min(0, dy), max(0, dy) + 1)
        for x in range(min(0, dx), max(0, dx) + 1)
        if (dy * x - dx * y) ** 2 < length_sq
    ]
    return sorted(pts, key=lambda p: (abs(p[0]) + abs(p[1]), p))


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``out[..., y, x] = x[..., y + dy, x + dx]``, ``fill`` where that falls outside."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    ys, ye = max(0, -dy), min(h, h - dy)
    xs, xe = max(0, -dx), min(w, w - dx)
    if ys < ye and xs < xe:
        out[..., ys:ye, xs:xe] = x[..., ys + dy : ye + dy, xs + dx : xe + dx]
    return out


def shifted(x: torch.Tensor, offsets, fill: float = 0.0) -> torch.Tensor:
    """The partner of every pixel for each offset: (..., H, W) -> (..., P, H, W) with
    ``out[..., p, y, x] = x[..., y + dy_p, x + dx_p]`` (``fill`` outside the image)."""
    return torch.stack([_shift(x, dy, dx, fill) for dy, dx in offsets], -3)


# ------------------------------------------------------------------------------------------------
# Labels for the pairs
# ------------------------------------------------------------------------------------------------


def relation_labels(
    image: np.ndarray,
    cams: torch.Tensor,
    fg_threshold: float = 0.30,
    bg_threshold: float | None = 0.05,
    crf_params="irn_labels",
) -> np.ndarray:
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
    out[(bg == 0) & (fg == 0)] = 0  # background only where both say so (IRN's cam_to_ir_label
    #                                     as read; no golden data covers this step)
    return out.astype(np.int64)


def relation_labels_without_background(
    image: np.ndarray, cams: torch.Tensor, fg_threshold: float = 0.30, crf_params="irn_labels"
) -> np.ndarray:
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
    own = torch.gather(cams, 0, k[None].to(torch.long))[0].numpy()  # the winner's own CAM
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
    off = torch.tensor(offsets, dtype=disp.dtype, device=disp.device)  # (P, 2)
    d_j = torch.stack([shifted(disp[:, k], offsets) for k in range(2)], 1)  # (N, 2, P, H, W)
    delta = disp.unsqueeze(2) - d_j  # D_i - D_j
    err_fg = (delta - off.T[None, :, :, None, None]).abs().sum(1)
    err_bg = delta.abs().sum(1)
    return _masked_mean(err_fg, pos_fg) / 2, _masked_mean(err_bg, pos_bg) / 2


# ------------------------------------------------------------------------------------------------
# The random walk
# ------------------------------------------------------------------------------------------------


def transition_weights(
    boundary: torch.Tensor, radius: int = 5, beta: float = 10.0, path: str = "thick"
) -> tuple:
    """The transition matrix of IRNet eq. 10 in pair form. Affinities a_ij (:func:`pair_affinity`)
    for both directions of every offset within ``radius`` plus a self-loop (a_ii = 1), raised to
    ``beta`` and divided by their sum over i for each j, so T is column-stochastic
    (the reference's ``to_transition_matrix`` on its dense affinities, tested on its outputs):
    ``T[i, j] = a_ij^beta / sum_k a_kj^beta``. Returns (offsets incl. (0, 0), weights (..., P, H, W))
    where ``weights[..., p, y, x]`` = T[(y, x) + offset_p, (y, x)]."""
    pairs = pair_offsets(radius, half=False)
    aff = pair_affinity(boundary, pairs, path)  # symmetric paths: a(j, j+o) = a(j+o, j)
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


def random_walk(
    cams: torch.Tensor,
    boundary: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    max_dense: int = 1024,
    path: str = "thick",
    pair_dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
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
        v = (cams * (1 - boundary).unsqueeze(-3)).flatten(-2)  # (..., K, HW)
        return (v @ t).view_as(cams)
    v = cams.to(dtype) * (1 - boundary.to(dtype)).unsqueeze(
        -3
    )  # (..., K, H, W) times (..., 1, H, W)
    w = w.unsqueeze(-4)  # (..., 1, P, H, W): the same for every class
    for _ in range(2**exp_times):
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
        raise ValueError(
            f"walked maps of {h}×{w} cells at stride {stride} do not cover an image of "
            f"{size[0]}×{size[1]}: the grid must have ceil(side / {stride}) cells"
        )
    v = F.interpolate(walked[None], scale_factor=stride, mode="bilinear", align_corners=False)
    v = v[0, :, : size[0], : size[1]]
    return v / v.max().clamp(min=1e-12)


def walk_to_labels(
    walked: torch.Tensor, keys, bg_threshold: float | None = 0.25, size=None, stride: int = 4
) -> torch.Tensor:
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
            raise ValueError(
                f"backbone {source!r} is not valid; choose 'resnet50' or a trained "
                "small CAMClassifier"
            )
        net = torchvision_classifier(
            "resnet50", weights, replace_stride_with_dilation=[False, False, True]
        )
        return [
            nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1),
            net.layer2,
            net.layer3,
            net.layer4,
        ]
    body = source.backbone
    if isinstance(body, _MobileNetV2Features):
        b = body.body
        return [b[:4], b[4:7], b[7:14], b[14:]]
    if not isinstance(body, SmallBackbone):
        raise ValueError(
            "backbone_stages takes a small or MobileNetV2 CAMClassifier, or 'resnet50'"
        )
    mods = list(body.body)
    return [nn.Sequential(*mods[i : i + 6]) for i in range(0, len(mods), 6)]


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
            return nn.Sequential(
                nn.Conv2d(c, width, 1, bias=False),
                nn.GroupNorm(groups, width),
                nn.ReLU(inplace=True),
            )

        self.boundary_proj = nn.ModuleList([proj(c) for c in chans])
        self.disp_proj = nn.ModuleList([proj(c) for c in chans])
        cat = width * len(chans)
        self.boundary_head = nn.Conv2d(cat, 1, 1)
        self.disp_head = nn.Sequential(
            nn.Conv2d(cat, width, 3, padding=1, bias=False),
            nn.GroupNorm(groups, width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2, 1),
        )
        self.stride = stride

    def train(self, mode: bool = True):
        super().train(mode)
        self.stages.eval()  # frozen, batch norm statistics included
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
            return torch.cat(
                [
                    F.interpolate(p(f), size=size, mode="bilinear", align_corners=False)
                    for p, f in zip(projs, feats)
                ],
                1,
            )

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
    m[: max(0, h - rf), rf : max(rf, w - rf)] = True
    return m


def irnet_loss(
    model: IRNet,
    batch,
    offsets,
    path: str = "thick",
    sources: str = "all",
    radius: float | None = None,
) -> torch.Tensor:
    """IRNet's training loss on a batch {'image', 'relation'} (relation labels at the output
    stride, 255 = unsure): (L_aff_pos + L_aff_neg) / 2 + (L_D_fg + L_D_bg) / 2 (the combination
    of IRN's train_irn as read; not tested against its outputs). Pairs from every pixel of the
    grid (``sources='all'``) or only from the reference's source pixels (``'reference'``,
    :func:`reference_source_mask` for the ``radius`` the offsets were drawn with); affinities
    along ``path`` (:func:`path_points`)."""
    check_choice("sources", sources, SOURCES)
    boundary, disp = model(batch["image"])
    pos_bg, pos_fg, neg = pair_label_masks(batch["relation"], offsets)
    if sources == "reference":  # ``radius``: the one ``offsets`` were drawn with
        keep = reference_source_mask(*batch["relation"].shape[-2:], radius).to(pos_bg.device)
        pos_bg, pos_fg, neg = pos_bg & keep, pos_fg & keep, neg & keep
    l_aff = affinity_loss(pair_affinity(boundary, offsets, path), pos_bg, pos_fg, neg)
    l_fg, l_bg = displacement_loss(disp, offsets, pos_fg, pos_bg)
    return l_aff + (l_fg + l_bg) / 2
