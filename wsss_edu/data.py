"""From samples to tensors: normalisation with torchvision's ImageNet mean/std, batching of
stacked arrays, flips, batches of samples of one size (:func:`same_size_batches`). Kept separate
from the datasets so every method shares one convention."""

from __future__ import annotations

import numpy as np
import torch

from .errors import check_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) or one (H, W, 3) → float (N, 3, H, W), normalised with the
    ImageNet mean/std on 0-1 RGB."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """Undo :func:`images_to_tensor`: (N, 3, H, W) → uint8 (N, H, W, 3)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    y = (x * std + mean).clamp(0, 1).mul(255).round().byte()
    return y.permute(0, 2, 3, 1).cpu().numpy()


def item_rng() -> np.random.Generator:
    """A NumPy generator for one item's augmentation, seeded from torch's global RNG. DataLoader
    seeds that RNG differently in every worker and every epoch, and :func:`wsss_edu.train.
    seed_everything` seeds it in the main process, so augmentations differ across workers and
    epochs yet reproduce run to run (a generator stored on the dataset would be copied into each
    worker and replay the same draws every epoch)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


class ArrayDataset(torch.utils.data.Dataset):
    """Stacked arrays (a dict of equal-length arrays, e.g. from ``ToyDataset.arrays()``) as a torch
    dataset of dicts: 'image' becomes a normalised float tensor, 'mask' a long tensor, 'labels' a
    float tensor; other keys pass through as tensors. ``flip=True`` flips images and masks
    horizontally at random (p = 0.5), drawing from torch's RNG (see :func:`item_rng`)."""

    def __init__(self, arrays: dict, flip: bool = False):
        self.arrays = arrays
        self.n = len(next(iter(arrays.values())))
        self.flip = flip

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        flip = self.flip and item_rng().random() < 0.5
        out = {}
        for k, v in self.arrays.items():
            a = v[i]
            if flip and isinstance(a, np.ndarray) and a.ndim >= 2 and k != "labels":
                a = a[:, ::-1].copy()
            if k == "image":
                out[k] = images_to_tensor(a)[0]
            elif k in ("mask", "mask_clean"):
                out[k] = torch.as_tensor(np.ascontiguousarray(a)).long()
            else:
                out[k] = torch.as_tensor(np.ascontiguousarray(a))
        return out


AUGMENTS = ("flip", "strong")  # a random horizontal flip only | paper 001's strong augmentation

# Paper 001 lists its "strong augmentation" by name only (horizontal flip, shift, scale, rotate,
# Gauss noise, random brightness and contrast, median blur, RGB shift: the names of the
# albumentations transforms). The ranges below are those transforms' usual defaults, each
# applied with probability 0.5 — the paper gives none of them.
STRONG = dict(
    p=0.5,
    shift=0.0625,
    scale=0.1,
    rotate=45.0,
    noise_var=(10.0, 50.0),
    brightness=0.2,
    contrast=0.2,
    median=(3, 5, 7),
    rgb_shift=20.0,
)


