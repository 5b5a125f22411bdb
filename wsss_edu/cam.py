"""Class activation maps (CAM): the classifier and the maps every tag-supervised method starts from
(paper 001's step 1, and the seeds of URN and RRM).

A multi-label classifier ends in global average pooling (GAP) and a 1x1 convolution without bias,
so its logit for class c is the spatial mean of ``W_c . f(x, y)``; the CAM of class c is that
product kept per pixel (Zhou et al., CVPR 2016, eq. 2; IRNet's ``make_cam``):
``M_c(x, y) = relu(sum_k w_ck f_k(x, y))``. Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2) weighs
the feature maps by the spatial mean of the logit's gradient instead, and works for any network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ParameterError, check_choice

BACKBONES = ("small", "resnet50", "vgg16")
NORMALIZATIONS = ("per_class", "global")


class SmallBackbone(nn.Module):
    """A small CNN for the quick profile: ``depth`` conv-BN-ReLU stages, each halving the size
    (output stride 2**depth), ``width`` channels doubling per stage."""

    def __init__(self, width: int = 16, depth: int = 3, in_channels: int = 3):
        super().__init__()
        layers, c_in = [], in_channels
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True),
                       nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in
        self.stride = 2 ** depth

    def forward(self, x):
        return self.body(x)


class _ResNet50Features(nn.Module):
    """torchvision's ResNet-50 up to layer4 with layer4's stride replaced by dilation (output
    stride 16, as IRNet's CAM network)."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50

        net = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1 if weights == "imagenet" else None,
                       replace_stride_with_dilation=[False, False, True])
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1,
                                  net.layer2, net.layer3, net.layer4)
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
        from torchvision.models import VGG16_Weights, vgg16

        net = vgg16(weights=VGG16_Weights.IMAGENET1K_V1 if weights == "imagenet" else None)
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


class CAMClassifier(nn.Module):
    """Multi-label classifier for CAMs: backbone features -> GAP -> 1x1 conv without bias.

    ``forward`` returns the logits (N, K); ``cam`` the class activation maps (N, K, h, w) at the
    backbone's resolution (stride ``self.stride``); ``features`` the backbone output.
    """

    def __init__(self, num_classes: int, backbone: str = "small", weights: str | None = None,
                 **kwargs):
        super().__init__()
        check_choice("backbone", backbone, BACKBONES)
        check_choice("weights", weights, (None, "imagenet"))
        if backbone == "small":
            if weights is not None:
                raise ParameterError("the small backbone has no pretrained weights: use weights=None")
            self.backbone = SmallBackbone(**kwargs)
        elif backbone == "resnet50":
            self.backbone = _ResNet50Features(weights)
        else:
            self.backbone = _VGG16Features(weights, **kwargs)
        self.stride = self.backbone.stride
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)

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
        return [g for g in ({"params": old, "lr": lr_pretrained}, {"params": new, "lr": lr_new})
                if g["params"]]


def class_activation_map(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016, eq. 2): M_c = relu(sum_k w_ck f_k) per pixel. ``features`` (N, D, h, w),
    ``weight`` (K, D) or the (K, D, 1, 1) weight of a 1x1 convolution. Returns (N, K, h, w)."""
    w = weight.reshape(weight.shape[0], -1)
    return F.relu(torch.einsum("ndhw,kd->nkhw", features, w))


def grad_cam(model: nn.Module, images: torch.Tensor, class_index: int) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) of one class for a model with ``features`` and a
    head mapping them to logits (as :class:`CAMClassifier`): alpha_k = spatial mean of
    d logit_c / d f_k, map = relu(sum_k alpha_k f_k). Returns (N, h, w). For a GAP + linear head it
    equals the CAM divided by h*w."""
    feats = model.features(images)
    if not feats.requires_grad:
        feats.requires_grad_(True)
    logits = model.classifier(feats.mean((2, 3), keepdim=True)).flatten(1)
    grads, = torch.autograd.grad(logits[:, class_index].sum(), feats)
    alpha = grads.mean((2, 3), keepdim=True)
    return F.relu((alpha * feats).sum(1)).detach()


@torch.no_grad()
def multiscale_cam(cam_fn, images: torch.Tensor, scales=(1.0, 0.5, 1.5, 2.0), flip: bool = True,
                   size=None) -> torch.Tensor:
    """CAMs summed over rescaled copies of ``images`` (N, 3, H, W) and, with ``flip``, their
    horizontal mirrors (flipped back), each upsampled bilinearly to ``size`` (default (H, W));
    IRNet's ``make_cam`` with its default scales. ``cam_fn(images) -> (N, K, h, w)``, e.g.
    ``model.cam``. Returns (N, K, *size), not normalised (see :func:`normalize_cams`)."""
    size = tuple(size or images.shape[-2:])
    total = None
    for s in scales:
        x = images if s == 1 else F.interpolate(images, scale_factor=s, mode="bilinear",
                                                align_corners=False)
        views = [(x, False)] + ([(x.flip(-1), True)] if flip else [])
        for v, flipped in views:
            m = cam_fn(v)
            m = m.flip(-1) if flipped else m
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            total = m if total is None else total + m
    return total


def normalize_cams(cams: torch.Tensor, labels: torch.Tensor | None = None, mode: str = "per_class",
                   eps: float = 1e-5) -> torch.Tensor:
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


def cams_to_labels(cams: torch.Tensor, bg_threshold: float = 0.15) -> torch.Tensor:
    """Pseudo-labels from normalised CAMs (N, K, H, W): a constant background plane at
    ``bg_threshold`` is put in front (class 0) and the argmax taken, so a pixel gets class c + 1
    where CAM c is the largest and above the threshold (IRNet's evaluation uses 0.15).
    Returns (N, H, W) int64 in 0..K."""
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


def balance_by_downsampling(labels: torch.Tensor, per_class: int | None = None,
                            seed: int = 0) -> torch.Tensor:
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
        take = pool[torch.randperm(len(pool), generator=g)[:max(target - have, 0)]]
        chosen[take] = True
    return torch.nonzero(chosen).flatten()


def confident_image_mask(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.8) -> torch.Tensor:
    """Which images go to IRNet (paper 001: "confidence score of classification more than 0.8"):
    those whose every labelled class has a predicted probability above ``threshold``. ``probs``
    (N, K) sigmoid outputs, ``labels`` (N, K) multi-hot. Images without labels are not kept.
    Returns (N,) bool."""
    labels = labels.bool()
    ok = torch.where(labels, probs > threshold, torch.ones_like(labels)).all(1)
    return ok & labels.any(1)
