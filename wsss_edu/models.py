"""Segmentation networks shared by the notebooks, each mapping (N, 3, H, W) to logits (N, C, H, W):
a small U-Net (paper 000), DeepLabv3+ (paper 001's step 3: :class:`DeepLabV3Plus` on a small CNN, a
ResNet-50 or a MobileNetV2 encoder) and torchvision's DeepLabv3 (:func:`make_segmenter` builds any
of them by name); :func:`tta_views` / :func:`tta_probs`, paper 001's test-time augmentation.
Training them on pseudo-labels and scoring them is step 3's: :mod:`wsss_edu.steps.segmenter_step`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cam import _MobileNetV2Features
from .errors import ParameterError, check_choice
from .pretrained import load_imagenet, torchvision_classifier


def _block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): ``depth`` down/up levels, ``width`` channels at the
    top doubling per level. ``out_channels`` logits per pixel."""

    def __init__(self, out_channels: int, width: int = 16, depth: int = 3, in_channels: int = 3):
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(in_channels, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                for i in reversed(range(depth))
            ]
        )
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


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, Chen et al. 2017 §3.3): a 1x1 convolution, three
    3x3 convolutions dilated by ``rates`` and a global-average-pooled branch, side by side, each
    with batch norm and ReLU, concatenated and projected to ``out_channels`` (then dropout)."""

    def __init__(
        self, in_channels: int, out_channels: int = 256, rates=(6, 12, 18), dropout: float = 0.1
    ):
        super().__init__()

        def cbr(k, d):
            return nn.Sequential(
                nn.Conv2d(
                    in_channels, out_channels, k, padding=d * (k // 2), dilation=d, bias=False
                ),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([cbr(1, 1)] + [cbr(3, r) for r in rates])
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.ReLU(inplace=True),
        )  # no norm: one value per image and channel
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, 1))


class _SmallEncoder(nn.Module):
    """The quick profile's encoder: conv stages at strides 2 and 4 (the low-level features), a third
    at stride 8, then two dilated stages that keep stride 8 (DeepLab's output stride 8)."""

    def __init__(self, width: int = 32):
        super().__init__()

        def cbr(cin, cout, stride=1, dilation=1):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        w = width
        self.low = nn.Sequential(cbr(3, w, 2), cbr(w, w), cbr(w, 2 * w, 2), cbr(2 * w, 2 * w))
        self.high = nn.Sequential(
            cbr(2 * w, 4 * w, 2),
            cbr(4 * w, 4 * w),
            cbr(4 * w, 4 * w, dilation=2),
            cbr(4 * w, 4 * w, dilation=4),
        )
        self.channels = (2 * w, 4 * w)

    def forward(self, x):
        low = self.low(x)
        return low, self.high(low)


class _ResNet50Encoder(nn.Module):
    """torchvision's ResNet-50 with the last stage dilated (output stride 16, as DeepLabv3+);
    low-level features from layer1 (stride 4)."""

    def __init__(self, weights: str | None = None):
        super().__init__()
        net = torchvision_classifier(
            "resnet50", weights, replace_stride_with_dilation=[False, False, True]
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.rest = nn.Sequential(net.layer2, net.layer3, net.layer4)
        self.channels = (256, 2048)

    def forward(self, x):
        low = self.stem(x)
        return low, self.rest(low)


class _MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 (the CAM classifier's dilated version, output stride 16,
    :class:`wsss_edu.cam._MobileNetV2Features`); low-level features from its stride-4 blocks
    (24 channels). With ImageNet weights its batch norms keep their statistics while training
    (``frozen_bn``): CPU batches are small, and the offline weights file has them fused.
    ``frozen_blocks``: the first blocks keep their weights (no gradient), as step 1's classifier
    (:attr:`wsss_edu.steps.cam_step.ClassifierConfig.frozen_blocks`)."""

    def __init__(self, weights: str | None = None, frozen_blocks: int = 0):
        super().__init__()
        body = _MobileNetV2Features(weights).body
        for p in body[:frozen_blocks].parameters():
            p.requires_grad_(False)
        self.stem, self.rest = body[:4], body[4:]
        self.channels = (24, 1280)
        self.frozen_bn = weights is not None

    def forward(self, x):
        low = self.stem(x)
        return low, self.rest(low)


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ (Chen et al., ECCV 2018): an encoder with dilated last stages, ASPP on its output,
    and a decoder that upsamples the ASPP features to stride 4, concatenates them with the
    encoder's stride-4 features reduced to 48 channels (§3.1), refines with two 3x3 convolutions
    and predicts the classes; logits are upsampled bilinearly to the input size.
    ``backbone``: 'resnet50' (output stride 16, ASPP rates 6/12/18, 256 channels, the paper's),
    'mobilenet_v2' (output stride 16, the same rates, 128 channels: real photos on a laptop CPU;
    with 64, MSRC's test mIoU fell from 0.40 to 0.30 for a sixth less time)
    or 'small' (the quick profile: output stride 8, rates 2/4/6, ``width`` · 4 channels)."""

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        weights: str | None = None,
        width: int = 32,
        frozen_blocks: int = 0,
    ):
        super().__init__()
        check_choice("backbone", backbone, ("small", "resnet50", "mobilenet_v2"))
        if frozen_blocks and backbone != "mobilenet_v2":
            raise ParameterError("frozen_blocks applies to the mobilenet_v2 encoder only; use 0")
        if backbone == "resnet50":
            self.encoder, ch, rates, low_ch = _ResNet50Encoder(weights), 256, (6, 12, 18), 48
        elif backbone == "mobilenet_v2":
            self.encoder, ch, rates, low_ch = (
                _MobileNetV2Encoder(weights, frozen_blocks),
                128,
                (6, 12, 18),
                48,
            )
        else:
            self.encoder, ch, rates, low_ch = _SmallEncoder(width), 4 * width, (2, 4, 6), width
        c_low, c_high = self.encoder.channels
        self.aspp = ASPP(c_high, ch, rates)
        self.reduce = nn.Sequential(
            nn.Conv2d(c_low, low_ch, 1, bias=False), nn.BatchNorm2d(low_ch), nn.ReLU(inplace=True)
        )

        def cbr(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.decoder = nn.Sequential(cbr(ch + low_ch, ch), cbr(ch, ch))
        self.classifier = nn.Conv2d(ch, num_classes, 1)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; an encoder with ``frozen_bn`` keeps its batch norms in eval mode."""
        super().train(mode)
        if getattr(self.encoder, "frozen_bn", False):
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        low, high = self.encoder(x)
        y = F.interpolate(
            self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        y = self.classifier(self.decoder(torch.cat([y, self.reduce(low)], 1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def param_groups(self, lr: float) -> list:
        """The encoder at ``lr``, the new layers (ASPP, decoder) at 10x, the usual DeepLab split."""
        enc = list(self.encoder.parameters())
        ids = {id(p) for p in enc}
        new = [p for p in self.parameters() if id(p) not in ids]
        return [
            {"params": [p for p in enc if p.requires_grad], "lr": lr},
            {"params": new, "lr": 10 * lr},
        ]


@torch.no_grad()
def tta_views(model: nn.Module, images: torch.Tensor, scales=(0.5, 1.0, 2.0), flip: bool = True):
    """The views test-time augmentation averages (:func:`tta_probs`), one at a time: for each of
    ``scales`` and, with ``flip``, its mirror image, yields (scale, flipped, the softmax of
    ``model`` on the images (N, 3, H, W) so rescaled (bilinear; antialiased when shrinking, as
    PIL's resize of the training augmentation is), mirrored back and resized to (H, W))."""
    h, w = images.shape[-2:]
    for s in scales:
        x = (
            images
            if s == 1
            else F.interpolate(
                images, scale_factor=s, mode="bilinear", align_corners=False, antialias=s < 1
            )
        )
        for f in (False, True) if flip else (False,):
            xi = x.flip(-1) if f else x
            p = torch.softmax(model(xi).float(), 1)
            p = p.flip(-1) if f else p
            yield s, f, F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)


@torch.no_grad()
def tta_probs(
    model: nn.Module, images: torch.Tensor, scales=(0.5, 1.0, 2.0), flip: bool = True
) -> torch.Tensor:
    """Test-time augmentation (paper 001 §3.4): the softmax of ``model`` on the images (N, 3, H, W)
    rescaled by each of ``scales`` and, with ``flip``, mirrored too, each resized back to (H, W)
    (:func:`tta_views`) and averaged. Returns probabilities (N, C, H, W)."""
    total, n = 0, 0
    for _, _, p in tta_views(model, images, scales, flip):
        total = total + p
        n += 1
    return total / n


SEGMENTERS = (
    "unet",
    "deeplabv3_resnet50",
    "deeplabv3plus_small",
    "deeplabv3plus_resnet50",
    "deeplabv3plus_mobilenet_v2",
)


def make_segmenter(name: str, num_classes: int, weights: str | None = None, **kwargs) -> nn.Module:
    """A segmentation network by name: 'unet' (quick profile), 'deeplabv3_resnet50' (full
    profile), 'deeplabv3plus_small' / 'deeplabv3plus_resnet50' (:class:`DeepLabV3Plus`; ``weights='imagenet'`` loads an ImageNet backbone: torchvision's download, or a local file
    (:mod:`wsss_edu.pretrained`) — ``weights=None`` starts from scratch)."""
    check_choice("model", name, SEGMENTERS)
    check_choice("weights", weights, (None, "imagenet"))
    if name == "unet":
        return UNet(num_classes, **kwargs)
    if name.startswith("deeplabv3plus"):
        return DeepLabV3Plus(num_classes, name.split("_", 1)[1], weights, **kwargs)
    from torchvision.models.segmentation import deeplabv3_resnet50

    net = deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    if weights == "imagenet":
        load_imagenet(net.backbone, "resnet50", drop=("fc.",))
    return _TorchvisionSeg(net)
