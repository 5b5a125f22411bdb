"""Class activation maps (CAM): the classifier and the maps every tag-supervised method starts from
(paper 001's step 1, and the seeds of URN and RRM).

A multi-label classifier ends in global average pooling (GAP) and a 1x1 convolution without bias,
so its logit for class c is the spatial mean of ``W_c . f(x, y)``; the CAM of class c is that
product kept per pixel (Zhou et al., CVPR 2016, eq. 2; IRNet's ``make_cam``):
``M_c(x, y) = relu(sum_k w_ck f_k(x, y))``. Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2) weighs
the feature maps by the spatial mean of the logit's gradient instead, and works for any network.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import params
from .cache import artifact_path, cached, checkpoint_path
from .crf import crf_on_labels
from .data import Relabeled, SegTransformDataset, images_to_tensor, same_size_batches
from .datasets import get_dataset
from .distributed import trained_state
from .errors import ParameterError, check_choice
from .io import folder_complete
from .metrics import ConfusionMeter
from .parallel import finish_folder, pending, shard_spec
from .pretrained import torchvision_classifier
from .train import fit, seed_everything

BACKBONES = ("small", "resnet50", "vgg16", "mobilenet_v2")
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
        net = torchvision_classifier("resnet50", weights, replace_stride_with_dilation=[False, False, True])
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
        for k, block in enumerate(self.body[14:18]):   # the 160- and 320-channel blocks
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

    def __init__(self, num_classes: int, backbone: str = "small", weights: str | None = None,
                 freeze_bn: bool = False, **kwargs):
        super().__init__()
        check_choice("backbone", backbone, BACKBONES)
        self.freeze_bn = bool(freeze_bn)
        check_choice("weights", weights, (None, "imagenet"))
        if backbone == "small":
            if weights is not None:
                raise ParameterError("the small backbone has no pretrained weights: use weights=None")
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
        old = [p for p in old if p.requires_grad]        # frozen blocks stay out
        return [g for g in ({"params": old, "lr": lr_pretrained}, {"params": new, "lr": lr_new})
                if g["params"]]


def class_activation_map(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016, eq. 2): M_c = relu(sum_k w_ck f_k) per pixel. ``features`` (N, D, h, w),
    ``weight`` (K, D) or the (K, D, 1, 1) weight of a 1x1 convolution. Returns (N, K, h, w)."""
    w = weight.reshape(weight.shape[0], -1)
    return F.relu(torch.einsum("ndhw,kd->nkhw", features, w))