def strong_augment(
    img: np.ndarray,
    mask: np.ndarray,
    gen: np.random.Generator,
    settings=None,
    weight: np.ndarray | None = None,
):
    """Paper 001's strong augmentation of one (H, W, 3) uint8 image and its (H, W) uint8 label map
    (a mask, or IRNet's relation labels): the geometric transforms (flip; shift, scale and rotate
    as one affine map) move both — the labels by nearest neighbour, 255 where the image has no
    pixel —, the photometric ones (Gaussian noise, brightness and contrast, median blur, RGB
    shift) touch the image only. Each transform fires with probability ``settings['p']``
    (:data:`STRONG`). Returns (image, labels) of the same shapes and dtypes; with ``weight`` (a
    per-pixel float map, e.g. URN's loss weight), (image, labels, weight): the weight moves as the
    labels do (nearest neighbour, 0 where the image has no pixel). The random draws do not depend
    on ``weight``."""
    import torchvision.transforms.v2.functional as TF
    from PIL import Image, ImageFilter
    from torchvision.transforms import InterpolationMode

    st = STRONG if settings is None else STRONG | dict(settings)
    p = st["p"]
    h, w = mask.shape
    if gen.random() < p:
        img, mask = img[:, ::-1], mask[:, ::-1]
        weight = None if weight is None else weight[:, ::-1]
    img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
    if gen.random() < p:
        angle = float(gen.uniform(-st["rotate"], st["rotate"]))
        factor = float(gen.uniform(1 - st["scale"], 1 + st["scale"]))
        shift = [int(round(gen.uniform(-st["shift"], st["shift"]) * n)) for n in (w, h)]
        t_img = TF.affine(
            torch.from_numpy(img).permute(2, 0, 1),
            angle=angle,
            translate=shift,
            scale=factor,
            shear=[0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=0,
        )
        t_mask = TF.affine(
            torch.from_numpy(mask)[None],
            angle=angle,
            translate=shift,
            scale=factor,
            shear=[0.0],
            interpolation=InterpolationMode.NEAREST,
            fill=255,
        )
        img, mask = t_img.permute(1, 2, 0).contiguous().numpy(), t_mask[0].contiguous().numpy()
        if weight is not None:
            t_w = TF.affine(
                torch.from_numpy(np.ascontiguousarray(weight, np.float32))[None],
                angle=angle,
                translate=shift,
                scale=factor,
                shear=[0.0],
                interpolation=InterpolationMode.NEAREST,
                fill=0.0,
            )
            weight = t_w[0].numpy()
    x = img.astype(np.float32)
    if gen.random() < p:
        x = x + gen.normal(0.0, np.sqrt(gen.uniform(*st["noise_var"])), x.shape)
    if gen.random() < p:
        alpha = 1 + gen.uniform(-st["contrast"], st["contrast"])
        beta = 255 * gen.uniform(-st["brightness"], st["brightness"])
        x = alpha * x + beta
    if gen.random() < p:
        x = x + gen.uniform(-st["rgb_shift"], st["rgb_shift"], 3)
    img = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if gen.random() < p:
        img = np.asarray(
            Image.fromarray(img).filter(ImageFilter.MedianFilter(int(gen.choice(st["median"]))))
        )
    if weight is None:
        return np.ascontiguousarray(img), np.ascontiguousarray(mask)
    return (
        np.ascontiguousarray(img),
        np.ascontiguousarray(mask),
        np.ascontiguousarray(weight, np.float32),
    )


class SegTransformDataset(torch.utils.data.Dataset):
    """A sample dataset (any loader) as normalised tensors for segmentation training/evaluation:
    {'image': float (3, H, W), 'mask': long (H, W), 'labels': float (K,)}.

    ``crop`` (training): a random ``crop``×``crop`` window after a random rescale in ``scale``, padded
    with 0 (image) / 255 (mask) where the image is smaller; random horizontal flip. ``crop=None``:
    the whole image, flipped at random (p = 0.5) if ``flip`` (training), else unchanged
    (evaluation). A sample's optional 'weight' (per-pixel loss weight, (H, W)) follows the mask.
    With ``crop``, 'valid' (bool (H, W)) marks the pixels that come from the image (False on the
    padding): the mask's 255 cannot tell padding from an ignored object border. ``augment``:
    'flip' (the above) or 'strong' (paper 001: :func:`strong_augment` first, then the above).
    """

    def __init__(
        self,
        dataset,
        crop: int | None = None,
        scale=(0.5, 1.5),
        flip: bool = False,
        augment: str = "flip",
    ):
        check_choice("augment", augment, AUGMENTS)
        self.dataset, self.crop, self.scale, self.flip, self.augment = (
            dataset,
            crop,
            scale,
            flip,
            augment,
        )

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = self.dataset[i]
        img, mask, weight = s["image"], s["mask"], s.get("weight")
        valid = None
        if self.augment == "strong":
            moved = strong_augment(
                np.asarray(img, np.uint8), np.asarray(mask, np.uint8), item_rng(), weight=weight
            )
            img, mask = moved[:2]
            weight = moved[2] if weight is not None else None
        if self.crop is not None:
            out = random_scale_crop_flip(
                img, mask, self.crop, self.scale, item_rng(), weight, with_valid=True
            )
            img, mask, valid = out[0], out[1], out[-1]
            weight = out[2] if weight is not None else None
        elif self.flip and item_rng().random() < 0.5:
            img, mask = np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
            weight = None if weight is None else np.ascontiguousarray(weight[:, ::-1])
        out = {
            "image": images_to_tensor(img)[0],
            "mask": torch.from_numpy(mask.astype(np.int64)),
            "labels": torch.as_tensor(s["labels"]),
        }
        if weight is not None:
            out["weight"] = torch.from_numpy(np.asarray(weight, np.float32))
        if valid is not None:
            out["valid"] = torch.from_numpy(valid)
        return out


def random_scale_crop_flip(
    img: np.ndarray, mask: np.ndarray, crop: int, scale, gen, weight=None, with_valid: bool = False
):
    """Rescale by a random factor in ``scale`` (bilinear image, nearest mask), pad to at least
    ``crop`` (image 0, mask 255), take a random ``crop``×``crop`` window, flip with p = 0.5.
    ``weight`` (a per-pixel float map, e.g. URN's loss weight) follows the mask (nearest, padded
    with 0) and is returned third. ``with_valid``: also return, last, a bool map that is False on
    the padding."""
    from PIL import Image

    f = gen.uniform(*scale)
    h, w = mask.shape
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
    if weight is not None:
        weight = np.asarray(
            Image.fromarray(np.asarray(weight, np.float32)).resize((nw, nh), Image.NEAREST)
        )
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    valid = np.ones((nh + ph, nw + pw), bool)
    valid[nh:], valid[:, nw:] = False, False
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=255)
        weight = None if weight is None else np.pad(weight, ((0, ph), (0, pw)))
    y = gen.integers(0, mask.shape[0] - crop + 1)
    x = gen.integers(0, mask.shape[1] - crop + 1)
    img, mask = img[y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]
    weight = None if weight is None else weight[y : y + crop, x : x + crop]
    valid = valid[y : y + crop, x : x + crop]
    if gen.random() < 0.5:
        img, mask, valid = img[:, ::-1], mask[:, ::-1], valid[:, ::-1]
        weight = None if weight is None else weight[:, ::-1]
    out = np.ascontiguousarray(img), np.ascontiguousarray(mask)
    out = out if weight is None else out + (np.ascontiguousarray(weight),)
    return out + (np.ascontiguousarray(valid),) if with_valid else out


