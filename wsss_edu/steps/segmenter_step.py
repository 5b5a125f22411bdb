"""Training a segmentation network on pseudo-labels, and scoring it with test-time augmentation:
step 3 of paper 001 (DeepLabv3+ on IRNet's pseudo-labels), and the retraining step URN and RRM's
two-step variant build on.

* its training data: :class:`wsss_edu.datasets.PseudoLabeled`, a dataset whose masks are replaced by a
  folder of pseudo-label PNGs;
* :class:`SegmenterConfig`, :func:`train_segmenter`, :func:`cached_segmenter`: the network, trained
  with SGD (paper 001: lr 1e-3, momentum 0.9, weight decay 1e-6 at full scale) and cached;
* :func:`evaluate`: mIoU on a labelled split, plain or with TTA (:func:`wsss_edu.models.tta_probs`).
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from .. import params
from ..cache import artifact_path, cached, checkpoint_path
from ..crf import crf_on_scores
from ..data import SegTransformDataset, images_to_tensor, same_size_batches
from ..distributed import trained_state
from ..errors import check_choice
from ..metrics import ConfusionMeter
from ..models import make_segmenter, tta_probs, tta_views
from ..parallel import compute_missing
from ..progress import bar as progress_bar
from ..threads import loader_options, spawn_pool
from ..train import cross_entropy_loss, fit, poly_schedule, seed_everything
from ..urn import probability_weight, weighted_cross_entropy

# This step's code version, in its cache keys (wsss_edu.cache) and in the pipeline's done.json:
# bump it when a change alters what the step computes, so that its artifacts (and what is keyed by
# them downstream) are computed again and the notebooks that use it rerun; the rest is reused.
CODE_VERSION = 1


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that decides step 3's network (its cache key with the pseudo-label folder).
    ``model``: a :func:`wsss_edu.models.make_segmenter` name; ``optimizer`` 'sgd' (the paper's:
    ``lr``, the new layers of a DeepLabv3+ at 10x, momentum, weight decay) or 'adam' (for small
    networks trained from scratch), with polynomial decay; ``crop``: random rescale in
    ``scale`` + crop (real datasets; None: whole images, flipped). ``loss``: one of :data:`LOSSES`
    — 'ce' (per-pixel cross-entropy), 'weighted' (times each sample's 'weight' map: URN, paper 002
    eq. 13) or 'probability' (times the detached softmax of the label: paper 002's Table 5)."""

    model: str = "deeplabv3plus_small"
    weights: str | None = None
    width: int = 16
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-6
    crop: int | None = None
    scale: tuple = (0.5, 1.5)
    seed: int = 0
    loss: str = "ce"
    frozen_blocks: int = 0
    """A MobileNetV2 encoder's first blocks kept as they are (:class:`wsss_edu.models.DeepLabV3Plus`)."""


# Step 3's knobs as notebooks 05-06 take them: {name: (quick, full)} (params.profile_values).
# Quick: a small encoder from scratch wants Adam; full: the paper's SGD on a pretrained ResNet-50.
# TTA_SCALES: paper 001's test-time scales (with flips); SEEDS: networks per row of notebook 05.
STEP3_PROFILE = dict(
    SEG_BACKBONE=("small", "resnet50"),
    SEG_EPOCHS=(10, 30),
    SEG_OPTIMIZER=("adam", "sgd"),
    SEG_LR=(2e-3, 1e-3),
    SEG_CROP=(None, 512),
    SEG_FROZEN_BLOCKS=(0, 0),
    TTA_SCALES=((0.5, 1.0, 2.0), (0.5, 1.0, 2.0)),
    SEEDS=(2, 2),
)
# Where a real dataset's values differ (params.for_dataset). MSRC's quick profile: DeepLabv3+ on
# an ImageNet MobileNetV2 whose first 7 blocks stay as they are, the paper's SGD at its 1e-3, 4
# epochs of random 160-px crops (rescaled 0.5-2) of its ~320x213 photos, and TTA by the flip only
# (the double size costs 4x a view; the half size scored 0.36 against the plain view's 0.40), one
# network (two took 5.4 min, and agreed to 0.001: 0.400 and 0.399). Measured on MSRC's test split, one seed, 2 cores (notebook
# 05's text): lr 1e-2 gave 0.23 (4 epochs) and 0.19 (6); 1e-3, 0.40; Adam at 3e-4, 0.39.
STEP3_DATASETS = {
    "msrc": dict(
        SEG_BACKBONE=("mobilenet_v2", "resnet50"),
        SEG_EPOCHS=(4, 30),
        SEG_OPTIMIZER=("sgd", "sgd"),
        SEG_LR=(1e-3, 1e-3),
        SEG_CROP=(160, 320),
        SEG_FROZEN_BLOCKS=(7, 0),
        TTA_SCALES=((1.0,), (0.5, 1.0, 2.0)),
        SEEDS=(1, 2),
    )
}