def grad_cam(model: nn.Module, images: torch.Tensor, class_index: int,
             layer: nn.Module | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) of one class: alpha_k = spatial mean of
    d logit_c / d A_k, map = relu(sum_k alpha_k A_k), where A is the output of ``layer`` (default:
    the backbone's output, ``model.features``). ``model(images)`` must return the logits (N, K).
    Returns (N, h, w) at ``layer``'s resolution. At the backbone's output of a GAP + linear head
    (as :class:`CAMClassifier`) it equals the CAM divided by h*w; at an earlier layer it is a
    different, finer map."""
    return grad_cams(model, images, layer, classes=[class_index])[:, 0]


def grad_cams(model: nn.Module, images: torch.Tensor, layer: nn.Module | None = None,
              classes=None) -> torch.Tensor:
    """Grad-CAM (see :func:`grad_cam`) of several classes (default: all), one backward pass each.
    Returns (N, len(classes), h, w). Runs with gradients enabled even inside ``torch.no_grad``
    (so it can serve as the ``cam_fn`` of :func:`multiscale_cam`); the model's parameters get no
    ``.grad``. ``layer``'s output must not be modified in place by the next layer (hook a ReLU,
    not the convolution before an in-place ReLU)."""
    layer = layer if layer is not None else model.backbone
    store = {}

    def keep(module, inputs, output):  # a leaf to differentiate against; the layers before get no graph
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
                grads, = torch.autograd.grad(logits[:, c].sum(), acts, retain_graph=True)
                alpha = grads.mean((2, 3), keepdim=True)
                maps.append(F.relu((alpha * acts).sum(1)).detach())
    finally:
        hook.remove()
    return torch.stack(maps, 1)


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


def cams_to_labels(cams: torch.Tensor, bg_threshold: float | None = 0.15) -> torch.Tensor:
    """Pseudo-labels from normalised CAMs (N, K, H, W): a constant background plane at
    ``bg_threshold`` is put in front (class 0) and the argmax taken, so a pixel gets class c + 1
    where CAM c is the largest and above the threshold (IRNet's evaluation uses 0.15).
    ``bg_threshold=None``, for a dataset without a background class (``has_background`` False,
    e.g. MSRC, where grass and sky are classes): no plane; every pixel gets the image's class
    (a map that is not all zero) whose CAM is the largest there, 0 only in an image with none.
    Returns (N, H, W) int64 in 0..K."""
    if bg_threshold is None:
        present = cams.flatten(2).amax(2) > 0                                   # (N, K)
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


def multilabel_f1(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """F1 score of each class for multi-label predictions ``probs > threshold`` against ``labels``
    (both (N, K)); paper 001 selects its classifier by F1 on image-level labels. A class never
    predicted nor present scores NaN (undefined), not 0 or 1."""
    pred, lab = probs > threshold, labels.bool()
    tp = (pred & lab).sum(0).double()
    denom = (pred.sum(0) + lab.sum(0)).double()
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))


# ------------------------------------------------------------------------------------------------
# Step 1 as a pipeline: train the classifier, extract CAMs to a folder, evaluate them
# ------------------------------------------------------------------------------------------------


def multilabel_bce_loss(model, batch):
    """Binary cross-entropy per class on the image-level labels (paper 001 §3.1), averaged over
    classes and images: the ``loss_fn`` of :func:`wsss_edu.train.fit` for a classifier."""
    return F.binary_cross_entropy_with_logits(model(batch["image"]), batch["labels"].float())


def train_classifier(model: CAMClassifier, loader, epochs: int, lr_pretrained: float = 1e-4,
                     lr_new: float = 1e-3, device=None, checkpoint=None, progress: bool = True,
                     desc: str = "classifier") -> dict:
    """Train ``model`` with BCE per class and Adam at two learning rates (paper 001: 1e-4 for the
    ImageNet part, 1e-3 for the new layers; :meth:`CAMClassifier.param_groups`). ``loader`` yields
    {'image', 'labels'} batches. Resumes from ``checkpoint`` when given. Returns the history."""
    opt = torch.optim.Adam(model.param_groups(lr_pretrained, lr_new))
    return fit(model, loader, multilabel_bce_loss, opt, epochs, device=device, checkpoint=checkpoint,
               desc=desc, progress=progress)


@torch.no_grad()
def classifier_probs(model: nn.Module, dataset, batch_size: int = 64, device=None,
                     progress: bool = True) -> torch.Tensor:
    """Sigmoid outputs (N, K) of the classifier for every image of ``dataset`` (samples with a
    uint8 'image'), whole images, batched where sizes agree."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    out = []
    bar = tqdm(total=len(dataset), desc="classify", disable=not progress, leave=False)
    for _, group in same_size_batches(dataset, batch_size):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        out.append(torch.sigmoid(model(x).float()).cpu())
        bar.update(len(group))
    bar.close()
    return torch.cat(out) if out else torch.zeros(0, 0)


def cam_path(folder, name: str) -> Path:
    """Where the CAMs of image ``name`` live in a CAM folder."""
    return Path(folder) / f"{name}.npz"


def save_cams(folder, name: str, cams: torch.Tensor, labels: torch.Tensor) -> Path:
    """Store one image's normalised CAMs (K, H, W) as IRNet does: only the image's classes
    (``labels`` (K,) multi-hot), float16, with their class indices ('keys'). Atomic."""
    keys = torch.nonzero(torch.as_tensor(labels) > 0).flatten()
    path = cam_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, keys=keys.numpy().astype(np.int64),
                 cams=cams[keys].float().numpy().astype(np.float16))
    tmp.replace(path)
    return path


def load_cams(folder, name: str, num_classes: int) -> torch.Tensor:
    """One image's CAMs from a CAM folder as a dense (K, H, W) float32 tensor (zeros for classes
    the image does not have). A missing file raises an error naming the step that writes it."""
    path = cam_path(folder, name)
    if not path.exists():
        raise FileNotFoundError(f"no CAMs for image {name!r} in {folder}: run notebook 03 (or "
                                "wsss_edu.cam.extract_cams) with the same parameters first")
    with np.load(path) as z:
        keys, maps = z["keys"], z["cams"]
    out = torch.zeros((num_classes,) + tuple(maps.shape[1:]))
    out[torch.as_tensor(keys)] = torch.as_tensor(maps.astype(np.float32))
    return out


