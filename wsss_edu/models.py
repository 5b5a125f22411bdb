"""Segmentation networks shared by the notebooks: a small U-Net for the quick CPU profile, and
torchvision's DeepLabv3 (ResNet-50) for the full profile. Both map (N, 3, H, W) to logits
(N, C, H, W)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import check_choice


def _block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): ``depth`` down/up levels, ``width`` channels at the
    top doubling per level. ``out_channels`` logits per pixel."""

    def __init__(self, out_channels: int, width: int = 16, depth: int = 3, in_channels: int = 3):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels, chans[0])] +
                                  [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(2 * chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        m = 2 ** (len(self.down) - 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)[..., :h, :w]


class _TorchvisionSeg(nn.Module):
    """torchvision segmentation models return {'out': logits}; return the tensor."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


SEGMENTERS = ("unet", "deeplabv3_resnet50")


def make_segmenter(name: str, num_classes: int, weights: str | None = None, **kwargs) -> nn.Module:
    """A segmentation network by name: 'unet' (quick profile) or 'deeplabv3_resnet50' (full
    profile; ``weights='imagenet'`` loads torchvision's ImageNet backbone, which needs those weights
    cached or a download — ``weights=None`` starts from scratch)."""
    check_choice("model", name, SEGMENTERS)
    check_choice("weights", weights, (None, "imagenet"))
    if name == "unet":
        return UNet(num_classes, **kwargs)
    from torchvision.models import ResNet50_Weights
    from torchvision.models.segmentation import deeplabv3_resnet50

    backbone = ResNet50_Weights.IMAGENET1K_V1 if weights == "imagenet" else None
    return _TorchvisionSeg(deeplabv3_resnet50(weights=None, weights_backbone=backbone,
                                              num_classes=num_classes, aux_loss=False))
