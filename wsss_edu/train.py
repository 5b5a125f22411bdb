"""Training helpers: a device that always works, seeding, a training loop with a progress bar
(:func:`wsss_edu.progress.bar`: ``tqdm.auto``'s, or log lines when headless), mixed precision
on a GPU in the dtype the GPU computes natively (:func:`amp_dtype`: bfloat16, or float16 with loss
scaling), checkpoints as plain state_dicts (``weights_only=True``-loadable) and resume after interruption,
and segmentation evaluation.

A checkpoint has its SHA-256 beside it (``<checkpoint>.sha256``) and is trusted only when it
matches; one that does not (damaged, truncated, empty, written by a version before digests), that
does not load, or that lacks the optimizer or scheduler state the resuming :func:`fit` needs, is
named in a warning, set aside as ``<name>.bad-<time>`` and the training starts from the beginning.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed as D
from .errors import DataFileError, ParameterError
from .io import (
    atomic_path_with_digest,
    digest_path,
    digest_problem,
    run_lock,
)
from .labels import IGNORE
from .metrics import ConfusionMeter
from .progress import SECONDS_ENV, interval_seconds
from .progress import bar as progress_bar


def get_device(device: str = "auto") -> torch.device:
    """'auto' → cuda if available, else mps if available, else cpu. An explicit device that is not
    available raises an error naming the ones that are."""
    avail = (
        ["cpu"]
        + (["cuda"] if torch.cuda.is_available() else [])
        + (
            ["mps"]
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            else []
        )
    )
    if device in (None, "", "auto"):
        return torch.device("cuda" if "cuda" in avail else "mps" if "mps" in avail else "cpu")
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ParameterError(
            f"DEVICE={device!r} is not valid; choose one of: 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'"
        )
    if kind not in avail:
        raise ParameterError(
            f"DEVICE={device!r} is not available on this machine; available: {['auto'] + avail}"
        )
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def to_device(batch, device, channels_last: bool = False):
    """Move every tensor of a (nested) batch to ``device``; with ``channels_last``, 4-D floating
    tensors (the images) in the channels-last memory format (same shape and values, strides NHWC)."""
    if torch.is_tensor(batch):
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            return batch.to(device, non_blocking=True, memory_format=torch.channels_last)
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


def amp_dtype(device) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for no autocast (float32 throughout).

    - a CUDA GPU that computes bfloat16 natively (compute capability 8.0 and above: A100, H100,
      RTX 30xx on; and every ROCm GPU): ``torch.bfloat16``, float32's exponent range, so the
      gradients need no loss scaling;
    - an older CUDA GPU (a T4 on Colab, 7.5; V100, 7.0; P100, 6.0): ``torch.float16``, which
      its tensor cores compute; its range ends at 65504 and small gradients underflow to 0, so
      :func:`fit` then scales the loss (:func:`make_scaler`, Micikevicius et al. 2018, "Mixed
      precision training", sec. 3.2);
    - CPU and MPS: None (autocast there is slower or less accurate than float32 for this course).

    The capability is read for ``device`` itself, not through ``torch.cuda.is_bf16_supported()``:
    that function, by default, also counts bfloat16 *emulated* in float32 (a T4) as supported.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if torch.version.hip:
        return torch.bfloat16
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def dtype_name(dtype: torch.dtype | None) -> str:
    """'bfloat16', 'float16' or 'off' (no autocast): how the history names an autocast dtype."""
    return "off" if dtype is None else str(dtype).removeprefix("torch.")


def autocast(device, dtype="auto"):
    """``torch.autocast`` on ``device`` in ``dtype`` ('auto': :func:`amp_dtype`'s choice; None:
    disabled), as :func:`fit` enters it: ``with train.autocast(run.device): loss = ...``."""
    device = torch.device(device)
    dtype = amp_dtype(device) if isinstance(dtype, str) and dtype == "auto" else dtype
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def make_scaler(device, dtype: torch.dtype | None):
    """The gradient scaler of a training on ``device`` autocast in ``dtype``: enabled for float16
    only (its gradients underflow unscaled), a pass-through otherwise (``scale`` returns the loss,
    ``step`` calls ``optimizer.step()``), so one training step serves every dtype."""
    enabled = dtype == torch.float16
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3: any device type
        return torch.amp.GradScaler(torch.device(device).type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch 2.2: CUDA only


def _training_dtype(amp, device) -> torch.dtype | None:
    """The autocast dtype :func:`fit` trains in: ``amp`` True → :func:`amp_dtype`, False/None →
    none, ``torch.float16`` / ``torch.bfloat16`` → that one (on any device, e.g. to try the
    float16 path with loss scaling on a CPU)."""
    if amp is True:
        return amp_dtype(device)
    if amp is False or amp is None:
        return None
    if amp in (torch.float16, torch.bfloat16):
        return amp
    raise ParameterError(
        f"amp={amp!r} is not valid; choose one of: True (the device's dtype, see "
        "train.amp_dtype), False, torch.float16, torch.bfloat16"
    )


# How often (seconds, at most) the training loop reads its losses back to the host for the progress
# bar: a read waits for the GPU to finish every queued step (a host synchronisation), so the loop
# reads none per step; the epoch's mean is read once, at its end.
LOSS_READ_SECONDS = 2.0


def compiled(model, enabled: bool):
    """``torch.compile(model)`` when ``enabled``, else ``model``: the module :func:`fit` calls
    (its weights are ``model``'s; the checkpoint holds ``model``'s state_dict). A torch without
    ``torch.compile`` raises an error naming the fix."""
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        raise ParameterError(
            f"compile=True needs torch.compile (torch >= 2.0; this is {torch.__version__}): "
            "upgrade torch or train with compile=False"
        )
    return torch.compile(model)


# How long a training waits for another live process holding its checkpoint's lock before it
# fails naming it: long enough for the ranks of a killed launcher to notice and exit.
CHECKPOINT_LOCK_WAIT = 10.0


def save_checkpoint(
    path,
    model,
    optimizer=None,
    scheduler=None,
    epoch: int = -1,
    history: dict | None = None,
    scaler=None,
) -> Path:
    """Save plain state_dicts (model, optimizer, scheduler, and the gradient scaler when it is
    enabled: float16 training, so a resume continues at its loss scale), the last finished epoch
    and the history, atomically, then its digest beside it. Loadable with
    ``torch.load(..., weights_only=True)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "epoch": int(epoch),
        "history": history or {},
        "torch_rng": torch.get_rng_state(),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    with atomic_path_with_digest(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path, model=None, optimizer=None, scheduler=None) -> dict:
    """The checkpoint dict at ``path`` (on the CPU), checked before anything uses it: its digest
    matches, it loads, it is a :func:`save_checkpoint` dict, it holds the optimizer / scheduler
    state when they are given (resuming without them would silently restart their momentum and
    schedule) and weights of ``model``'s names and shapes when given. Anything else raises
    :class:`~wsss_edu.errors.DataFileError` naming the file and what is wrong."""
    path = Path(path)
    problem = digest_problem(path)
    if problem is not None:
        raise DataFileError(f"checkpoint {path} cannot be trusted: {problem}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataFileError(f"checkpoint {path} does not load: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not {"model", "epoch"} <= set(state):
        raise DataFileError(
            f"checkpoint {path} is not a wsss_edu.train.save_checkpoint file "
            "(no 'model' and 'epoch')"
        )
    if not isinstance(state.get("scaler", {}), dict):
        raise DataFileError(
            f"checkpoint {path} holds a gradient scaler state that is not a GradScaler.state_dict()"
        )
    missing = [
        k
        for k, obj in (("optimizer", optimizer), ("scheduler", scheduler))
        if obj is not None and k not in state
    ]
    if missing:
        raise DataFileError(
            f"checkpoint {path} holds no {' or '.join(missing)} state, which resuming needs"
        )
    if optimizer is not None:
        want = [len(g["params"]) for g in optimizer.param_groups]
        have = [len(g["params"]) for g in state["optimizer"].get("param_groups", [])]
        if want != have:
            raise DataFileError(
                f"checkpoint {path} holds the state of another optimizer (parameter "
                f"groups of {have} parameters, this one has {want})"
            )
    if model is not None:
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state["model"].items()}
        if want != have:
            odd = sorted(set(want.items()) ^ set(have.items()))[:3]
            raise DataFileError(
                f"checkpoint {path} holds the weights of another network "
                f"(names/shapes differ, e.g. {odd})"
            )
    return state