def step3_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 05's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`STEP3_PROFILE` with :data:`STEP3_DATASETS`'s values)."""
    return params.profile_values(
        profile, params.for_dataset(STEP3_PROFILE, STEP3_DATASETS, dataset), **knobs
    )


def step3_config(
    profile: str, seed: int, WEIGHTS="imagenet", SEG_SCALE=(0.5, 2.0), dataset: str = "toy", **knobs
) -> SegmenterConfig:
    """Notebook 05's DeepLabv3+ settings from its parameters (same names; ``knobs``: the
    :data:`STEP3_PROFILE` names, None = the profile's value on ``dataset``,
    :data:`STEP3_DATASETS`)."""
    v = step3_values(profile, dataset, **knobs)
    return SegmenterConfig(
        model=f"deeplabv3plus_{v['SEG_BACKBONE']}",
        weights=WEIGHTS if v["SEG_BACKBONE"] != "small" else None,
        epochs=v["SEG_EPOCHS"],
        optimizer=v["SEG_OPTIMIZER"],
        lr=v["SEG_LR"],
        crop=v["SEG_CROP"],
        scale=tuple(SEG_SCALE),
        seed=seed,
        frozen_blocks=v["SEG_FROZEN_BLOCKS"],
    )


def _weighted_loss(model, batch):
    return weighted_cross_entropy(model(batch["image"]), batch["mask"], batch["weight"])


def _probability_loss(model, batch):
    logits = model(batch["image"])
    return weighted_cross_entropy(logits, batch["mask"], probability_weight(logits, batch["mask"]))


def _ce_loss(model, batch):
    return cross_entropy_loss(model, batch)


LOSSES = {"ce": _ce_loss, "weighted": _weighted_loss, "probability": _probability_loss}


def make_model(num_classes: int, cfg: SegmenterConfig):
    kw = {"width": cfg.width} if cfg.model in ("deeplabv3plus_small", "unet") else {}
    if cfg.frozen_blocks:
        kw["frozen_blocks"] = cfg.frozen_blocks
    return make_segmenter(cfg.model, num_classes, cfg.weights, **kw)


def train_segmenter(
    dataset,
    cfg: SegmenterConfig,
    device=None,
    workers: int | None = None,
    checkpoint=None,
    progress: bool = True,
):
    """Train a segmenter on ``dataset`` (samples with 'image', 'mask' — pseudo-labels — 255
    ignored; 'weight' too for ``cfg.loss='weighted'``) with the per-pixel loss ``cfg.loss``.
    Returns the network in eval mode."""
    from torch.utils.data import DataLoader

    check_choice("loss", cfg.loss, LOSSES)
    seed_everything(cfg.seed)
    net = make_model(dataset.num_classes, cfg)
    loader = DataLoader(
        SegTransformDataset(dataset, crop=cfg.crop, scale=cfg.scale, flip=True),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= cfg.batch_size,
        **loader_options(device, workers),
    )
    groups = net.param_groups(cfg.lr) if hasattr(net, "param_groups") else net.parameters()
    check_choice("optimizer", cfg.optimizer, ("sgd", "adam"))
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = poly_schedule(opt, cfg.epochs * len(loader))
    fit(
        net,
        loader,
        LOSSES[cfg.loss],
        opt,
        cfg.epochs,
        device,
        sched,
        checkpoint=checkpoint,
        progress=progress,
        desc=f"{cfg.model} ({len(dataset)} images)",
    )
    return net.eval()


def _segmenter_key(label_key: dict, cfg: SegmenterConfig) -> dict:
    return {"labels": label_key, "segmenter": dataclasses.asdict(cfg)}


def _train_into_cache(job) -> None:
    output_dir, dataset, label_key, cfg = job
    cached_segmenter(output_dir, dataset, label_key, cfg, "cpu", progress=False)


def _not_cached(job) -> bool:
    return not artifact_path(
        job[0], "segmenter", _segmenter_key(job[2], job[3]), CODE_VERSION
    ).exists()


def cached_segmenters(
    output_dir,
    jobs,
    device=None,
    processes: int = 1,
    desc: str = "segmenters",
    progress: bool = True,
) -> list:
    """Many :func:`cached_segmenter` calls (``jobs``: (dataset, label_key, cfg) triples), the
    networks missing from the cache trained first, on the CPU in ``processes`` worker processes
    (:func:`wsss_edu.parallel.compute_missing`; the datasets must be picklable). Returns the
    networks, in order, on ``device``."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if on_cpu and processes > 1:
        compute_missing(
            _train_into_cache,
            [(output_dir, *j) for j in jobs],
            _not_cached,
            processes,
            desc,
            progress,
        )
        return [cached_segmenter(output_dir, *j, device=device, progress=False) for j in jobs]
    return [
        cached_segmenter(output_dir, *j, device=device, progress=False)
        for j in progress_bar(jobs, desc=desc, disable=not progress)
    ]


