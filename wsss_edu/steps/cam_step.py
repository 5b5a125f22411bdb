"""Step 1 of paper 001 as a cached pipeline step: train the classifier on image tags, write its
CAMs to a folder, score them — what notebook 03 builds and notebooks 04-08 reuse. The method it runs
(the classifier, the CAM, its normalisation and labels) is :mod:`wsss_edu.cam`.

* one image at a time: :func:`train_classifier` (BCE, two learning rates), :func:`classifier_probs`,
  :func:`extract_cams` / :func:`save_cams` / :func:`load_cams` (one ``.npz`` per image, only its
  classes, as IRNet stores them), :func:`cam_confusions` (the CAM labels' mIoU per threshold);
* the cached step: :class:`ClassifierConfig` (everything that decides the classifier, its cache
  key), :func:`cached_step1` (the trained weights), :func:`cached_cams` (a CAM folder per
  classifier and CAM settings);
* its settings, defined once: :data:`STEP1_PROFILE` (quick / full), :data:`STEP1_DATASETS` (where a
  real dataset's differ), :data:`THRESHOLDS`; :func:`step1_values`, :func:`classifier_config`;
* the notebooks' entry point: :func:`step1` (``Step1``: the data, the classifier, its CAM folders
  and cache keys), over :func:`step1_data` (``Step1Data``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .. import params
from ..cache import artifact_path, cached, checkpoint_path
from ..cam import (
    CAMClassifier,
    balance_by_downsampling,
    cams_to_labels,
    drop_class_labels,
    grad_cams,
    multilabel_bce_loss,
    multiscale_cam,
    normalize_cams,
)
from ..data import Relabeled, SegTransformDataset, images_to_tensor, same_size_batches
from ..datasets import get_dataset
from ..distributed import trained_state
from ..errors import ParameterError, check_choice
from ..io import atomic_path, folder_complete
from ..metrics import ConfusionMeter
from ..parallel import finish_folder, pending, shard_spec
from ..progress import bar as progress_bar
from ..threads import loader_options
from ..train import fit, seed_everything

# This step's code version, in its cache keys (wsss_edu.cache) and in the pipeline's done.json:
# bump it when a change alters what the step computes, so that its artifacts (and what is keyed by
# them downstream) are computed again and the notebooks that use it rerun; the rest is reused.
CODE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# The pieces: train the classifier, write its CAMs to a folder, score them
# ------------------------------------------------------------------------------------------------


def train_classifier(
    model: CAMClassifier,
    loader,
    epochs: int,
    lr_pretrained: float = 1e-4,
    lr_new: float = 1e-3,
    device=None,
    checkpoint=None,
    progress: bool = True,
    desc: str = "classifier",
) -> dict:
    """Train ``model`` with BCE per class and Adam at two learning rates (paper 001: 1e-4 for the
    ImageNet part, 1e-3 for the new layers; :meth:`CAMClassifier.param_groups`). ``loader`` yields
    {'image', 'labels'} batches. Resumes from ``checkpoint`` when given. Returns the history."""
    opt = torch.optim.Adam(model.param_groups(lr_pretrained, lr_new))
    return fit(
        model,
        loader,
        multilabel_bce_loss,
        opt,
        epochs,
        device=device,
        checkpoint=checkpoint,
        desc=desc,
        progress=progress,
    )


@torch.no_grad()
def classifier_probs(
    model: nn.Module, dataset, batch_size: int = 64, device=None, progress: bool = True
) -> torch.Tensor:
    """Sigmoid outputs (N, K) of the classifier for every image of ``dataset`` (samples with a
    uint8 'image'), whole images, batched where sizes agree."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    out = []
    bar = progress_bar(total=len(dataset), desc="classify", disable=not progress, leave=False)
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
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            keys=keys.numpy().astype(np.int64),
            cams=cams[keys].float().numpy().astype(np.float16),
        )
    return path


def load_cams(folder, name: str, num_classes: int) -> torch.Tensor:
    """One image's CAMs from a CAM folder as a dense (K, H, W) float32 tensor (zeros for classes
    the image does not have). A missing file raises an error naming the step that writes it."""
    path = cam_path(folder, name)
    if not path.exists():
        raise FileNotFoundError(
            f"no CAMs for image {name!r} in {folder}: run notebook 03 (or "
            "wsss_edu.steps.cam_step.extract_cams) with the same parameters first"
        )
    with np.load(path) as z:
        keys, maps = z["keys"], z["cams"]
    out = torch.zeros((num_classes,) + tuple(maps.shape[1:]))
    out[torch.as_tensor(keys)] = torch.as_tensor(maps.astype(np.float32))
    return out


