"""wsss_edu.parallel: thread shares and the spawned pool keep the jobs' order and results."""
import torch

from wsss_edu import parallel


def _threads_and_square(x):
    return torch.get_num_threads(), x * x


def test_thread_shares_split_evenly_and_give_the_last_round_everything():
    assert parallel.thread_shares(5, 2, threads=4) == [2, 2, 2, 2, 4]
    assert parallel.thread_shares(4, 2, threads=4) == [2, 2, 2, 2]
    assert parallel.thread_shares(3, 4, threads=2) == [2, 2, 2]     # one round, incomplete
    assert parallel.thread_shares(2, 1, threads=3) == [3, 3]


def test_map_jobs_in_processes_matches_the_loop():
    jobs = list(range(5))
    serial = parallel.map_jobs(_threads_and_square, jobs, 1, progress=False)
    pooled = parallel.map_jobs(_threads_and_square, jobs, 2, progress=False)
    assert [r[1] for r in pooled] == [r[1] for r in serial] == [x * x for x in jobs]
    every = torch.get_num_threads()
    assert [r[0] for r in pooled] == parallel.thread_shares(5, 2, every)


def test_worker_state_setup_runs_once_on_the_state():
    parallel.set_worker_state({"a": 1}, lambda s: s.update(b=s["a"] + 1))
    assert parallel.worker_state() == {"a": 1, "b": 2}
    parallel.set_worker_state({"c": 3})
    assert parallel.worker_state() == {"c": 3}


def _touch(path):
    from pathlib import Path

    Path(path).write_text("done")
    return path


def test_compute_missing_runs_only_the_missing_jobs(tmp_path):
    done = tmp_path / "a"
    done.write_text("old")
    jobs = [str(tmp_path / n) for n in ("a", "b", "c")]
    ran = parallel.compute_missing(_touch, jobs, lambda p: not (tmp_path / p).exists(), processes=2,
                                   progress=False)
    assert ran == 2 and done.read_text() == "old"
    assert (tmp_path / "b").read_text() == (tmp_path / "c").read_text() == "done"
    assert parallel.compute_missing(_touch, jobs, lambda p: not (tmp_path / p).exists(), 2, progress=False) == 0