def extract_cams(model: nn.Module, dataset, folder, scales=(1.0, 0.5, 1.5, 2.0), flip: bool = True,
                 normalization: str = "per_class", cam_fn=None, batch_size: int = 32, device=None,
                 progress: bool = True, shard=None) -> int:
    """Multi-scale CAMs (:func:`multiscale_cam`) of every image of ``dataset``, normalised
    (:func:`normalize_cams`) over the image's own labels (sample 'labels'), written to ``folder``
    with :func:`save_cams` under the sample's 'name'. Images whose file exists are skipped, so an
    interrupted extraction resumes. ``cam_fn`` defaults to ``model.cam`` (e.g. a Grad-CAM instead).
    ``shard`` ((i, n) or 'i/n'; default: ``WSSS_SHARD``, else all): this machine's share of the
    images (:func:`wsss_edu.parallel.shard`). Returns the number of images computed."""
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    cam_fn = cam_fn or model.cam
    todo = pending(range(len(dataset)), lambda i: cam_path(folder, _sample_name(dataset, i)), shard)
    bar = tqdm(total=len(todo), desc="CAMs", disable=not progress, leave=False)
    for _, group in same_size_batches(dataset, batch_size, todo):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        labels = torch.as_tensor(np.stack([s["labels"] for s in group])).float()
        cams = normalize_cams(multiscale_cam(cam_fn, x, scales, flip).float().cpu(), labels,
                              normalization)
        for s, c, l in zip(group, cams, labels):
            save_cams(folder, s["name"], c, l)
        bar.update(len(group))
    bar.close()
    return len(todo)


def _sample_name(dataset, i: int) -> str:
    names = getattr(dataset, "names", None)
    return names[i] if names is not None else dataset[i]["name"]


def crf_cam_labels(image: np.ndarray, cams: torch.Tensor, bg_threshold: float | None = 0.15,
                   gt_prob: float = 0.7, params="irn_labels") -> np.ndarray:
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
    return crf_label_map(image, ids[compact], keys.numpy(), gt_prob, params,
                         background=bg_threshold is not None)


def crf_label_map(image: np.ndarray, labels: np.ndarray, keys, gt_prob: float = 0.7,
                  params="irn_labels", background: bool = True) -> np.ndarray:
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


def cam_confusions(dataset, folder, thresholds=(0.15,), indices=None, progress: bool = True) -> list:
    """Confusion meters of the CAM pseudo-labels (:func:`cams_to_labels`) against each sample's
    'mask' (255 ignored), one per background threshold (None: no plane, for a dataset without a
    background class), in one pass over the CAM folder. ``dataset.num_classes`` counts the
    background. Returns [ConfusionMeter per threshold]."""
    from tqdm.auto import tqdm

    k = dataset.num_classes
    meters = [ConfusionMeter(k) for _ in thresholds]
    idx = range(len(dataset)) if indices is None else indices
    for i in tqdm(idx, desc="evaluate CAMs", disable=not progress, leave=False):
        s = dataset[i]
        cams = load_cams(folder, s["name"], k - 1).numpy()
        peak, arg = cams.max(0), cams.argmax(0) + 1   # cams_to_labels for every threshold at once
        for m, t in zip(meters, thresholds):
            if t is None:                             # no plane: the image's classes only
                m.update(s["mask"], cams_to_labels(torch.from_numpy(cams)[None], None)[0].numpy())
            else:
                m.update(s["mask"], np.where(peak > t, arg, 0))
    return meters


