"""Fault injection (issue 24): concurrent writers and interrupted writes never leave a file half
written, never lose another writer's numbers, and a damaged metrics file is named and recovered."""

import json
import multiprocessing as mp
import threading
import time

import numpy as np
import pytest
import torch

from wsss_edu import cache, io, results, train
from wsss_edu.errors import DataFileError

try:
    from . import fixtures_datasets as fx
except ImportError:
    import fixtures_datasets as fx


def _test_module(name):
    import importlib

    try:
        return (
            importlib.import_module(f"{__package__}.{name}")
            if __package__
            else importlib.import_module(name)
        )
    except ImportError:
        return importlib.import_module(name)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_two_writers_of_one_file_at_once_never_collide(tmp_path):
    """The same artifact, checkpoint and mask written by several threads at once (as two notebooks
    or two ``--shard`` machines do on one cache entry): every write succeeds, the file left is one
    writer's whole file, and no temporary file stays behind. With one fixed ``<name>.tmp`` per file
    one writer's rename took the other's temporary file away (FileNotFoundError)."""
    path = tmp_path / "cache" / "x" / "k.pt"
    ckpt = tmp_path / "ck.pt"
    mask = tmp_path / "masks" / "a.png"
    net = torch.nn.Linear(3, 2)
    errors = []

    def write(i):
        try:
            for _ in range(15):
                cache.save_artifact(path, {"w": torch.full((256,), float(i))}, {"i": i})
                train.save_checkpoint(ckpt, net, epoch=i)
                io.write_mask(mask, np.full((8, 8), i, np.uint8))
        except Exception as e:  # collected: an exception in a thread does not fail the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    w = cache.load_artifact(path)["w"]
    assert torch.all(w == w[0]) and 0 <= w[0] < 4  # one writer's, whole
    assert len(np.unique(io.read_mask(mask))) == 1
    assert torch.load(ckpt, weights_only=True)["epoch"] in range(4)
    assert _leftovers(tmp_path) == []


