"""RRM (paper 003) trained end to end, as a cached pipeline step — what notebook 07 runs. The method
(reliable regions, the dense energy loss, the network and its joint loss, :func:`wsss_edu.rrm.rrm_loss`)
is :mod:`wsss_edu.rrm`.

* :class:`RRMConfig` (everything that decides a training run, its cache key with :func:`rrm_key`);
  :func:`rrm_step_loss` (the loss :func:`train_rrm` minimises: ``rrm_loss`` with the config's settings);
* :func:`make_rrm` (started from step 1's classifier), :func:`train_rrm`, :func:`cached_rrm`,
  :func:`cached_rrms` (several in worker processes);
* :func:`write_pseudo_labels`: the two-step variant's pseudo-labels (the one-step network's
  prediction refined by a CRF), a folder of PNGs;
* notebook 07's knobs, defined once: :data:`RRM_PROFILE`, :data:`RRM_DATASETS`; :func:`rrm_values`,
  :func:`rrm_config` (the quick and full profiles).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .. import distributed, params
from ..cache import artifact_path, cached, checkpoint_path
from ..crf import crf_on_scores
from ..data import SegTransformDataset, images_to_tensor, same_size_batches
from ..errors import ParameterError, check_choice
from ..io import folder_complete, write_mask
from ..parallel import compute_missing, finish_folder, pending, run_streamed, shard_spec
from ..progress import bar as progress_bar
from ..rrm import RULES, RRMNet, freeze_reference_layers, rrm_loss
from ..threads import loader_options
from ..train import fit, poly_schedule, seed_everything
from .cam_step import CODE_VERSION as CAM_STEP_VERSION

# This step's code version, in its cache keys (wsss_edu.cache) and in the pipeline's done.json:
# bump it when a change alters what the step computes, so that its artifacts (and what is keyed by
# them downstream) are computed again and the notebooks that use it rerun; the rest is reused.
CODE_VERSION = 1
# An RRM network's cache version: RRM's code and step 1's, whose classifier it may start from
# (``init_key`` names that classifier by its data and config, not by the code that trained it).
RRM_VERSION = {"rrm_step": CODE_VERSION, "cam_step": CAM_STEP_VERSION}


@dataclass(frozen=True)
class RRMConfig:
    """Everything that decides an RRM training run (its cache key with the data and the init
    weights). Defaults: the quick profile's (step 1's small CNN, Adam, 3 epochs of whole 64-px
    images, sigma_xy 20); :func:`rrm_config` builds the full profile's too (the paper: ResNet-38 —
    here a torchvision ResNet-50 —, SGD, crop 321, random scale 0.7-1.3; the reference code's
    kernel widths sigma_xy 100 / sigma_rgb 15 at half resolution — paper 003's text gives
    σ_d 15 and σ_r 100, the other way round; the package keeps the code's values, which are the
    ones its published numbers came from, and a 15-px spatial kernel with a 100-level colour
    kernel would be nearly blind to colour edges). ``momentum``: SGD's (the reference's
    ``PolyOptimizer`` passes its weight decay, 5e-4, into SGD's momentum slot: effectively none;
    the full profile takes that value so that its learning rate means what the reference's does).
    ``freeze_bn``: every batch norm kept in eval mode with its affine parameters fixed, and the
    backbone's first convolution fixed, as the reference (conv1a and all BN) — the full
    profile's default; the quick profile's small CNN, trained from scratch in step 1, lets its
    batch norms follow the RRM training (see :data:`RRM_PROFILE`). ``labels``: 'rrm' (the reliable labels) or 'cam' (the CAM side alone,
    Table 2); ``rule``: 'reference' (the original code's labels, the default of both profiles) or
    'paper' (eqs. 4-7 literally; ``two_crf`` applies to it, and to 'reference' as its two
    gammas), see :func:`reliable_region_labels`; ``energy_weight`` None:
    :func:`reference_energy_weight`. ``has_background``: the dataset's
    (:attr:`wsss_edu.datasets.SegDataset.has_background`); False: a K-class segmentation branch,
    labels without a background (:func:`reliable_labels_without_background`) and a plain
    cross-entropy (:func:`labelled_cross_entropy`). ``frozen_blocks``: the MobileNetV2 backbone's
    first blocks keep their weights, as step 1's classifier
    (:attr:`wsss_edu.steps.cam_step.ClassifierConfig.frozen_blocks`). Both are left out of the cache key at
    their defaults (:func:`rrm_key`), so networks cached before they existed are still found."""

    backbone: str = "small"
    weights: str | None = None
    width: int = 16
    depth: int = 2
    dilation: int = 2
    seg_channels: int = 128
    epochs: int = 3
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    freeze_bn: bool = False
    crop: int | None = None
    scale: tuple = (0.7, 1.3)
    cam_scales: tuple = (1.0,)
    gamma: float = 4.0
    fraction: float = 0.4
    crf_params: str = "rrm_train"
    two_crf: tuple | None = None
    rule: str = "reference"
    labels: str = "rrm"
    joint: bool = True
    energy_weight: float | None = None
    energy_scale: float = 0.5
    sigma_xy: float = 20.0
    sigma_rgb: float = 15.0
    seed: int = 0
    has_background: bool = True
    frozen_blocks: int = 0


# Fields added to RRMConfig after networks were cached: {name: default}; rrm_key leaves a field out
# at its default, so the keys of the configurations that existed before stay the same.
_LATER_FIELDS = {"has_background": True, "frozen_blocks": 0}


# Notebook 07's knobs: {name: (quick, full)} (params.profile_values). Quick: step 1's small CNN
# at 64 px, Adam, 3 epochs, one CAM scale (+ flip) per step, sigma_xy scaled with the image
# (100 × 64 / 321 ≈ 20: the reference's kernel relative to its crop). Full: the paper's crop 321,
# scale 0.7-1.3, CAM scales 0.5-2, dilation 12, sigma_xy 100, SGD 7e-4 (heads ×10); 8 epochs of
# VOC's train_aug ≈ the reference's 20k steps of batch 4. Both take the reference code's
# reliable-region rule (RULE; 'paper': eqs. 4-7 literally). Full: the reference's momentum (its
# weight decay in SGD's momentum slot, 5e-4) and its frozen batch norms (and first convolution).
# Quick: Adam (momentum unused) and batch norms that train: the small CNN has no ImageNet
# statistics to keep, and its step-1 statistics were measured on the same 64-px images.
RRM_PROFILE = dict(
    RRM_EPOCHS=(3, 8),
    RRM_BATCH=(16, 8),
    RRM_OPTIMIZER=("adam", "sgd"),
    RRM_LR=(1e-3, 7e-4),
    RRM_MOMENTUM=(0.9, 5e-4),
    FREEZE_BN=(False, True),
    RRM_CROP=(None, 321),
    RRM_DILATION=(2, 12),
    RRM_SEG_CHANNELS=(128, 256),
    CAM_SCALES=((1.0,), (0.5, 1.0, 1.5, 2.0)),
    SIGMA_XY=(20.0, 100.0),
    RATIOS=((0.1, 0.4, 1.0), (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)),
    RULE=("reference", "reference"),
    ENERGY_SCALE=(0.5, 0.5),
    TABLE2_CAM=(True, True),
    TWO_STEP=(True, True),
    N_CURVE=(200, 200),
)
# ENERGY_SCALE: the resolution of the energy loss relative to the crop (the reference's half);
# notebook 07's own: TABLE2_CAM, train Table 2's networks on the CAM labels; TWO_STEP, train
# notebook 05's DeepLabv3+ on the one-step network's output; N_CURVE, the training images of the
# precision / coverage curves.
# Where a real dataset's values differ: {dataset: {name: (quick, full)}} (params.for_dataset).
# MSRC (266 training photos of ~320x213, no background class): step 1's ImageNet MobileNetV2
# (stride 16, its first 7 blocks and batch norms fixed) trained on 160-px crops, as step 1 and
# notebook 05, with the reference's proportions: its sigma_xy of 100 px on a 321 crop is 50 on 160
# (100 on the full profile's 320), its dilation 12 on 41x41 feature maps is 3 on 160 / 16 = 10
# (6 on 20), its energy at half resolution is 4 pixels a feature (161 / 41): 0.25 at stride 16
# (the full profile keeps the reference's 0.5). Quick: Adam at 1e-4 (chosen on val among 3e-5,
# 1e-4, 3e-4 with the joint loss; SGD at 1e-3, the branches at 1e-2, fell to 0.19 val mIoU), 3
# epochs, one CAM scale (+ flip), Table 1 at 0.4 alone, neither Table 2's CAM-label networks nor
# the two-step one, so that notebook 07 runs in minutes on a 2-core CPU.
RRM_DATASETS = {
    "msrc": dict(
        RRM_EPOCHS=(3, 8),
        RRM_BATCH=(8, 8),
        RRM_LR=(1e-4, 7e-4),
        RRM_CROP=(160, 320),
        RRM_DILATION=(3, 6),
        SIGMA_XY=(50.0, 100.0),
        ENERGY_SCALE=(0.25, 0.5),
        RATIOS=((0.4,), (0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)),
        TABLE2_CAM=(False, True),
        TWO_STEP=(False, True),
        N_CURVE=(100, 266),
    )
}


def rrm_values(profile: str, dataset: str = "toy", **knobs) -> dict:
    """Notebook 07's RRM knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`RRM_PROFILE` with :data:`RRM_DATASETS`'s values)."""
    return params.profile_values(
        profile, params.for_dataset(RRM_PROFILE, RRM_DATASETS, dataset), **knobs
    )


def rrm_config(
    profile: str, seed: int, classifier, has_background: bool = True, dataset: str = "toy", **knobs
) -> tuple:
    """Notebook 07's RRM settings from its parameters: (:class:`RRMConfig`, the labelled ratios of
    Table 1). ``classifier``: step 1's :class:`wsss_edu.steps.cam_step.ClassifierConfig`, whose backbone
    (and width / depth) the network takes so that the classifier's weights fit it (its ImageNet
    weights come with them: ``weights`` stays None), and its ``frozen_blocks``; a classifier that
    kept its batch norms' statistics (``freeze_bn``: the ImageNet MobileNetV2, whose offline file
    has them fused) makes ``freeze_bn`` True unless FREEZE_BN is given. ``has_background``: the
    dataset's (:attr:`wsss_edu.steps.cam_step.Step1.has_background`). ``dataset``: whose profile values
    (:func:`rrm_values`). ``knobs``: :data:`RRM_PROFILE`'s names (RULE among them; TABLE2_CAM,
    TWO_STEP and N_CURVE, the notebook's own, are accepted and unused) and GAMMA, FRACTION, TWO_CRF,
    ENERGY_WEIGHT, SIGMA_RGB (None = the profile's on ``dataset`` / the default). A dataset
    without a background refuses TWO_CRF (its two CRFs weigh P_bg)."""
    extra = {
        k: knobs.pop(k)
        for k in ("GAMMA", "FRACTION", "TWO_CRF", "ENERGY_WEIGHT", "SIGMA_RGB")
        if k in knobs
    }
    v = rrm_values(profile, dataset, **knobs)
    check_choice("RULE", v["RULE"], RULES)
    if extra.get("TWO_CRF") and not has_background:
        raise ParameterError(
            f"TWO_CRF={tuple(extra['TWO_CRF'])!r} needs a background class (its two CRFs weigh "
            "P_bg at two strengths); this dataset has none: leave TWO_CRF None"
        )
    d = RRMConfig()
    freeze_bn = bool(v["FREEZE_BN"])
    if (
        knobs.get("FREEZE_BN") is None
    ):  # the profile's: a classifier with frozen statistics keeps them
        freeze_bn = freeze_bn or bool(getattr(classifier, "freeze_bn", False))
    cfg = RRMConfig(
        backbone=classifier.backbone,
        weights=None,
        width=classifier.width,
        depth=classifier.depth,
        dilation=v["RRM_DILATION"],
        seg_channels=v["RRM_SEG_CHANNELS"],
        epochs=v["RRM_EPOCHS"],
        batch_size=v["RRM_BATCH"],
        optimizer=v["RRM_OPTIMIZER"],
        lr=v["RRM_LR"],
        momentum=v["RRM_MOMENTUM"],
        freeze_bn=freeze_bn,
        crop=v["RRM_CROP"],
        cam_scales=tuple(v["CAM_SCALES"]),
        gamma=d.gamma if extra.get("GAMMA") is None else float(extra["GAMMA"]),
        fraction=d.fraction if extra.get("FRACTION") is None else float(extra["FRACTION"]),
        two_crf=tuple(extra["TWO_CRF"]) if extra.get("TWO_CRF") else None,
        rule=v["RULE"],
        energy_weight=extra.get("ENERGY_WEIGHT"),
        sigma_xy=v["SIGMA_XY"],
        sigma_rgb=d.sigma_rgb if extra.get("SIGMA_RGB") is None else float(extra["SIGMA_RGB"]),
        energy_scale=float(v["ENERGY_SCALE"]),
        seed=seed,
        has_background=bool(has_background),
        frozen_blocks=int(getattr(classifier, "frozen_blocks", 0) or 0),
    )
    return cfg, tuple(v["RATIOS"])


def train_rrm(
    dataset,
    cfg: RRMConfig,
    device=None,
    workers: int | None = None,
    checkpoint=None,
    progress: bool = True,
    init=None,
) -> RRMNet:
    """Train an :class:`RRMNet` end to end on ``dataset`` (samples with 'image', the image tags
    'labels' and a 'mask', which the data transform carries along but the loss never reads) with
    :func:`rrm_loss`. ``init``: a state dict of
    a :class:`wsss_edu.cam.CAMClassifier` of the same backbone to start the shared backbone and
    the classification branch from (the reference's recommended route starts from a classifier
    trained on the dataset's tags). Returns the network in eval mode."""
    from functools import partial

    from torch.utils.data import DataLoader

    check_choice("optimizer", cfg.optimizer, ("sgd", "adam"))
    if bool(getattr(dataset, "has_background", True)) != cfg.has_background:
        raise ParameterError(
            f"the dataset's has_background is {getattr(dataset, 'has_background', True)} but "
            f"RRMConfig.has_background is {cfg.has_background}; give rrm_config the "
            "dataset's (has_background=...)"
        )
    seed_everything(cfg.seed)
    net = make_rrm(len(dataset.classes) - 1, cfg)
    if init is not None:
        net.classifier_net.load_state_dict(init)
    loader = DataLoader(
        SegTransformDataset(dataset, crop=cfg.crop, scale=cfg.scale, flip=True),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= cfg.batch_size,
        **loader_options(device, workers),
    )
    if cfg.freeze_bn:
        freeze_reference_layers(net)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            net.param_groups(cfg.lr),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss = partial(rrm_step_loss, cfg=cfg)
    fit(
        net,
        loader,
        loss,
        opt,
        cfg.epochs,
        device,
        poly_schedule(opt, cfg.epochs * len(loader)),
        checkpoint=checkpoint,
        progress=progress,
        desc=f"RRM ({len(dataset)} images)",
    )
    return net.eval()


def make_rrm(num_classes: int, cfg: RRMConfig) -> RRMNet:
    """The :class:`RRMNet` ``cfg`` describes, for ``num_classes`` foreground classes (the small
    backbone takes ``width`` / ``depth``, as step 1's classifier, so its weights fit; a
    MobileNetV2's first ``frozen_blocks`` blocks get no gradient,
    :meth:`wsss_edu.cam.CAMClassifier.freeze_blocks`)."""
    kw = {"width": cfg.width, "depth": cfg.depth} if cfg.backbone == "small" else {}
    net = RRMNet(
        num_classes,
        cfg.backbone,
        cfg.weights,
        cfg.dilation,
        cfg.seg_channels,
        has_background=cfg.has_background,
        **kw,
    )
    if cfg.frozen_blocks:
        net.classifier_net.freeze_blocks(cfg.frozen_blocks)
    return net


def rrm_key(data_key: dict, init_key, cfg: RRMConfig) -> dict:
    """The cache key of an RRM network: its data, its init weights' key and its config (the
    fields of :data:`_LATER_FIELDS` only where they differ from their defaults)."""
    c = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])
    }
    return {"data": data_key, "init": init_key, "rrm": c}


