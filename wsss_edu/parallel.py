"""Running independent jobs in spawned worker processes on a CPU machine.

Two patterns recur in the package:

* :func:`map_jobs`: many independent trainings (notebook 02's experiments, notebook 06's students),
  the CPU threads split between the workers; the jobs of a last, incomplete round get every thread,
  as the other workers are then about to fall idle;
* :func:`set_worker_state` / :func:`worker_state`: a pool whose workers receive a large, shared
  argument (a dataset, a network's weights) once, through the pool's initializer, while the jobs
  themselves carry only indices (IRNet's relation labels, URN's uncertainty pass).

Spawned, not forked, processes: a forked child of a process that has run torch can hang.
"""
from __future__ import annotations

import torch

_STATE = {}   # this worker's share of the pool's arguments (set once per worker by the initializer)


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


def thread_shares(n_jobs: int, processes: int, threads: int | None = None) -> list:
    """CPU threads for each of ``n_jobs`` jobs run on ``processes`` workers: ``threads`` (default:
    torch's count) split evenly, and all of them for the jobs of a last, incomplete round."""
    every = threads or torch.get_num_threads()
    share = max(1, every // max(1, processes))
    last_round = n_jobs - n_jobs % max(1, processes)
    return [every if i >= last_round else share for i in range(n_jobs)]


def _threaded_call(job):
    fn, arg, threads = job
    torch.set_num_threads(threads)
    return fn(arg)


def map_jobs(fn, jobs: list, processes: int = 1, desc: str = "jobs", progress: bool = True) -> list:
    """``[fn(job) for job in jobs]``, in order; with ``processes`` > 1 in a pool of spawned
    processes (``fn`` and the jobs must be picklable: a module-level function), each job with its
    :func:`thread_shares`. A small network uses CPU threads poorly, so workers pay even on 2 cores
    (six 48-px runs of notebook 02: 66 s with 2 workers vs 92 s in one process with 2 threads)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    if processes <= 1 or len(jobs) <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    work = [(fn, j, t) for j, t in zip(jobs, thread_shares(len(jobs), processes))]
    with ProcessPoolExecutor(processes, mp_context=mp.get_context("spawn")) as pool:
        return list(tqdm(pool.map(_threaded_call, work), total=len(jobs), desc=desc, disable=not progress))


def compute_missing(fn, jobs: list, missing, processes: int = 1, desc: str = "jobs",
                    progress: bool = True) -> int:
    """Run ``fn(job)`` for each job with ``missing(job)`` true — e.g. a network not yet in the
    artifact cache, which ``fn`` trains and stores — in ``processes`` spawned workers
    (:func:`map_jobs`; a single missing job runs here). Returns how many ran."""
    todo = [j for j in jobs if missing(j)]
    if todo:
        map_jobs(fn, todo, processes, desc, progress)
    return len(todo)
