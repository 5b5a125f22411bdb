"""Fault injection (issue 24) for trainings and their caches: a damaged artifact or checkpoint is
named and recomputed, never taken for the result; two computations of one cache entry never run
side by side; the ranks of a killed launcher die with it; every rank resumes from rank 0's reading
of the checkpoint."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_edu import cache, distributed, io, results, train
from wsss_edu.errors import DataFileError, RunInProgress

try:
    from . import fixtures_training as fx_training
except ImportError:
    import fixtures_training as fx_training


def flip_byte(path, at=None):
    data = bytearray(Path(path).read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x01
    Path(path).write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------
# Artifacts: a flipped bit or a missing digest is named and recomputed
# ------------------------------------------------------------------------------------------------


def counted(calls, value):
    def compute():
        calls.append(1)
        return {"w": torch.arange(4096, dtype=torch.float32) * value}

    return compute


@pytest.mark.parametrize("fault", ["flipped byte", "digest deleted", "emptied"])
def test_a_damaged_artifact_is_named_and_recomputed(tmp_path, fault):
    """Before: a flipped bit in the tensor data loaded as other weights, no error."""
    calls = []
    first = cache.cached(tmp_path, "net", {"a": 1}, counted(calls, 1.0))["w"]
    path = cache.artifact_path(tmp_path, "net", {"a": 1})
    assert io.digest_path(path).exists()
    if fault == "flipped byte":
        flip_byte(path, at=path.stat().st_size // 2)
        with pytest.raises(DataFileError, match="do not match its digest"):
            cache.load_artifact(path)
    elif fault == "digest deleted":
        io.digest_path(path).unlink()
    else:
        path.write_bytes(b"")
    why = {
        "flipped byte": "do not match",
        "digest deleted": "no digest",
        "emptied": "do not match",
    }[fault]
    with pytest.warns(
        UserWarning, match=rf"{path.name} cannot be trusted: .*{why}.*computing it again"
    ):
        again = cache.cached(tmp_path, "net", {"a": 1}, counted(calls, 1.0))["w"]
    assert len(calls) == 2 and torch.equal(again, first)
    assert cache.load_artifact(path)["w"].equal(first)  # stored anew, with its digest
    cache.cached(tmp_path, "net", {"a": 1}, counted(calls, 1.0))
    assert len(calls) == 2  # and trusted from now on


def test_artifacts_of_an_earlier_version_are_recomputed_unless_trusted(tmp_path):
    calls = []
    cache.cached(tmp_path, "net", {"a": 1}, counted(calls, 1.0))
    cache.cached(tmp_path, "net", {"a": 2}, counted(calls, 2.0))
    for a in (1, 2):  # as the version before digests left them
        io.digest_path(cache.artifact_path(tmp_path, "net", {"a": a})).unlink()
    paths = [cache.artifact_path(tmp_path, "net", {"a": a}) for a in (1, 2)]
    assert sorted(cache.trust_unverified(tmp_path)) == sorted(paths)
    cache.cached(tmp_path, "net", {"a": 1}, counted(calls, 1.0))
    assert len(calls) == 2  # adopted: reused


def test_a_saved_network_with_a_bad_digest_names_the_notebook_to_rerun(tmp_path):
    net = torch.nn.Linear(64, 8)
    path = results.save_model(tmp_path, "05_x", "seg", net)
    assert torch.equal(results.load_model(tmp_path, "05_x", "seg").weight, net.weight)
    flip_byte(path, at=path.stat().st_size // 2)
    with pytest.raises(DataFileError, match=r"seg\.pt cannot be trusted.*notebooks/05_x\.ipynb"):
        results.load_model(tmp_path, "05_x", "seg")


# ------------------------------------------------------------------------------------------------
# Resume checkpoints: an unusable one is named, set aside, and the training starts over
# ------------------------------------------------------------------------------------------------


def tiny_fit(checkpoint, epochs, scramble=False):
    """A small U-Net (batch norm), SGD with momentum and a step schedule, batch 8, seeded; in a
    rank: that rank's share. ``scramble``: start from other weights (a resume must replace them)."""
    from torch.utils.data import DataLoader

    from wsss_edu import data, models

    train.seed_everything(0)
    net = models.UNet(2, width=4, depth=2)
    if scramble:
        with torch.no_grad():
            for p in net.parameters():
                p.uniform_(-1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    loader = DataLoader(data.ArrayDataset(fx_training.red_squares()), batch_size=8, shuffle=True)
    hist = train.fit(
        net,
        loader,
        train.cross_entropy_loss,
        opt,
        epochs,
        "cpu",
        sched,
        checkpoint=checkpoint,
        progress=False,
    )
    return {"loss": hist["loss"], "state": net.state_dict()}


def same_run(a, b):
    assert np.allclose(a["loss"], b["loss"], rtol=1e-5)
    for k in a["state"]:
        assert torch.allclose(a["state"][k].double(), b["state"][k].double(), atol=1e-6), k


@pytest.fixture(scope="module")
def clean_run():
    return tiny_fit(None, 2)


def damage(ck, fault):
    if fault == "empty":
        ck.write_bytes(b"")
    elif fault == "half":
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    elif fault == "flipped byte":
        flip_byte(ck)
    elif fault == "no digest":
        io.digest_path(ck).unlink()
    elif fault in ("no optimizer", "no scheduler"):  # a whole checkpoint, its digest right
        state = torch.load(ck, weights_only=True)
        state.pop(fault.split()[1])
        torch.save(state, ck)
        io.write_digest(ck)


WHY = {
    "empty": "do not match",
    "half": "do not match",
    "flipped byte": "do not match",
    "no digest": "no digest",
    "no optimizer": "no optimizer state",
    "no scheduler": "no scheduler state",
}


@pytest.mark.parametrize("fault", list(WHY))
def test_an_unusable_checkpoint_is_set_aside_and_training_starts_over(tmp_path, fault, clean_run):
    """Before: an empty or truncated checkpoint failed every rerun with OSError / a bare EOFError;
    one without optimizer state resumed silently with fresh momentum."""
    ck = tmp_path / "run.ckpt"
    tiny_fit(ck, 1)  # interrupted after epoch 0
    damage(ck, fault)
    with pytest.warns(
        UserWarning,
        match=rf"checkpoint .*run\.ckpt .*{WHY[fault]}.*set aside as "
        r"run\.ckpt\.bad-.*first epoch",
    ):
        again = tiny_fit(ck, 2)
    same_run(again, clean_run)  # from scratch, to the clean result
    aside = list(tmp_path.glob("run.ckpt.bad-*"))
    assert [p.name for p in aside if not p.name.endswith(".sha256")], aside  # kept, not lost
    assert io.digest_problem(ck) is None and torch.load(ck, weights_only=True)["epoch"] == 1


def test_a_sound_checkpoint_is_trusted_and_resumed(tmp_path, clean_run):
    ck = tmp_path / "run.ckpt"
    tiny_fit(ck, 1)
    same_run(tiny_fit(ck, 2, scramble=True), clean_run)  # weights, momentum, schedule resumed


def test_a_second_training_of_a_checkpoint_in_use_names_the_live_process(tmp_path, monkeypatch):
    ck = tmp_path / "run.ckpt"
    monkeypatch.setattr(train, "CHECKPOINT_LOCK_WAIT", 0.3)
    with io.run_lock(ck, 0, "a training"):  # as a live training holds it
        with pytest.raises(RunInProgress, match=rf"process {os.getpid()} .*\.run\.ckpt\.lock"):
            tiny_fit(ck, 1)
    assert not ck.exists()
    tiny_fit(ck, 1)  # released: trains


# ------------------------------------------------------------------------------------------------
# Two processes computing one cache entry: one computes, the other waits and loads
# ------------------------------------------------------------------------------------------------


def _compute_logged(counter):
    with open(counter, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.5)  # long enough for the other to arrive
    return {"w": torch.arange(10.0)}


def _cached_together(out, counter, me):
    import functools

    ready = Path(out) / f"ready{me}"
    ready.touch()
    while len(list(Path(out).glob("ready*"))) < 2:  # both imported: start together
        time.sleep(0.01)
    got = cache.cached(out, "net", {"k": 1}, functools.partial(_compute_logged, counter))
    sys.exit(0 if torch.equal(got["w"], torch.arange(10.0)) else 5)


def test_two_processes_computing_one_entry_compute_it_once(tmp_path):
    """Before: both trained (the README's --shard mode does it on every machine) and one crashed on
    the other's temporary file in 3 of 6 trials."""
    ctx = mp.get_context("spawn")
    counter = tmp_path / "computed.txt"
    procs = [
        ctx.Process(target=_cached_together, args=(str(tmp_path), str(counter), i))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(counter.read_text().split()) == 1  # computed once, loaded by the other


# ------------------------------------------------------------------------------------------------
# Several processes: the ranks die with their launcher; all resume from rank 0's reading
# ------------------------------------------------------------------------------------------------


def spin_until_killed(folder):
    """A rank that trains "forever" (collectives every 0.1 s, as training does), after writing
    its pid and its parent's (torchrun)."""
    import torch.distributed as dist

    Path(folder, f"rank{distributed.rank()}.pid").write_text(f"{os.getpid()} {os.getppid()}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dist.barrier()
        time.sleep(0.1)


def test_killing_the_launcher_ends_torchrun_and_its_ranks(tmp_path):
    """Before: after SIGKILL of the Python that launched them (an OOM-killed or restarted notebook
    kernel), torchrun and both ranks trained on and rewrote the checkpoint, and a rerun hung."""
    here = Path(__file__).resolve().parent
    code = (
        "import sys; sys.path[:0] = %r\n"
        "from wsss_edu import distributed\nimport %s as t\n"
        "distributed.launch(t.spin_until_killed, {'folder': %r}, 2)\n"
        % ([str(here.parent), str(here)], __name__.split(".")[-1], str(tmp_path))
    )
    env = dict(
        os.environ, TMPDIR=str(tmp_path), PYTHONPATH=os.pathsep.join([str(here.parent), str(here)])
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], env=env)
    pids = []
    try:
        deadline = time.monotonic() + 90
        files = [tmp_path / f"rank{r}.pid" for r in range(2)]
        while not all(f.exists() and f.read_text() for f in files):
            assert launcher.poll() is None and time.monotonic() < deadline, (
                "the ranks did not start"
            )
            time.sleep(0.1)
        pairs = [tuple(map(int, f.read_text().split())) for f in files]
        torchrun = pairs[0][1]
        pids = [p for p, _ in pairs] + [torchrun]
        assert all(distributed._alive(p) for p in pids)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while any(distributed._alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if distributed._alive(p)], "orphans left training"
    finally:
        for p in pids:  # never leave them behind, even on failure
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def resume_on_two_ranks(ckpt):
    """On two ranks: an uninterrupted 2-epoch run, a run interrupted after epoch 0, and its resume
    from the checkpoint with other starting weights, where rank 1 cannot read the checkpoint (so
    it can only take rank 0's reading)."""
    full = tiny_fit(None, 2)
    tiny_fit(ckpt, 1)
    real = train.read_checkpoint
    if distributed.rank() != 0:

        def refuse(*a, **k):
            raise AssertionError(f"rank {distributed.rank()} read the checkpoint")

        train.read_checkpoint = refuse
    try:
        resumed = tiny_fit(ckpt, 2, scramble=True)
    finally:
        train.read_checkpoint = real
    return {"full": full, "resumed": resumed}


def test_two_ranks_resume_from_rank_0s_reading_of_the_checkpoint(tmp_path):
    """Before: each rank read the checkpoint itself; with a checkpoint rewritten meanwhile, ranks
    started at different epochs and waited on each other for ever (6 of 14 reruns hung)."""
    out = distributed.launch(
        resume_on_two_ranks, {"ckpt": str(tmp_path / "run.ckpt")}, 2, timeout=300
    )
    same_run(out["resumed"], out["full"])
    assert torch.load(tmp_path / "run.ckpt", weights_only=True)["epoch"] == 1
