"""Training on several processes (several GPUs, or CPU processes for the tests) with the quality of
one: the global batch, the learning rate, the batch-norm statistics and the loss normalisation all
stay those of the one-process run.

* :func:`launch` runs a picklable job under ``torchrun`` (``python -m torch.distributed.run
  --standalone``): each rank initialises the process group (NCCL on CUDA with device LOCAL_RANK,
  gloo on the CPU), calls the function, and rank 0's return value comes back; a failing rank's
  traceback and log come back in the error.
* :func:`trained_state` is what the cached training functions call: the training runs here, or
  under :func:`launch` on :func:`train_processes` processes (every visible GPU, or
  ``WSSS_TRAIN_PROCESSES``), and the trained weights come back, stored under the same cache key.
* Inside a process group of more than one process :func:`wsss_edu.train.fit` shards the data
  (:func:`shard_loader`: a DistributedSampler, per-rank batch = global batch / world), averages the
  gradients (:func:`average_gradients`), synchronises batch norm (:func:`sync_batchnorm`) and
  writes the checkpoint from rank 0 only.

Why gradients are averaged explicitly and not by DistributedDataParallel: one training loop,
:func:`wsss_edu.train.fit`, serves one process and N unchanged. The network is never wrapped, so
the losses call its own methods as they do on one process (RRM's :func:`wsss_edu.rrm.rrm_loss`
calls ``model.cam`` under ``no_grad`` to recompute its labels at every step), checkpoints hold
its own ``state_dict`` (no ``module.`` prefix), and a parameter that gets no gradient on some rank
needs no special mode (:func:`average_gradients` counts it as zero there).
And the losses normalised by a count that depends on the data must be normalised over the global
batch (:func:`batch_mean`, next paragraph) whichever way the gradients are averaged. One flat
all-reduce of the gradients after ``backward`` gives the averaged gradient for any loss; DDP
would overlap it with the backward pass, which only matters for speed.

Why losses call :func:`batch_mean`: averaging the ranks' gradients averages their losses, which is
the one-process loss only when each rank's loss is a mean over the same number of items. A loss
normalised by a count that depends on the data — labelled pixels (cross-entropy with ignored
pixels), IRNet's positive and negative pairs, RRM's background and foreground pixels — would weigh
a rank with few such items as much as one with many. IRNet is the case in point. Its users found
multi-GPU training ruin its results (jiwoon-ahn/irn#13: one GPU fine; several GPUs gave semantic
mIoU 46 instead of 66 and instance AP 8 instead of 38, i.e. the boundary and displacement branches
learned next to nothing; the thread as stored does not name the cause). Its loss balances three
sets of pairs (background-positive, foreground-positive, negative) by their counts over the batch;
split per rank, a rank whose images hold no foreground pair contributes 0 to the foreground term
and the average halves it, and every term is re-weighted by the ranks' counts. That is the failure
tests/test_distributed.py checks for (IRNet's frozen backbone keeping its batch-norm statistics is
checked there too).

Batch norm: torch's SyncBatchNorm on CUDA; on the CPU (gloo), where torch's refuses to run,
:class:`CPUSyncBatchNorm`, the same statistics from differentiable all-reduces. Both share the
original layer's parameters and buffers, so checkpoints and the returned network are unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ParameterError
from .io import atomic_path
from .threads import openmp_env, threads_per_process

PROCESSES_ENV = "WSSS_TRAIN_PROCESSES"
LAUNCHER_ENV = "WSSS_LAUNCHER_PID"  # the ranks exit when the process that launched them dies


# ------------------------------------------------------------------------------------------------
# Where this process stands
# ------------------------------------------------------------------------------------------------


def world() -> int:
    """The number of processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and shows progress (rank 0)."""
    return rank() == 0


def active() -> bool:
    """Whether training is split over more than one process."""
    return world() > 1


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if active():
        dist.barrier()


# ------------------------------------------------------------------------------------------------
# Numbers over the ranks
# ------------------------------------------------------------------------------------------------


def _comm_device() -> torch.device:
    """Where collectives take their tensors: this rank's GPU under NCCL, else the CPU."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (a new tensor on ``t``'s device, no gradient)."""
    out = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def batch_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` for a loss summed over a set whose size ``count`` depends on the data
    (labelled pixels, pairs of one kind), normalised over the *global* batch: the count is summed
    over the ranks and the result multiplied by the world size, so that the ranks' average (what
    gradient averaging takes) is the global total over the global count. An empty set gives 0
    (count clamped at 1). One process: exactly ``total / count.clamp(min=1)``."""
    if not active():
        return total / count.clamp(min=1)
    return total * world() / sum_over_ranks(count.to(total.dtype)).clamp(min=1)