def apply_checkpoint(state: dict, model, optimizer=None, scheduler=None, scaler=None) -> None:
    """Put a :func:`read_checkpoint` dict into the given objects and restore torch's RNG. An
    enabled ``scaler`` takes the checkpoint's loss scale when it holds one (one written by a
    bfloat16 or float32 run has none: the scaler then starts at its initial scale, which costs
    a few skipped steps, not a wrong result)."""
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if "torch_rng" in state:  # shuffling and augmentation continue as if never interrupted
        torch.set_rng_state(state["torch_rng"].cpu())


def load_checkpoint(
    path, model, optimizer=None, scheduler=None, map_location="cpu", scaler=None
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (weights only),
    checked by :func:`read_checkpoint` (which raises DataFileError naming the file). Returns the
    checkpoint dict (its 'epoch' and 'history'); ``map_location`` is kept for callers, the state
    is read on the CPU and copied into the objects where they live."""
    state = read_checkpoint(path, model, optimizer, scheduler)
    apply_checkpoint(state, model, optimizer, scheduler, scaler)
    return state


def set_aside(path) -> Path:
    """Rename a file that cannot be used (and its digest) to ``<name>.bad-<time>``, kept for
    inspection; returns the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(aside)
    if digest_path(path).exists():
        digest_path(path).replace(digest_path(aside))
    return aside


def _resume_state(checkpoint, model, optimizer, scheduler) -> dict | None:
    """The checkpoint to resume from, or None to start from the beginning: absent, or unusable
    (named in a warning and set aside by :func:`set_aside`, never a bare EOFError)."""
    if checkpoint is None or not Path(checkpoint).exists():
        return None
    try:
        return read_checkpoint(checkpoint, model, optimizer, scheduler)
    except DataFileError as e:
        aside = set_aside(checkpoint)
        warnings.warn(
            f"{e}; set aside as {aside.name}, training from the first epoch", stacklevel=3
        )
        return None


def fit(
    model,
    loader,
    loss_fn,
    optimizer,
    epochs: int,
    device=None,
    scheduler=None,
    checkpoint=None,
    amp: bool | torch.dtype = True,
    desc: str = "train",
    on_epoch_end=None,
    progress: bool = True,
    channels_last: bool = False,
    compile: bool = False,
) -> dict:
    """Train ``model`` for ``epochs`` over ``loader``.

    ``loss_fn(model, batch) -> loss`` (the batch already on ``device``); ``scheduler.step()`` is
    called once per batch. With ``checkpoint`` (a path), the state is saved after every epoch and a
    run that finds the file resumes after its last finished epoch (a finished run trains no more).
    ``on_epoch_end(epoch, model)`` may return a dict of numbers to add to the history. Returns
    the history {name: [value per epoch]}.

    Mixed precision: with ``amp`` True, the forward pass and loss run under autocast in
    :func:`amp_dtype`'s dtype (bfloat16 on a GPU that computes it, float16 on an older one such
    as Colab's T4, none on CPU/MPS); ``amp`` False trains in float32, ``torch.float16`` /
    ``torch.bfloat16`` force that dtype on any device. In float16 the loss is scaled before the
    backward pass and the gradients unscaled before the optimizer step, which is skipped when a
    gradient is inf/NaN (the scale then halves; :func:`make_scaler`); the scaler's state goes into
    the checkpoint, so a resume continues at the same scale. The history records the dtype of
    every epoch (``history['autocast']``: 'bfloat16', 'float16' or 'off') and, in float16, the
    loss scale at its end (``history['loss_scale']``); a run with autocast on prints the dtype.

    GPU practice: the loop reads no number back to the host per step (each read would wait for
    the GPU): the batch losses stay on the device, the progress bar's running loss is read at most
    every ``LOSS_READ_SECONDS``, the epoch's mean once at its end (the same sum, in the same order,
    as reading every step: the history is bit for bit the same). ``channels_last``: the network
    and the image batches in the channels-last memory format (NHWC), which cuDNN's tensor-core
    convolutions compute without transposing under autocast; off by default — it is a layout,
    not a change of the numbers (the losses agree with the default layout to float rounding),
    and its gain on a given GPU is to be measured there. ``compile``: the forward passes go
    through ``torch.compile(model)`` (:func:`compiled`; its first steps compile, for a minute
    on a CPU); if compiling fails at the first batch (no C++ compiler, an unsupported operation),
    a warning names the error and the training goes on uncompiled.

    Inside a process group of several processes (:mod:`wsss_edu.distributed`, e.g. under
    ``torchrun``) each rank trains on its shard of the data with batch = ``loader``'s batch / world
    (so the global batch and learning rate are the one-process run's), gradients are averaged over
    the ranks, batch norm uses the global batch's statistics, the history holds the mean over the
    ranks, and rank 0 alone writes the checkpoint and shows progress. Random augmentations are
    then drawn from a seed per rank and epoch, so they differ from the one-process run's draws.
    Rank 0 alone reads the checkpoint and sends its state to the others, so every rank resumes at
    the same epoch.

    The checkpoint is checked before use (:func:`read_checkpoint`): an unusable one is named in a
    warning, set aside and the training starts from the beginning. While training, the process
    writing the checkpoint holds its lock (:func:`wsss_edu.io.run_lock`): a second training of
    the same checkpoint waits ``CHECKPOINT_LOCK_WAIT`` seconds for it, then fails naming the live
    process and the lock file.
    """
    several = D.active()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    device = D.rank_device(device) if several else device
    model.to(device)
    seed = torch.initial_seed() % 2**62 if several else None  # orders shuffles and augmentations
    with ExitStack() as held:
        if checkpoint is not None and D.is_main():
            held.enter_context(
                run_lock(
                    checkpoint, CHECKPOINT_LOCK_WAIT, f"a training with checkpoint {checkpoint}"
                )
            )
        state = _resume_state(checkpoint, model, optimizer, scheduler) if D.is_main() else None
        if several:
            state = D.broadcast_object(state)  # rank 0's reading: every rank at one epoch
        run = _FitRun(
            epochs=epochs,
            device=device,
            scheduler=scheduler,
            checkpoint=checkpoint,
            amp=amp,
            desc=desc,
            on_epoch_end=on_epoch_end,
            progress=progress,
            seed=seed,
            channels_last=channels_last,
            compile=compile,
        )
        return _fit_from(state, model, loader, loss_fn, optimizer, run)


@dataclass(frozen=True)
class _FitRun:
    """:func:`fit`'s settings for one run (its arguments, the device resolved, and ``seed``: the
    seed that orders shuffles and augmentations across ranks, None in one process)."""

    epochs: int
    device: torch.device
    scheduler: object
    checkpoint: object
    amp: bool | torch.dtype
    desc: str
    on_epoch_end: object
    progress: bool
    seed: int | None
    channels_last: bool
    compile: bool


def _fit_from(state, model, loader, loss_fn, optimizer, run: _FitRun) -> dict:
    """:func:`fit` from a checked checkpoint ``state`` (None: from the first epoch)."""
    device, scheduler, checkpoint, desc = run.device, run.scheduler, run.checkpoint, run.desc
    several = D.active()
    history, start = {"loss": []}, 0
    dtype = _training_dtype(run.amp, device)
    scaler = make_scaler(device, dtype)
    if state is not None:
        apply_checkpoint(state, model, optimizer, scheduler, scaler)
        start, history = state["epoch"] + 1, state.get("history") or {"loss": []}
    if dtype is not None and D.is_main():
        print(
            f"{desc}: autocast {dtype_name(dtype)} on {device}"
            + (", loss scaled (GradScaler)" if scaler.is_enabled() else "")
        )
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    step = _Forward(model, run.compile, run.channels_last)
    undo = None
    if several:
        loader, undo = D.prepare_training(model, loader, run.seed)
    bar = progress_bar(
        total=run.epochs * len(loader),
        initial=start * len(loader),
        desc=desc,
        disable=not run.progress or not D.is_main(),
        leave=False,
    )
    try:
        for epoch in range(start, run.epochs):
            if several:
                D.start_epoch(loader, epoch, run.seed)
            loss = _train_epoch(
                step, loader, loss_fn, optimizer, scheduler, device, dtype, scaler, bar, epoch
            )
            history.setdefault("loss", []).append(D.mean_over_ranks(loss))
            history.setdefault("autocast", []).append(dtype_name(dtype))
            if scaler.is_enabled():
                history.setdefault("loss_scale", []).append(float(scaler.get_scale()))
            if run.on_epoch_end is not None:
                extra = run.on_epoch_end(epoch, model) or {}
                for k, v in extra.items():
                    history.setdefault(k, []).append(float(v))
            if checkpoint is not None and D.is_main():
                save_checkpoint(checkpoint, model, optimizer, scheduler, epoch, history, scaler)
            D.barrier()
    finally:
        if undo is not None:
            undo()
    bar.close()
    return history


class _Forward:
    """The module :func:`fit`'s steps call: ``model``, or ``torch.compile(model)`` until its first
    call fails (then ``model``, with a warning naming the error: an error of the loss itself then
    recurs uncompiled and is raised). ``channels_last``: whether the batches go NHWC, as the
    model's weights do."""

    def __init__(self, model, compile: bool = False, channels_last: bool = False):
        self.model = model
        self.module = compiled(model, compile)
        self.untried = compile
        self.channels_last = channels_last

    def loss(self, loss_fn, batch):
        if not self.untried:
            return loss_fn(self.module, batch)
        self.untried = False
        try:
            return loss_fn(self.module, batch)
        except Exception as e:  # the compiler's failures have no common class
            warnings.warn(
                f"torch.compile failed at the first batch ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); training "
                "without it (compile=False)",
                stacklevel=4,
            )
            self.module = self.model
            return loss_fn(self.model, batch)


def _losses_sum(values: list, pending: list) -> float:
    """Move the device's ``pending`` batch losses into ``values`` (one read for all of them), and
    return the sum of ``values`` added in order, as a float per step would have been."""
    if pending:
        values.extend(torch.stack([v.reshape(()) for v in pending]).tolist())
        pending.clear()
    total = 0.0
    for v in values:
        total += v
    return total


def _train_epoch(
    step, loader, loss_fn, optimizer, scheduler, device, dtype, scaler, bar, epoch: int
) -> float:
    """One epoch of :func:`fit`: a step per batch under autocast in ``dtype`` (None: float32),
    the loss scaled by ``scaler`` (a pass-through unless float16), gradients averaged over the
    ranks when there are several (the scaled ones: averaging is linear, and an inf on one rank
    reaches all, so every rank skips the same steps), then unscaled and stepped by the scaler,
    the scheduler stepped per batch. A gradient clipping would go after
    ``scaler.unscale_(optimizer)``. The batch losses stay on the device (``step``: a
    :class:`_Forward`); the bar's running loss is read every ``LOSS_READ_SECONDS`` at most (more often
    when the bar logs lines more often: ``WSSS_PROGRESS_SECONDS``).
    Returns this process's mean batch loss."""
    several = D.active()
    model = step.model
    model.train()
    values, pending = [], []
    last_read = time.monotonic()
    # never staler than the bar's log lines: headless, a line every WSSS_PROGRESS_SECONDS carries a
    # loss read at most one step before it
    read_every = min(LOSS_READ_SECONDS, interval_seconds(os.environ.get(SECONDS_ENV)))
    for batch in loader:
        batch = to_device(batch, device, step.channels_last)
        with autocast(device, dtype):
            loss = step.loss(loss_fn, batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if several:
            D.average_gradients(model)
        scaler.step(optimizer)  # unscales the gradients; skips the step if one is inf/NaN
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        pending.append(loss.detach())
        bar.update(1)
        if time.monotonic() - last_read >= read_every:
            count = len(values) + len(pending)
            bar.set_postfix(epoch=epoch, loss=f"{_losses_sum(values, pending) / count:.4f}")
            last_read = time.monotonic()
    count = len(values) + len(pending)
    mean = _losses_sum(values, pending) / max(count, 1)
    bar.set_postfix(epoch=epoch, loss=f"{mean:.4f}")
    return mean


def poly_schedule(optimizer, total_steps: int, power: float = 0.9):
    """The "poly" learning-rate policy of DeepLab and IRNet, stepped once per batch:
    lr_t = lr_0 · (1 - t / total_steps)^power."""
    total = max(1, int(total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: (1 - min(t, total - 1) / total) ** power
    )


def cross_entropy_loss(model, batch):
    """Per-pixel cross-entropy of ``model(batch['image'])`` against ``batch['mask']``, ignoring 255:
    the ``loss_fn`` of fully-supervised training."""
    if D.active():  # the mean over the global batch's labelled pixels (see distributed.batch_mean)
        total = F.cross_entropy(
            model(batch["image"]), batch["mask"], ignore_index=IGNORE, reduction="sum"
        )
        return D.batch_mean(total, (batch["mask"] != IGNORE).sum())
    return F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=IGNORE)


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, batch_size: int = 32, device=None) -> torch.Tensor:
    """Logits (N, C, H, W) on the CPU for normalised images (N, 3, H, W), in batches, ``model`` in
    eval mode on ``device`` (default: where its parameters are)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    outs = [
        model(images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outs)


@torch.no_grad()
def evaluate_segmentation(
    model, loader, num_classes: int, device=None, progress: bool = True, desc: str = "eval"
) -> ConfusionMeter:
    """Accumulate the confusion matrix of ``argmax(model(image))`` against 'mask' over a loader."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    meter = ConfusionMeter(num_classes)
    for batch in progress_bar(loader, desc=desc, disable=not progress, leave=False):
        pred = model(batch["image"].to(device)).argmax(1)
        meter.update(batch["mask"], pred)
    return meter
