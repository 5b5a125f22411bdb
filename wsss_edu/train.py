"""Training helpers: a device that always works, seeding, a training loop with a ``tqdm.auto``
progress bar, AMP on GPU, checkpoints as plain state_dicts (``weights_only=True``-loadable) and
resume after interruption, and segmentation evaluation."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D
from .errors import ParameterError
from .io import atomic_path
from .labels import IGNORE
from .metrics import ConfusionMeter


def get_device(device: str = "auto") -> torch.device:
    """'auto' → cuda if available, else mps if available, else cpu. An explicit device that is not
    available raises an error naming the ones that are."""
    avail = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
        (["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])
    if device in (None, "", "auto"):
        return torch.device("cuda" if "cuda" in avail else "mps" if "mps" in avail else "cpu")
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"DEVICE={device!r} is not valid; choose one of: 'auto', 'cpu', "
                             f"'cuda', 'cuda:N', 'mps'")
    if kind not in avail:
        raise ParameterError(f"DEVICE={device!r} is not available on this machine; available: "
                             f"{['auto'] + avail}")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def to_device(batch, device):
    """Move every tensor of a (nested) batch to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch: int = -1,
                    history: dict | None = None) -> Path:
    """Save plain state_dicts (model, optimizer, scheduler), the last finished epoch and the
    history of numbers, atomically. Loadable with ``torch.load(..., weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "epoch": int(epoch), "history": history or {},
             "torch_rng": torch.get_rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path, model, optimizer=None, scheduler=None, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (weights only).
    Returns the checkpoint dict (its 'epoch' and 'history')."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if "torch_rng" in state:  # shuffling and augmentation continue as if never interrupted
        torch.set_rng_state(state["torch_rng"].cpu())
    return state


def fit(model, loader, loss_fn, optimizer, epochs: int, device=None, scheduler=None,
        checkpoint=None, amp: bool = True, desc: str = "train", on_epoch_end=None,
        progress: bool = True) -> dict:
    """Train ``model`` for ``epochs`` over ``loader``.

    ``loss_fn(model, batch) -> loss`` (the batch already on ``device``); ``scheduler.step()`` is
    called once per batch. With ``checkpoint`` (a path), the state is saved after every epoch and a
    run that finds the file resumes after its last finished epoch (a finished run trains no more).
    AMP (bfloat16 autocast) is used on CUDA when ``amp``. ``on_epoch_end(epoch, model)`` may return
    a dict of numbers to add to the history. Returns the history {name: [value per epoch]}.

    Inside a process group of several processes (:mod:`wsss_edu.distributed`, e.g. under
    ``torchrun``) each rank trains on its shard of the data with batch = ``loader``'s batch / world
    (so the global batch and learning rate are the one-process run's), gradients are averaged over
    the ranks, batch norm uses the global batch's statistics, the history holds the mean over the
    ranks, and rank 0 alone writes the checkpoint and shows progress. Random augmentations are
    then drawn from a seed per rank and epoch, so they differ from the one-process run's draws.
    """
    several = D.active()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    device = D.rank_device(device) if several else device
    model.to(device)
    seed = torch.initial_seed() % 2 ** 62 if several else None   # orders shuffles and augmentations
    history, start = {"loss": []}, 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, map_location=device)
        start, history = state["epoch"] + 1, state.get("history") or {"loss": []}
    undo = None
    if several:
        loader, undo = D.prepare_training(model, loader, seed)
    use_amp = amp and device.type == "cuda"
    bar = tqdm(total=epochs * len(loader), initial=start * len(loader), desc=desc,
               disable=not progress or not D.is_main(), leave=False)
    try:
        for epoch in range(start, epochs):
            if several:
                D.start_epoch(loader, epoch, seed)
            loss = _train_epoch(model, loader, loss_fn, optimizer, scheduler, device, use_amp, bar, epoch)
            history.setdefault("loss", []).append(D.mean_over_ranks(loss))
            if on_epoch_end is not None:
                extra = on_epoch_end(epoch, model) or {}
                for k, v in extra.items():
                    history.setdefault(k, []).append(float(v))
            if checkpoint is not None and D.is_main():
                save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, history)
            D.barrier()
    finally:
        if undo is not None:
            undo()
    bar.close()
    return history


def _train_epoch(model, loader, loss_fn, optimizer, scheduler, device, use_amp: bool, bar,
                 epoch: int) -> float:
    """One epoch of :func:`fit`: a step per batch (gradients averaged over the ranks when there
    are several), the scheduler stepped per batch. Returns this process's mean batch loss."""
    several = D.active()
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if several:
            D.average_gradients(model)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach())
        count += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{total / count:.4f}")
    return total / max(count, 1)


def poly_schedule(optimizer, total_steps: int, power: float = 0.9):
    """The "poly" learning-rate policy of DeepLab and IRNet, stepped once per batch:
    lr_t = lr_0 · (1 - t / total_steps)^power."""
    total = max(1, int(total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 - min(t, total - 1) / total) ** power)


def cross_entropy_loss(model, batch):
    """Per-pixel cross-entropy of ``model(batch['image'])`` against ``batch['mask']``, ignoring 255:
    the ``loss_fn`` of fully-supervised training."""
    if D.active():   # the mean over the global batch's labelled pixels (see distributed.batch_mean)
        total = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=IGNORE, reduction="sum")
        return D.batch_mean(total, (batch["mask"] != IGNORE).sum())
    return F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=IGNORE)


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, batch_size: int = 32, device=None) -> torch.Tensor:
    """Logits (N, C, H, W) on the CPU for normalised images (N, 3, H, W), in batches, ``model`` in
    eval mode on ``device`` (default: where its parameters are)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    outs = [model(images[i:i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


@torch.no_grad()
def evaluate_segmentation(model, loader, num_classes: int, device=None, progress: bool = True,
                          desc: str = "eval") -> ConfusionMeter:
    """Accumulate the confusion matrix of ``argmax(model(image))`` against 'mask' over a loader."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    meter = ConfusionMeter(num_classes)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        pred = model(batch["image"].to(device)).argmax(1)
        meter.update(batch["mask"], pred)
    return meter
