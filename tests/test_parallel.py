"""wsss_edu.parallel: thread shares and the spawned pool keep the jobs' order and results."""

import torch

from wsss_edu import parallel, threads


def _threads_and_square(x):
    return torch.get_num_threads(), x * x


def test_thread_shares_are_the_same_for_every_job_whatever_the_number_of_jobs():
    assert threads.thread_shares(5, 2, threads=4) == [2] * 5
    assert threads.thread_shares(1, 2, threads=4) == [2]  # alone: still its share
    assert threads.thread_shares(3, 4, threads=2) == [1, 1, 1]
    assert threads.thread_shares(2, 1, threads=3) == [3, 3]


def test_a_single_job_runs_here_with_its_share_and_the_threads_are_restored():
    before = torch.get_num_threads()
    [(used, nine)] = parallel.map_jobs(_threads_and_square, [3], 2, progress=False)
    assert nine == 9 and used == threads.thread_shares(1, 2)[0]
    assert torch.get_num_threads() == before


def test_map_jobs_in_processes_matches_the_loop():
    jobs = list(range(5))
    serial = parallel.map_jobs(_threads_and_square, jobs, 1, progress=False)
    pooled = parallel.map_jobs(_threads_and_square, jobs, 2, progress=False)
    assert [r[1] for r in pooled] == [r[1] for r in serial] == [x * x for x in jobs]
    every = torch.get_num_threads()
    assert [r[0] for r in pooled] == threads.thread_shares(5, 2, every)


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
    ran = parallel.compute_missing(
        _touch, jobs, lambda p: not (tmp_path / p).exists(), processes=2, progress=False
    )
    assert ran == 2 and done.read_text() == "old"
    assert (tmp_path / "b").read_text() == (tmp_path / "c").read_text() == "done"
    assert (
        parallel.compute_missing(
            _touch, jobs, lambda p: not (tmp_path / p).exists(), 2, progress=False
        )
        == 0
    )


def _write_square(job):
    path, x = job
    if x < 0:
        raise ValueError(f"job {x} fails")
    path.write_text(str(x * x))


def test_run_streamed_runs_every_job_once_keeps_the_producer_bounded_and_raises_a_failure(tmp_path):
    import pytest

    produced, finished = [], []

    def jobs(xs):
        for x in xs:
            # never more than max_in_flight + 1 jobs produced and not yet finished
            assert len(produced) - len(finished) <= 3 + 1
            produced.append(x)
            yield tmp_path / f"{x}.txt", x

    for processes in (1, 2):
        produced.clear(), finished.clear()
        parallel.run_streamed(
            _write_square,
            jobs(range(10)),
            processes,
            max_in_flight=3,
            on_done=lambda: finished.append(1),
        )
        assert len(finished) == 10
        assert sorted(int(p.read_text()) for p in tmp_path.glob("*.txt")) == [
            x * x for x in range(10)
        ]
        for p in tmp_path.glob("*.txt"):
            p.unlink()
        with pytest.raises(ValueError, match="job -1 fails"):
            parallel.run_streamed(_write_square, jobs([1, -1, 2]), processes, max_in_flight=3)