def resize_sample(sample: dict, size) -> dict:
    """A sample resized to ``size`` = (height, width): image bilinear, masks nearest, boxes scaled
    (kept non-empty). For stacking images of a real dataset into arrays at one resolution."""
    from PIL import Image

    h, w = sample["mask"].shape
    nh, nw = size
    if (h, w) == (nh, nw):
        return sample
    out = dict(sample)
    out["image"] = np.asarray(Image.fromarray(sample["image"]).resize((nw, nh), Image.BILINEAR))
    for k in ("mask", "mask_clean"):
        if k in sample:
            out[k] = np.asarray(Image.fromarray(sample[k]).resize((nw, nh), Image.NEAREST))
    if sample.get("instances") is not None:
        out["instances"] = np.asarray(
            Image.fromarray(sample["instances"].astype(np.int32)).resize((nw, nh), Image.NEAREST)
        )
    b = sample["boxes"].astype(np.float64) * [nw / w, nh / h, nw / w, nh / h]
    b[:, :2] = np.clip(np.floor(b[:, :2]), 0, [nw - 1, nh - 1])
    b[:, 2:] = np.clip(np.maximum(np.ceil(b[:, 2:]), b[:, :2] + 1), 1, [nw, nh])
    out["boxes"] = b.astype(np.int64)
    return out


class Relabeled(torch.utils.data.Dataset):
    """A dataset seen through other image-level labels and/or a subset of its images: sample j is
    the dataset's sample ``indices[j]`` with 'labels' replaced by ``labels[indices[j]]``
    (``labels``: (N, K) for the whole dataset, None keeps them). For paper 001's dropped 'person'
    labels and down-sampled classes without copying the images. Keeps ``num_classes``, ``classes``,
    ``has_background`` and, where the dataset has them, ``names``."""

    def __init__(self, dataset, labels=None, indices=None):
        self.dataset = dataset
        self.labels = None if labels is None else np.asarray(labels, np.float32)
        if self.labels is not None and len(self.labels) != len(dataset):
            raise ValueError(
                f"labels has {len(self.labels)} rows but the dataset has {len(dataset)} images"
            )
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, np.int64)
        self.num_classes = getattr(dataset, "num_classes", None)
        self.classes = getattr(dataset, "classes", None)
        self.has_background = getattr(dataset, "has_background", True)

    @property
    def names(self):
        names = getattr(self.dataset, "names", None)
        return None if names is None else [names[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        i = int(self.indices[j])
        s = dict(self.dataset[i])
        if self.labels is not None:
            s["labels"] = self.labels[i]
        return s


def same_size_batches(dataset, batch_size: int, indices=None):
    """Consecutive samples of ``dataset`` grouped into lists of at most ``batch_size`` samples
    that share one image size (so they stack into one tensor); yields (indices, samples)."""
    idx, group, size = [], [], None
    for i in range(len(dataset)) if indices is None else indices:
        s = dataset[i]
        if group and (len(group) == batch_size or s["image"].shape != size):
            yield idx, group
            idx, group = [], []
        idx.append(i)
        group.append(s)
        size = s["image"].shape
    if group:
        yield idx, group
