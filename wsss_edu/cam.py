"""Class activation maps (CAM): the classifier and the maps every tag-supervised method starts from
(paper 001's step 1, and the seeds of URN and RRM).

A multi-label classifier ends in global average pooling (GAP) and a 1x1 convolution without bias,
so its logit for class c is the spatial mean of ``W_c . f(x, y)``; the CAM of class c is that
product kept per pixel (Zhou et al., CVPR 2016, eq. 2; IRNet's ``make_cam``):
``M_c(x, y) = relu(sum_k w_ck f_k(x, y))``. Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2) weighs
the feature maps by the spatial mean of the logit's gradient instead, and works for any network.

Step 1 as the notebooks run it — the classifier trained and cached, its CAMs written to a folder
and scored, the quick / full profiles — is :mod:`wsss_edu.steps.cam_step`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .crf import crf_on_labels
from .errors import ParameterError, check_choice
from .pretrained import torchvision_classifier

BACKBONES = ("small", "resnet50", "vgg16", "mobilenet_v2")
NORMALIZATIONS = ("per_class", "global")


class SmallBackbone(nn.Module):
    """A small CNN for the quick profile: ``depth`` conv-BN-ReLU stages, each halving the size
    (output stride 2**depth), ``width`` channels doubling per stage."""

    def __init__(self, width: int = 16, depth: int = 3, in_channels: int = 3):
        super().__init__()
        layers, c_in = [], in_channels
        for i in range(depth):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 2**depth

    def forward(self, x):
        return self.body(x)


class _ResNet50Features(nn.Module):
    """torchvision's ResNet-50 up to layer4 with layer4's stride replaced by dilation (output
    stride 16, as IRNet's CAM network)."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        net = torchvision_classifier(
            "resnet50", weights, replace_stride_with_dilation=[False, False, True]
        )
        self.body = nn.Sequential(
            net.conv1,
            net.bn1,
            net.relu,
            net.maxpool,
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels = 2048
        self.stride = 16

    def forward(self, x):
        return self.body(x)


class _VGG16Features(nn.Module):
    """torchvision's VGG16 convolutions without the last max-pool (output stride 16), then
    ``extra`` new 3x3 convolutions with ReLU: paper 001's classifier, "VGG16 with 4 additional
    convolutional layers" after Jiang et al. (OAA, ICCV 2019). ``pretrained`` / ``new`` name the
    two parameter groups the paper trains with different learning rates (1e-4 / 1e-3)."""

    def __init__(self, weights: str | None = None, extra: int = 4, extra_channels: int = 512):
        super().__init__()
        net = torchvision_classifier("vgg16", weights)
        self.pretrained = net.features[:-1]
        layers, c_in = [], 512
        for _ in range(extra):
            layers += [nn.Conv2d(c_in, extra_channels, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = extra_channels
        self.new = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 16

    def forward(self, x):
        return self.new(self.pretrained(x))


class _MobileNetV2Features(nn.Module):
    """torchvision's MobileNetV2 convolutions (1280 channels), with the stride of its 160-channel
    stage replaced by dilation: output stride 16, as the ResNet-50 backbone (a light ImageNet
    backbone for real photos on a laptop CPU)."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        net = torchvision_classifier("mobilenet_v2", weights)
        self.body = net.features
        for k, block in enumerate(self.body[14:18]):  # the 160- and 320-channel blocks
            depthwise = block.conv[1][0]
            if k == 0:
                depthwise.stride = (1, 1)
            depthwise.dilation, depthwise.padding = (2, 2), (2, 2)
        self.out_channels = 1280
        self.stride = 16

    def forward(self, x):
        return self.body(x)


class CAMClassifier(nn.Module):
    """Multi-label classifier for CAMs: backbone features -> GAP -> 1x1 conv without bias.

    ``forward`` returns the logits (N, K); ``cam`` the class activation maps (N, K, h, w) at the
    backbone's resolution (stride ``self.stride``); ``features`` the backbone output.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "small",
        weights: str | None = None,
        freeze_bn: bool = False,
        **kwargs,
    ):
        super().__init__()
        check_choice("backbone", backbone, BACKBONES)
        self.freeze_bn = bool(freeze_bn)
        check_choice("weights", weights, (None, "imagenet"))
        if backbone == "small":
            if weights is not None:
                raise ParameterError(
                    "the small backbone has no pretrained weights: use weights=None"
                )
            self.backbone = SmallBackbone(**kwargs)
        elif backbone == "resnet50":
            self.backbone = _ResNet50Features(weights)
        elif backbone == "mobilenet_v2":
            self.backbone = _MobileNetV2Features(weights)
        else:
            self.backbone = _VGG16Features(weights, **kwargs)
        self.stride = self.backbone.stride
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; with ``freeze_bn`` every BatchNorm stays in eval mode, so its
        statistics stay the pretrained ones (its affine weights still train)."""
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def freeze_blocks(self, n: int) -> "CAMClassifier":
        """Stop the gradient of the backbone's first ``n`` blocks (MobileNetV2's ``features``
        modules: 4 ends at stride 4, 7 at stride 8, 14 at stride 16); returns self."""
        if not isinstance(self.backbone, _MobileNetV2Features):
            raise ParameterError("frozen_blocks applies to the mobilenet_v2 backbone only; use 0")
        for p in self.backbone.body[:n].parameters():
            p.requires_grad_(False)
        return self

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3), keepdim=True)).flatten(1)

    def cam(self, x):
        return class_activation_map(self.features(x), self.classifier.weight)

    def param_groups(self, lr_pretrained: float = 1e-4, lr_new: float = 1e-3) -> list:
        """Optimiser parameter groups: the ImageNet-initialised part at ``lr_pretrained``, the new
        layers (VGG16's extra convolutions, the classifier; the whole small network) at ``lr_new``,
        as paper 001 trains its classifier with Adam (1e-4 / 1e-3)."""
        if isinstance(self.backbone, SmallBackbone):
            old = []
        elif isinstance(self.backbone, _VGG16Features):
            old = list(self.backbone.pretrained.parameters())
        else:
            old = list(self.backbone.parameters())
        ids = {id(p) for p in old}
        new = [p for p in self.parameters() if id(p) not in ids]
        old = [p for p in old if p.requires_grad]  # frozen blocks stay out
        return [
            g
            for g in ({"params": old, "lr": lr_pretrained}, {"params": new, "lr": lr_new})
            if g["params"]
        ]


def class_activation_map(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016, eq. 2): M_c = relu(sum_k w_ck f_k) per pixel. ``features`` (N, D, h, w),
    ``weight`` (K, D) or the (K, D, 1, 1) weight of a 1x1 convolution. Returns (N, K, h, w)."""
    w = weight.reshape(weight.shape[0], -1)
    return F.relu(torch.einsum("ndhw,kd->nkhw", features, w))


def grad_cam(
    model: nn.Module, images: torch.Tensor, class_index: int, layer: nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) of one class: alpha_k = spatial mean of
    d logit_c / d A_k, map = relu(sum_k alpha_k A_k), where A is the output of ``layer`` (default:
    the backbone's output, ``model.features``). ``model(images)`` must return the logits (N, K).
    Returns (N, h, w) at ``layer``'s resolution. At the backbone's output of a GAP + linear head
    (as :class:`CAMClassifier`) it equals the CAM divided by h*w; at an earlier layer it is a
    different, finer map."""
    return grad_cams(model, images, layer, classes=[class_index])[:, 0]


def grad_cams(
    model: nn.Module, images: torch.Tensor, layer: nn.Module | None = None, classes=None
) -> torch.Tensor:
    """Grad-CAM (see :func:`grad_cam`) of several classes (default: all), one backward pass each.
    Returns (N, len(classes), h, w). Runs with gradients enabled even inside ``torch.no_grad``
    (so it can serve as the ``cam_fn`` of :func:`multiscale_cam`); the model's parameters get no
    ``.grad``. ``layer``'s output must not be modified in place by the next layer (hook a ReLU,
    not the convolution before an in-place ReLU)."""
    layer = layer if layer is not None else model.backbone
    store = {}

    def keep(
        module, inputs, output
    ):  # a leaf to differentiate against; the layers before get no graph
        store["a"] = output.detach().requires_grad_(True)
        return store["a"]

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(images)
            acts = store["a"]
            classes = range(logits.shape[1]) if classes is None else classes
            maps = []
            for c in classes:
                (grads,) = torch.autograd.grad(logits[:, c].sum(), acts, retain_graph=True)
                alpha = grads.mean((2, 3), keepdim=True)
                maps.append(F.relu((alpha * acts).sum(1)).detach())
    finally:
        hook.remove()
    return torch.stack(maps, 1)


@torch.no_grad()
def multiscale_cam(
    cam_fn, images: torch.Tensor, scales=(1.0, 0.5, 1.5, 2.0), flip: bool = True, size=None
) -> torch.Tensor:
    """CAMs summed over rescaled copies of ``images`` (N, 3, H, W) and, with ``flip``, their
    horizontal mirrors (flipped back), each upsampled bilinearly to ``size`` (default (H, W));
    IRNet's ``make_cam`` with its default scales. ``cam_fn(images) -> (N, K, h, w)``, e.g.
    ``model.cam``. Returns (N, K, *size), not normalised (see :func:`normalize_cams`)."""
    size = tuple(size or images.shape[-2:])
    total = None
    for s in scales:
        x = (
            images
            if s == 1
            else F.interpolate(images, scale_factor=s, mode="bilinear", align_corners=False)
        )
        views = [(x, False)] + ([(x.flip(-1), True)] if flip else [])
        for v, flipped in views:
            m = cam_fn(v)
            m = m.flip(-1) if flipped else m
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            total = m if total is None else total + m
    return total


def normalize_cams(
    cams: torch.Tensor,
    labels: torch.Tensor | None = None,
    mode: str = "per_class",
    eps: float = 1e-5,
) -> torch.Tensor:
    """Scale CAMs (N, K, H, W) to [0, 1] and keep only the image's classes (``labels``, (N, K)
    multi-hot; None keeps all). ``'per_class'``: each class map divided by its own max (+ eps), as
    IRNet; ``'global'``: all maps of an image divided by their common max (+ eps), as paper 001's
    code — a weak class then stays weak."""
    check_choice("normalization", mode, NORMALIZATIONS)
    cams = cams.clamp(min=0)
    if labels is not None:
        cams = cams * labels.to(cams.dtype)[:, :, None, None]
    if mode == "per_class":
        peak = cams.amax((2, 3), keepdim=True)
    else:
        peak = cams.amax((1, 2, 3), keepdim=True)
    return torch.where(peak > 0, cams / (peak + eps), torch.zeros_like(cams))  # empty map stays 0


def cams_to_labels(cams: torch.Tensor, bg_threshold: float | None = 0.15) -> torch.Tensor:
    """Pseudo-labels from normalised CAMs (N, K, H, W): a constant background plane at
    ``bg_threshold`` is put in front (class 0) and the argmax taken, so a pixel gets class c + 1
    where CAM c is the largest and above the threshold (IRNet's evaluation uses 0.15).
    ``bg_threshold=None``, for a dataset without a background class (``has_background`` False,
    e.g. MSRC, where grass and sky are classes): no plane; every pixel gets the image's class
    (a map that is not all zero) whose CAM is the largest there, 0 only in an image with none.
    Returns (N, H, W) int64 in 0..K."""
    if bg_threshold is None:
        present = cams.flatten(2).amax(2) > 0  # (N, K)
        scores = cams.masked_fill(~present[:, :, None, None], -1.0)
        return torch.where(present.any(1)[:, None, None], scores.argmax(1) + 1, 0)
    bg = torch.full_like(cams[:, :1], bg_threshold)
    return torch.cat([bg, cams], 1).argmax(1)


# ------------------------------------------------------------------------------------------------
# Paper 001's data handling for the classifier and for IRNet's input
# ------------------------------------------------------------------------------------------------


def drop_class_labels(labels: torch.Tensor, class_index: int) -> torch.Tensor:
    """Image-level labels (N, K) multi-hot with one class removed from every image (paper 001
    removes the 'person' labels, which LID's training set misses on many images). The class's
    column stays, all zeros, so class indices do not move."""
    out = labels.clone()
    out[:, class_index] = 0
    return out


def balance_by_downsampling(
    labels: torch.Tensor, per_class: int | None = None, seed: int = 0
) -> torch.Tensor:
    """Indices of a class-balanced subset of a multi-label set (paper 001's down-sampling).

    Classes are visited from the rarest to the most frequent; each gets random images that contain
    it until it appears in ``per_class`` images (default: the rarest class's count), counting the
    images already chosen for rarer classes. A frequent class can end above ``per_class`` only
    through images it shares with rarer ones; a class with fewer images keeps them all. Images
    without any label are dropped. Returns sorted indices (int64)."""
    labels = labels.bool()
    counts = labels.sum(0)
    present = torch.nonzero(counts > 0).flatten()
    if len(present) == 0:
        return torch.zeros(0, dtype=torch.long)
    target = int(counts[present].min()) if per_class is None else int(per_class)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.zeros(len(labels), dtype=torch.bool)
    for c in present[torch.argsort(counts[present], stable=True)]:
        have = int((chosen & labels[:, c]).sum())
        pool = torch.nonzero(labels[:, c] & ~chosen).flatten()
        take = pool[torch.randperm(len(pool), generator=g)[: max(target - have, 0)]]
        chosen[take] = True
    return torch.nonzero(chosen).flatten()


def confident_image_mask(
    probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.8
) -> torch.Tensor:
    """Which images go to IRNet (paper 001: "confidence score of classification more than 0.8"):
    those whose every labelled class has a predicted probability above ``threshold``. ``probs``
    (N, K) sigmoid outputs, ``labels`` (N, K) multi-hot. Images without labels are not kept.
    Returns (N,) bool."""
    labels = labels.bool()
    ok = torch.where(labels, probs > threshold, torch.ones_like(labels)).all(1)
    return ok & labels.any(1)


def multilabel_f1(
    probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """F1 score of each class for multi-label predictions ``probs > threshold`` against ``labels``
    (both (N, K)); paper 001 selects its classifier by F1 on image-level labels. A class never
    predicted nor present scores NaN (undefined), not 0 or 1."""
    pred, lab = probs > threshold, labels.bool()
    tp = (pred & lab).sum(0).double()
    denom = (pred.sum(0) + lab.sum(0)).double()
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))


# ------------------------------------------------------------------------------------------------
# The classifier's loss, and CAM labels refined by a CRF (the relation labels' and URN's start)
# ------------------------------------------------------------------------------------------------


def multilabel_bce_loss(model, batch):
    """Binary cross-entropy per class on the image-level labels (paper 001 §3.1), averaged over
    classes and images: the ``loss_fn`` of :func:`wsss_edu.train.fit` for a classifier."""
    return F.binary_cross_entropy_with_logits(model(batch["image"]), batch["labels"].float())


def crf_cam_labels(
    image: np.ndarray,
    cams: torch.Tensor,
    bg_threshold: float | None = 0.15,
    gt_prob: float = 0.7,
    params="irn_labels",
) -> np.ndarray:
    """CAM pseudo-labels refined by a dense CRF on labels, as IRNet post-processes CAMs: the
    background-plane argmax (:func:`cams_to_labels`) over the background and the image's classes
    only (those with a non-zero map), then :func:`crf_label_map`. ``image`` (H, W, 3) uint8,
    ``cams`` (K, H, W) normalised. ``bg_threshold=None`` (a dataset without a background class):
    no plane, only the image's classes compete, in the argmax and in the CRF.
    Returns (H, W) int64 class ids 0..K."""
    keys = torch.nonzero(cams.flatten(1).amax(1) > 0).flatten()
    if len(keys) == 0:
        return np.zeros(cams.shape[1:], np.int64)
    compact = cams_to_labels(cams[keys][None], bg_threshold)[0].numpy()
    ids = np.concatenate([[0], keys.numpy() + 1])
    return crf_label_map(
        image, ids[compact], keys.numpy(), gt_prob, params, background=bg_threshold is not None
    )


def crf_label_map(
    image: np.ndarray,
    labels: np.ndarray,
    keys,
    gt_prob: float = 0.7,
    params="irn_labels",
    background: bool = True,
) -> np.ndarray:
    """A label map (H, W) of class ids 0..K refined by a label CRF
    (:func:`wsss_edu.crf.crf_on_labels`) that lets only the background and the image's classes
    ``keys`` (indices among the K foreground classes) compete; ``background=False`` (a dataset
    without a background class): the image's classes only. Returns (H, W) int64 class ids."""
    keys = np.asarray(keys, np.int64) + 1
    ids = np.concatenate([[0], keys]) if background else keys
    if len(ids) <= 1:
        return np.full(labels.shape, ids[0] if len(ids) else 0, np.int64)
    lut = np.zeros(int(max(ids.max(), labels.max())) + 1, np.int64)
    lut[ids] = np.arange(len(ids))
    q = crf_on_labels(image, lut[labels], len(ids), gt_prob=gt_prob, params=params)
    return ids[q.argmax(0)]