def extract_cams(
    model: nn.Module,
    dataset,
    folder,
    scales=(1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    normalization: str = "per_class",
    cam_fn=None,
    batch_size: int = 32,
    device=None,
    progress: bool = True,
    shard=None,
) -> int:
    """Multi-scale CAMs (:func:`multiscale_cam`) of every image of ``dataset``, normalised
    (:func:`normalize_cams`) over the image's own labels (sample 'labels'), written to ``folder``
    with :func:`save_cams` under the sample's 'name'. Images whose file exists are skipped, so an
    interrupted extraction resumes. ``cam_fn`` defaults to ``model.cam`` (e.g. a Grad-CAM instead).
    ``shard`` ((i, n) or 'i/n'; default: ``WSSS_SHARD``, else all): this machine's share of the
    images (:func:`wsss_edu.parallel.shard`). Returns the number of images computed."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    cam_fn = cam_fn or model.cam
    todo = pending(range(len(dataset)), lambda i: cam_path(folder, _sample_name(dataset, i)), shard)
    bar = progress_bar(total=len(todo), desc="CAMs", disable=not progress, leave=False)
    for _, group in same_size_batches(dataset, batch_size, todo):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        labels = torch.as_tensor(np.stack([s["labels"] for s in group])).float()
        cams = normalize_cams(
            multiscale_cam(cam_fn, x, scales, flip).float().cpu(), labels, normalization
        )
        for s, c, l in zip(group, cams, labels):
            save_cams(folder, s["name"], c, l)
        bar.update(len(group))
    bar.close()
    return len(todo)


def _sample_name(dataset, i: int) -> str:
    names = getattr(dataset, "names", None)
    return names[i] if names is not None else dataset[i]["name"]


def cam_confusions(
    dataset, folder, thresholds=(0.15,), indices=None, progress: bool = True
) -> list:
    """Confusion meters of the CAM pseudo-labels (:func:`cams_to_labels`) against each sample's
    'mask' (255 ignored), one per background threshold (None: no plane, for a dataset without a
    background class), in one pass over the CAM folder. ``dataset.num_classes`` counts the
    background. Returns [ConfusionMeter per threshold]."""
    k = dataset.num_classes
    meters = [ConfusionMeter(k) for _ in thresholds]
    idx = range(len(dataset)) if indices is None else indices
    for i in progress_bar(idx, desc="evaluate CAMs", disable=not progress, leave=False):
        s = dataset[i]
        cams = load_cams(folder, s["name"], k - 1).numpy()
        peak, arg = cams.max(0), cams.argmax(0) + 1  # cams_to_labels for every threshold at once
        for m, t in zip(meters, thresholds):
            if t is None:  # no plane: the image's classes only
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


def train_step1(
    dataset,
    cfg: ClassifierConfig,
    device=None,
    workers: int | None = None,
    checkpoint=None,
    progress: bool = True,
) -> CAMClassifier:
    """Train step 1's classifier on ``dataset`` (samples with 'image', 'labels'; ``num_classes``
    counting the background) as ``cfg`` says: labels dropped / balanced (:func:`training_labels`),
    random flips (and scale-crops at ``cfg.crop``; ``cfg.augment='strong'``: paper 001's strong
    augmentation first, :func:`wsss_edu.data.strong_augment`), BCE per class, Adam at two
    learning rates."""
    from torch.utils.data import DataLoader

    seed_everything(cfg.seed)
    labels = dataset_tags(dataset)
    y, idx = training_labels(labels, cfg)
    train_set = SegTransformDataset(
        Relabeled(dataset, y, idx), crop=cfg.crop, flip=True, augment=cfg.augment
    )
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        **loader_options(device, workers),
    )
    epochs = cfg.epochs
    if cfg.balance and cfg.equal_steps and len(idx):
        epochs = max(1, int(round(cfg.epochs * len(dataset) / len(idx))))
    model = make_classifier(labels.shape[1], cfg)
    train_classifier(
        model,
        loader,
        epochs,
        cfg.lr_pretrained,
        cfg.lr_new,
        device=device,
        checkpoint=checkpoint,
        progress=progress,
        desc=f"classifier ({len(idx)} images, {epochs} epochs)",
    )
    return model.eval()


def cached_step1(
    output_dir,
    dataset,
    data_key: dict,
    cfg: ClassifierConfig,
    device=None,
    workers: int | None = None,
    progress: bool = True,
) -> CAMClassifier:
    """Step 1's classifier for (``data_key``, ``cfg``) from the artifact cache under
    ``output_dir``, or trained (:func:`train_step1`, resumable) and stored. ``data_key`` names the
    training data (dataset, split, size, seed, knobs...). Trains on every visible GPU, or on
    ``WSSS_TRAIN_PROCESSES`` processes (:func:`wsss_edu.distributed.trained_state`)."""
    key = {"data": data_key, "classifier": dataclasses.asdict(cfg)}
    labels0 = dataset[0]["labels"]

    def compute():  # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "classifier", key, CODE_VERSION)
        return trained_state(
            train_step1,
            dataset=dataset,
            cfg=cfg,
            device=device,
            workers=workers,
            checkpoint=ckpt,
            progress=progress,
        )

    state = cached(output_dir, "classifier", key, compute, version=CODE_VERSION)
    model = make_classifier(len(labels0), cfg)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


def cam_folder(output_dir, data_key: dict, cfg: ClassifierConfig, **cam_params) -> Path:
    """The CAM folder of (data, classifier, CAM parameters) under ``output_dir``/cache/cams."""
    key = {"data": data_key, "classifier": dataclasses.asdict(cfg), "cams": cam_params}
    return artifact_path(output_dir, "cams", key, CODE_VERSION).with_suffix("")


def cached_cams(
    output_dir,
    model,
    dataset,
    data_key: dict,
    cfg: ClassifierConfig,
    scales=(1.0, 0.5, 1.5, 2.0),
    flip: bool = True,
    normalization: str = "per_class",
    cam: str = "cam",
    layer: str | None = None,
    device=None,
    progress: bool = True,
    shard=None,
) -> Path:
    """Extract (or find) the CAMs of every image of ``dataset`` with ``model`` into their cache
    folder (:func:`cam_folder`) and return it. ``cam``: 'cam' (the classifier's CAM) or 'grad_cam'
    (at ``layer``, a submodule name such as ``'backbone.body.5'``; None: the backbone's output).
    Interrupted extractions resume image by image. ``shard`` (default ``WSSS_SHARD``): this
    machine's share of the images; the folder is complete once every image is there."""
    check_choice("cam", cam, ("cam", "grad_cam"))
    folder = cam_folder(
        output_dir,
        data_key,
        cfg,
        scales=list(scales),
        flip=flip,
        normalization=normalization,
        cam=cam,
        layer=layer,
    )
    if not folder_complete(folder):
        module = model.get_submodule(layer) if layer else None
        fn = model.cam if cam == "cam" else (lambda x: grad_cams(model, x, module))
        spec = shard_spec(shard)
        extract_cams(
            model,
            dataset,
            folder,
            scales,
            flip,
            normalization,
            fn,
            device=device,
            progress=progress,
            shard=spec,
        )
        names = getattr(dataset, "names", None)
        names = (
            list(names) if names is not None else [dataset[i]["name"] for i in range(len(dataset))]
        )
        finish_folder(folder, names, ".npz", spec)
    return folder


# The size knobs of notebook 03's step 1: {name: (quick, full)} (params.profile_values). AUGMENT:
# the full profile takes paper 001's strong augmentation (data.strong_augment); the quick profile
# flips only — its small CNN learns from scratch in 10 epochs of 64-px scenes, where rotations and
# blur cost more of the little signal than they add.
# DROP_CLASS / BALANCE: paper 001's data handling (the toy world hides half the person tags);
# CAM_SCALES: IRNet's; FROZEN_BLOCKS: ClassifierConfig.frozen_blocks.
STEP1_PROFILE = dict(
    IMAGE_SIZE=(64, 320),
    N_TRAIN=(800, 5000),
    N_VAL=(200, 1000),
    BACKBONE=("small", "resnet50"),
    EPOCHS=(10, 5),
    LR_NEW=(1e-2, 1e-3),
    CROP=(None, 512),
    AUGMENT=("flip", "strong"),
    DROP_CLASS=("person", "person"),
    BALANCE=(True, True),
    CAM_SCALES=((1.0, 0.5, 1.5, 2.0), (1.0, 0.5, 1.5, 2.0)),
    FROZEN_BLOCKS=(0, 0),
)
# Where a real dataset's values differ: {dataset: {name: (quick, full)}} (params.for_dataset).
# MSRC (591 photos of ~320x213, tags complete, no background class): nothing to drop, and
# down-sampling to its rarest class would leave a few dozen images. Quick: an ImageNet MobileNetV2
# whose first 7 blocks (to stride 8) stay as they are, 4 epochs of 160-px crops, CAMs at one
# scale (and its mirror) — measured in notebook 03 (§2) and tools/msrc_cam_check.py; full: IRNet's ResNet-50.
STEP1_DATASETS = {
    "msrc": dict(
        BACKBONE=("mobilenet_v2", "resnet50"),
        EPOCHS=(4, 20),
        CROP=(160, 320),
        DROP_CLASS=("", ""),
        BALANCE=(False, False),
        CAM_SCALES=((1.0,), (1.0, 0.5, 1.5, 2.0)),
        FROZEN_BLOCKS=(7, 0),
    )
}


def step1_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 03's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`STEP1_PROFILE` with :data:`STEP1_DATASETS`'s values)."""
    return params.profile_values(
        profile, params.for_dataset(STEP1_PROFILE, STEP1_DATASETS, dataset), **knobs
    )


def classifier_config(
    v: dict, seed: int, weights="imagenet", drop_class: int | None = None
) -> ClassifierConfig:
    """Step 1's :class:`ClassifierConfig` from resolved knobs ``v`` (:func:`step1_values`).
    A pretrained MobileNetV2 keeps its batch-norm statistics (``freeze_bn``); a network without
    ImageNet weights has no pretrained part: every layer learns at ``LR_NEW``."""
    weights = weights if v["BACKBONE"] != "small" else None
    scratch = (
        v["BACKBONE"] != "small" and weights is None
    )  # an ImageNet architecture, random weights
    return ClassifierConfig(
        backbone=v["BACKBONE"],
        weights=weights,
        epochs=v["EPOCHS"],
        lr_new=v["LR_NEW"],
        lr_pretrained=v["LR_NEW"] if scratch else ClassifierConfig.lr_pretrained,
        crop=v["CROP"],
        seed=seed,
        drop_class=drop_class,
        balance=v["BALANCE"],
        augment=v["AUGMENT"],
        freeze_bn=v["BACKBONE"] == "mobilenet_v2" and weights is not None,
        frozen_blocks=v["FROZEN_BLOCKS"],
    )


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


def step1_data(
    setup,
    n_train: int | None = None,
    n_val: int | None = None,
    image_size: int | None = None,
    missing_rate: float = 0.5,
    imbalance: float = 4.0,
) -> Step1Data:
    """The data of step 1 on ``setup``'s dataset (:func:`wsss_edu.params.setup`) and the keys its
    artifacts are cached under: the toy world drawn with ``n_train`` / ``n_val`` (also the test
    split's size) images of ``image_size`` px and its tag knobs; a real dataset's default splits
    (the sizes and knobs are the toy world's only)."""
    if setup.dataset == "toy":
        knobs = dict(size=image_size, missing_label_rate=missing_rate, imbalance=imbalance)
        train, val = params.load_splits(setup, n_train, n_val, **knobs)
        key = dict(dataset="toy", n=n_train, seed=setup.seed, **knobs)
        test, test_split = params.load_test(setup, n_val, **knobs)
        return Step1Data(
            train,
            val,
            train,
            key,
            key | {"split": "val", "n": n_val},
            test,
            test_split,
            key | {"split": test_split, "n": n_val},
        )
    train, val = params.load_splits(setup)
    voc = setup.dataset == "voc"
    scored = get_dataset(setup.dataset, setup.data_root, split="train") if voc else train
    key = dict(
        dataset=setup.dataset, root=str(setup.data_root), split="train_aug" if voc else "train"
    )
    test, test_split = params.load_test(setup)
    return Step1Data(
        train,
        val,
        scored,
        key,
        key | {"split": "val"},
        test,
        test_split,
        key | {"split": test_split},
    )


def drop_class_index(classes, drop_class: str | None, dataset: str) -> int | None:
    """The tag index (class id - 1) of the class named ``drop_class`` among ``classes``
    (background first), or None for '' / None (every tag kept); a name that is not a class of
    ``dataset`` is an error naming the valid ones."""
    if not drop_class:
        return None
    if drop_class not in classes:
        raise ParameterError(
            f"DROP_CLASS={drop_class!r} is not a class of {dataset}; choose "
            f"one of {list(classes[1:])} or '' to keep every tag"
        )
    return list(classes).index(drop_class) - 1


def step1(
    setup,
    DATASET: str = "toy",
    DROP_CLASS: str | None = None,
    BALANCE: bool | None = None,
    MISSING_RATE: float = 0.5,
    IMBALANCE: float = 4.0,
    WEIGHTS="imagenet",
    WORKERS: int = 0,
    progress: bool = True,
    **sizes,
) -> Step1:
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
    folder = cached_cams(
        setup.output_dir,
        model,
        views[0],
        data_key,
        cfg,
        scales,
        device=setup.device,
        progress=progress,
    )
    val_folder = cached_cams(
        setup.output_dir,
        model,
        views[1],
        data.val_key,
        cfg,
        scales,
        device=setup.device,
        progress=progress,
    )
    if test is None:  # no public test masks: report on val (the notebooks say so)
        test, test_view, test_folder, test_split = val, views[1], val_folder, "val"
    else:
        test_view = tagged_view(test, cfg)
        test_folder = cached_cams(
            setup.output_dir,
            model,
            test_view,
            data.test_key,
            cfg,
            scales,
            device=setup.device,
            progress=progress,
        )
    return Step1(
        train,
        val,
        scored,
        views[0],
        views[1],
        scored_view,
        data_key,
        cfg,
        model,
        folder,
        val_folder,
        test,
        test_view,
        test_folder,
        test_split,
    )