# ------------------------------------------------------------------------------------------------
# Step 1 end to end, cached: what notebook 03 builds and notebooks 04-07 reuse
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that decides step 1's classifier (and so its CAMs); the cache key of both.

    ``drop_class``: index (among the K foreground classes) whose labels are removed, or None;
    ``balance``: train on :func:`balance_by_downsampling`'s subset; then ``equal_steps`` trains it
    for as many gradient steps as the whole set would get (more epochs), so that only the class
    mix changes, not the amount of training. ``crop``: random scale-crop size for real datasets
    (None: whole images, flipped at random)."""
    backbone: str = "small"
    weights: str | None = None
    width: int = 16
    depth: int = 2
    epochs: int = 10
    batch_size: int = 16
    lr_pretrained: float = 1e-4
    lr_new: float = 1e-2
    crop: int | None = None
    drop_class: int | None = None
    balance: bool = False
    equal_steps: bool = True
    augment: str = "flip"
    seed: int = 0
    freeze_bn: bool = False
    """Keep every BatchNorm in eval mode while training (:meth:`CAMClassifier.train`): the
    pretrained statistics stay. Needed for the offline MobileNetV2 file, whose BN layers are
    fused to the identity: batch statistics would replace them."""
    frozen_blocks: int = 0
    """The backbone's first ``frozen_blocks`` blocks keep their weights (no gradient;
    MobileNetV2 only, :meth:`CAMClassifier.freeze_blocks`): the early layers' edges and textures
    need no tags, and a CPU trains the rest faster (measured on MSRC in notebook 03)."""


def training_labels(labels, cfg: ClassifierConfig):
    """Paper 001's data handling for the classifier: the labels with ``cfg.drop_class`` removed,
    and the indices of the images to train on (all, or the class-balanced subset). Returns
    (labels (N, K) float32 array, indices int64 array)."""
    y = torch.as_tensor(np.asarray(labels, np.float32))
    if cfg.drop_class is not None:
        y = drop_class_labels(y, cfg.drop_class)
    idx = balance_by_downsampling(y, seed=cfg.seed) if cfg.balance else torch.arange(len(y))
    return y.numpy(), idx.numpy()


def dataset_tags(dataset) -> np.ndarray:
    """The image-level labels (N, K) float32 of every sample of ``dataset``."""
    return np.stack([np.asarray(dataset[i]["labels"], np.float32) for i in range(len(dataset))])


def tagged_view(dataset, cfg: ClassifierConfig):
    """``dataset`` seen through the tags the classifier of ``cfg`` knows (``cfg.drop_class``
    removed; every image kept): what its CAMs are normalised over and scored with."""
    return Relabeled(dataset, training_labels(dataset_tags(dataset), cfg)[0])


def make_classifier(num_classes: int, cfg: ClassifierConfig) -> CAMClassifier:
    """The classifier ``cfg`` describes (the small CNN takes ``width`` / ``depth``)."""
    kw = dict(width=cfg.width, depth=cfg.depth) if cfg.backbone == "small" else {}
    model = CAMClassifier(num_classes, cfg.backbone, cfg.weights, freeze_bn=cfg.freeze_bn, **kw)
    if cfg.frozen_blocks:
        model.freeze_blocks(cfg.frozen_blocks)
    return model


def train_step1(dataset, cfg: ClassifierConfig, device=None, workers: int = 0, checkpoint=None,
                progress: bool = True) -> CAMClassifier:
    """Train step 1's classifier on ``dataset`` (samples with 'image', 'labels'; ``num_classes``
    counting the background) as ``cfg`` says: labels dropped / balanced (:func:`training_labels`),
    random flips (and scale-crops at ``cfg.crop``; ``cfg.augment='strong'``: paper 001's strong
    augmentation first, :func:`wsss_edu.data.strong_augment`), BCE per class, Adam at two
    learning rates."""
    from torch.utils.data import DataLoader

    seed_everything(cfg.seed)
    labels = dataset_tags(dataset)
    y, idx = training_labels(labels, cfg)
    train_set = SegTransformDataset(Relabeled(dataset, y, idx), crop=cfg.crop, flip=True, augment=cfg.augment)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers)
    epochs = cfg.epochs
    if cfg.balance and cfg.equal_steps and len(idx):
        epochs = max(1, int(round(cfg.epochs * len(dataset) / len(idx))))
    model = make_classifier(labels.shape[1], cfg)
    train_classifier(model, loader, epochs, cfg.lr_pretrained, cfg.lr_new, device=device,
                     checkpoint=checkpoint, progress=progress,
                     desc=f"classifier ({len(idx)} images, {epochs} epochs)")
    return model.eval()


def cached_step1(output_dir, dataset, data_key: dict, cfg: ClassifierConfig, device=None,
                 workers: int = 0, progress: bool = True) -> CAMClassifier:
    """Step 1's classifier for (``data_key``, ``cfg``) from the artifact cache under
    ``output_dir``, or trained (:func:`train_step1`, resumable) and stored. ``data_key`` names the
    training data (dataset, split, size, seed, knobs...). Trains on every visible GPU, or on
    ``WSSS_TRAIN_PROCESSES`` processes (:func:`wsss_edu.distributed.trained_state`)."""
    key = {"data": data_key, "classifier": dataclasses.asdict(cfg)}
    labels0 = dataset[0]["labels"]

    def compute():   # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "classifier", key)
        return trained_state(train_step1, dataset=dataset, cfg=cfg, device=device, workers=workers,
                             checkpoint=ckpt, progress=progress)

    state = cached(output_dir, "classifier", key, compute)
    model = make_classifier(len(labels0), cfg)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


def cam_folder(output_dir, data_key: dict, cfg: ClassifierConfig, **cam_params) -> Path:
    """The CAM folder of (data, classifier, CAM parameters) under ``output_dir``/cache/cams."""
    key = {"data": data_key, "classifier": dataclasses.asdict(cfg), "cams": cam_params}
    return artifact_path(output_dir, "cams", key).with_suffix("")


def cached_cams(output_dir, model, dataset, data_key: dict, cfg: ClassifierConfig,
                scales=(1.0, 0.5, 1.5, 2.0), flip: bool = True, normalization: str = "per_class",
                cam: str = "cam", layer: str | None = None, device=None,
                progress: bool = True, shard=None) -> Path:
    """Extract (or find) the CAMs of every image of ``dataset`` with ``model`` into their cache
    folder (:func:`cam_folder`) and return it. ``cam``: 'cam' (the classifier's CAM) or 'grad_cam'
    (at ``layer``, a submodule name such as ``'backbone.body.5'``; None: the backbone's output).
    Interrupted extractions resume image by image. ``shard`` (default ``WSSS_SHARD``): this
    machine's share of the images; the folder is complete once every image is there."""
    check_choice("cam", cam, ("cam", "grad_cam"))
    folder = cam_folder(output_dir, data_key, cfg, scales=list(scales), flip=flip,
                        normalization=normalization, cam=cam,
                        layer=layer)
    if not folder_complete(folder):
        module = model.get_submodule(layer) if layer else None
        fn = model.cam if cam == "cam" else (lambda x: grad_cams(model, x, module))
        spec = shard_spec(shard)
        extract_cams(model, dataset, folder, scales, flip, normalization, fn, device=device,
                     progress=progress, shard=spec)
        names = getattr(dataset, "names", None)
        names = list(names) if names is not None else [dataset[i]["name"] for i in range(len(dataset))]
        finish_folder(folder, names, ".npz", spec)
    return folder


# The size knobs of notebook 03's step 1: {name: (quick, full)} (params.profile_values). AUGMENT:
# the full profile takes paper 001's strong augmentation (data.strong_augment); the quick profile
# flips only — its small CNN learns from scratch in 10 epochs of 64-px scenes, where rotations and
# blur cost more of the little signal than they add.
# DROP_CLASS / BALANCE: paper 001's data handling (the toy world hides half the person tags);
# CAM_SCALES: IRNet's; FROZEN_BLOCKS: ClassifierConfig.frozen_blocks.
STEP1_PROFILE = dict(IMAGE_SIZE=(64, 320), N_TRAIN=(800, 5000), N_VAL=(200, 1000),
                     BACKBONE=("small", "resnet50"), EPOCHS=(10, 5), LR_NEW=(1e-2, 1e-3),
                     CROP=(None, 512), AUGMENT=("flip", "strong"),
                     DROP_CLASS=("person", "person"), BALANCE=(True, True),
                     CAM_SCALES=((1.0, 0.5, 1.5, 2.0), (1.0, 0.5, 1.5, 2.0)), FROZEN_BLOCKS=(0, 0))
# Where a real dataset's values differ: {dataset: {name: (quick, full)}} (params.for_dataset).
# MSRC (591 photos of ~320x213, tags complete, no background class): nothing to drop, and
# down-sampling to its rarest class would leave a few dozen images. Quick: an ImageNet MobileNetV2
# whose first 7 blocks (to stride 8) stay as they are, 4 epochs of 160-px crops, CAMs at one
# scale (and its mirror) — measured in notebook 03 (§2) and tools/msrc_cam_check.py; full: IRNet's ResNet-50.
STEP1_DATASETS = {"msrc": dict(BACKBONE=("mobilenet_v2", "resnet50"), EPOCHS=(4, 20),
                               CROP=(160, 320), DROP_CLASS=("", ""), BALANCE=(False, False),
                               CAM_SCALES=((1.0,), (1.0, 0.5, 1.5, 2.0)), FROZEN_BLOCKS=(7, 0))}


def step1_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 03's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`STEP1_PROFILE` with :data:`STEP1_DATASETS`'s values)."""
    return params.profile_values(profile, params.for_dataset(STEP1_PROFILE, STEP1_DATASETS, dataset),
                                 **knobs)


def classifier_config(v: dict, seed: int, weights="imagenet", drop_class: int | None = None) -> ClassifierConfig:
    """Step 1's :class:`ClassifierConfig` from resolved knobs ``v`` (:func:`step1_values`).
    A pretrained MobileNetV2 keeps its batch-norm statistics (``freeze_bn``); a network without
    ImageNet weights has no pretrained part: every layer learns at ``LR_NEW``."""
    weights = weights if v["BACKBONE"] != "small" else None
    scratch = v["BACKBONE"] != "small" and weights is None     # an ImageNet architecture, random weights
    return ClassifierConfig(backbone=v["BACKBONE"], weights=weights, epochs=v["EPOCHS"],
                            lr_new=v["LR_NEW"],
                            lr_pretrained=v["LR_NEW"] if scratch else ClassifierConfig.lr_pretrained,
                            crop=v["CROP"], seed=seed, drop_class=drop_class, balance=v["BALANCE"],
                            augment=v["AUGMENT"],
                            freeze_bn=v["BACKBONE"] == "mobilenet_v2" and weights is not None,
                            frozen_blocks=v["FROZEN_BLOCKS"])


# The background thresholds θ of the CAM pseudo-labels that notebooks 03-05 choose from on val.
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


@dataclass
class Step1:
    """Notebook 03's result as later notebooks need it: the splits (``scored``: where pseudo-labels
    are scored — the toy train split, VOC's ``train``), the tagged views (``DROP_CLASS`` removed),
    the classifier, its CAM folders and the cache keys. Settings are chosen on ``val``; final
    numbers are reported on ``test`` (split ``test_split``: the toy world's ``test``, or ``val``
    itself for a dataset without public test masks, :data:`wsss_edu.params.TEST_SPLITS`)."""
    train: object
    val: object
    scored: object
    train_view: object
    val_view: object
    scored_view: object
    data_key: dict
    cfg: ClassifierConfig
    model: CAMClassifier
    folder: Path
    val_folder: Path
    test: object = None
    test_view: object = None
    test_folder: Path | None = None
    test_split: str = "val"

    @property
    def classes(self) -> list:
        return list(self.train.classes)

    @property
    def has_background(self) -> bool:
        """Whether the dataset has a background class (VOC, the toy world) or labels every pixel
        with one of its classes (MSRC): the later steps put a background plane in front of their
        maps only in the first case (:attr:`wsss_edu.datasets.SegDataset.has_background`)."""
        return bool(getattr(self.train, "has_background", True))

    @property
    def dropped_class(self) -> str:
        """The name of the class whose tags step 1 removed (``DROP_CLASS`` resolved), or ''."""
        return "" if self.cfg.drop_class is None else self.classes[self.cfg.drop_class + 1]

    @property
    def thresholds(self) -> list:
        """The background thresholds θ a notebook chooses from on val: :data:`THRESHOLDS`, or
        [None] (no plane) on a dataset without a background class."""
        return list(THRESHOLDS) if self.has_background else [None]


@dataclass
class Step1Data:
    """Step 1's splits and the cache keys of their CAM folders (:func:`step1_data`). ``scored``:
    where pseudo-labels are scored (the toy world's and MSRC's train split; VOC's ``train``, the
    classifier training on ``train_aug``); ``test``: the held-out split of
    :func:`wsss_edu.params.load_test` (None where its masks are not public)."""
    train: object
    val: object
    scored: object
    key: dict
    val_key: dict
    test: object
    test_split: str | None
    test_key: dict


def step1_data(setup, n_train: int | None = None, n_val: int | None = None, image_size: int | None = None,
               missing_rate: float = 0.5, imbalance: float = 4.0) -> Step1Data:
    """The data of step 1 on ``setup``'s dataset (:func:`wsss_edu.params.setup`) and the keys its
    artifacts are cached under: the toy world drawn with ``n_train`` / ``n_val`` (also the test
    split's size) images of ``image_size`` px and its tag knobs; a real dataset's default splits
    (the sizes and knobs are the toy world's only)."""
    if setup.dataset == "toy":
        knobs = dict(size=image_size, missing_label_rate=missing_rate, imbalance=imbalance)
        train, val = params.load_splits(setup, n_train, n_val, **knobs)
        key = dict(dataset="toy", n=n_train, seed=setup.seed, **knobs)
        test, test_split = params.load_test(setup, n_val, **knobs)
        return Step1Data(train, val, train, key, key | {"split": "val", "n": n_val}, test, test_split,
                         key | {"split": test_split, "n": n_val})
    train, val = params.load_splits(setup)
    voc = setup.dataset == "voc"
    scored = get_dataset(setup.dataset, setup.data_root, split="train") if voc else train
    key = dict(dataset=setup.dataset, root=str(setup.data_root), split="train_aug" if voc else "train")
    test, test_split = params.load_test(setup)
    return Step1Data(train, val, scored, key, key | {"split": "val"}, test, test_split,
                     key | {"split": test_split})


def drop_class_index(classes, drop_class: str | None, dataset: str) -> int | None:
    """The tag index (class id - 1) of the class named ``drop_class`` among ``classes``
    (background first), or None for '' / None (every tag kept); a name that is not a class of
    ``dataset`` is an error naming the valid ones."""
    if not drop_class:
        return None
    if drop_class not in classes:
        raise ParameterError(f"DROP_CLASS={drop_class!r} is not a class of {dataset}; choose "
                             f"one of {list(classes[1:])} or '' to keep every tag")
    return list(classes).index(drop_class) - 1


def step1(setup, DATASET: str = "toy", DROP_CLASS: str | None = None, BALANCE: bool | None = None,
          MISSING_RATE: float = 0.5, IMBALANCE: float = 4.0, WEIGHTS="imagenet", WORKERS: int = 0,
          progress: bool = True, **sizes) -> Step1:
    """Notebook 03's step 1 from its parameters (same names; ``sizes``: IMAGE_SIZE, N_TRAIN, N_VAL,
    BACKBONE, EPOCHS, LR_NEW, CROP, CAM_SCALES, FROZEN_BLOCKS; these, DROP_CLASS and BALANCE:
    None = the profile's default on the dataset, :func:`step1_values`): the data, the classifier
    and the CAMs of the training and validation images, from the cache when notebook 03 ran with
    the same parameters, else computed (and cached). ``setup``: :func:`wsss_edu.params.setup`'s."""
    v = step1_values(setup.profile, DATASET, DROP_CLASS=DROP_CLASS, BALANCE=BALANCE, **sizes)
    data = step1_data(setup, v["N_TRAIN"], v["N_VAL"], v["IMAGE_SIZE"], MISSING_RATE, IMBALANCE)
    train, val, scored, data_key = data.train, data.val, data.scored, data.key
    test, test_split = data.test, data.test_split
    drop = drop_class_index(list(train.classes), v["DROP_CLASS"], DATASET)
    cfg = classifier_config(v, setup.seed, WEIGHTS, drop)
    model = cached_step1(setup.output_dir, train, data_key, cfg, setup.device, WORKERS, progress)
    views = [tagged_view(d, cfg) for d in (train, val)]
    scored_view = tagged_view(scored, cfg) if scored is not train else views[0]
    scales = tuple(v["CAM_SCALES"])
    folder = cached_cams(setup.output_dir, model, views[0], data_key, cfg, scales, device=setup.device,
                         progress=progress)
    val_folder = cached_cams(setup.output_dir, model, views[1], data.val_key, cfg, scales,
                             device=setup.device, progress=progress)
    if test is None:   # no public test masks: report on val (the notebooks say so)
        test, test_view, test_folder, test_split = val, views[1], val_folder, "val"
    else:
        test_view = tagged_view(test, cfg)
        test_folder = cached_cams(setup.output_dir, model, test_view, data.test_key, cfg, scales,
                                  device=setup.device, progress=progress)
    return Step1(train, val, scored, views[0], views[1], scored_view, data_key, cfg, model,
                 folder, val_folder, test, test_view, test_folder, test_split)
