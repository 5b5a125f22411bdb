"""The GPU check: every full-profile training step and per-image pass, a few hundred iterations
each on a synthetic toy world drawn at the full profile's resolution, timed — one command for the
day a GPU is lent for minutes (``python -m wsss_edu.steps.gpu_check``, ``make gpu-check``).

For each training step (step 1's classifier, IRNet, DeepLabv3+, URN's retraining, RRM's joint
loss, paper 000's U-Net) the check builds the step's own network, data transform and loss from the
step's full-profile settings (``*_values("full", "toy")`` and the steps' config builders) and runs
them in :func:`time_training`, a loop that is :func:`wsss_edu.train.fit`'s step (autocast in
:func:`~wsss_edu.train.amp_dtype`'s dtype, :func:`~wsss_edu.train.make_scaler`, the scheduler per
batch; paper 000's U-Net as :func:`~wsss_edu.steps.lu_experiments.train_experiment` trains it, in
float32) with a clock around the two halves of every iteration: the wait for the next batch (the
DataLoader) and the forward / backward / optimizer step, each closed by ``torch.cuda.synchronize``
on CUDA. Then the per-image passes on the same device: the CAMs (:func:`cam_step.extract_cams`),
the random walk at VOC's 500×375 (:func:`irnet_step.walk_all`), URN's uncertainty pass
(:func:`urn_step.uncertainty_pass`) and RRM's dense energy at 321×321 crops (at the loss's half
resolution, forward and backward: :func:`wsss_edu.rrm.dense_energy_loss`).

It writes ``gpu_check.json`` and ``gpu_check.md`` (the table, also printed) under ``--output``,
naming the device (GPU name, compute capability, memory, torch / CUDA versions, or "cpu").

Sizes: :func:`plan` — on CUDA the full profile's images, crops and batches, :data:`ITERATIONS`
timed iterations per step after :data:`WARMUP` untimed ones, each row stopped at its share of the
time (:data:`ROW_SECONDS`) and the whole check at ``--budget`` seconds (default
:data:`BUDGET_SECONDS`, counted once Python and torch are loaded): a row not started before the
budget is spent is recorded as skipped, so the check never overruns its 8 minutes. Without CUDA
(or with ``--tiny``) the same code runs at tiny sizes in seconds: ``tests/test_gpu_check.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..cam import multilabel_bce_loss
from ..data import Relabeled, SegTransformDataset, images_to_tensor
from ..errors import ParameterError
from ..io import user_path, write_mask, write_text_atomic
from ..irnet import IRNet, backbone_stages, irnet_loss, pair_offsets
from ..label_uncertainty import AleatoricUNet, load_mixed_set
from ..pretrained import WEIGHTS_DIR_ENV
from ..rrm import dense_energy_loss, freeze_reference_layers, reference_energy_weight
from ..toy import ToyDataset
from ..train import (
    amp_dtype,
    autocast,
    dtype_name,
    get_device,
    make_scaler,
    poly_schedule,
    seed_everything,
    to_device,
)
from ..urn import T_DEFAULT, write_label_and_weight
from . import cam_step, irnet_step, lu_experiments, rrm_step, segmenter_step, urn_step

TRAINING = ("classifier", "irnet", "deeplab", "urn_retrain", "rrm", "lu_unet")
"""The training rows, in the order they run."""
PASSES = ("cams", "random_walk", "urn_pass", "dense_energy")
"""The per-image passes, run after the training rows."""
ITERATIONS = {
    "classifier": 300,
    "irnet": 200,
    "deeplab": 300,
    "urn_retrain": 300,
    "rrm": 60,
    "lu_unet": 400,
}
"""Timed iterations per training step on CUDA (``--iterations`` overrides them all). RRM's loss
runs two dense CRFs per image on the CPU inside every step, hence fewer."""
PASS_IMAGES = {"cams": 64, "random_walk": 8, "urn_pass": 16, "dense_energy": 64}
"""Images per pass on CUDA (the dense energy: crops, in batches of RRM's)."""
WARMUP = 5
"""Untimed iterations first (cuDNN's algorithm search, the allocator, the DataLoader's workers)."""
ROW_SECONDS = {
    **{k: 40.0 for k in TRAINING},
    "rrm": 45.0,
    "cams": 20.0,
    "random_walk": 15.0,
    "urn_pass": 25.0,
    "dense_energy": 10.0,
}
"""Each row's share of the budget on CUDA: a training row stops after this many seconds even if
its iterations are not done (the timed ones are reported). They sum to 315 s, which leaves
:data:`BUDGET_SECONDS` room for building the networks and data of ten rows."""
BUDGET_SECONDS = 420.0
"""The whole check's deadline, counted once Python and torch are loaded (7 min: the 8 minutes of
issue 26 less half a minute for the interpreter and torch to load before the clock starts and
half a minute for the last row, which may end one iteration — a pass, its images — after it)."""
VOC_SIZE = (375, 500)
"""(H, W) of a typical PASCAL VOC image: the random walk's input size."""
LU_FULL = dict(IMAGE_SIZE=256, WIDTH=32, WARMUP=45, TAU=0.5)
"""Paper 000's U-Net at notebook 02's full profile (its ``IMAGE_SIZE``, ``WIDTH``, ``WARMUP``
from ``notebooks/src/02_bootstrapping_on_boxes.py``, which defines them; tau of its binary
table): the toy side, the U-Net's width, the epoch after which bootstrapping runs (the check
times that, the full loss)."""
DEVICE_CPUS = 16
"""CPU cores of the GPU machine :func:`estimate_seconds` plans for (the lent H100 has 16): its
DataLoader workers, :func:`default_workers` of them. A run takes its own machine's."""
ASSUMED_TFLOPS = 150.0
"""The throughput :func:`estimate_seconds` assumes for a training step on an H100 in bfloat16:
15 % of its 989 dense TFLOP/s — an assumption for planning, not a measurement (stated in the
JSON); the GPU run's measured images/s replace it."""


# ------------------------------------------------------------------------------------------------
# The plan: what runs, at what size
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the check: a training step (``kind='train'``) or a per-image pass. ``size``:
    the toy world's side (or (H, W) for the walk); ``crop``: the step's random crop (None: whole
    images); ``batch``; ``iterations`` (timed; passes: images); ``warmup``; ``seconds``: its cap."""

    name: str
    kind: str
    size: int | tuple
    crop: int | None
    batch: int
    iterations: int
    warmup: int
    seconds: float


def full_settings() -> dict:
    """The full profile's settings on the toy world, read from the steps that define them:
    {'step1', 'step2', 'step3', 'rrm', 'urn'} resolved knob dicts and the configs built from them
    ('classifier_cfg', 'irnet_cfg', 'segmenter_cfg', 'rrm_cfg')."""
    v1 = cam_step.step1_values("full", "toy")
    ccfg = cam_step.classifier_config(v1, 0, weights=None)
    icfg, _, _ = irnet_step.step2_config("full", 0, WEIGHTS=None)
    scfg = segmenter_step.step3_config("full", 0, WEIGHTS=None)
    rcfg, _ = rrm_step.rrm_config("full", 0, ccfg)
    return dict(
        step1=v1,
        step2=irnet_step.step2_values("full", "toy"),
        step3=segmenter_step.step3_values("full", "toy"),
        urn=urn_step.urn_values("full", "toy"),
        classifier_cfg=ccfg,
        irnet_cfg=icfg,
        segmenter_cfg=scfg,
        rrm_cfg=rcfg,
    )


def plan(tiny: bool = False, iterations: int | None = None) -> list:
    """The rows of the check, in order (:class:`Row`). Full (CUDA): the toy world at step 1's
    ``IMAGE_SIZE`` (320), each step's full-profile crop and batch, paper 000's U-Net at
    :data:`LU_FULL`'s side, the walk at :data:`VOC_SIZE`, RRM's energy on its 321 crops;
    :data:`ITERATIONS`, :data:`PASS_IMAGES`, :data:`WARMUP`, :data:`ROW_SECONDS`. Tiny (the CPU
    test): the same networks and losses on 64-px images, 48-px crops, batches of 2, 1 timed
    iteration after 1, one image per pass, (120, 160) for the walk. ``iterations``: timed
    iterations of every training step instead of the defaults."""
    s = full_settings()
    size = s["step1"]["IMAGE_SIZE"]
    crops = dict(
        classifier=s["classifier_cfg"].crop,
        irnet=s["irnet_cfg"].crop,
        deeplab=s["segmenter_cfg"].crop,
        urn_retrain=s["segmenter_cfg"].crop,
        rrm=s["rrm_cfg"].crop,
        lu_unet=None,
    )
    batches = dict(
        classifier=s["classifier_cfg"].batch_size,
        irnet=s["irnet_cfg"].batch_size,
        deeplab=s["segmenter_cfg"].batch_size,
        urn_retrain=s["segmenter_cfg"].batch_size,
        rrm=s["rrm_cfg"].batch_size,
        lu_unet=lu_experiments.BATCH_SIZE,
    )
    rows = [
        Row(
            k,
            "train",
            LU_FULL["IMAGE_SIZE"] if k == "lu_unet" else size,
            crops[k],
            batches[k],
            ITERATIONS[k] if iterations is None else int(iterations),
            WARMUP,
            ROW_SECONDS[k],
        )
        for k in TRAINING
    ]
    rows += [
        Row("cams", "pass", size, None, 16, PASS_IMAGES["cams"], 1, ROW_SECONDS["cams"]),
        Row(
            "random_walk",
            "pass",
            VOC_SIZE,
            None,
            8,
            PASS_IMAGES["random_walk"],
            1,
            ROW_SECONDS["random_walk"],
        ),
        Row(
            "urn_pass", "pass", size, None, 16, PASS_IMAGES["urn_pass"], 0, ROW_SECONDS["urn_pass"]
        ),
        Row(
            "dense_energy",
            "pass",
            size,
            crops["rrm"],
            batches["rrm"],
            PASS_IMAGES["dense_energy"],
            1,
            ROW_SECONDS["dense_energy"],
        ),
    ]
    if not tiny:
        return rows
    return [
        replace(
            r,
            size=(120, 160) if r.name == "random_walk" else 64,
            crop=None if r.crop is None else 48,
            batch=2,
            iterations=(1 if iterations is None else int(iterations)) if r.kind == "train" else 1,
            warmup=min(r.warmup, 1) if r.kind == "train" else 0,
            seconds=60.0,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------------------------
# The timing loop
# ------------------------------------------------------------------------------------------------


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(loader):
    """The batches of ``loader``, epoch after epoch, without end."""
    while True:
        yield from loader


TRAINING_FLOPS_PER_FORWARD = 3
"""A training step's FLOPs per forward pass's: the backward pass costs about twice the forward
(the gradients of the inputs and of the weights: the usual 6N FLOPs per example of an N-parameter
network against 2N for its forward pass, Kaplan et al. 2020, "Scaling laws for neural language
models")."""


@torch.no_grad()
def forward_flops(model, images: torch.Tensor) -> int | None:
    """The FLOPs of one forward pass of ``model`` on ``images``, as torch's counter
    (``torch.utils.flop_counter``: matrix products and convolutions) sees them; None where it
    cannot count. Only the network: a loss's many small element-wise operations would cost the
    counter's Python dispatch seconds and count for little."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # an older torch: no count, the rest runs
        return None
    counter = FlopCounterMode(display=False)
    with counter:
        model(images)
    return int(counter.get_total_flops())


def time_training(
    model,
    batches,
    loss_fn,
    optimizer,
    device,
    dtype,
    iterations: int,
    warmup: int,
    deadline: float,
    scheduler=None,
    clock=time.perf_counter,
) -> dict:
    """Run ``warmup`` + ``iterations`` training steps of ``model`` as :func:`wsss_edu.train.fit`
    takes them (the batch moved to ``device``, ``loss_fn(model, batch)`` under autocast in
    ``dtype`` (None: float32), the loss scaled by :func:`make_scaler`'s scaler, the optimizer and
    ``scheduler`` stepped), timing the timed ones in two parts: ``wait_s``, getting the next batch
    from ``batches`` (an iterator) onto the device, and ``compute_s``, the forward, backward and
    optimizer step — each part closed by a CUDA synchronisation, so the GPU's queue is counted
    where it is spent. Stops early, before an iteration that would start after ``deadline`` (a
    ``clock()`` value). ``flops_per_iter``: :func:`forward_flops` of the first batch (untimed)
    times :data:`TRAINING_FLOPS_PER_FORWARD`.
    Returns {'iterations', 'wait_s', 'compute_s', 'loss', 'flops_per_iter', 'stopped_early'}."""
    model.to(device).train()
    scaler = make_scaler(device, dtype)
    wait = compute = 0.0
    done, loss, flops, stopped = 0, None, None, False

    def step(batch):
        with autocast(device, dtype):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        return loss

    for i in range(warmup + iterations):
        if i > 0 and clock() > deadline:  # the first iteration always runs
            stopped = True
            break
        t0 = clock()
        batch = to_device(next(batches), device)
        _sync(device)
        waited = clock() - t0
        if i == 0:  # untimed
            with autocast(device, dtype):
                flops = forward_flops(model, batch["image"])
            flops = None if flops is None else flops * TRAINING_FLOPS_PER_FORWARD
        t1 = clock()
        loss = step(batch)
        _sync(device)
        if i >= warmup:
            wait, compute, done = wait + waited, compute + clock() - t1, done + 1
    return {
        "iterations": done,
        "wait_s": wait,
        "compute_s": compute,
        "loss": float("nan") if loss is None else float(loss.detach()),
        "flops_per_iter": flops,
        "stopped_early": stopped,
    }


def _loader(dataset, batch: int, workers: int, device):
    """A shuffling DataLoader as the steps build theirs, with ``workers`` processes (kept between
    epochs; pinned memory on CUDA), cycled."""
    from torch.utils.data import DataLoader

    cuda = torch.device(device).type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
    )
    return _cycle(loader)


# ------------------------------------------------------------------------------------------------
# The training steps, each with its step's network, data and loss at the full profile's settings
# ------------------------------------------------------------------------------------------------


@dataclass
class World:
    """What every row shares: the toy pool (``pool``: ToyDataset at the row's size, its images
    drawn once and cached), a scratch folder, the device, the autocast dtype, DataLoader workers,
    the backbone weights ('imagenet' from a local file, or None) and the full settings."""

    pool: object
    tmp: Path
    device: torch.device
    dtype: torch.dtype | None
    workers: int
    weights: str | None
    settings: dict


def _classifier(world: World, row: Row):
    v = world.settings["step1"]
    drop = cam_step.drop_class_index(world.pool.classes, v["DROP_CLASS"], "toy")
    cfg = replace(cam_step.classifier_config(v, 0, world.weights, drop), crop=row.crop)
    y, idx = cam_step.training_labels(cam_step.dataset_tags(world.pool), cfg)
    data = SegTransformDataset(
        Relabeled(world.pool, y, idx), crop=cfg.crop, flip=True, augment=cfg.augment
    )
    model = cam_step.make_classifier(y.shape[1], cfg)
    opt = torch.optim.Adam(model.param_groups(cfg.lr_pretrained, cfg.lr_new))
    return model, data, multilabel_bce_loss, opt, None


def _irnet(world: World, row: Row):
    cfg = replace(world.settings["irnet_cfg"], crop=row.crop, batch_size=row.batch)
    folder = world.tmp / "relation_labels"  # the toy world's true masks stand in for them
    folder.mkdir(exist_ok=True)
    for i in range(len(world.pool)):
        s = world.pool[i]
        write_mask(folder / f"{s['name']}.png", s["mask"].astype(np.uint8))
    data = irnet_step.relation_dataset(world.pool, folder, np.arange(len(world.pool)), cfg)
    model = IRNet(backbone_stages("resnet50", world.weights), cfg.width)
    opt = torch.optim.SGD(
        model.param_groups(cfg.lr_boundary, cfg.lr_displacement),
        lr=cfg.lr_boundary,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    offsets = pair_offsets(cfg.radius)
    loss = partial(_irnet_loss, offsets=offsets, cfg=cfg)
    return model, data, loss, opt, poly_schedule(opt, 10**6)


def _irnet_loss(model, batch, offsets, cfg):
    return irnet_loss(model, batch, offsets, cfg.path, cfg.sources, cfg.radius)


def _segmenter(world: World, row: Row, loss: str = "ce"):
    cfg = replace(
        world.settings["segmenter_cfg"],
        weights=world.weights,
        crop=row.crop,
        batch_size=row.batch,
        loss=loss,
    )
    dataset = world.pool
    if loss == "weighted":  # URN's retraining: the label + weight PNGs its pass writes
        folder = world.tmp / "urn_labels"
        folder.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(len(world.pool)):
            s = world.pool[i]
            w = rng.uniform(0, 1, s["mask"].shape)
            write_label_and_weight(folder / f"{s['name']}.png", s["mask"], w)
        dataset = urn_step.URNLabeled(world.pool, folder, T_DEFAULT)
    model = segmenter_step.make_model(dataset.num_classes, cfg)
    data = SegTransformDataset(dataset, crop=cfg.crop, scale=cfg.scale, flip=True)
    groups = model.param_groups(cfg.lr) if hasattr(model, "param_groups") else model.parameters()
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, data, segmenter_step.LOSSES[cfg.loss], opt, poly_schedule(opt, 10**6)


def _rrm(world: World, row: Row):
    cfg = replace(world.settings["rrm_cfg"], crop=row.crop, batch_size=row.batch)
    model = rrm_step.make_rrm(len(world.pool.classes) - 1, cfg)
    if cfg.freeze_bn:
        freeze_reference_layers(model)
    data = SegTransformDataset(world.pool, crop=cfg.crop, scale=cfg.scale, flip=True)
    opt = torch.optim.SGD(
        model.param_groups(cfg.lr), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    return model, data, partial(rrm_step.rrm_step_loss, cfg=cfg), opt, poly_schedule(opt, 10**6)


class _LUBatches:
    """Paper 000's batches as :func:`lu_experiments.train_experiment` draws them: the mixed set's
    arrays in memory, a shuffled batch of them and a random flip of the whole batch."""

    def __init__(self, arrays: dict, batch: int, seed: int = 0):
        self.x = images_to_tensor(arrays["image"])
        self.target = torch.as_tensor(arrays["target"]).long()
        self.in_box = torch.as_tensor(arrays["in_box"])
        self.batch, self.gen = batch, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        j = torch.randperm(len(self.x), generator=self.gen)[: self.batch]
        b = {"image": self.x[j], "target": self.target[j], "in_box": self.in_box[j]}
        if torch.rand(1, generator=self.gen).item() < 0.5:
            b = {k: v.flip(-1) for k, v in b.items()}
        return b


def _lu_loss(model, batch, cfg):
    mu, s2 = model(batch["image"])
    return lu_experiments.method_loss(
        "ours", mu, s2, batch["target"], batch["in_box"], cfg.warmup_epochs, cfg
    )


def train_row(world: World, row: Row, deadline: float) -> dict:
    """Time one training row (:func:`time_training`): the step's network, data and loss at
    ``row``'s sizes. Paper 000's U-Net trains in float32 (its routine does not autocast)."""
    seed_everything(0)
    if row.name == "lu_unet":
        arrays = load_mixed_set("toy", ["car"], None, "train", len(world.pool), row.size)
        cfg = lu_experiments.BootstrapConfig(tau=LU_FULL["TAU"], warmup_epochs=LU_FULL["WARMUP"])
        model = AleatoricUNet(1, width=LU_FULL["WIDTH"])
        opt = torch.optim.Adam(model.parameters(), 2e-3)
        dtype, batches = None, _LUBatches(arrays, row.batch)
        loss, sched = partial(_lu_loss, cfg=cfg), None
    else:
        build = {
            "classifier": _classifier,
            "irnet": _irnet,
            "deeplab": _segmenter,
            "urn_retrain": partial(_segmenter, loss="weighted"),
            "rrm": _rrm,
        }[row.name]
        model, data, loss, opt, sched = build(world, row)
        dtype = world.dtype
        batches = _loader(data, row.batch, world.workers, world.device)
    out = time_training(
        model,
        batches,
        loss,
        opt,
        world.device,
        dtype,
        row.iterations,
        row.warmup,
        deadline,
        sched,
    )
    out["autocast"] = dtype_name(dtype)
    out["parameters"] = sum(p.numel() for p in model.parameters())
    out["images"] = out["iterations"] * row.batch
    return out


# ------------------------------------------------------------------------------------------------
# The per-image passes
# ------------------------------------------------------------------------------------------------


def _timed(fn, device, clock=time.perf_counter) -> tuple:
    _sync(device)
    t = clock()
    out = fn()
    _sync(device)
    return out, clock() - t


def pass_row(world: World, row: Row, deadline: float) -> dict:
    """Time one per-image pass over ``row.iterations`` images (``row.warmup`` untimed first):
    'cams' — :func:`cam_step.extract_cams` at the full profile's CAM scales (with flips) of a
    ResNet-50 classifier; 'random_walk' — :func:`irnet_step.walk_all` (the full walk settings,
    :data:`irnet_step.WALK_GRID`'s full values) on IRNet's boundary maps of VOC-sized images;
    'urn_pass' — :func:`urn_step.uncertainty_pass` (P over :data:`urn_step.URN_TTA_SCALES` on the
    device, the CRFs on every CPU core); 'dense_energy' — RRM's energy at half the 321 crop,
    forward and backward, in batches of RRM's. Each in float32, as the steps run them (none of
    them autocasts). Returns {'images', 'compute_s' (the whole pass, synchronised), 'stopped_early'}:
    a pass whose warm-up ends after ``deadline`` is not timed."""
    dev, n, tmp = world.device, row.iterations, world.tmp
    s = world.settings
    if row.name == "cams":
        cfg = replace(s["classifier_cfg"], weights=world.weights)
        model = cam_step.make_classifier(world.pool.num_classes - 1, cfg).to(dev).eval()
        scales = tuple(s["step1"]["CAM_SCALES"])

        def run(k, tag):
            sub = Relabeled(world.pool, None, np.arange(k))
            cam_step.extract_cams(
                model,
                sub,
                tmp / f"cams_{tag}",
                scales,
                device=dev,
                batch_size=row.batch,
                progress=False,
            )

    elif row.name == "random_walk":
        walk = irnet_step.WalkConfig(
            radius=s["step2"]["WALK_RADII"][0],
            beta=s["step2"]["WALK_BETAS"][0],
            exp_times=s["step2"]["WALK_EXP_TIMES"][0],
            bg_threshold=s["step2"]["WALK_BG"][0],
        )
        net = IRNet(backbone_stages("resnet50", world.weights)).to(dev).eval()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, *row.size, generator=gen).to(dev)
        bnd = irnet_step.boundary_map(net, x)[0].cpu()
        cams = torch.rand(2, *bnd.shape, generator=gen)  # two classes, as a VOC image often has
        entry = {"boundary": bnd, "cams": cams, "keys": torch.arange(2), "size": row.size}

        def run(k, tag):
            for _ in irnet_step.walk_all([entry] * k, walk, batch_size=row.batch, device=dev):
                pass

    elif row.name == "urn_pass":
        cfg = replace(s["segmenter_cfg"], weights=world.weights)
        model = segmenter_step.make_model(world.pool.num_classes, cfg).to(dev).eval()
        processes = 1 if dev.type == "cpu" else max(1, os.cpu_count() or 1)
        scales = tuple(s["urn"]["P_SCALES"])

        def run(k, tag):
            sub = Relabeled(world.pool, None, np.arange(k))
            urn_step.uncertainty_pass(
                model,
                sub,
                tmp / f"urn_{tag}",
                scales=scales,
                processes=processes,
                batch_size=row.batch,
                device=dev,
                progress=False,
            )

    elif row.name == "dense_energy":
        cfg = s["rrm_cfg"]
        side = max(1, round(row.crop * cfg.energy_scale))
        gen = torch.Generator().manual_seed(0)
        img = (torch.rand(row.batch, 3, side, side, generator=gen) * 255).to(dev)
        lab = torch.randint(0, 7, (row.batch, side, side), generator=gen).to(dev)
        logits = torch.randn(row.batch, 7, side, side, generator=gen).to(dev)

        def run(k, tag):
            for _ in range(max(1, k // row.batch)):
                p = logits.clone().requires_grad_(True)
                e = reference_energy_weight() * dense_energy_loss(
                    p.softmax(1), img, lab, cfg.sigma_xy * cfg.energy_scale, cfg.sigma_rgb
                )
                e.backward()

    else:
        raise ValueError(f"no pass named {row.name!r}; passes: {PASSES}")
    if row.warmup:
        _timed(lambda: run(row.warmup if row.name != "dense_energy" else row.batch, "warm"), dev)
    images = n if row.name != "dense_energy" else max(1, n // row.batch) * row.batch
    if time.perf_counter() > deadline:
        return {"images": 0, "compute_s": 0.0, "stopped_early": True}
    _, seconds = _timed(lambda: run(images, "timed"), dev)
    return {"images": images, "compute_s": seconds, "stopped_early": False}


# ------------------------------------------------------------------------------------------------
# The run, its JSON and its table
# ------------------------------------------------------------------------------------------------


def device_info(device) -> dict:
    """What the check ran on: {'device': 'cpu' or the GPU's name, 'capability', 'memory_gib',
    'torch', 'cuda', 'cudnn', 'cpu_count', 'python', 'platform'}."""
    device = torch.device(device)
    info = {
        "device": "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info |= {
            "device": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1),
        }
    return info


def estimate_seconds(
    result: dict, full_rows: list, tflops: float = ASSUMED_TFLOPS, workers: int | None = None
) -> dict:
    """Each training row's expected seconds on CUDA from a tiny run (one that loaded its data in
    the main process): the larger of its compute — the FLOPs of one iteration scaled to the full
    row's pixels × batch (convolutions cost in proportion to them) at ``tflops`` TFLOP/s — and its
    data loading — the tiny run's wait per image scaled by the image's pixels, shared by ``workers``
    DataLoader processes — over warm-up + timed iterations, capped by the row's seconds.
    {row: seconds}, 'training' (their sum) and 'bound' (every row's cap, :data:`ROW_SECONDS`,
    summed: what the deadline guard allows at most). For planning the budget; the guard holds it.
    (RRM's CRFs run on the CPU inside its loss: neither part counts them, its cap does.)"""
    workers = default_workers(DEVICE_CPUS) if workers is None else workers
    by_name = {r["name"]: r for r in result["rows"]}
    out = {}
    for full in full_rows:
        ran = by_name.get(full.name)
        if full.kind != "train" or ran is None or not ran.get("flops_per_iter"):
            continue
        pixels = _pixels(full.crop or full.size) / _pixels(ran["crop"] or ran["size"])
        drawn = _pixels(full.size) / _pixels(ran["size"])  # the transform works on the image
        steps = full.iterations + full.warmup
        compute = ran["flops_per_iter"] * pixels * full.batch / ran["batch"] * steps
        wait = ran["wait_s"] / max(ran["images"], 1) * drawn * full.batch * steps / workers
        out[full.name] = round(min(max(compute / (tflops * 1e12), wait), full.seconds), 1)
    out["training"] = round(sum(out.values()), 1)
    out["bound"] = round(sum(r.seconds for r in full_rows), 1)
    return out


def _pixels(side) -> int:
    """Pixels of a square ``side`` or an (H, W) size."""
    return side[0] * side[1] if isinstance(side, (list, tuple)) else side * side


def _row_record(row: Row) -> dict:
    d = asdict(row)
    d["size"] = list(row.size) if isinstance(row.size, tuple) else row.size
    return d


def run_check(
    output=None,
    tiny: bool | None = None,
    iterations: int | None = None,
    budget: float | None = None,
    device="auto",
    workers: int | None = None,
    weights_dir=None,
    only=None,
    start: float | None = None,
    clock=time.perf_counter,
) -> dict:
    """Run the check and write ``gpu_check.json`` and ``gpu_check.md`` under ``output`` (default
    ``runs/gpu_check``). ``tiny`` None: tiny unless CUDA is available. ``budget``: seconds from
    ``start`` (default: now) after which no row starts (:data:`BUDGET_SECONDS`; tiny: 600).
    ``workers``: DataLoader processes (default :func:`default_workers`; tiny: 0).
    ``weights_dir``: a folder holding ``resnet50*.pth`` (:data:`wsss_edu.pretrained.WEIGHTS_DIR_ENV`
    folder; default: that variable, else ``../shared/weights``) — found: the networks start from
    ImageNet, else from random weights (the same cost). ``only``: names of the rows to run.

    The JSON (``schema`` 1): 'mode' ('full' / 'tiny'), 'device' (:func:`device_info`),
    'budget_s', 'elapsed_s', 'toy_world_s' (drawing the scenes), 'weights' ('imagenet' /
    'random'), 'workers', 'assumed_tflops', 'skipped' / 'failed' ([{'name', 'reason' / 'error'}])
    and 'rows': per row its :class:`Row` fields and 'images', 'images_per_s', 'compute_s',
    'wall_s' (with building the network and data), 'peak_gib' (None on a CPU), 'autocast',
    'stopped_early'; training rows also 'iterations', 'wait_s', 'wait_share', 'loss',
    'flops_per_iter', 'parameters'. A tiny run adds 'estimate_full_s' (:func:`estimate_seconds`).
    Returns the JSON's dict."""
    start = clock() if start is None else start
    if device in (None, "", "auto"):  # CUDA or the CPU (not MPS: this is a CUDA check)
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = get_device(device)
    tiny = dev.type != "cuda" if tiny is None else bool(tiny)
    budget = (600.0 if tiny else BUDGET_SECONDS) if budget is None else float(budget)
    deadline = start + budget
    rows = [r for r in plan(tiny, iterations) if only is None or r.name in only]
    workers = (0 if tiny else default_workers()) if workers is None else workers
    weights = _local_weights(weights_dir)
    output = Path(user_path(output) or "runs/gpu_check")
    output.mkdir(parents=True, exist_ok=True)
    result = {
        "schema": 1,
        "mode": "tiny" if tiny else "full",
        "device": device_info(dev),
        "budget_s": budget,
        "weights": weights or "random",
        "workers": workers,
        "assumed_tflops": ASSUMED_TFLOPS,
        "rows": [],
        "skipped": [],
        "failed": [],
    }
    t = clock()
    size = next((r.size for r in rows if r.name == "classifier"), plan(tiny)[0].size)
    pool = ToyDataset("train", n=8 if tiny else 96, seed=0, size=size, missing_label_rate=0.5)
    for i in range(len(pool)):  # drawn once, here: the rows time the steps, not the drawing
        pool[i]
    result["toy_world_s"] = round(clock() - t, 2)
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # a test of the code path: one thread, no spinning on a busy machine
        torch.set_num_threads(1)
    try:
        _run_rows(result, rows, pool, dev, workers, weights, deadline, clock)
    finally:
        torch.set_num_threads(threads)
    result["elapsed_s"] = round(clock() - start, 1)
    if tiny and workers == 0:  # the wait per image is then the transform's own cost
        result["estimate_full_s"] = estimate_seconds(result, plan(False, iterations))
    write_text_atomic(output / "gpu_check.json", json.dumps(result, indent=1, default=str))
    write_text_atomic(output / "gpu_check.md", table(result))
    return result


def _run_rows(result, rows, pool, dev, workers, weights, deadline, clock) -> None:
    """Run ``rows`` in order into ``result`` (its 'rows' and 'skipped'), each in its share of the
    time: a row that would start with less than a third of its seconds (at most 10 s) left before
    ``deadline`` is skipped; one that starts stops at its seconds or the deadline. A row that
    raises is recorded in 'failed' with its error, and the next one runs."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        world = World(pool, Path(tmp), dev, amp_dtype(dev), workers, weights, full_settings())
        for row in rows:
            left = deadline - clock()
            if left < min(10.0, row.seconds / 3):
                result["skipped"].append(
                    {"name": row.name, "reason": f"budget spent ({left:.0f} s left)"}
                )
                continue
            row_deadline = clock() + min(row.seconds, left)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            t = clock()
            try:
                out = (train_row if row.kind == "train" else pass_row)(world, row, row_deadline)
            except Exception as e:  # one failing row (out of memory, ...) must not lose the rest
                result["failed"].append({"name": row.name, "error": f"{type(e).__name__}: {e}"})
                continue
            rec = _row_record(row) | out
            rec["wall_s"] = round(clock() - t, 2)
            busy = out.get("wait_s", 0.0) + out["compute_s"]
            rec["images_per_s"] = out["images"] / busy if busy > 0 else 0.0
            rec.setdefault("autocast", "off")  # the passes run as the steps run them: float32
            rec["peak_gib"] = (
                torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            )
            if "wait_s" in out:
                rec["wait_share"] = out["wait_s"] / busy if busy > 0 else 0.0
            result["rows"].append(rec)


def default_workers(cpus: int | None = None) -> int:
    """DataLoader processes of a full run: every core but the main process's (``cpus``: this
    machine's)."""
    return max(1, (cpus or os.cpu_count() or 2) - 1)


def _local_weights(weights_dir) -> str | None:
    """'imagenet' when a ``resnet50*.pth`` is found in ``weights_dir`` (or the folder of
    :data:`WEIGHTS_DIR_ENV`, or ``../shared/weights``), which the backbones then load (the variable
    is set for them), else None: random weights."""
    folder = weights_dir or os.environ.get(WEIGHTS_DIR_ENV) or "../shared/weights"
    folder = Path(folder).expanduser()
    if folder.is_dir() and len(sorted(folder.glob("resnet50*.pth"))) == 1:
        os.environ[WEIGHTS_DIR_ENV] = str(folder)
        return "imagenet"
    return None


COLUMNS = (
    ("row", "the step or pass"),
    ("size", "image side (crop) in px"),
    ("batch", "images per step"),
    ("iters", "timed iterations (passes: images)"),
    ("img/s", "images per second"),
    ("peak GiB", "torch.cuda.max_memory_allocated for the row"),
    ("autocast", "the dtype of autocast, or off"),
    ("wait s", "time waiting for the next batch"),
    ("compute s", "forward, backward and optimizer step"),
    ("wait %", "share of the time waiting for data"),
)
"""The table's columns and what each means (the README repeats them)."""


def table(result: dict) -> str:
    """The Markdown table of a check's result: one line per row, then the skipped rows, the
    device and, for a tiny run, the estimate of the full run's seconds."""
    d = result["device"]
    where = (
        d["device"]
        if d["device"] == "cpu"
        else (f"{d['device']} (capability {d['capability']}, {d['memory_gib']} GiB)")
    )
    lines = [
        f"GPU check ({result['mode']}) on {where}; torch {d['torch']}, CUDA {d['cuda']}; "
        f"weights {result['weights']}; {result['workers']} DataLoader workers; "
        f"{result['elapsed_s']} s",
        "",
        "| " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in result["rows"]:
        size = "x".join(map(str, r["size"])) if isinstance(r["size"], list) else str(r["size"])
        size += f" ({r['crop']})" if r.get("crop") else ""
        cells = [
            r["name"],
            size,
            str(r["batch"]),
            str(r.get("iterations") if r["kind"] == "train" else r["images"]),
            f"{r['images_per_s']:.1f}",
            "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}",
            r["autocast"],
            f"{r['wait_s']:.2f}" if "wait_s" in r else "-",
            f"{r['compute_s']:.2f}",
            f"{100 * r['wait_share']:.0f}" if "wait_share" in r else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for s in result["skipped"]:
        lines.append(f"\nskipped: {s['name']} ({s['reason']})")
    for s in result.get("failed", []):
        lines.append(f"\nfailed: {s['name']} ({s['error'][:300]})")
    if "estimate_full_s" in result:
        lines.append(
            f"\nestimated seconds of the full run on CUDA ({result['assumed_tflops']:.0f} "
            f"TFLOP/s, {default_workers(DEVICE_CPUS)} DataLoader workers): "
            + ", ".join(f"{k} {v} s" for k, v in result["estimate_full_s"].items())
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """``python -m wsss_edu.steps.gpu_check [--output DIR] [--tiny] [--iterations N] [--budget S]
    [--workers N] [--only ROW ...]``: run the check, print its table. Exit status 1 when a row
    failed (its error is in the table and the JSON), 2 for a wrong option (e.g. ``--device``),
    else 0 (rows skipped for time included)."""
    start = time.perf_counter()
    ap = argparse.ArgumentParser(
        prog="python -m wsss_edu.steps.gpu_check", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--output", default="runs/gpu_check", help="folder of gpu_check.json / .md")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (default without CUDA)")
    ap.add_argument("--iterations", type=int, help="timed iterations of every training step")
    ap.add_argument(
        "--budget", type=float, help=f"seconds before no row starts ({BUDGET_SECONDS:.0f})"
    )
    ap.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    ap.add_argument("--workers", type=int, help="DataLoader processes (default: CPUs - 1)")
    ap.add_argument("--weights-dir", help=f"folder with resnet50*.pth (default ${WEIGHTS_DIR_ENV})")
    ap.add_argument("--only", nargs="+", choices=TRAINING + PASSES, help="run these rows only")
    a = ap.parse_args(argv)
    try:
        result = run_check(
            a.output,
            True if a.tiny else None,
            a.iterations,
            a.budget,
            a.device,
            a.workers,
            a.weights_dir,
            a.only,
            start,
        )
    except ParameterError as e:  # a wrong option: its message names the valid values
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    print(table(result))
    print(f"written: {Path(a.output) / 'gpu_check.json'}, {Path(a.output) / 'gpu_check.md'}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
