"""Deliberate thread use: how many threads each process the package starts gets, and how its
OpenMP threads wait — the single place these are decided (pools of worker processes, CRFs, URN's and
IRNet's passes, torchrun's ranks, notebook kernels, DataLoader workers).

Why: on a machine shared with other work, processes x intra-op threads above the cores, and OpenMP
threads that spin while a team-mate is descheduled, made a training several times slower
(issue 26: notebook 00's training cell 110 s -> 811 s on a busy 2-core machine).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

# An OpenMP runtime reads its settings when it loads (with torch): in a process's environment
# before ``import torch``. PASSIVE: a thread waiting at a barrier sleeps instead of spinning (libgomp,
# the runtime of torch's Linux wheels, and LLVM/Intel OpenMP, where it means KMP_BLOCKTIME=0).
OPENMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the OS has one (Linux:
    ``taskset``, a container's or batch job's cpuset), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """The threads this process may spread over the processes it starts: torch's thread count
    (a notebook's ``threads`` parameter, ``OMP_NUM_THREADS``, else the physical cores) at most
    :func:`usable_cores`."""
    return max(1, min(torch.get_num_threads(), usable_cores()))


def threads_per_process(
    processes: int = 1, loader_workers: int = 0, budget: int | None = None
) -> int:
    """The intra-op threads each of ``processes`` processes gets so that processes × (threads +
    ``loader_workers``) <= ``budget`` (default :func:`thread_budget`), at least 1: the single place
    the package decides threads per process (pools of :func:`map_jobs`, CRFs, URN's and IRNet's
    passes, torchrun's ranks). A DataLoader worker is a process: torch gives it one thread, and
    while it prepares a batch it holds a core the training's threads would otherwise use."""
    budget = thread_budget() if budget is None else int(budget)
    return max(1, budget // max(1, int(processes)) - max(0, int(loader_workers)))


def openmp_env(threads: int | None = None, environ=None) -> dict:
    """The environment variables a process to be started needs for deliberate thread use:
    :data:`OPENMP_WAIT` (passive waiting) and, with ``threads``, ``OMP_NUM_THREADS``. A value
    already in ``environ`` (default ``os.environ``) is the user's choice and kept."""
    environ = os.environ if environ is None else environ
    env = dict(OPENMP_WAIT, **({} if threads is None else {"OMP_NUM_THREADS": str(int(threads))}))
    return {k: v for k, v in env.items() if not str(environ.get(k, "")).strip()}


@contextmanager
def quiet_openmp(threads: int | None = None):
    """:func:`openmp_env` in this process's environment while the block runs (then removed), so
    that the processes it starts — spawned pool workers, notebook kernels — inherit it. This
    process's own OpenMP runtime, already loaded, is not changed."""
    added = openmp_env(threads)
    os.environ.update(added)
    try:
        yield added
    finally:
        for k in added:
            os.environ.pop(k, None)


def _start_worker(threads: int, initializer, initargs) -> None:
    """A :func:`spawn_pool` worker's start: its thread share, then the pool's own initializer."""
    torch.set_num_threads(threads)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def spawn_pool(processes: int, initializer=None, initargs=(), threads: int | None = None):
    """A ``ProcessPoolExecutor`` of ``processes`` spawned workers, each with ``threads`` torch
    threads (default: :func:`threads_per_process` of ``processes``) and passive OpenMP waiting
    (:func:`quiet_openmp`, held while the pool lives: it starts its workers as jobs arrive), then
    ``initializer(*initargs)``. The way the package starts worker processes:
    ``with spawn_pool(n) as pool: pool.map(...)``."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    threads = threads_per_process(processes) if threads is None else int(threads)
    with (
        quiet_openmp(),
        ProcessPoolExecutor(
            processes,
            mp_context=mp.get_context("spawn"),
            initializer=_start_worker,
            initargs=(threads, initializer, initargs),
        ) as pool,
    ):
        yield pool


def loader_options(device, workers: int | None = None, cores: int | None = None) -> dict:
    """DataLoader keyword arguments (``num_workers``, ``pin_memory``, ``persistent_workers``) for a
    training on ``device``: the one place they are decided.

    ``workers`` None sizes them to the machine: on the CPU 0 — the training's own threads use every
    core (:func:`threads_per_process`) and the datasets are in memory or cheap to decode, so a
    worker would take a core from the training; on a GPU (CUDA, MPS) ``min(4, cores - 1)``
    (``cores``: :func:`usable_cores`), which keeps a GPU fed while decoding JPEGs and leaves a core
    to the training process. ``pin_memory`` only on CUDA (page-locked batches copy to the GPU
    asynchronously; elsewhere it only costs memory); ``persistent_workers`` whenever there are
    workers (not restarted every epoch: a spawned worker's start-up costs seconds)."""
    kind = torch.device(device).type if device is not None else "cpu"
    if workers is None:
        cores = usable_cores() if cores is None else int(cores)
        workers = 0 if kind == "cpu" else min(4, max(0, cores - 1))
    workers = max(0, int(workers))
    return dict(num_workers=workers, pin_memory=kind == "cuda", persistent_workers=workers > 0)


def thread_shares(n_jobs: int, processes: int, threads: int | None = None) -> list:
    """CPU threads for each of ``n_jobs`` jobs run on ``processes`` workers: ``threads`` (default:
    torch's count) split evenly — the same share for every job, however many jobs there are.

    A network trained on the CPU with 1 thread and with 2 differs in its last bits (the reductions
    are split differently), and the difference grows over an epoch. Giving a job more threads
    when it happens to run alone (a last, incomplete round, or the only network missing from the
    cache) made a number depend on what the cache already held: the same notebook gave different
    results after a clean run and after a partial one. A job's threads depend only on
    ``processes`` and the machine's thread count."""
    return [threads_per_process(processes, budget=threads)] * n_jobs