def cached_rrm(
    output_dir,
    dataset,
    data_key: dict,
    cfg: RRMConfig,
    init=None,
    init_key=None,
    device=None,
    workers: int | None = None,
    progress: bool = True,
) -> RRMNet:
    """The RRM network of (``data_key``, ``init_key``, ``cfg``) from the artifact cache under
    ``output_dir``, or trained (:func:`train_rrm`, resumable after each epoch) and stored.
    ``init``: the classifier weights to start from, named by ``init_key`` (a dict: e.g. step 1's
    cache key). Trains on every visible GPU, or on ``WSSS_TRAIN_PROCESSES`` processes
    (:func:`wsss_edu.distributed.trained_state`)."""
    if init is not None and init_key is None:
        raise ParameterError(
            "cached_rrm: give init_key, a dict naming the init weights (e.g. step 1's "
            "data key and ClassifierConfig), so the cache tells networks apart"
        )
    key = rrm_key(data_key, init_key, cfg)

    def compute():  # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "rrm", key, RRM_VERSION)
        return distributed.trained_state(
            train_rrm,
            dataset=dataset,
            cfg=cfg,
            device=device,
            workers=workers,
            checkpoint=ckpt,
            progress=progress,
            init=init,
        )

    state = cached(output_dir, "rrm", key, compute, version=RRM_VERSION)
    net = make_rrm(len(dataset.classes) - 1, cfg)
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()


