"""Paper 000's experiments (notebooks 02 and 02b): one training routine for every row of the paper's
Tables 1 and 2, run in worker processes and cached. The method (the aleatoric head, the expected
probability, the uncertain and bootstrapped losses, the box labels) is
:mod:`wsss_edu.label_uncertainty`.

* the rows: :data:`METHODS` (all pixel-perfect, pixel-perfect only, boxes as masks, box interiors
  ignored, ours), :class:`BootstrapConfig` (the schedule of ours), :func:`method_loss` (each row's
  loss at an epoch);
* :func:`train_experiment` (one network of one row: data, schedule, evaluation every few epochs,
  optional watched images), :func:`run_experiments` (many, in worker processes, each cached under
  :func:`experiment_key`);
* what the notebooks read from the histories: :func:`collapsed` / :func:`drop_collapsed` (a run
  whose predicted object share fell below :data:`COLLAPSE_FRACTION` of the true one),
  :func:`labelled_object_share`, :func:`batches_without_object`, :func:`uncertainty_auroc`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import artifact_path, load_artifact, save_artifact
from ..data import images_to_tensor
from ..errors import DataFileError, check_choice
from ..label_uncertainty import (
    REGIONS,
    AleatoricUNet,
    combined_loss,
    mc_uncertain_ce,
    multiclass_loss,
    uncertain_bce,
)
from ..labels import IGNORE
from ..metrics import ConfusionMeter, auroc
from ..parallel import map_jobs
from ..progress import bar as progress_bar
from ..train import seed_everything

# This step's code version, in its cache keys (wsss_edu.cache) and in the pipeline's done.json:
# bump it when a change alters what the step computes, so that its artifacts (and what is keyed by
# them downstream) are computed again and the notebooks that use it rerun; the rest is reused.
CODE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# Experiments (notebook 02): one training routine for every row of the paper's Tables 1 and 2
# ------------------------------------------------------------------------------------------------

METHODS = ("all_pp", "pp_only", "boxes_bce", "ignore_box", "ours")
METHOD_COLORS = {
    "all_pp": "gray",
    "pp_only": "tab:blue",
    "boxes_bce": "tab:red",
    "ignore_box": "tab:orange",
    "ours": "tab:green",
}
"""One colour per row of the tables, the same in every figure of notebooks 02 and 02b."""


def method_names(n_train: int, n_pp: int) -> dict:
    """Readable names of the rows of Table 1/2 for ``n_train`` training images of which ``n_pp``
    are pixel-perfect."""
    return {
        "all_pp": f"all PP ({n_train})",
        "pp_only": f"PP only ({n_pp})",
        "boxes_bce": f"{n_pp} PP + boxes, BCE",
        "ignore_box": f"{n_pp} PP + boxes, ignore interiors",
        "ours": f"{n_pp} PP + boxes, ours",
    }


@dataclass
class BootstrapConfig:
    """Every choice the poster leaves open, in one place. Defaults: the poster's tau and slope, and
    the readings that avoid the failures notebook 02 shows (eq. 2 trains sigma^2 only, y* = the hard
    belief, W detached, the uncertain loss inside boxes). Notebook 02's binary table uses
    ``warmup_epochs`` = 3/4 of the epochs and ``tau=0.5``: see its text for why and how robust."""

    tau: float = 1.0
    slope: float = 0.2
    target: str = "hard_belief"
    detach_weight: bool = True
    region: str = "boxes"
    warmup_epochs: int = 3
    """Epochs at the start without bootstrapping: the uncertain loss (eq. 2 / eq. 6) alone inside
    boxes, so that the network has a belief to bootstrap to and, when bootstrapping starts, sigma^2
    already marks where it disagrees with the boxes. With ``uncertainty_trains_mu=False`` that loss
    trains sigma^2 only and mu ignores box interiors; with True it also pulls mu towards the box
    labels, damped by sigma^2 (the aleatoric loss alone, before bootstrapping is switched on)."""
    uncertainty_trains_mu: bool = False
    warmup_on_boxes: bool = False
    """During the warm-up, mu learns the box labels with plain BCE / CE (the "boxes" row) while
    sigma^2 learns from the uncertain loss on a detached mu; bootstrapping then starts from a
    network that has seen every object's box (multi-class: a thin class is then learned at all)."""
    mc_samples: int = 8
    """Monte-Carlo samples of the multi-class loss (eq. 5-6)."""
    initial_variance: float | None = None
    """sigma^2 at initialisation (None: softplus(0) ~ 0.69, whatever the head's bias starts at)."""


