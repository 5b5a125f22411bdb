"""Running independent jobs in spawned worker processes on a CPU machine.

Two patterns recur in the package:

* :func:`map_jobs`: many independent trainings (notebook 02's experiments, notebook 06's students),
  the CPU threads split evenly between the workers — every job the same share, so that a result
  does not depend on how many other jobs were still to run (:func:`thread_shares`);
* :func:`set_worker_state` / :func:`worker_state`: a pool whose workers receive a large, shared
  argument (a dataset, a network's weights) once, through the pool's initializer, while the jobs
  themselves carry only indices (IRNet's relation labels, URN's uncertainty pass).

Spawned, not forked, processes: a forked child of a process that has run torch can hang.

Thread use is decided here, once (:func:`threads_per_process`): processes × (threads + DataLoader
workers) <= the cores this process may run on (:func:`usable_cores`). Oversubscribed cores, or
cores shared with other work (a learner's busy laptop, a CI run), make torch's OpenMP threads wait
for a descheduled team-mate at every operation's barrier; libgomp's waiting threads spin by
default, so the wait also burns the cores the others need: notebook 00's training cell went from
110 s to 811 s on a shared machine. :func:`openmp_env` / :func:`quiet_openmp` make the threads of
the processes started from here (workers, notebook kernels, torchrun's ranks) wait passively
(``OMP_WAIT_POLICY=PASSIVE``): an OpenMP runtime reads it once, when it loads, so it must be in a
process's environment before torch is imported there.

Several machines sharing one output folder split a per-image pass (CRFs, random walks, CAMs) with
:func:`pending` (``WSSS_SHARD=i/n``: this machine takes every n-th image from the i-th, 0-based,
:func:`shard_spec` / :func:`shard`) and :func:`finish_folder` (the folder's 'complete' marker only once every image
is there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .errors import ParameterError, ShardIncomplete
from .io import mark_folder_complete
from .progress import bar as progress_bar
from .threads import spawn_pool, thread_shares

SHARD_ENV = "WSSS_SHARD"  # 'i/n': this machine's share of the per-image passes
SHARD_WAIT_ENV = "WSSS_SHARD_WAIT"  # seconds to wait for the other shards (default 0: stop at once)

_STATE = {}  # this worker's share of the pool's arguments (set once per worker by the initializer)


def set_worker_state(state: dict, setup=None) -> None:
    """A pool initializer: keep ``state`` for :func:`worker_state`; ``setup(state)``, if given,
    runs once in the worker and may change it (e.g. rebuild a network from its weights)."""
    _STATE.clear()
    _STATE.update(state)
    if setup is not None:
        setup(_STATE)


def worker_state() -> dict:
    """The state the pool's initializer gave this worker (:func:`set_worker_state`)."""
    return _STATE


def _threaded_call(job):
    fn, arg, threads = job
    torch.set_num_threads(threads)
    return fn(arg)


def map_jobs(
    fn, jobs: list, processes: int = 1, desc: str = "jobs", progress: bool = True, done: int = 0
) -> list:
    """``[fn(job) for job in jobs]``, in order; with ``processes`` > 1 in a pool of spawned
    processes (``fn`` and the jobs must be picklable: a module-level function), each job with its
    :func:`thread_shares`. A small network uses CPU threads poorly, so workers pay even on 2 cores
    (six 48-px runs of notebook 02: 66 s with 2 workers vs 92 s in one process with 2 threads).
    A single job with ``processes`` > 1 runs here, with the thread share it would have had in the
    pool (so its result does not depend on how many jobs came with it).
    ``done``: jobs of the same batch already done elsewhere (found in a cache): the progress bar
    counts them, so it reads "12/12" when the cache held everything."""
    bar = dict(desc=desc, disable=not progress, total=len(jobs) + done, initial=done)
    if processes <= 1:
        return list(progress_bar((fn(j) for j in jobs), **bar))
    shares = thread_shares(len(jobs), processes)
    if len(jobs) <= 1:
        before = torch.get_num_threads()
        try:
            return list(
                progress_bar((_threaded_call((fn, j, t)) for j, t in zip(jobs, shares)), **bar)
            )
        finally:
            torch.set_num_threads(before)
    work = [(fn, j, t) for j, t in zip(jobs, shares)]
    with spawn_pool(processes) as pool:
        return list(progress_bar(pool.map(_threaded_call, work), **bar))