def _rrm_into_cache(job) -> None:
    output_dir, dataset, data_key, cfg, init, init_key = job
    cached_rrm(output_dir, dataset, data_key, cfg, init, init_key, "cpu", progress=False)


def _rrm_not_cached(job) -> bool:
    return not artifact_path(job[0], "rrm", rrm_key(job[2], job[5], job[3]), RRM_VERSION).exists()


def cached_rrms(
    output_dir,
    jobs,
    device=None,
    processes: int = 1,
    desc: str = "RRM networks",
    progress: bool = True,
    loader_workers: int = 0,
) -> list:
    """Many :func:`cached_rrm` calls (``jobs``: (dataset, data_key, cfg, init, init_key) tuples):
    on the CPU the networks missing from the cache are trained first in ``processes`` worker
    processes (:func:`wsss_edu.parallel.compute_missing`), on a GPU one after the other with
    ``loader_workers`` DataLoader workers. Returns the networks, in order, on ``device``."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if on_cpu and processes > 1:
        compute_missing(
            _rrm_into_cache,
            [(output_dir, *j) for j in jobs],
            _rrm_not_cached,
            processes,
            desc,
            progress,
        )
    return [
        cached_rrm(
            output_dir, *j, device=device, workers=0 if on_cpu else loader_workers, progress=False
        )
        for j in progress_bar(jobs, desc=desc, disable=not progress)
    ]


def _crf_label_png(job) -> None:
    """One image of :func:`write_pseudo_labels`: the CRF (if any) on its probabilities, the argmax
    written as a grey PNG (in a worker process or here)."""
    image, probs, crf_params, path, offset = job
    q = crf_on_scores(image, probs, crf_params) if crf_params else probs
    write_mask(path, (q.argmax(0) + offset).astype(np.uint8))


@torch.no_grad()
def write_pseudo_labels(
    net: RRMNet,
    dataset,
    folder,
    crf_params="rrm_test",
    batch_size: int = 16,
    device=None,
    progress: bool = True,
    processes: int = 1,
    shard=None,
):
    """The two-step variant's first step: the segmentation branch's prediction of every image of
    ``dataset`` as a grey PNG named after it, restricted to the background and the image's tags
    (the training images have them), refined by the dense CRF (``crf_params``; None: none) as the
    reference's inference. A network without a background (:attr:`RRMNet.has_background` False):
    restricted to the image's tags alone (all classes for an image without tags), class c written
    as c + 1, the dataset's mask value. Skips PNGs already written (resumable); a 'complete' marker
    says the folder is whole. ``processes`` > 1 runs the CRFs in that many spawned processes; ``shard``
    ((i, n) or 'i/n'; default: ``WSSS_SHARD``, else all) writes this machine's share of the images
    (:func:`wsss_edu.parallel.shard`), the marker coming once every image is there. Returns the
    folder."""
    from pathlib import Path

    folder = Path(folder)
    if folder_complete(folder):
        return folder
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device).eval()
    background = getattr(net, "has_background", True)
    names, spec = dataset.names, shard_spec(shard)
    todo = pending(range(len(dataset)), lambda i: folder / f"{names[i]}.png", spec)

    def jobs():
        """One CRF job per image: its probabilities restricted to its tags."""
        for idx, group in same_size_batches(dataset, batch_size, todo):
            x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
            probs = net.segment(x).float().softmax(1).cpu()
            for i, s, p in zip(idx, group, probs):
                tags = torch.as_tensor(np.asarray(s["labels"]) > 0).float()
                if background:
                    keep = torch.cat([torch.ones(1), tags])
                else:  # no background: the tags alone (all if none)
                    keep = tags if tags.any() else torch.ones_like(tags)
                p = p * keep[:, None, None]
                p = p / p.sum(0, keepdim=True).clamp(min=1e-8)
                yield (
                    s["image"],
                    p.numpy(),
                    crf_params,
                    folder / f"{names[i]}.png",
                    0 if background else 1,
                )

    bar = progress_bar(total=len(todo), desc="RRM pseudo-labels", disable=not progress, leave=False)
    try:  # at most 4 batches per worker wait in memory
        run_streamed(
            _crf_label_png, jobs(), processes, 4 * processes * batch_size, lambda: bar.update(1)
        )
    finally:
        bar.close()
    finish_folder(folder, names, ".png", spec)
    return folder


def rrm_step_loss(model, batch, cfg: RRMConfig) -> torch.Tensor:
    """The loss :func:`train_rrm` minimises: :func:`rrm_loss` with ``cfg``'s settings."""
    return rrm_loss(
        model,
        batch,
        cfg.cam_scales,
        cfg.gamma,
        cfg.fraction,
        cfg.crf_params,
        cfg.two_crf,
        cfg.energy_weight,
        cfg.energy_scale,
        cfg.sigma_xy,
        cfg.sigma_rgb,
        cfg.joint,
        source=cfg.labels,
        rule=cfg.rule,
        has_background=cfg.has_background,
    )["loss"]
