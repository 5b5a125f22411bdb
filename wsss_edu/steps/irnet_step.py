"""Step 2 of paper 001 as a cached pipeline step: IRNet trained on relation labels from step 1's
CAMs, then the random walk that turns the CAMs into pseudo-labels — what notebook 04 builds and
notebooks 05-06 reuse. The method it runs (pairs, paths, affinities, losses, the walk, the network)
is :mod:`wsss_edu.irnet`.

* :class:`IRNetConfig` (everything that decides the network, its cache key) and :class:`WalkConfig`;
* relation labels written per image (:func:`write_relation_labels`, read back by
  :class:`RelationDataset`), the network trained (:func:`train_irnet`), the walk's inputs and
  labels (:func:`walk_inputs`, :func:`walk_all`, :func:`walk_labels`, :func:`walk_confusions`);
* cached: :func:`cached_confident_images`, :func:`cached_relation_labels`, :func:`cached_step2`,
  :func:`cached_walk_choice` (the walk's settings chosen on val, :func:`choose_walk`),
  :func:`cached_pseudo_labels` (a folder of PNGs);
* its settings, defined once: :data:`STEP2_PROFILE`, :data:`STEP2_DATASETS`, :data:`WALK_GRID`,
  :data:`WALK_GRID_DATASETS`; :func:`step2_values`, :func:`step2_config`;
* the notebooks' entry point: :func:`step2` (``Step2``: the network, the walk, the pseudo-labels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed, params
from ..cache import artifact_path, cached, checkpoint_path, params_key
from ..cam import confident_image_mask, crf_label_map
from ..data import (
    AUGMENTS,
    images_to_tensor,
    item_rng,
    random_scale_crop_flip,
    same_size_batches,
    strong_augment,
)
from ..errors import ParameterError, check_choice
from ..io import folder_complete, read_mask, write_mask
from ..irnet import (
    IRNet,
    backbone_stages,
    irnet_loss,
    pair_offsets,
    random_walk,
    relation_labels,
    walk_to_labels,
)
from ..labels import IGNORE
from ..metrics import ConfusionMeter
from ..parallel import finish_folder, pending, set_worker_state, shard_spec, worker_state
from ..progress import bar as progress_bar
from ..threads import loader_options, spawn_pool
from ..train import fit, poly_schedule, seed_everything
from .cam_step import classifier_probs, dataset_tags, load_cams

# This step's code version, in its cache keys (wsss_edu.cache) and in the pipeline's done.json:
# bump it when a change alters what the step computes, so that its artifacts (and what is keyed by
# them downstream) are computed again and the notebooks that use it rerun; the rest is reused.
CODE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# Step 2 end to end, cached: what notebook 04 builds and notebook 05 reuses
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IRNetConfig:
    """Everything that decides step 2's network (the cache key of its weights).

    Relation labels: CAM planes ``fg_threshold`` / ``bg_threshold`` + label CRF, on the training
    images whose every tag has a classifier probability above ``confidence`` (paper 001).
    Training: pairs within ``radius`` grid cells at stride 4, SGD with momentum and polynomial
    decay at ``lr_boundary`` / ``lr_displacement`` (IRNet 0.1 / 1.0; paper 001 says 0.005 / 0.05),
    ``crop``: random rescale in ``scale`` + crop (real datasets; None: whole images, flipped).
    ``path``: the pixels between two pixels whose boundary values give their affinity, in the
    training loss (:func:`path_points`: 'thick', the reference's, or 'thin'); ``sources``: the
    pixels whose pairs teach ('all', or 'reference': :func:`reference_source_mask`). ``augment``:
    'flip' or 'strong' (paper 001: "the same strong data augmentation as in the classification
    step", :func:`wsss_edu.data.strong_augment`); ``copy_scales``: paper 001's copies of every
    training image rescaled by each factor (0.5, 1, 1.5, 2), or None (each image once)."""

    fg_threshold: float = 0.30
    bg_threshold: float = 0.05
    confidence: float = 0.8
    radius: int = 5
    epochs: int = 5
    batch_size: int = 16
    lr_boundary: float = 0.1
    lr_displacement: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    width: int = 32
    crop: int | None = None
    scale: tuple = (0.5, 1.5)
    seed: int = 0
    path: str = "thick"
    sources: str = "all"
    augment: str = "flip"
    copy_scales: tuple | None = None


@dataclass(frozen=True)
class WalkConfig:
    """The random walk's settings (IRNet's defaults): pairs within ``radius`` at stride 4,
    affinities to the power ``beta``, T squared ``exp_times`` times, background plane
    ``bg_threshold`` on the walked maps; ``path``: the affinities' paths (:func:`path_points`)."""

    radius: int = 5
    beta: float = 10.0
    exp_times: int = 8
    bg_threshold: float = 0.25
    path: str = "thick"


def labels_at_stride(labels: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """A label map (..., H, W) on the network's output grid (ceil(H / stride) cells per side):
    the label at the centre pixel of each cell (a nearest-neighbour rescale, as IRN's is read); cells
    whose centre falls outside the image are 255."""
    h, w = labels.shape[-2:]
    oh, ow = -(-h // stride), -(-w // stride)
    c = stride // 2
    out = labels.new_full((*labels.shape[:-2], oh, ow), IGNORE)
    sub = labels[..., c::stride, c::stride]
    out[..., : sub.shape[-2], : sub.shape[-1]] = sub
    return out


def write_relation_labels(
    dataset,
    cam_folder,
    folder,
    indices,
    cfg: IRNetConfig,
    progress: bool = True,
    processes: int = 1,
    shard=None,
) -> int:
    """IRNet's relation labels (:func:`relation_labels`) of the images ``indices`` of ``dataset``
    (samples with 'image', 'name'; ``dataset.num_classes`` counts the background) from their CAMs
    in ``cam_folder``, one grey PNG per image in ``folder`` (0 bg, c + 1 class c, 255 unsure).
    Images whose PNG exists are skipped (resumable); ``processes`` > 1 spreads the CRFs over
    that many processes; ``shard`` ((i, n) or 'i/n'; default: ``WSSS_SHARD``, else all): this
    machine's share of ``indices`` (:func:`wsss_edu.parallel.shard`). Returns the number written."""
    names = dataset.names
    todo = pending(indices, lambda i: Path(folder) / f"{names[i]}.png", shard)
    bar = progress_bar(total=len(todo), desc="relation labels", disable=not progress, leave=False)
    job = dict(dataset=dataset, cam_folder=cam_folder, folder=folder, cfg=cfg)
    if processes > 1 and len(todo) > 16:
        chunks = [todo[c : c + 16] for c in range(0, len(todo), 16)]
        # spawn, not fork: a forked child of a process that has run torch can hang on its locks;
        # the dataset travels once per worker (initializer), the jobs carry indices only
        with spawn_pool(processes, initializer=set_worker_state, initargs=(job,)) as pool:
            for n in pool.map(_relation_chunk, chunks):
                bar.update(n)
    else:
        for i in todo:
            bar.update(_relation_chunk([i], job))
    bar.close()
    return len(todo)


def _relation_chunk(indices, job=None) -> int:
    job = job or worker_state()
    dataset, cfg = job["dataset"], job["cfg"]
    for i in indices:
        s = dataset[i]
        cams = load_cams(job["cam_folder"], s["name"], dataset.num_classes - 1)
        rel = relation_labels(s["image"], cams, cfg.fg_threshold, cfg.bg_threshold)
        write_mask(Path(job["folder"]) / f"{s['name']}.png", rel.astype(np.uint8))
    return len(indices)


class RelationDataset(torch.utils.data.Dataset):
    """Training samples of IRNet: {'image': float (3, H, W), 'relation': long (H/4, W/4)} for the
    images ``indices`` of ``dataset``, relation labels read from the PNGs of
    :func:`write_relation_labels`. ``crop``: random rescale in ``scale``, crop and flip (the
    labels follow, padded with 255); None: whole images, flipped at random. ``augment='strong'``:
    :func:`wsss_edu.data.strong_augment` first. ``copy_scales``: every image once per factor,
    rescaled by it (labels by nearest neighbour) before the rest — paper 001's enlarged set.
    :func:`relation_dataset` builds one from an :class:`IRNetConfig`."""

    def __init__(
        self,
        dataset,
        folder,
        indices,
        crop: int | None = None,
        scale=(0.5, 1.5),
        stride: int = 4,
        augment: str = "flip",
        copy_scales=None,
    ):
        check_choice("augment", augment, AUGMENTS)
        self.dataset, self.folder, self.indices = dataset, Path(folder), np.asarray(indices)
        self.crop, self.scale, self.stride, self.augment = crop, scale, stride, augment
        self.copy_scales = tuple(copy_scales) if copy_scales else (None,)

    def __len__(self):
        return len(self.indices) * len(self.copy_scales)

    def __getitem__(self, j):
        from PIL import Image

        index, factor = divmod(j, len(self.copy_scales))
        s = self.dataset[int(self.indices[index])]
        img, rel = s["image"], read_mask(self.folder / f"{s['name']}.png")
        factor = self.copy_scales[factor]
        if factor is not None and factor != 1:
            h, w = rel.shape
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            img = np.array(Image.fromarray(np.asarray(img, np.uint8)).resize(size, Image.BILINEAR))
            rel = np.array(Image.fromarray(rel).resize(size, Image.NEAREST))
        gen = item_rng()
        if self.augment == "strong":
            img, rel = strong_augment(np.asarray(img, np.uint8), rel, gen)
        if self.crop is not None:
            img, rel = random_scale_crop_flip(img, rel, self.crop, self.scale, gen)
        elif gen.random() < 0.5:
            img, rel = np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(rel[:, ::-1])
        rel = labels_at_stride(torch.from_numpy(rel.astype(np.int64)), self.stride)
        return {"image": images_to_tensor(img)[0], "relation": rel}


def relation_dataset(dataset, folder, indices, cfg: IRNetConfig) -> RelationDataset:
    """IRNet's training samples as ``cfg`` says (crop, scale, augmentation, copies)."""
    return RelationDataset(
        dataset,
        folder,
        indices,
        crop=cfg.crop,
        scale=cfg.scale,
        augment=cfg.augment,
        copy_scales=cfg.copy_scales,
    )


def train_irnet(
    stages,
    dataset,
    cfg: IRNetConfig,
    device=None,
    workers: int | None = None,
    checkpoint=None,
    progress: bool = True,
) -> IRNet:
    """Train IRNet's two branches on frozen ``stages`` (:func:`backbone_stages`) with the samples of
    a :class:`RelationDataset`: :func:`irnet_loss` over pairs within ``cfg.radius``, SGD with
    polynomial decay (power 0.9, IRN's PolyOptimizer's) and momentum ``cfg.momentum`` (that
    optimiser's is its weight decay, 1e-4: the full profile's value, :data:`STEP2_PROFILE`).
    Returns the network in eval mode."""
    from torch.utils.data import DataLoader

    seed_everything(cfg.seed)
    net = IRNet(stages, cfg.width)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= cfg.batch_size,
        **loader_options(device, workers),
    )
    opt = torch.optim.SGD(
        net.param_groups(cfg.lr_boundary, cfg.lr_displacement),
        lr=cfg.lr_boundary,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    sched = poly_schedule(opt, cfg.epochs * len(loader))
    offsets = pair_offsets(cfg.radius)
    fit(
        net,
        loader,
        lambda m, b: irnet_loss(m, b, offsets, cfg.path, cfg.sources, cfg.radius),
        opt,
        cfg.epochs,
        device,
        sched,
        checkpoint=checkpoint,
        progress=progress,
        desc=f"IRNet ({len(dataset)} images)",
    )
    return net.eval()


@torch.no_grad()
def boundary_map(net: IRNet, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """The class boundary map B (N, h, w) of normalised images (N, 3, H, W), averaged with the
    mirrored image's (IRNet's inference)."""
    net.eval()
    b, _ = net(images)
    if flip:
        b = (b + net(images.flip(-1))[0].flip(-1)) / 2
    return b.float()


def walk_inputs(
    net: IRNet,
    dataset,
    cam_folder,
    indices=None,
    flip: bool = True,
    batch_size: int = 32,
    device=None,
    progress: bool = True,
) -> list:
    """What the random walk needs for the images ``indices`` of ``dataset``: per image a dict with
    the boundary map 'boundary' (h, w) (:func:`boundary_map`), its CAMs on the same stride-4 grid
    'cams' (k, h, w) for its classes 'keys' (k,) only (bilinear from the CAM folder's full-size
    maps), and the image 'size' (H, W). Batched where image sizes agree."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net.to(device)
    k = dataset.num_classes - 1
    idx = list(range(len(dataset)) if indices is None else indices)
    out = []
    bar = progress_bar(total=len(idx), desc="boundary maps", disable=not progress, leave=False)
    for _, group in same_size_batches(dataset, batch_size, idx):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        bnd = boundary_map(net, x, flip).cpu()
        for s, b in zip(group, bnd):
            keys = torch.nonzero(torch.as_tensor(s["labels"]) > 0).flatten()
            c = load_cams(cam_folder, s["name"], k)[keys]
            c = (
                F.interpolate(c[None], size=b.shape, mode="bilinear", align_corners=False)[0]
                if len(keys)
                else c.new_zeros(0, *b.shape)
            )
            out.append(
                {"boundary": b, "cams": c, "keys": keys, "size": tuple(s["image"].shape[:2])}
            )
        bar.update(len(group))
    bar.close()
    return out


def walk_all(inputs, walk: WalkConfig, batch_size: int = 64, device=None):
    """Random-walk the CAMs of every entry of :func:`walk_inputs` (:func:`random_walk`), batched
    over entries of one grid size (CAMs padded with zero maps, which stay zero). Yields
    (position in ``inputs``, walked maps (k, h, w) on the CPU)."""
    device = torch.device(device or "cpu")
    j = 0
    while j < len(inputs):
        shape = inputs[j]["boundary"].shape
        e = j
        while e < len(inputs) and e - j < batch_size and inputs[e]["boundary"].shape == shape:
            e += 1
        group = inputs[j:e]
        kmax = max(1, max(len(g["keys"]) for g in group))
        cams = torch.zeros(len(group), kmax, *shape)
        for n, g in enumerate(group):
            cams[n, : len(g["keys"])] = g["cams"]
        bnd = torch.stack([g["boundary"] for g in group])
        walked = random_walk(
            cams.to(device), bnd.to(device), walk.radius, walk.beta, walk.exp_times, path=walk.path
        ).cpu()
        for n, g in enumerate(group):
            yield j + n, walked[n, : len(g["keys"])]
        j = e


def walk_labels(walked: torch.Tensor, keys, size, bg_threshold: float | None) -> np.ndarray:
    """Pseudo-labels (H, W) int64 from one image's walked maps of its classes ``keys`` (class
    indices among the K foreground classes): :func:`walk_to_labels` (``bg_threshold=None``: no
    background plane), all 0 when the image has no class."""
    if len(keys) == 0:
        return np.zeros(size, np.int64)
    ids = np.concatenate([[0], np.asarray(keys) + 1])
    return ids[walk_to_labels(walked, torch.arange(len(keys)), bg_threshold, size).numpy()]


def walk_confusions(
    dataset, indices, inputs, walk: WalkConfig, bg_thresholds=None, crf: bool = False, device=None
) -> list:
    """Confusion meters of the walked pseudo-labels against 'mask' for the images ``indices`` of
    ``dataset`` (``inputs`` from :func:`walk_inputs` on the same images, in order), one meter per
    background threshold (default: ``walk.bg_threshold``) from one walk. ``crf``: score the labels
    after a label CRF (:func:`wsss_edu.cam.crf_label_map`) instead."""
    ts = [walk.bg_threshold] if bg_thresholds is None else list(bg_thresholds)
    meters = [ConfusionMeter(dataset.num_classes) for _ in ts]
    for j, walked in walk_all(inputs, walk, device=device):
        g, s = inputs[j], dataset[indices[j]]
        for m, t in zip(meters, ts):
            lab = walk_labels(walked, g["keys"], g["size"], t)
            m.update(
                s["mask"],
                crf_label_map(s["image"], lab, g["keys"].numpy(), background=t is not None)
                if crf
                else lab,
            )
    return meters


def confident_images(model, dataset, confidence: float = 0.8, progress: bool = True) -> np.ndarray:
    """Indices of the images of ``dataset`` whose every tag gets a classifier probability above
    ``confidence`` (paper 001's filter for IRNet's training images,
    :func:`wsss_edu.cam.confident_image_mask`). None passing raises an error naming the fix."""
    probs = classifier_probs(model, dataset, progress=progress)
    tags = torch.as_tensor(dataset_tags(dataset))
    idx = np.flatnonzero(confident_image_mask(probs, tags, confidence).numpy())
    if len(idx) == 0:
        raise ParameterError(
            f"no training image passes the confidence filter ({confidence}): lower "
            "CONFIDENCE (0 keeps every image) or train step 1's classifier longer"
        )
    return idx


def cached_confident_images(
    output_dir, model, dataset, cam_folder, confidence: float = 0.8, progress: bool = True
) -> np.ndarray:
    """:func:`confident_images` of the classifier whose CAMs are in ``cam_folder`` (its name keys
    the data and the classifier) from the artifact cache under ``output_dir``, or computed (a
    forward pass over every training image) and stored."""
    key = {"cams": Path(cam_folder).name, "confidence": confidence}
    found = cached(
        output_dir,
        "confident_images",
        key,
        lambda: [int(i) for i in confident_images(model, dataset, confidence, progress)],
        version=CODE_VERSION,
    )
    return np.asarray(found, np.int64)


def step2_key(cam_folder, cfg: IRNetConfig, backbone: str, weights=None, **extra) -> dict:
    """The cache key of step 2's artifacts: the CAMs they start from (their folder, itself keyed
    by data, classifier and CAM parameters), the IRNet settings and the backbone (and its
    weights)."""
    import dataclasses

    return {
        "cams": Path(cam_folder).name,
        "irnet": dataclasses.asdict(cfg),
        "backbone": backbone,
        "weights": weights,
        **extra,
    }


def cached_relation_labels(
    output_dir,
    dataset,
    cam_folder,
    indices,
    cfg: IRNetConfig,
    progress: bool = True,
    processes: int = 1,
    shard=None,
) -> Path:
    """The relation-label folder of (CAMs, ``cfg``'s thresholds, ``indices``) under
    ``output_dir``/cache/relations, written by :func:`write_relation_labels` (over ``processes``
    processes; this machine's ``shard`` of the images, default ``WSSS_SHARD``) if not complete;
    complete once every image's PNG is there (:func:`wsss_edu.parallel.finish_folder`)."""
    key = {
        "cams": Path(cam_folder).name,
        "fg": cfg.fg_threshold,
        "bg": cfg.bg_threshold,
        "images": params_key({"i": [int(i) for i in indices]}),
    }
    folder = artifact_path(output_dir, "relations", key, CODE_VERSION).with_suffix("")
    if not folder_complete(folder):
        spec = shard_spec(shard)
        write_relation_labels(dataset, cam_folder, folder, indices, cfg, progress, processes, spec)
        finish_folder(folder, [dataset.names[i] for i in indices], ".png", spec)
    return folder


def cached_step2(
    output_dir,
    stages,
    dataset,
    key: dict,
    cfg: IRNetConfig,
    device=None,
    workers: int | None = None,
    progress: bool = True,
) -> IRNet:
    """Step 2's network for ``key`` (:func:`step2_key`) from the artifact cache under
    ``output_dir``, or trained (:func:`train_irnet` on the :class:`RelationDataset` ``dataset``,
    resumable) and stored. ``stages``: the frozen backbone (:func:`backbone_stages`). Trains on every
    visible GPU, or on ``WSSS_TRAIN_PROCESSES`` processes (:func:`wsss_edu.distributed.trained_state`)."""

    def compute():  # here, or on several processes (wsss_edu.distributed.trained_state)
        ckpt = checkpoint_path(output_dir, "irnet", key, CODE_VERSION)
        return distributed.trained_state(
            train_irnet,
            stages=stages,
            dataset=dataset,
            cfg=cfg,
            device=device,
            workers=workers,
            checkpoint=ckpt,
            progress=progress,
        )

    state = cached(output_dir, "irnet", key, compute, version=CODE_VERSION)
    net = IRNet(stages, cfg.width)
    net.load_state_dict(state)
    return net.to(device or "cpu").eval()


def pseudo_label_folder(output_dir, key: dict, walk: WalkConfig) -> Path:
    """Where the walked pseudo-labels of (step 2 ``key``, ``walk``) live: a folder of PNGs."""
    import dataclasses

    return artifact_path(
        output_dir, "pseudo_labels", {**key, "walk": dataclasses.asdict(walk)}, CODE_VERSION
    ).with_suffix("")


def cached_pseudo_labels(
    output_dir,
    net: IRNet,
    dataset,
    cam_folder,
    key: dict,
    walk: WalkConfig,
    chunk: int = 256,
    device=None,
    progress: bool = True,
    shard=None,
) -> Path:
    """Step 2's output: the random-walk pseudo-labels of every image of ``dataset`` as grey PNGs
    named after the images (0 background, c + 1 class c), in :func:`pseudo_label_folder`. Works
    through the images ``chunk`` at a time (memory bounded) and skips PNGs already written, so an
    interrupted pass resumes; a 'complete' marker says the folder is whole. ``shard`` ((i, n) or
    'i/n'; default: ``WSSS_SHARD``, else all): this machine's share of the images when several
    share the output folder; the marker comes once every image is there."""
    folder = pseudo_label_folder(output_dir, key, walk)
    if folder_complete(folder):
        return folder
    names, spec = dataset.names, shard_spec(shard)
    todo = pending(range(len(dataset)), lambda i: folder / f"{names[i]}.png", spec)
    bar = progress_bar(total=len(todo), desc="random walk", disable=not progress, leave=False)
    for c in range(0, len(todo), chunk):
        idx = todo[c : c + chunk]
        inputs = walk_inputs(net, dataset, cam_folder, idx, device=device, progress=False)
        for j, walked in walk_all(inputs, walk, device=device):
            g = inputs[j]
            lab = walk_labels(walked, g["keys"], g["size"], walk.bg_threshold)
            write_mask(folder / f"{names[idx[j]]}.png", lab.astype(np.uint8))
            bar.update(1)
    bar.close()
    finish_folder(folder, names, ".png", spec)
    return folder


def pseudo_label_confusion(dataset, folder, indices=None):
    """The confusion meter of a pseudo-label folder (PNGs named after the images) against the
    samples' 'mask' (255 ignored). A missing PNG raises an error naming the step that writes it."""
    meter = ConfusionMeter(dataset.num_classes)
    for i in range(len(dataset)) if indices is None else indices:
        s = dataset[i]
        path = Path(folder) / f"{s['name']}.png"
        if not path.exists():
            raise FileNotFoundError(
                f"no pseudo-label for image {s['name']!r} in {folder}: run "
                "notebook 04 (wsss_edu.steps.irnet_step.cached_pseudo_labels) first"
            )
        meter.update(s["mask"], read_mask(path))
    return meter


# The walk settings searched on the validation split: {name: (quick, full)}; full = IRNet's only.
WALK_GRID = dict(
    WALK_RADII=([2, 3, 5], [5]),
    WALK_EXP_TIMES=([1, 2, 4, 8], [8]),
    WALK_BETAS=([4, 10], [10]),
    WALK_BG=([0.1, 0.2, 0.25, 0.3, 0.4, 0.5], [0.25]),
)
# MSRC's photos give 80x54-cell grids (the toy world's: 16x16), walked by the pair route
# (random_walk): 2^exp_times steps each; the quick grid stays small to fit a laptop's minutes.
WALK_GRID_DATASETS = {
    "msrc": dict(WALK_RADII=([5], [5]), WALK_EXP_TIMES=([4, 6], [8]), WALK_BETAS=([10], [10]))
}


def choose_walk(
    net: IRNet,
    val_dataset,
    val_cam_folder,
    radii,
    exp_times,
    betas,
    bg_thresholds,
    device=None,
    progress: bool = True,
    path: str = "thick",
) -> tuple:
    """The walk settings with the best mIoU of the walked pseudo-labels on a labelled *validation*
    split, over the grid radii × exp_times × betas × bg_thresholds (:func:`walk_confusions`), the
    affinities along ``path`` (:func:`path_points`).
    Returns (best :class:`WalkConfig`, {(radius, exp_times, beta, bg): mIoU})."""
    import itertools

    inputs = walk_inputs(net, val_dataset, val_cam_folder, device=device, progress=progress)
    idx = list(range(len(val_dataset)))
    grid = {}
    for r, t, b in progress_bar(
        list(itertools.product(radii, exp_times, betas)),
        desc="walk grid",
        disable=not progress,
        leave=False,
    ):
        for bg, m in zip(
            bg_thresholds,
            walk_confusions(
                val_dataset,
                idx,
                inputs,
                WalkConfig(r, b, t, path=path),
                bg_thresholds,
                device=device,
            ),
        ):
            grid[(r, t, b, bg)] = m.miou
    r, t, b, bg = max(grid, key=grid.get)
    return WalkConfig(radius=r, beta=b, exp_times=t, bg_threshold=bg, path=path), grid


def cached_walk_choice(
    output_dir,
    net: IRNet,
    val_dataset,
    val_cam_folder,
    key: dict,
    grid: dict,
    device=None,
    progress: bool = True,
    path: str = "thick",
) -> tuple:
    """:func:`choose_walk` over ``grid`` ({'WALK_RADII', 'WALK_EXP_TIMES', 'WALK_BETAS',
    'WALK_BG'}: lists) for the network of ``key``, from the artifact cache or searched and stored.
    Returns (best :class:`WalkConfig`, {(radius, exp_times, beta, bg): val mIoU})."""

    def search():
        walk, scores = choose_walk(
            net,
            val_dataset,
            val_cam_folder,
            grid["WALK_RADII"],
            grid["WALK_EXP_TIMES"],
            grid["WALK_BETAS"],
            grid["WALK_BG"],
            device,
            progress,
            path,
        )
        return {
            "walk": [walk.radius, walk.beta, walk.exp_times, walk.bg_threshold, walk.path],
            "grid": [list(k) + [v] for k, v in scores.items()],
        }

    found = cached(
        output_dir,
        "walk_choice",
        {**key, "grid": grid, "val_cams": Path(val_cam_folder).name, "path": path},
        search,
        version=CODE_VERSION,
    )
    return WalkConfig(*found["walk"]), {tuple(r[:4]): r[4] for r in found["grid"]}


# IRNet's knobs as notebooks 04-06 take them: {name: (quick, full)} (params.profile_values).
# IR_MOMENTUM: IRN's PolyOptimizer passes its weight decay (1e-4) into SGD's momentum slot, so the
# reference trains with no momentum to speak of; the full profile takes that value, with IRN's
# learning rates, so that they mean what they mean there (with 0.9 the effective step is 10x).
# The quick profile keeps 0.9, the value its learning rate and epochs were set with (a few hundred
# steps on a small frozen backbone); with 1e-4 there, notebook 04's labels fall from 0.488 to
# 0.463 mIoU on train (measured, see 04's text). IR_AUGMENT / IR_COPY_SCALES: paper 001's strong
# augmentation and rescaled copies (0.5, 1, 1.5, 2) in the full profile; the quick profile leaves
# them out (a 64-px scene at 0.5 is 32 px, 8×8 cells at stride 4, and four copies cost 4× the time).
STEP2_PROFILE = dict(
    IR_BACKBONE=("classifier", "resnet50"),
    IR_EPOCHS=(5, 3),
    IR_RADIUS=(5, 10),
    IR_BATCH=(16, 32),
    IR_CROP=(None, 512),
    IR_MOMENTUM=(0.9, 1e-4),
    IR_AUGMENT=("flip", "strong"),
    IR_COPY_SCALES=(None, (0.5, 1.0, 1.5, 2.0)),
)
# Where a real dataset's values differ: {dataset: {name: (quick, full)}} (params.for_dataset).
# MSRC's quick profile: IRNet's branches on step 1's frozen MobileNetV2 (ImageNet, fine-tuned on
# the tags), random 224-px crops of its ~320x213 photos (rescaled 0.5-1.5).
STEP2_DATASETS = {"msrc": dict(IR_EPOCHS=(3, 3), IR_BATCH=(8, 16), IR_CROP=(224, 320))}


def without_plane_if_no_background(cfg: IRNetConfig, grid: dict, has_background: bool) -> tuple:
    """(``cfg``, ``grid``) as a dataset with or without a background class needs them: without
    one, no background plane anywhere — ``cfg.bg_threshold`` None (the relation labels of
    :func:`relation_labels_without_background`) and the walk grid's ``WALK_BG`` [None]."""
    if has_background:
        return cfg, grid
    return dataclasses.replace(cfg, bg_threshold=None), {**grid, "WALK_BG": [None]}


def step2_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 04's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`STEP2_PROFILE` and :data:`WALK_GRID`, with :data:`STEP2_DATASETS` and
    :data:`WALK_GRID_DATASETS`'s values)."""
    table = params.for_dataset(STEP2_PROFILE, STEP2_DATASETS, dataset) | params.for_dataset(
        WALK_GRID, WALK_GRID_DATASETS, dataset
    )
    return params.profile_values(profile, table, **knobs)


def step2_config(
    profile: str,
    seed: int,
    CONFIDENCE: float = 0.8,
    IR_LR: float = 0.1,
    WEIGHTS="imagenet",
    IR_PATH: str = "thick",
    IR_SOURCES: str = "all",
    dataset: str = "toy",
    **knobs,
) -> tuple:
    """Notebook 04's IRNet settings from its parameters (same names; ``knobs``: the
    :data:`STEP2_PROFILE` names, None = the profile's value on ``dataset``,
    :data:`STEP2_DATASETS`): (:class:`IRNetConfig`, backbone, backbone weights) as :func:`step2`
    takes them. The displacement branch learns at 10 x IR_LR. (On a dataset without a background
    class, :func:`step2` sets ``bg_threshold=None``.)"""
    v = step2_values(profile, dataset, **knobs)
    cfg = IRNetConfig(
        confidence=CONFIDENCE,
        radius=v["IR_RADIUS"],
        epochs=v["IR_EPOCHS"],
        batch_size=v["IR_BATCH"],
        lr_boundary=IR_LR,
        lr_displacement=10 * IR_LR,
        momentum=v["IR_MOMENTUM"],
        crop=v["IR_CROP"],
        seed=seed,
        path=IR_PATH,
        sources=IR_SOURCES,
        augment=v["IR_AUGMENT"],
        copy_scales=tuple(v["IR_COPY_SCALES"]) if v["IR_COPY_SCALES"] else None,
    )
    return cfg, v["IR_BACKBONE"], WEIGHTS if v["IR_BACKBONE"] == "resnet50" else None


@dataclass
class Step2:
    """Notebook 04's result as later notebooks need it: the trained network, its cache key, the
    walk chosen on val (with the grid's scores) and the pseudo-label folder of the training split
    (the chosen walk's, or at the background threshold :func:`step2` was given)."""

    net: IRNet
    key: dict
    walk: WalkConfig
    grid: dict
    folder: Path


def step2(
    setup,
    st,
    cfg: IRNetConfig,
    backbone: str = "classifier",
    weights=None,
    walk_grid: dict | None = None,
    workers: int = 0,
    progress: bool = True,
    labels_bg: float | None = None,
) -> Step2:
    """Notebook 04 in one call, from step 1's result ``st`` (:func:`wsss_edu.steps.cam_step.step1`): relation
    labels of the confident images, IRNet on the frozen ``backbone`` ('classifier': step 1's
    stages; 'resnet50'), the walk chosen on val over ``walk_grid`` (:data:`WALK_GRID`'s names ->
    lists; None: the profile's defaults) and the training split's pseudo-labels. Everything comes
    from the cache when notebook 04 ran with the same parameters. ``workers``: DataLoader workers,
    and processes for the relation labels' CRFs. ``labels_bg``: the background threshold of the
    returned pseudo-labels (the chosen walk with that plane; None: the walk's own, chosen on val) —
    notebooks 05-06 train step 3 on paper 001's 0.3. On a dataset without a background class
    (``st.has_background`` False) nothing has a background plane: ``cfg.bg_threshold`` and
    ``WALK_BG`` become None (:func:`relation_labels_without_background`) and ``labels_bg`` does
    not apply."""
    check = ("classifier", "resnet50")
    if backbone not in check:
        raise ValueError(f"backbone {backbone!r} is not valid; choose one of {check}")
    g = {
        k: v
        for k, v in step2_values(setup.profile, setup.dataset, **(walk_grid or {})).items()
        if k in WALK_GRID
    }
    cfg, g = without_plane_if_no_background(cfg, g, st.has_background)
    labels_bg = labels_bg if st.has_background else None
    confident = cached_confident_images(
        setup.output_dir, st.model, st.train_view, st.folder, cfg.confidence, progress
    )
    rel = cached_relation_labels(
        setup.output_dir,
        st.train_view,
        st.folder,
        confident,
        cfg,
        progress,
        processes=max(1, workers),
    )
    stages = backbone_stages(st.model if backbone == "classifier" else "resnet50", weights)
    key = step2_key(st.folder, cfg, backbone, weights)
    data = relation_dataset(st.train_view, rel, confident, cfg)
    net = cached_step2(setup.output_dir, stages, data, key, cfg, setup.device, workers, progress)

    walk, grid = cached_walk_choice(
        setup.output_dir, net, st.val_view, st.val_folder, key, g, setup.device, progress, cfg.path
    )
    labelled = walk if labels_bg is None else dataclasses.replace(walk, bg_threshold=labels_bg)
    folder = cached_pseudo_labels(
        setup.output_dir,
        net,
        st.train_view,
        st.folder,
        key,
        labelled,
        device=setup.device,
        progress=progress,
    )
    return Step2(net, key, walk, grid, folder)