def cached_segmenter(
    output_dir,
    dataset,
    label_key: dict,
    cfg: SegmenterConfig,
    device=None,
    workers: int | None = None,
    progress: bool = True,
):
    """The segmenter of (``label_key`` — what names the training labels, e.g. the pseudo-label
    folder — and ``cfg``) from the artifact cache under ``output_dir``, or trained
    (:func:`train_segmenter`, resumable) and stored. Trains on every visible GPU, or on
    ``WSSS_TRAIN_PROCESSES`` processes (:func:`wsss_edu.distributed.trained_state`)."""
    key = _segmenter_key(label_key, cfg)

    def compute():  # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "segmenter", key, CODE_VERSION)
        return trained_state(
            train_segmenter,
            dataset=dataset,
            cfg=cfg,
            device=device,
            workers=workers,
            checkpoint=ckpt,
            progress=progress,
        )

    state = cached(output_dir, "segmenter", key, compute, version=CODE_VERSION)
    net = make_model(dataset.num_classes, cfg)
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()


@torch.no_grad()
def evaluate_views(
    model,
    dataset,
    scales=(0.5, 1.0, 2.0),
    flip: bool = True,
    within_tags: bool = False,
    batch_size: int = 16,
    device=None,
    progress: bool = True,
) -> dict:
    """Plain, per-scale and TTA scores of ``model`` on ``dataset`` from one pass of test-time
    augmentation (:func:`wsss_edu.models.tta_views`, each view computed once): confusion meters
    {'plain': the scale-1 view without flip (needs 1.0 in ``scales``), s: scale s with its
    mirror (``flip``), for each s of ``scales``, 'tta': the average of all views, as
    :func:`evaluate` with ``tta=True``}; ``within_tags``: also 'plain_within_tags', the plain
    view's argmax among each image's tags (:func:`evaluate`'s diagnostic)."""
    if 1.0 not in scales:
        raise ValueError(f"scales {tuple(scales)} lack 1.0, the plain view; add it")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    k = dataset.num_classes
    meters = {
        "plain": ConfusionMeter(k),
        **{s: ConfusionMeter(k) for s in scales},
        "tta": ConfusionMeter(k),
    }
    if within_tags:
        meters["plain_within_tags"] = ConfusionMeter(k)
    background = getattr(dataset, "has_background", True)
    bar = progress_bar(
        total=len(dataset), desc="evaluate (views)", disable=not progress, leave=False
    )
    for _, group in same_size_batches(dataset, batch_size):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        total, per_scale, n = 0, {}, 0
        for s, flipped, p in tta_views(model, x, scales, flip):
            total, n = total + p, n + 1
            per_scale[s] = per_scale.get(s, 0) + p
            if s == 1 and not flipped:
                _update(meters["plain"], group, p)
                if within_tags:
                    _update(
                        meters["plain_within_tags"], group, _within_tags(p, group, background, 0.0)
                    )
        for s, p in per_scale.items():
            _update(meters[s], group, p)
        _update(meters["tta"], group, total / n)
        bar.update(len(group))
    bar.close()
    return meters


def _within_tags(scores, group, background: bool, low: float):
    """``scores`` (N, C, H, W) with every class that is not a tag of its sample set to ``low``."""
    keep = torch.zeros(scores.shape[:2], dtype=torch.bool, device=scores.device)
    for n, s in enumerate(group):
        keep[n, torch.as_tensor(np.flatnonzero(s["labels"]) + 1, device=scores.device)] = True
    keep[:, 0] |= background
    return scores.masked_fill(~keep[:, :, None, None], low)


