"""Per-image passes split over machines (WSSS_SHARD=i/n): two shards writing into one folder give
exactly the one-machine folder, and the folder's 'complete' marker comes only with the last file."""

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_edu import parallel
from wsss_edu.errors import ParameterError, ShardIncomplete
from wsss_edu.steps import cam_step, irnet_step, rrm_step, urn_step


def test_shards_are_disjoint_and_cover_everything(monkeypatch):
    items = list(range(11))
    parts = [parallel.shard(items, i, 3) for i in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    monkeypatch.delenv(parallel.SHARD_ENV, raising=False)
    assert parallel.shard_spec() == (0, 1) and parallel.shard_spec((1, 2)) == (1, 2)
    monkeypatch.setenv(parallel.SHARD_ENV, "2/3")
    assert parallel.shard_spec() == (2, 3) and parallel.shard_spec("0/2") == (0, 2)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ParameterError, match="0 <= i < n"):
            parallel.shard_spec(bad)


def test_pending_is_this_shards_missing_work(tmp_path):
    for k in (0, 3):
        (tmp_path / f"{k}.png").write_text("x")
    path_of = lambda k: tmp_path / f"{k}.png"  # noqa: E731
    assert parallel.pending(range(7), path_of, (0, 1)) == [1, 2, 4, 5, 6]
    assert parallel.pending(range(7), path_of, "0/2") == [2, 4, 6] and parallel.pending(
        range(7), path_of, (1, 2)
    ) == [1, 5]


def test_finish_folder_marks_complete_only_when_every_file_is_there(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_text("x")
    with pytest.raises(ShardIncomplete, match=r"1 of 2 .*b\.png.*WSSS_SHARD=j/2"):
        parallel.finish_folder(tmp_path, ["a", "b"], ".png", (0, 2))
    assert not (tmp_path / "complete").exists()
    (tmp_path / "b.png").write_text("x")
    parallel.finish_folder(tmp_path, ["a", "b"], ".png", (1, 2))
    assert (tmp_path / "complete").exists()


def same_files(a: Path, b: Path, suffix: str):
    """The two folders hold the same files ``*suffix`` with the same contents."""
    fa, fb = (
        sorted(p.name for p in a.glob(f"*{suffix}")),
        sorted(p.name for p in b.glob(f"*{suffix}")),
    )
    assert fa == fb and fa
    for name in fa:
        if suffix == ".npz":
            with np.load(a / name) as x, np.load(b / name) as y:
                assert all(np.array_equal(x[k], y[k]) for k in x.files)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def two_machines(write, folder: Path):
    """Run ``write(shard)`` as machine 0 then machine 1 of 2: the first stops with
    ShardIncomplete, no marker; the second completes the folder."""
    with pytest.raises(ShardIncomplete):
        write("0/2")
    assert not (folder / "complete").exists()
    write("1/2")
    assert (folder / "complete").exists()


def toy(n=6, size=24):
    from wsss_edu.toy import ToyDataset

    return ToyDataset("train", n=n, seed=0, size=size)


def test_urn_uncertainty_pass_in_two_shards_equals_one_machine(tmp_path):
    pytest.importorskip("pydensecrf")
    from wsss_edu.models import UNet

    ds = toy()
    torch.manual_seed(0)
    net = UNet(ds.num_classes, width=4, depth=2).eval()
    kw = dict(factors=(0.25, 4.0), scales=(1.0,), progress=False)
    assert urn_step.uncertainty_pass(net, ds, tmp_path / "one", **kw) == 6
    assert (tmp_path / "one" / "complete").exists()
    two_machines(
        lambda s: urn_step.uncertainty_pass(net, ds, tmp_path / "two", shard=s, **kw),
        tmp_path / "two",
    )
    same_files(tmp_path / "one", tmp_path / "two", ".png")


def test_rrm_pseudo_labels_in_two_shards_and_in_two_processes_equal_one_machine(tmp_path):
    pytest.importorskip("pydensecrf")

    ds = toy(n=8, size=32)
    cfg = rrm_step.RRMConfig(width=4, depth=2, seg_channels=8)
    torch.manual_seed(0)
    net = rrm_step.make_rrm(ds.num_classes - 1, cfg).eval()
    rrm_step.write_pseudo_labels(net, ds, tmp_path / "one", progress=False)
    two_machines(
        lambda s: rrm_step.write_pseudo_labels(net, ds, tmp_path / "two", progress=False, shard=s),
        tmp_path / "two",
    )
    same_files(tmp_path / "one", tmp_path / "two", ".png")
    rrm_step.write_pseudo_labels(
        net, ds, tmp_path / "pool", progress=False, processes=2, batch_size=4
    )
    same_files(tmp_path / "one", tmp_path / "pool", ".png")


def test_irnet_relation_and_pseudo_labels_and_cams_in_two_shards_equal_one_machine(tmp_path):
    pytest.importorskip("pydensecrf")
    from wsss_edu import cam, irnet

    ds = toy(n=8, size=32)
    torch.manual_seed(0)
    clf = cam.CAMClassifier(ds.num_classes - 1, "small", width=4, depth=2).eval()
    ccfg = cam_step.ClassifierConfig(width=4, depth=2)
    cams_one = cam_step.cached_cams(tmp_path / "one", clf, ds, {"d": 1}, ccfg, progress=False)
    cams_two = cam_step.cam_folder(
        tmp_path / "two",
        {"d": 1},
        ccfg,
        scales=[1.0, 0.5, 1.5, 2.0],
        flip=True,
        normalization="per_class",
        cam="cam",
        layer=None,
    )
    two_machines(
        lambda s: cam_step.cached_cams(
            tmp_path / "two", clf, ds, {"d": 1}, ccfg, progress=False, shard=s
        ),
        cams_two,
    )
    same_files(cams_one, cams_two, ".npz")
    folders = {"one": cams_one, "two": cams_two}

    cfg = irnet_step.IRNetConfig(radius=3)
    idx = [0, 2, 3, 5, 6, 7]
    rel_one = irnet_step.cached_relation_labels(
        tmp_path / "one", ds, folders["one"], idx, cfg, False
    )
    rel_two = tmp_path / "two" / rel_one.relative_to(tmp_path / "one")  # the same cache key
    two_machines(
        lambda s: irnet_step.cached_relation_labels(
            tmp_path / "two", ds, folders["two"], idx, cfg, False, shard=s
        ),
        rel_two,
    )
    same_files(rel_one, rel_two, ".png")

    net = irnet.IRNet(irnet.backbone_stages(clf), width=8).eval()
    walk = irnet_step.WalkConfig(radius=2, exp_times=1)
    pl_one = irnet_step.cached_pseudo_labels(
        tmp_path / "one", net, ds, folders["one"], {"k": 1}, walk, progress=False
    )
    pl_two = irnet_step.pseudo_label_folder(tmp_path / "two", {"k": 1}, walk)
    two_machines(
        lambda s: irnet_step.cached_pseudo_labels(
            tmp_path / "two", net, ds, folders["two"], {"k": 1}, walk, progress=False, shard=s
        ),
        pl_two,
    )
    same_files(pl_one, pl_two, ".png")
