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

BACKBONES = ("small", "resnet50")
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
        else:
            self.backbone = _ResNet50Features(weights)
        self.stride = self.backbone.stride
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3), keepdim=True)).flatten(1)

    def cam(self, x):
        return class_activation_map(self.features(x), self.classifier.weight)


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