def run_streamed(fn, jobs, processes: int = 1, max_in_flight: int = 64, on_done=None) -> None:
    """Run ``fn(job)`` for each job of the iterable ``jobs`` as it is produced — the main process
    makes each job's input (a network's probabilities for one image) while workers run ``fn`` (its
    CRFs): here when ``processes`` <= 1, else in a pool of that many spawned processes with at
    most ``max_in_flight`` jobs submitted and unfinished (the producer waits for the oldest), so
    the inputs waiting in memory stay bounded. ``on_done()`` is called after each job (a progress
    bar's update); a job's error is raised here. ``fn`` and the jobs must be picklable."""
    from collections import deque

    done = on_done or (lambda: None)
    if processes <= 1:
        for job in jobs:
            fn(job)
            done()
        return
    with spawn_pool(processes) as pool:
        in_flight = deque()
        for job in jobs:
            in_flight.append(pool.submit(fn, job))
            while len(in_flight) > max_in_flight:
                in_flight.popleft().result()
                done()
        while in_flight:
            in_flight.popleft().result()
            done()


def compute_missing(
    fn, jobs: list, missing, processes: int = 1, desc: str = "jobs", progress: bool = True
) -> int:
    """Run ``fn(job)`` for each job with ``missing(job)`` true — e.g. a network not yet in the
    artifact cache, which ``fn`` trains and stores — in ``processes`` spawned workers
    (:func:`map_jobs`; a single missing job runs here). Returns how many ran."""
    todo = [j for j in jobs if missing(j)]
    if todo:
        map_jobs(fn, todo, processes, desc, progress)
    return len(todo)


# ------------------------------------------------------------------------------------------------
# Per-image passes split over machines
# ------------------------------------------------------------------------------------------------


def shard_spec(shard=None) -> tuple:
    """This machine's share of a per-image pass as (index, count), 0 <= index < count: ``shard``
    given as (i, n) or 'i/n', else the ``WSSS_SHARD`` environment variable ('i/n'), else (0, 1),
    the whole pass. A malformed value raises an error naming the form."""
    text = os.environ.get(SHARD_ENV, "").strip() if shard is None else shard
    if text in ("", None):
        return 0, 1
    try:
        i, n = (int(v) for v in (text.split("/") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        i, n = -1, 0
    if not 0 <= i < n:
        raise ParameterError(
            f"shard {text!r} is not valid: give 'i/n' with 0 <= i < n (e.g. {SHARD_ENV}=0/2 "
            "and 1/2 on two machines sharing the output folder)"
        )
    return i, n


def shard(items, index: int = 0, count: int = 1) -> list:
    """Machine ``index``'s share of ``items`` among ``count``: every ``count``-th item from the
    ``index``-th (interleaved, so costly and cheap stretches of a split spread over the machines).
    The shares of 0..count-1 are disjoint and together hold every item."""
    return list(items)[index::count]


def pending(indices, path_of, spec=None) -> list:
    """The work a resumable, sharded per-image pass still has: this machine's share
    (:func:`shard_spec` of ``spec``) of ``indices`` whose output file ``path_of(i)`` does not exist."""
    i, n = shard_spec(spec)
    return [int(k) for k in shard(indices, i, n) if not Path(path_of(k)).exists()]


def finish_folder(folder, names, suffix: str = ".png", spec=(0, 1)) -> None:
    """After this machine's share (``spec`` = (index, count)) of a per-image pass into ``folder``:
    write the 'complete' marker (:func:`wsss_edu.io.mark_folder_complete`) once every file
    ``<name><suffix>`` exists. Files of other shards still missing: wait up to ``WSSS_SHARD_WAIT``
    seconds for them (default 0), then raise :class:`wsss_edu.errors.ShardIncomplete` saying how
    many are missing and how to go on."""
    folder = Path(folder)
    deadline = time.monotonic() + float(os.environ.get(SHARD_WAIT_ENV, "0") or 0)
    while True:
        missing = [n for n in names if not (folder / f"{n}{suffix}").exists()]
        if not missing:
            mark_folder_complete(folder, len(names))
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(min(10.0, max(0.1, deadline - time.monotonic())))
    i, n = spec
    raise ShardIncomplete(
        f"shard {i}/{n} is written, but {len(missing)} of {len(names)} files of the other "
        f"shards are still missing in {folder} (first: {missing[0]}{suffix}): run the "
        f"other shards ({SHARD_ENV}=j/{n}) on the machines sharing this folder, then "
        f"run again (any shard, or none: the written files are kept); or set "
        f"{SHARD_WAIT_ENV}=<seconds> to wait for them"
    )