def method_loss(
    method: str,
    mu,
    sigma2,
    target,
    in_box,
    epoch: int,
    cfg: BootstrapConfig,
    multiclass: bool = False,
    generator=None,
):
    """The training loss of one row of Table 1/2 for a batch. ``target`` holds masks on
    pixel-perfect images and rasterised boxes elsewhere (255 = ignore); ``in_box`` marks box
    interiors of box-labelled images.

    * 'all_pp', 'pp_only', 'boxes_bce': plain BCE / CE on the target (the data decides the row);
    * 'ignore_box': box interiors ignored (a natural baseline the poster does not list);
    * 'ours': during ``cfg.warmup_epochs`` the uncertain loss without bootstrapping inside boxes
      (with ``uncertainty_trains_mu=False``: mu ignores box interiors while sigma^2 learns from
      eq. 2 / eq. 6; with ``cfg.warmup_on_boxes``: mu learns the boxes, as the 'boxes_bce'
      row); then the uncertain + bootstrapped loss inside boxes (binary:
      :func:`combined_loss`; multi-class: :func:`multiclass_loss`), plain BCE / CE elsewhere.
    """
    check_choice("method", method, METHODS)
    check_choice("region", cfg.region, REGIONS)
    valid = target != IGNORE
    y = torch.where(valid, target, torch.zeros_like(target)).float()  # binary target, 0 at ignore
    warm = method == "ours" and epoch < cfg.warmup_epochs
    if warm and cfg.warmup_on_boxes:
        return _box_warmup_loss(mu, sigma2, target, y, in_box, valid, multiclass, cfg, generator)
    if warm and not multiclass:
        # eq. (2) alone inside boxes: it trains sigma^2, and mu only if cfg.uncertainty_trains_mu
        # (otherwise box interiors carry no gradient to mu: it learns from the certain pixels)
        return combined_loss(
            mu[:, 0],
            sigma2[:, 0],
            y,
            in_box,
            valid,
            bootstrap=False,
            uncertainty_trains_mu=cfg.uncertainty_trains_mu,
        )
    if warm:  # multi-class: the same warm-up as above (eq. 6 without eq. 7)
        return multiclass_loss(
            mu,
            sigma2,
            target,
            in_box,
            cfg.tau,
            cfg.mc_samples,
            False,
            generator,
            uncertainty_trains_mu=cfg.uncertainty_trains_mu,
        )
    if method == "ignore_box":
        valid = valid & ~in_box
    if method != "ours":
        if multiclass:
            t = torch.where(valid, target, torch.full_like(target, IGNORE))
            return F.cross_entropy(mu, t, ignore_index=IGNORE)
        per = F.binary_cross_entropy_with_logits(mu[:, 0], y, reduction="none")
        return (per * valid).sum() / valid.sum().clamp(min=1)
    unc = in_box if cfg.region == "boxes" else valid
    if multiclass:
        return multiclass_loss(
            mu,
            sigma2,
            target,
            unc,
            cfg.tau,
            cfg.mc_samples,
            True,
            generator,
            cfg.uncertainty_trains_mu,
        )
    return combined_loss(
        mu[:, 0],
        sigma2[:, 0],
        y,
        unc,
        valid,
        cfg.tau,
        cfg.slope,
        cfg.target,
        cfg.detach_weight,
        True,
        cfg.uncertainty_trains_mu,
    )