def mean_over_ranks(value: float) -> float:
    """The mean of a number over the ranks (itself on one process)."""
    if not active():
        return value
    return float(sum_over_ranks(torch.tensor(float(value), dtype=torch.float64)) / world())


# ------------------------------------------------------------------------------------------------
# What fit() does on several processes
# ------------------------------------------------------------------------------------------------


def shard_loader(loader, seed: int):
    """This rank's share of a DataLoader: the same dataset through a DistributedSampler (shuffled
    if ``loader`` shuffles, ``seed`` + epoch ordering the shuffle), per-rank batch = the loader's
    batch / world, so the global batch and hence the learning rate stay the one-process run's.
    A batch size that does not divide raises an error naming the fix. (Without ``drop_last`` the
    sampler repeats a few images so that every rank gets as many.)"""
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

    n = world()
    if loader.batch_size is None or not isinstance(
        loader.sampler, (RandomSampler, SequentialSampler)
    ):
        raise ParameterError(
            "training on several processes needs a DataLoader built with batch_size "
            "and shuffle (no custom sampler); set WSSS_TRAIN_PROCESSES=1 to train in "
            "one process"
        )
    if loader.batch_size % n:
        raise ParameterError(
            f"batch size {loader.batch_size} does not split over {n} processes: choose "
            f"a batch size divisible by {n}, or set {PROCESSES_ENV} to a divisor of it "
            "(1 trains in one process)"
        )
    sampler = DistributedSampler(
        loader.dataset,
        n,
        rank(),
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size // n,
        sampler=sampler,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers else False,
    )


def start_epoch(loader, epoch: int, seed: int) -> None:
    """Before each epoch: the sampler's epoch (a new shuffle, the same on every rank) and a torch
    seed of its own for each rank and epoch, so ranks draw different augmentations (``item_rng``)
    and a resumed run draws the same ones."""
    import numpy as np

    loader.sampler.set_epoch(epoch)
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank()]).generate_state(1)[0]))


def broadcast_object(obj):
    """Rank 0's ``obj`` (any picklable object) on every rank: what one rank read from a file (a
    checkpoint) is what all use."""
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, 0)
    return box[0]