def test_a_slow_digest_never_vouches_for_another_writers_bytes(tmp_path, monkeypatch):
    """The interleaving behind a rare failure of the test above: writer 0 renames its artifact,
    then hashes it slowly; writer 1 renames and hashes its own meanwhile; writer 0's digest must
    not land last beside writer 1's bytes. Without the digest's lock (io.atomic_path_with_digest)
    this leaves a pair that the next load calls damaged, every time."""
    path = tmp_path / "k.pt"
    real = io.file_digest
    first_hashing = threading.Event()

    def slow_for_writer_0(p, *a, **k):
        if threading.current_thread().name == "writer-0":
            first_hashing.set()
            digest = real(p, *a, **k)  # hashes writer 0's bytes ...
            time.sleep(0.5)  # ... and is slow to write the digest down
            return digest
        return real(p, *a, **k)

    monkeypatch.setattr(io, "file_digest", slow_for_writer_0)

    def write(i):
        if i == 1:
            first_hashing.wait(5)
        cache.save_artifact(path, {"w": torch.full((4,), float(i))})

    threads = [threading.Thread(target=write, args=(i,), name=f"writer-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert io.digest_problem(path) is None
    assert cache.load_artifact(path)["w"][0] in (0.0, 1.0)


def test_an_interrupted_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    """A write that fails half way (disk full, Ctrl-C) leaves the old file as it was: a resumed
    run never takes half a file for a result."""
    path = tmp_path / "a.pt"
    cache.save_artifact(path, {"v": torch.ones(4)})
    real_save = torch.save

    def half_then_fail(obj, f, *a, **k):
        real_save({"v": torch.zeros(1)}, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        cache.save_artifact(path, {"v": torch.full((4,), 2.0)})
    monkeypatch.undo()
    assert torch.equal(cache.load_artifact(path)["v"], torch.ones(4))
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(tmp_path / "m.json") as tmp:
            tmp.write_text('{"a": ')
            raise KeyboardInterrupt
    assert not (tmp_path / "m.json").exists() and _leftovers(tmp_path) == []


def _record_many(output_dir, worker, n, start_at):
    import time

    time.sleep(max(0.0, start_at - time.time()))  # both start together, once imported
    for i in range(n):
        results.record_metrics(output_dir, "05_nb", {f"w{worker}_{i}": float(i)})


def test_two_processes_recording_into_one_metrics_file_lose_nothing(tmp_path):
    """Two processes merging numbers into one notebook's metrics JSON at once (read, update,
    write): every number of both is in the file at the end and it is valid JSON. Without the lock
    one's read-modify-write overwrote the other's (and with a fixed temporary name left the JSON
    cut short)."""
    import time

    ctx = mp.get_context("spawn")
    start_at = time.time() + 8
    procs = [
        ctx.Process(target=_record_many, args=(str(tmp_path), w, 60, start_at)) for w in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    got = json.loads((tmp_path / "metrics" / "05_nb.json").read_text())
    assert set(got) == {f"w{w}_{i}" for w in range(2) for i in range(60)}


def test_a_damaged_metrics_file_is_named_and_recording_recovers(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "03_nb.json").write_text('{"miou_cam": 0.4')  # cut short
    (metrics / "04_nb.json").write_text("[1, 2]")  # JSON, but not metrics
    with pytest.raises(DataFileError, match=r"03_nb\.json.*rerun notebook 03_nb"):
        results.load_all_metrics(tmp_path)
    with pytest.raises(DataFileError, match=r"04_nb\.json.*list"):
        results.load_metrics(metrics / "04_nb.json")
    with pytest.warns(UserWarning, match=r"03_nb\.json.*kept as 03_nb\.json\.corrupt-"):
        results.record_metrics(tmp_path, "03_nb", {"miou_cam": 0.5})
    assert results.load_metrics(metrics / "03_nb.json") == {"miou_cam": 0.5}
    aside = list(metrics.glob("03_nb.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == '{"miou_cam": 0.4'  # the evidence kept


def test_the_lock_waits_for_its_holder_and_names_itself_when_it_gives_up(tmp_path):
    target = tmp_path / "m.json"
    with io.file_lock(target):
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=_hold_briefly, args=(str(target),))
        p.start()
        p.join(60)
        assert p.exitcode == 3  # the other process timed out while this one held the lock
    p = mp.get_context("spawn").Process(target=_hold_briefly, args=(str(target),))
    p.start()
    p.join(60)
    assert p.exitcode == 0  # released: the lock is free again


def _hold_briefly(target):
    import sys

    try:
        with io.file_lock(target, timeout=0.3):
            pass
    except TimeoutError as e:
        sys.exit(3 if ".m.json.lock" in str(e) else 4)


def test_a_path_resolves_the_same_way_everywhere(tmp_path, monkeypatch, capsys):
    """``~`` and relative paths mean one folder to every part of the package: the loader, the
    download script, ``params.setup`` and the runner (whose notebooks run in notebooks/). Before,
    ``DATA_ROOT='~/data'`` was "already in place" to the download script and "missing" to the
    loader, and a relative OUTPUT_DIR given to the runner landed in ``notebooks/<dir>``."""
    from wsss_edu import datasets, download, params

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert io.user_path("~/data") == home / "data"
    assert io.user_path("rel/x") == tmp_path / "rel" / "x"
    assert io.user_path("") is None and io.user_path(None) is None
    fx.make_voc(home / "data")
    assert len(datasets.get_dataset("voc", "~/data", split="train")) == 2
    s = params.setup("nb", "voc", "~/data", "out", verbose=False)
    assert (s.data_root, s.output_dir) == (home / "data", tmp_path / "out")
    voc = download.SOURCES["voc"]
    for entry in voc.expected:  # what the download script checks for, beside the fabricated VOC
        (home / "data" / voc.dataset_dir / entry).mkdir(parents=True, exist_ok=True)
    download.complete_marker(home / "data" / voc.dataset_dir).write_text("voc: complete\n")
    assert download.is_in_place("voc", "~/data")  # the marker, as a finished fetch leaves it
    capsys.readouterr()
    download.fetch("voc", "~/data")
    said = capsys.readouterr().err
    assert "already in place" in said and str(home / "data") in said, said


def test_the_runner_takes_a_relative_output_dir_from_where_it_is_called(tmp_path, monkeypatch):
    from wsss_edu import runner

    make_notebook = _test_module("test_params_runner").make_notebook

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    make_notebook(
        nbdir / "00_a.ipynb",
        "from wsss_edu.results import record_metrics\n"
        "record_metrics(OUTPUT_DIR, '00_a', {'a_value': VALUE})",
    )
    monkeypatch.chdir(tmp_path)
    runner.run_notebooks(
        "runs", params={"OUTPUT_DIR": "mine", "VALUE": 2}, notebooks_dir=nbdir, log=lambda *_: None
    )
    assert json.loads((tmp_path / "mine" / "metrics" / "00_a.json").read_text()) == {"a_value": 2}
    assert "`a_value` = 2" in (tmp_path / "mine" / "results.md").read_text()  # one folder, not two
    assert not (nbdir / "mine").exists() and not (tmp_path / "runs").exists()