def _box_warmup_loss(mu, sigma2, target, y, in_box, valid, multiclass, cfg, generator):
    """The warm-up of ``cfg.warmup_on_boxes``: plain BCE / CE of mu on the targets (boxes on
    box-labelled images), plus the uncertain loss (eq. 2 / eq. 6) of a detached mu inside boxes,
    which trains sigma^2 only. ``y``: the binary target (0 where ignored)."""
    if multiclass:
        plain = F.cross_entropy(mu, target, ignore_index=IGNORE, reduction="none")
        unc = mc_uncertain_ce(mu.detach(), sigma2, target, cfg.mc_samples, generator)
    else:
        plain = F.binary_cross_entropy_with_logits(mu[:, 0], y, reduction="none")
        unc = uncertain_bce(mu[:, 0].detach(), sigma2[:, 0], y)
    loss = plain + torch.where(in_box, unc, torch.zeros_like(unc))
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def experiment_arrays(arrays: dict, method: str) -> dict:
    """The training arrays a method sees: 'all_pp' trains on every true mask, 'pp_only' on the
    pixel-perfect images alone, the others on the mixed set."""
    check_choice("method", method, METHODS)
    if method == "all_pp":
        return {**arrays, "target": arrays["mask"], "in_box": np.zeros_like(arrays["in_box"])}
    if method == "pp_only":
        keep = arrays["pixel_perfect"]
        return {k: v[keep] for k, v in arrays.items()}
    return arrays


@torch.no_grad()
def predict_labels(net, images: torch.Tensor, batch_size: int = 100):
    """Hard labels, sigma^2 and mu of an :class:`AleatoricUNet` for normalised images (binary:
    mu > 0; multi-class: argmax mu)."""
    net.eval()
    device = next(net.parameters()).device
    mus, s2s = [], []
    for i in range(0, len(images), batch_size):
        mu, s2 = net(images[i : i + batch_size].to(device))
        mus.append(mu.float().cpu())
        s2s.append(s2.float().cpu())
    mu, s2 = torch.cat(mus), torch.cat(s2s)
    labels = (mu[:, 0] > 0).long() if mu.shape[1] == 1 else mu.argmax(1)
    return labels, s2, mu


BATCH_SIZE = 16
"""Images per batch of :func:`train_experiment` (notebooks 02 and 02b)."""