def broadcast_state(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    for t in model.state_dict().values():
        dist.broadcast(t, 0)


def average_gradients(model: nn.Module) -> None:
    """Replace each trainable parameter's gradient by its mean over the ranks (one flat
    all-reduce; a parameter without gradient on some rank counts as zero there, and stays
    without gradient where no rank has one)."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    params = [p for p in model.parameters() if p.requires_grad]
    has = sum_over_ranks(torch.tensor([p.grad is not None for p in params], dtype=torch.int32)) > 0
    params = [p for p, h in zip(params, has.tolist()) if h]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world()
    for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


def rank_device(device: torch.device) -> torch.device:
    """``device`` made explicit for this rank: 'cuda' means the rank's GPU (set by :func:`main`)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def prepare_training(model: nn.Module, loader, seed: int):
    """Everything :func:`wsss_edu.train.fit` needs before its first epoch on several processes:
    the sharded loader, synchronised batch norm and rank 0's weights everywhere. Returns
    (loader, undo) where ``undo()`` puts the original batch-norm layers back."""
    loader = shard_loader(loader, seed)  # first: its errors leave the model as it was
    undo = sync_batchnorm(model)
    broadcast_state(model)
    return loader, undo


# ------------------------------------------------------------------------------------------------
# Synchronised batch norm
# ------------------------------------------------------------------------------------------------


class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over the ranks; its gradient is the sum of the ranks' gradients of y."""

    @staticmethod
    def forward(ctx, x):
        return sum_over_ranks(x)

    @staticmethod
    def backward(ctx, grad):
        return sum_over_ranks(grad)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, for CPU process groups
    (gloo), where torch's SyncBatchNorm refuses to run. Mean and variance come from sums over the
    ranks that gradients flow through, so the gradient is the one-process gradient; the running
    statistics take the unbiased global variance, as BatchNorm does. In eval mode, or on one
    process: plain batch norm."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and active()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        n = sum_over_ranks(
            torch.tensor(float(xf.numel() // xf.shape[1]), dtype=torch.float64)
        ).item()
        mean = _SumOverRanks.apply(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach(), var.detach() * n / max(n - 1, 1))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running(self, mean, unbiased_var):
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased_var.to(self.running_var.dtype), alpha=m)


def _synced_copy(bn: nn.modules.batchnorm._BatchNorm, cls) -> nn.Module:
    """A ``cls`` batch-norm layer sharing ``bn``'s parameters and buffers (same tensors)."""
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name in ("weight", "bias"):
        setattr(new, name, getattr(bn, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(new, name, getattr(bn, name))
    new.train(bn.training)
    return new


def sync_batchnorm(model: nn.Module):
    """Swap every batch-norm layer of ``model`` for a synchronised one sharing its tensors (torch's
    SyncBatchNorm on CUDA, :class:`CPUSyncBatchNorm` elsewhere), in place, keeping each layer's
    train/eval mode (a frozen backbone stays frozen). Returns ``undo()``, which puts the original
    layers back (they hold the trained values: the tensors are shared)."""
    swaps, made = [], {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, (nn.SyncBatchNorm, CPUSyncBatchNorm)
            ):
                if id(child) not in made:
                    on_cuda = any(
                        t is not None and t.is_cuda for t in (child.weight, child.running_mean)
                    )
                    made[id(child)] = _synced_copy(
                        child, nn.SyncBatchNorm if on_cuda else CPUSyncBatchNorm
                    )
                setattr(parent, name, made[id(child)])
                swaps.append((parent, name, child))

    def undo():
        for parent, name, child in swaps:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)

    return undo


# ------------------------------------------------------------------------------------------------
# Launching a job on several processes
# ------------------------------------------------------------------------------------------------


def train_processes(device=None) -> int:
    """How many processes a training should use: 1 inside a launched rank (it trains where it
    is); else ``WSSS_TRAIN_PROCESSES`` when set (on the CPU: gloo processes; 1 forces one process);
    else the number of visible GPUs when ``device`` is CUDA; else 1."""
    if active():
        return 1
    text = os.environ.get(PROCESSES_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ParameterError(
                f"{PROCESSES_ENV}={text!r} is not valid: give a whole number >= 1 "
                "(1 trains in one process)"
            )
        return int(text)
    if device is not None and torch.device(device).type == "cuda":
        return max(1, torch.cuda.device_count())
    return 1


def _rank_env(nproc: int, device_type: str) -> dict:
    """The ranks' environment: this process's import path (so the job's functions and the classes
    of its arguments import there too), CPU threads shared between the ranks
    (:func:`wsss_edu.threads.threads_per_process`) and passive OpenMP waiting
    (:func:`wsss_edu.threads.openmp_env`; a value the user set is kept)."""
    env = dict(os.environ)
    paths = [str(Path(__file__).resolve().parents[1])] + [
        p for p in sys.path if p and Path(p).is_dir()
    ]
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env[LAUNCHER_ENV] = str(os.getpid())
    if device_type == "cpu":
        env["OMP_NUM_THREADS"] = str(threads_per_process(nproc))
    env.update(openmp_env(environ=env))
    return env


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a text file ('' if absent)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _failure_message(job_dir: Path, nproc: int, code) -> str:
    """What to tell when a launched job fails: the first failing rank's traceback and log tail, or
    the launcher's output when no rank reported."""
    errors = sorted(job_dir.glob("error-rank*.txt"), key=lambda p: int(p.stem.split("rank")[1]))
    fix = f"(set {PROCESSES_ENV}=1 to train in this process instead)"
    if errors:
        r = errors[0].stem.split("rank")[1]
        return (
            f"rank {r} of {nproc} failed under torchrun {fix}:\n{errors[0].read_text()}\n"
            f"--- rank {r}'s log (last lines) ---\n{_tail(job_dir / f'rank{r}.log')}"
        )
    return (
        f"torchrun with {nproc} processes exited with {code} and no rank reported an error "
        f"{fix}; launcher output:\n{_tail(job_dir / 'launcher.log')}"
    )


def _forward_new_output(path: Path, pos: int) -> int:
    """Copy what ``path`` gained since byte ``pos`` to this process's stderr (rank 0's progress
    bars show in the notebook). Returns the new position."""
    if not path.exists():
        return pos
    with open(path, "rb") as f:
        f.seek(pos)
        new = f.read()
    if new:
        sys.stderr.write(new.decode(errors="replace"))
        sys.stderr.flush()
    return pos + len(new)


def _stop(proc, job_dir: Path) -> None:
    """Stop the launcher (it stops its ranks on SIGTERM), then any rank still alive, by the process
    id each rank wrote (torchrun starts every rank in a session of its own)."""
    import signal
    import subprocess

    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for f in job_dir.glob("pid-rank*"):
        try:
            os.kill(int(f.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _run_showing_rank0(cmd, env: dict, job_dir: Path, timeout: float | None) -> int:
    """Run the launcher (its own output to ``launcher.log``), showing rank 0's output as it comes.
    Past ``timeout`` seconds, or when interrupted (a notebook's stop button), the launcher and its
    ranks are stopped. Returns the exit code."""
    import subprocess
    import time

    start, pos = time.monotonic(), 0
    with open(job_dir / "launcher.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                pos = _forward_new_output(job_dir / "rank0.log", pos)
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(
                        f"the launched job ran past {timeout} s: stopped, its ranks too"
                    )
                time.sleep(0.5)
        except BaseException:
            _stop(proc, job_dir)
            raise
    _forward_new_output(job_dir / "rank0.log", pos)
    return proc.returncode


# Run before torchrun, in its process (``python -c`` then exec, so no preexec_fn, which is unsafe in
# a threaded parent such as a Jupyter kernel): on Linux the kernel kills it when its parent (the
# launching Python) dies; a parent already gone makes it exit at once. POSIX only (exec on Windows
# starts another process); elsewhere torchrun exits once its ranks have (die_with_launcher).
_DIE_WITH_PARENT_THEN_EXEC = (
    "import os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    try:\n"
    "        import ctypes\n"
    "        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "    except Exception:\n"
    "        pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped by its parent, does not).
    On Windows, where ``os.kill`` would terminate it, always True."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill's answer


def die_with_launcher(interval: float = 0.5) -> None:
    """Make this rank exit when the Python that launched it dies (a killed or restarted notebook
    kernel), so no orphaned rank trains on and rewrites the checkpoint: on Linux the kernel kills
    it when its parent (torchrun) dies (``PR_SET_PDEATHSIG``); everywhere a daemon thread checks
    every ``interval`` seconds that the launcher (``WSSS_LAUNCHER_PID``) and the parent are alive,
    and ends the process otherwise (POSIX; on Windows nothing is checked)."""
    import signal
    import threading
    import time

    launcher = int(os.environ.get(LAUNCHER_ENV, "0") or 0)
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass

    def watch():
        while True:
            if os.getppid() != parent or (launcher and not _alive(launcher)):
                os._exit(70)
            time.sleep(interval)

    threading.Thread(target=watch, name="die-with-launcher", daemon=True).start()


def launch(fn, kwargs: dict, nproc: int, device_type: str = "cpu", timeout: float | None = None):
    """Run ``fn(**kwargs)`` on ``nproc`` processes under ``python -m torch.distributed.run
    --standalone`` and return rank 0's result. ``fn`` must be a module-level function and
    ``kwargs`` picklable (they travel in a temporary file). Each rank initialises the process group
    (NCCL with its own GPU when ``device_type`` is 'cuda', gloo otherwise) before calling ``fn``.
    Rank 0's output (progress bars) shows here as it comes. A failure raises RuntimeError with the
    failing rank's traceback and the end of its log; past ``timeout`` seconds, TimeoutError.
    When this process dies without stopping them (SIGKILL, an out-of-memory kill, a restarted
    notebook kernel), torchrun and the ranks die with it (:func:`die_with_launcher`)."""
    import shutil
    import tempfile

    if getattr(fn, "__module__", None) == "__main__":
        raise ParameterError(
            f"launch: {fn.__name__} is defined in __main__, which the ranks cannot "
            "import; define it in a module"
        )
    if device_type == "cuda" and nproc > torch.cuda.device_count():
        raise ParameterError(
            f"{nproc} processes on {torch.cuda.device_count()} visible GPU(s): one GPU "
            f"per process; set {PROCESSES_ENV} to at most the number of GPUs"
        )
    job_dir = Path(tempfile.mkdtemp(prefix="wsss_launch_"))
    try:
        try:
            torch.save({"fn": fn, "kwargs": kwargs, "device_type": device_type}, job_dir / "job.pt")
        except Exception as e:
            raise ParameterError(
                f"launch needs a module-level function and picklable arguments: {e}"
            ) from e
        guard = ["-c", _DIE_WITH_PARENT_THEN_EXEC, str(os.getpid())] if os.name == "posix" else []
        cmd = [
            sys.executable,
            *guard,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "wsss_edu.distributed",
            str(job_dir / "job.pt"),
        ]
        code = _run_showing_rank0(cmd, _rank_env(nproc, device_type), job_dir, timeout)
        if code != 0 or not (job_dir / "result.pt").exists():
            raise RuntimeError(_failure_message(job_dir, nproc, code))
        return torch.load(job_dir / "result.pt", weights_only=False)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def main(argv) -> None:
    """A rank of :func:`launch` (``python -m wsss_edu.distributed JOBFILE`` under torchrun): output
    to ``rank<r>.log`` beside the job file, the process group up, the job run, rank 0's result
    written to ``result.pt``; a failure leaves its traceback in ``error-rank<r>.txt``."""
    import traceback

    job = Path(argv[0])
    die_with_launcher()
    r, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    (job.parent / f"pid-rank{r}").write_text(str(os.getpid()))
    log = open(job.parent / f"rank{r}.log", "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        try:
            spec = torch.load(job, weights_only=False)
        except (AttributeError, ImportError) as e:
            raise RuntimeError(
                f"the job's function or an argument's class does not import in the ranks "
                f"({e}): define them in a module, not in a notebook or a script's "
                "__main__"
            ) from e
        if spec["device_type"] == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if spec["device_type"] == "cuda" else "gloo")
        out = spec["fn"](**spec["kwargs"])
        barrier()
        if r == 0:
            with atomic_path(job.parent / "result.pt") as tmp:
                torch.save(out, tmp)
    except BaseException:
        (job.parent / f"error-rank{r}.txt").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# The cached trainings' entry
# ------------------------------------------------------------------------------------------------


def _state_dict_of(train_fn, kwargs: dict) -> dict:
    """``train_fn(**kwargs)``'s network's weights on the CPU."""
    return train_fn(**kwargs).cpu().state_dict()


def trained_state(train_fn, **kwargs) -> dict:
    """The CPU state dict of the network ``train_fn(**kwargs)`` trains (a package training function
    such as :func:`wsss_edu.steps.segmenter_step.train_segmenter`): trained in this process, or on
    :func:`train_processes` processes (``kwargs['device']`` decides CUDA/NCCL or CPU/gloo) with
    rank 0's weights returned. The caller stores them under its usual cache key."""
    device = kwargs.get("device")
    n = train_processes(device)
    if n <= 1:
        return _state_dict_of(train_fn, kwargs)
    kind = "cuda" if device is not None and torch.device(device).type == "cuda" else "cpu"
    return launch(_state_dict_of, {"train_fn": train_fn, "kwargs": kwargs}, n, kind)


if __name__ == "__main__":
    from wsss_edu.distributed import main as _main  # the package's module, not a second copy

    _main(sys.argv[1:])