def _update(meter, group, probs):
    for s, p in zip(group, probs.argmax(1).cpu().numpy()):
        meter.update(s["mask"], p)


def _crf_argmax(job):
    """One image of :func:`evaluate`'s CRF post-processing (here or in a worker process)."""
    image, probs, crf = job
    return crf_on_scores(image, probs, crf).argmax(0)


@torch.no_grad()
def evaluate(
    model,
    dataset,
    tta: bool = False,
    scales=(0.5, 1.0, 2.0),
    batch_size: int = 16,
    device=None,
    progress: bool = True,
    crf=None,
    within_tags: bool = False,
    processes: int = 1,
    without_crf=None,
):
    """The confusion meter of ``model``'s argmax on ``dataset`` (its 'mask', 255 ignored), whole
    images batched where sizes agree; ``tta``: averaged softmax over ``scales`` × h-flip
    (:func:`wsss_edu.models.tta_probs`, paper 001 §3.4); ``crf``: a :mod:`wsss_edu.crf` preset to
    post-process the softmax with (e.g. 'rrm_test', paper 003's inference), None for none.
    ``within_tags``: the argmax among each image's tagged classes only (and the background, if
    the dataset has one) — what pseudo-labels made from the tags know; a diagnostic, not a test
    score (at test time there are no tags). ``processes`` > 1: the CRFs run in that many spawned
    processes (the same labels; a real photo's CRF takes a CPU core a third of a second).
    ``without_crf``: a confusion meter that also receives the plain argmax of the same forward
    passes (see :func:`evaluate_with_and_without_crf`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    meter = ConfusionMeter(dataset.num_classes)
    bar = progress_bar(
        total=len(dataset),
        desc="evaluate" + (" (TTA)" if tta else ""),
        disable=not progress,
        leave=False,
    )
    with ExitStack() as held:
        held.callback(bar.close)  # after the pool's shutdown (the stack unwinds in reverse)
        pool = (
            held.enter_context(spawn_pool(processes)) if crf is not None and processes > 1 else None
        )
        _evaluate_batches(
            model,
            dataset,
            tta,
            scales,
            batch_size,
            device,
            crf,
            within_tags,
            meter,
            bar,
            pool,
            without_crf,
        )
    return meter


def _evaluate_batches(
    model,
    dataset,
    tta,
    scales,
    batch_size,
    device,
    crf,
    within_tags,
    meter,
    bar,
    pool,
    without_crf=None,
):
    """:func:`evaluate`'s pass over the batches (its CRFs in ``pool``, if not None; the plain argmax
    also into ``without_crf``, if not None)."""
    for _, group in same_size_batches(dataset, batch_size):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        out = tta_probs(model, x, scales) if tta else model(x)
        if within_tags:
            out = _within_tags(
                out, group, getattr(dataset, "has_background", True), low=0.0 if tta else -1e9
            )
        if crf is not None:
            if without_crf is not None:
                for s, p in zip(group, out.argmax(1).cpu().numpy()):
                    without_crf.update(s["mask"], p)
            probs = out if tta else out.float().softmax(1)  # tta_probs are probabilities
            jobs = [(s["image"], p, crf) for s, p in zip(group, probs.cpu().numpy())]
            pred = (
                list(pool.map(_crf_argmax, jobs))
                if pool is not None
                else [_crf_argmax(j) for j in jobs]
            )
        else:
            pred = out.argmax(1).cpu().numpy()
        for s, p in zip(group, pred):
            meter.update(s["mask"], p)
        bar.update(len(group))


def evaluate_with_and_without_crf(model, dataset, crf, **kwargs):
    """(plain, with ``crf``) confusion meters of ``model`` on ``dataset`` from one forward pass per
    batch: equal to :func:`evaluate` without and with ``crf`` (other arguments as there), at the
    cost of one network pass instead of two."""
    if crf is None:
        raise ValueError(
            "crf is None; name a wsss_edu.crf preset such as 'rrm_test', or call evaluate()"
        )
    plain = ConfusionMeter(dataset.num_classes)
    with_crf = evaluate(model, dataset, crf=crf, without_crf=plain, **kwargs)
    return plain, with_crf
