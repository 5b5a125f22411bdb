"""Deliberate thread use (wsss_edu.threads: threads per process, passive OpenMP waiting, DataLoader
options) and the training loop's GPU practice (no per-step host reads, channels_last, compile)."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_edu import distributed, models, threads, train
from wsss_edu.data import ArrayDataset
from wsss_edu.errors import ParameterError


def _worker_view(_):
    """What a spawned worker sees: its OpenMP wait policy and torch's thread count."""
    return os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads()


# ---------------------------------------------------------------------------------- threads


@pytest.mark.parametrize("budget", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("processes", [1, 2, 3, 4])
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_processes_times_threads_and_loader_workers_fit_the_budget(budget, processes, workers):
    t = threads.threads_per_process(processes, workers, budget=budget)
    assert t >= 1
    if processes * (1 + workers) <= budget:  # room for everyone: nothing oversubscribed
        assert processes * (t + workers) <= budget
        assert processes * (t + 1 + workers) > budget  # and no core left idle by the split
    else:  # more processes than cores: one thread each, no more
        assert t == 1


def test_usable_cores_follow_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert threads.usable_cores() == 6
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # a user's OMP_NUM_THREADS=64
    assert threads.thread_budget() == 6


def test_thread_shares_come_from_threads_per_process(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert threads.thread_shares(5, 3) == [threads.threads_per_process(3)] * 5 == [1] * 5
    assert threads.thread_shares(2, 2) == [2, 2]


def test_openmp_env_adds_passive_waiting_and_keeps_the_users_values(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.openmp_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.openmp_env(3, environ={}) == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "3",
    }
    assert threads.openmp_env(environ={"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    with threads.quiet_openmp() as added:
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and added
    assert "OMP_WAIT_POLICY" not in os.environ  # removed again: this process's value unchanged
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with threads.quiet_openmp():
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_spawned_workers_wait_passively_with_their_thread_share(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with threads.spawn_pool(2, threads=1) as pool:
        seen = list(pool.map(_worker_view, range(4)))
    assert seen == [("PASSIVE", 1)] * 4
    assert "OMP_WAIT_POLICY" not in os.environ


def test_torchrun_ranks_share_the_threads_and_wait_passively(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    env = distributed._rank_env(3, "cpu")
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OMP_NUM_THREADS"] == "2" == str(threads.threads_per_process(3))


def test_loader_options_follow_the_device_and_cores():
    assert threads.loader_options("cpu", cores=16) == dict(
        num_workers=0, pin_memory=False, persistent_workers=False
    )
    assert threads.loader_options(torch.device("cuda"), cores=16) == dict(
        num_workers=4, pin_memory=True, persistent_workers=True
    )
    assert threads.loader_options("cuda", cores=3)["num_workers"] == 2  # a core for the training
    assert threads.loader_options("cuda", cores=1) == dict(
        num_workers=0, pin_memory=True, persistent_workers=False
    )
    assert threads.loader_options("mps", cores=8)["pin_memory"] is False
    assert threads.loader_options("cpu", workers=2) == dict(
        num_workers=2, pin_memory=False, persistent_workers=True
    )


# ----------------------------------------------------------------------------- training loop


def _task(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (n, size, size, 3)).astype(np.uint8)
    mask = (img[..., 0] > 128).astype(np.uint8)
    return torch.utils.data.DataLoader(
        ArrayDataset({"image": img, "mask": mask}, flip=True), batch_size=8, shuffle=True
    )


def _net_opt(seed=0):
    train.seed_everything(seed)
    net = models.UNet(2, width=8, depth=2)
    return net, torch.optim.Adam(net.parameters(), 1e-2)


def _fit(epochs=3, **kw):
    loader = _task()
    net, opt = _net_opt()
    hist = train.fit(
        net, loader, train.cross_entropy_loss, opt, epochs, "cpu", progress=False, **kw
    )
    return hist, net


def test_history_equals_a_loop_reading_every_step():
    """The deferred reads give the very numbers of a loop that reads each loss as it comes."""
    hist, _ = _fit(epochs=2)
    loader = _task()
    net, opt = _net_opt()
    expected = []
    for _ in range(2):
        total, count = 0.0, 0
        net.train()
        for batch in loader:
            loss = train.cross_entropy_loss(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            count += 1
        expected.append(total / count)
    assert hist["loss"] == expected  # bit for bit


@pytest.mark.parametrize("read_every, reads_per_epoch", [(1e9, 1), (0.0, 3 + 1)])
def test_the_loop_reads_losses_once_per_epoch_or_per_interval(
    monkeypatch, read_every, reads_per_epoch
):
    reads = []
    real = train._losses_sum
    monkeypatch.setattr(train, "LOSS_READ_SECONDS", read_every)
    monkeypatch.setattr(train, "_losses_sum", lambda v, p: reads.append(len(p)) or real(v, p))
    hist, _ = _fit(epochs=2)
    assert len(reads) == 2 * reads_per_epoch  # 24 images in batches of 8: 3 steps an epoch
    assert sum(reads) == 2 * 3  # every step's loss read exactly once
    reference, _ = _fit(epochs=2)
    assert hist["loss"] == reference["loss"]


def test_channels_last_gives_the_same_losses_and_nhwc_weights():
    plain, net = _fit()
    nhwc, net_cl = _fit(channels_last=True)
    assert np.allclose(nhwc["loss"], plain["loss"], rtol=1e-5, atol=1e-6)
    convs = [p for p in net_cl.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(
        p.is_contiguous(memory_format=torch.channels_last)
        for p in net.parameters()
        if p.dim() == 4 and p.shape[1] > 1
    )
    x = {"image": torch.zeros(2, 3, 4, 5), "mask": torch.zeros(2, 4, 5, dtype=torch.long)}
    moved = train.to_device(x, "cpu", channels_last=True)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)
    assert not moved["image"].is_contiguous() and moved["mask"].is_contiguous()


def test_compile_uses_the_compiled_module_and_keeps_the_models_weights(monkeypatch):
    calls = []

    class Compiled(
        torch.nn.Module
    ):  # a stand-in for torch.compile's wrapper (the real one: minutes)
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, x):
            calls.append(x.shape)
            return self.inner(x)

    monkeypatch.setattr(torch, "compile", Compiled)
    hist, net = _fit(compile=True)
    assert len(calls) == 3 * 3
    monkeypatch.undo()
    plain, _ = _fit()
    assert hist["loss"] == plain["loss"]


def test_compile_failing_at_the_first_batch_warns_and_trains_uncompiled(monkeypatch):
    def broken(model):
        def fails(x):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return fails

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="torch.compile failed.*InvalidCxxCompiler"):
        hist, _ = _fit(compile=True)
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain, _ = _fit()
    assert hist["loss"] == plain["loss"]


def test_compile_without_torch_compile_names_the_fix(monkeypatch):
    monkeypatch.delattr(torch, "compile")
    with pytest.raises(ParameterError, match="compile=False"):
        train.compiled(torch.nn.Linear(2, 2), True)
    assert train.compiled(lin := torch.nn.Linear(2, 2), False) is lin


def test_the_pipelines_kernels_start_with_passive_waiting(monkeypatch, tmp_path):
    from wsss_edu import pipeline

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    seen = []

    def execute(src, dst, **kw):  # papermill's place: the kernel would inherit this environment
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
        Path(dst).write_text("{}")

    nb = tmp_path / "00_x.ipynb"
    nb.write_text("{}")
    pipeline.run_step(nb, {}, tmp_path / "step", 60, execute=execute, record={})
    assert seen == ["PASSIVE"] and "OMP_WAIT_POLICY" not in os.environ