def train_experiment(
    arrays: dict,
    val: dict,
    method: str,
    num_logits: int = 1,
    epochs: int = 15,
    seed: int = 0,
    cfg: BootstrapConfig | None = None,
    width: int = 8,
    lr: float = 2e-3,
    batch_size: int = BATCH_SIZE,
    watch=None,
    device="cpu",
    pp_per_batch: int | None = None,
    eval_every: int = 1,
    progress: bool = True,
    lr_schedule: str = "cosine",
):
    """Train one :class:`AleatoricUNet` for one row of Table 1 (``num_logits=1``) or Table 2
    (``num_logits`` = number of classes) and return ``(net, history)``; ``history['miou']`` holds
    the validation IoU of the object class (binary) or the mIoU (multi-class) after every epoch,
    ``history['iou']`` the IoU of every class (background first).
    An epoch is the same number of optimiser steps for every method (one pass over the whole
    mixed set): 'pp_only' cycles through its few images rather than training less.
    ``watch`` (images, (N, H, W, 3) uint8) adds ``history['watch']``: per epoch, the predicted
    labels and sigma^2 of those images (the labels evolving, for figures; also in a worker).
    The data stay on the CPU; each batch is moved to ``device``, where the network trains.
    ``pp_per_batch`` (methods on the mixed set only): every batch holds that many pixel-perfect
    images (cycled) and box-labelled ones for the rest, instead of a plain shuffle.
    ``eval_every``: validate after every that many epochs and after the last (``history['epoch']``
    lists them, 1-based); ``eval_every=epochs`` validates once, at the end (a table's row needs no
    curve). Every validation also records ``history['pred_share']``, the share of the validation
    pixels of known label (not 255) predicted as each class (background first), and
    ``history['fg_share']``, the share predicted as any object class; ``history['true_share']`` and
    ``history['true_fg_share']`` hold the same shares of the true masks (for :func:`collapsed`).
    ``lr_schedule`` (:data:`LR_SCHEDULES`, :func:`lr_factor`): 'cosine' (the default) anneals the
    learning rate once over all epochs, 'constant' keeps it, 'restart' anneals it over the first
    ``cfg.warmup_epochs`` epochs and again, from ``lr``, over the rest (for every method, so that
    the rows stay comparable)."""
    cfg = cfg or BootstrapConfig()
    data = experiment_arrays(arrays, method)
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    x = images_to_tensor(data["image"])
    target = torch.as_tensor(data["target"]).long()
    in_box = torch.as_tensor(data["in_box"])
    xv, mv = images_to_tensor(val["image"]), torch.as_tensor(val["mask"]).long()
    device = torch.device(device)
    net = AleatoricUNet(num_logits, width=width, initial_variance=cfg.initial_variance).to(device)
    mc_gen = gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr)
    per_epoch = (len(arrays["image"]) + batch_size - 1) // batch_size
    steps = epochs * per_epoch
    sched = _lr_scheduler(
        opt, lr_schedule, steps, min(max(cfg.warmup_epochs, 0), epochs) * per_epoch
    )
    multiclass = num_logits > 1
    n_cls = num_logits if multiclass else 2
    history = {"epoch": [], "miou": [], "iou": [], "pred_share": [], "fg_share": []} | (
        {} if watch is None else {"watch": []}
    )
    history["true_share"] = _class_shares(mv, n_cls)
    history["true_fg_share"] = 1.0 - history["true_share"][0]
    xw = None if watch is None else images_to_tensor(watch)
    balanced = bool(pp_per_batch) and method in ("boxes_bce", "ignore_box", "ours")
    if balanced:
        pp = torch.as_tensor(np.flatnonzero(data["pixel_perfect"]))
        bb = torch.as_tensor(np.flatnonzero(~data["pixel_perfect"]))
        k = min(pp_per_batch, batch_size)
    for epoch in progress_bar(
        range(epochs), desc=f"{method} seed {seed}", leave=False, disable=not progress
    ):
        net.train()
        if balanced:
            pp_order = _cycled_permutation(pp, per_epoch * k, gen).view(per_epoch, k)
            bb_order = _cycled_permutation(bb, per_epoch * (batch_size - k), gen).view(
                per_epoch, -1
            )
            order = torch.cat([pp_order, bb_order], 1).flatten()
        else:
            order = _cycled_permutation(torch.arange(len(x)), per_epoch * batch_size, gen)
        for b in range(0, per_epoch * batch_size, batch_size):
            j = order[b : b + batch_size]
            xb, tb, ib = x[j].to(device), target[j].to(device), in_box[j].to(device)
            if torch.rand(1, generator=gen).item() < 0.5:
                xb, tb, ib = xb.flip(-1), tb.flip(-1), ib.flip(-1)
            mu, s2 = net(xb)
            loss = method_loss(method, mu, s2, tb, ib, epoch, cfg, multiclass, mc_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % max(eval_every, 1) == 0 or epoch == epochs - 1:
            pred, _, _ = predict_labels(net, xv)
            meter = ConfusionMeter(n_cls).update(mv, pred)
            history["epoch"].append(epoch + 1)
            history["miou"].append(float(meter.iou[1]) if not multiclass else meter.miou)
            history["iou"].append([float(v) for v in meter.iou])
            shares = _class_shares(mv, n_cls, pred)
            history["pred_share"].append(shares)
            history["fg_share"].append(1.0 - shares[0])
        if xw is not None:
            labels, s2, _ = predict_labels(net, xw)
            history["watch"].append((labels.numpy().astype(np.uint8), s2.numpy()))
    return net, history


LR_SCHEDULES = ("cosine", "constant", "restart")


def lr_factor(step: int, steps: int, schedule: str = "cosine", restart: int = 0) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``steps``, as a fraction of the
    peak: 'cosine', 0.5 (1 + cos(pi step / steps)), one annealing over the whole training (with
    notebook 02's warm-up of 12 epochs of 16, bootstrapping runs at 15 % of the peak and below);
    'constant', 1; 'restart', a cosine over the first ``restart`` steps (the warm-up) and another,
    from the peak again, over the rest (a cosine when ``restart`` is 0 or ``steps``)."""
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "constant":
        return 1.0
    if schedule == "restart" and 0 < restart < steps:
        if step >= restart:
            step, steps = step - restart, steps - restart
        else:
            steps = restart
    return 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))


def _lr_scheduler(opt, schedule: str, steps: int, restart: int):
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "cosine":  # torch's own: the numbers of the notebooks, bit for bit
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # quiet final epochs
    return torch.optim.lr_scheduler.LambdaLR(
        opt, partial(lr_factor, steps=steps, schedule=schedule, restart=restart)
    )


def _class_shares(mask: torch.Tensor, n_cls: int, pred: torch.Tensor | None = None) -> list:
    """The share of the pixels of known label (``mask`` != 255) that are of each class: in
    ``mask`` itself, or in the prediction ``pred`` on those pixels."""
    known = mask != IGNORE
    labels = (mask if pred is None else pred.to(mask.device))[known].long().clamp(0, n_cls - 1)
    counts = torch.bincount(labels, minlength=n_cls)[:n_cls].double()
    return [float(v) for v in counts / max(int(known.sum()), 1)]


COLLAPSE_FRACTION = 0.1
"""A run whose predictions call foreground on fewer than this fraction of the pixels the true masks
do is collapsed (:func:`collapsed`)."""


def collapsed(history: dict, at: int = -1, fraction: float = COLLAPSE_FRACTION) -> bool:
    """Whether a run of :func:`train_experiment` had collapsed to "no object anywhere" at its
    validation ``at`` (an index into ``history['epoch']``; default: the last): its predicted
    foreground share of the validation pixels (``history['fg_share']``, every object class
    together) is below ``fraction`` of the true one (``history['true_fg_share']``). With 0.1, a
    collapsed run's IoU is at most 0.1; IoU 0 with no pixel called foreground is the extreme case.
    A validation set without foreground never counts as collapsed. (Multi-class: a run that loses
    one class but keeps another is not collapsed; its per-class IoU shows it.)"""
    true = float(history["true_fg_share"])
    return bool(true > 0 and float(history["fg_share"][at]) < fraction * true)


def _labelled(arrays: dict, ignore_interiors: bool) -> np.ndarray:
    """The pixels a row's loss has a label for: not 255 and, when ``ignore_interiors``, not inside a
    box of a box-labelled image."""
    labelled = arrays["target"] != IGNORE
    return labelled & ~arrays["in_box"] if ignore_interiors else labelled


def labelled_object_share(arrays: dict, ignore_interiors: bool) -> float:
    """The share of object pixels (any class but background) among the pixels a row's loss has a
    label for, in a mixed set (:func:`mixed_supervision_arrays`): with box interiors ignored (the
    'ignore_box' row and the warm-up of 'ours') only the pixel-perfect images label objects while
    every image labels background, so the share falls far below the true one. The cause of the
    collapses of :func:`collapsed` (``tools/collapse_check.py``)."""
    labelled = _labelled(arrays, ignore_interiors)
    return float(((arrays["target"] > 0) & labelled).sum() / max(int(labelled.sum()), 1))


def batches_without_object(
    arrays: dict, batch_size: int, ignore_interiors: bool, draws: int = 2000, seed: int = 0
) -> float:
    """The share of random batches (``batch_size`` images drawn without replacement, ``draws``
    times, seeded) in which no pixel the loss has a label for is an object
    (:func:`labelled_object_share`): a batch that only ever says "background"."""
    labelled = _labelled(arrays, ignore_interiors)
    has = ((arrays["target"] > 0) & labelled).reshape(len(labelled), -1).any(1)
    rng = np.random.default_rng(seed)
    picks = np.stack(
        [rng.choice(len(has), min(batch_size, len(has)), replace=False) for _ in range(draws)]
    )
    return float((~has[picks].any(1)).mean())


def drop_collapsed(items, flags) -> tuple:
    """The ``items`` (one per run: scores, curves) of the runs whose ``flags`` (:func:`collapsed`)
    are False, and a note for the row of a table: '' when no run collapsed, ' (1 of 3 collapsed)'
    when some did (they are left out), ' (all 3 collapsed)' when all did (all are kept then, so
    that the row still shows what they reached)."""
    items, flags = list(items), [bool(f) for f in flags]
    if len(items) != len(flags):
        raise ValueError(f"{len(items)} runs but {len(flags)} collapse flags")
    n = sum(flags)
    if n == 0:
        return items, ""
    if n == len(items):
        return items, f" (all {n} collapsed)"
    return [x for x, f in zip(items, flags) if not f], f" ({n} of {len(items)} collapsed)"


def _cycled_permutation(items: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` items drawn as successive random permutations of ``items`` (each used once per pass)."""
    reps = (n + len(items) - 1) // max(len(items), 1)
    return torch.cat([items[torch.randperm(len(items), generator=gen)] for _ in range(reps)])[:n]


def uncertainty_auroc(sigma2, positive, negative) -> float:
    """How well sigma^2 ranks the pixels of ``positive`` (e.g. background inside boxes: the box label
    is wrong) above those of ``negative`` (object pixels inside boxes: the label is right): the area
    under the ROC curve (:func:`wsss_edu.metrics.auroc`). 1 = the uncertainty marks exactly the
    wrong labels; 0.5 = it knows nothing."""
    return auroc(sigma2, positive, negative)


def _experiment(kwargs):
    return train_experiment(**kwargs, progress=False)[1]


def experiment_key(job: dict) -> dict:
    """What decides a :func:`train_experiment` run's history, as a JSON-able cache key: its keyword
    arguments, each array by a digest of its content (dtype, shape, bytes), a config as its fields."""
    import dataclasses
    import hashlib

    def key(v):
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            head = f"{a.dtype.str}{a.shape}".encode()
            return "sha1:" + hashlib.sha1(head + a.tobytes()).hexdigest()[:16]
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {"config": type(v).__name__} | key(dataclasses.asdict(v))
        if isinstance(v, dict):
            return {str(k): key(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [key(x) for x in v]
        return v

    return key(dict(job))


def _as_numpy(obj):
    """A stored history back as :func:`train_experiment` returned it: tensors as NumPy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _as_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_as_numpy(v) for v in obj]
    return obj


def run_experiments(
    jobs: list, processes: int = 1, desc: str = "experiments", output_dir=None
) -> list:
    """Run many :func:`train_experiment` calls (``jobs``: dicts of its keyword arguments) and return
    their histories, in order; ``processes`` > 1 runs them in worker processes
    (:func:`wsss_edu.parallel.map_jobs`: the threads split between them).
    ``output_dir``: keep each history in its artifact cache (``cache/experiments``, keyed by
    :func:`experiment_key`), so a rerun of the notebook trains only what is not there yet."""
    if output_dir is None:
        return map_jobs(_experiment, jobs, processes, desc)

    def stored(path):
        try:
            return _as_numpy(load_artifact(path)) if path.exists() else None
        except DataFileError as e:  # damaged, interrupted or without digest: train again
            warnings.warn(f"{e}; training it again", stacklevel=3)
            return None

    keys = [experiment_key(j) for j in jobs]
    paths = [artifact_path(output_dir, "experiments", k, CODE_VERSION) for k in keys]
    histories = [stored(p) for p in paths]
    todo = [i for i, h in enumerate(histories) if h is None]
    trained = map_jobs(
        _experiment, [jobs[i] for i in todo], processes, desc, done=len(jobs) - len(todo)
    )
    for i, h in zip(todo, trained):
        save_artifact(paths[i], h, keys[i], CODE_VERSION)
        histories[i] = _as_numpy(load_artifact(paths[i]))
    return histories
