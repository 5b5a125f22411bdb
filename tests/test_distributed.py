"""wsss_edu.distributed: training on two CPU processes (gloo, under torchrun) gives the network one
process trains. Launches are slow to start (each rank imports torch), so one launch serves several
assertions."""

import numpy as np
import pytest
import torch

from wsss_edu import distributed, train
from wsss_edu.steps import irnet_step, rrm_step, segmenter_step

try:
    from . import fixtures_training as fx_training
except ImportError:
    import fixtures_training as fx_training

TOL = dict(rtol=1e-4, atol=1e-5)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].double(), b[k].double()
        assert torch.allclose(x, y, **TOL), (k, float((x - y).abs().max()))


def rank_checks() -> dict:
    """Everything the tests below need from two ranks, in one launch (each launch costs seconds:
    the ranks import torch)."""
    from wsss_edu.errors import ParameterError

    out = {
        "unet": {v: train_unet(v) for v in ("exact", "per_rank_mean", "local_bn")},
        "irnet": {v: train_tiny_irnet(v) for v in ("exact", "per_rank_mean")},
        "rrm": train_tiny_rrm(),
    }
    try:
        odd_batch()
    except ParameterError as e:
        out["odd_batch"] = str(e)
    return out


@pytest.fixture(scope="module")
def two_ranks():
    return distributed.launch(rank_checks, {}, 2)


# ------------------------------------------------------------------------------------------------
# (a) the core guarantee: 2 ranks x batch B/2 = 1 process x batch B, batch norm included
# ------------------------------------------------------------------------------------------------


def train_unet(variant: str = "exact", epochs: int = 2) -> dict:
    """A small U-Net (batch norm) trained by ``train.fit`` with SGD + momentum, batch 8, on red
    squares with half the images mostly ignored (``fixtures_training.red_squares``; in a rank:
    that rank's share). ``variant`` switches off one ingredient of the equivalence, to show the
    test notices: 'per_rank_mean' (each rank divides its loss by its own labelled pixels),
    'local_bn' (batch norm on the rank's half batch)."""
    from torch.utils.data import DataLoader

    from wsss_edu import data, models

    saved = distributed.batch_mean, distributed.sync_batchnorm
    if variant == "per_rank_mean":
        distributed.batch_mean = lambda total, count: total / count.clamp(min=1)
    if variant == "local_bn":
        distributed.sync_batchnorm = lambda model: lambda: None
    try:
        train.seed_everything(0)
        net = models.UNet(2, width=4, depth=2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        loader = DataLoader(
            data.ArrayDataset(fx_training.red_squares(ignore_half=True)), batch_size=8
        )
        hist = train.fit(net, loader, train.cross_entropy_loss, opt, epochs, "cpu", progress=False)
    finally:
        distributed.batch_mean, distributed.sync_batchnorm = saved
    return {"state": net.state_dict(), "loss": hist["loss"]}


def test_two_processes_train_the_one_process_network_with_batch_norm(two_ranks):
    two = two_ranks["unet"]
    one = train_unet()
    assert_same_weights(two["exact"]["state"], one["state"])  # running statistics included
    assert np.allclose(two["exact"]["loss"], one["loss"], rtol=1e-5)
    # each ingredient matters: without it the two-process network differs (the test can fail)
    assert max_difference(two["per_rank_mean"]["state"], one["state"]) > 1e-3
    assert max_difference(two["local_bn"]["state"], one["state"]) > 1e-3


# ------------------------------------------------------------------------------------------------
# (c) IRNet: its loss balances pair sets by their counts over the batch
# ------------------------------------------------------------------------------------------------


class PairImages(torch.utils.data.Dataset):
    """IRNet training samples of 32-px images whose relation labels differ in kind: only images 0
    and 5 hold a foreground object (class 1) among confident background; the others are
    background with a large unsure (255) area. So the two ranks' halves of a batch hold very
    different numbers of foreground-positive, background-positive and negative pairs, and often
    one rank holds none of the foreground pairs."""

    def __init__(self, n=8, size=32):
        rng = np.random.default_rng(1)
        self.images = torch.as_tensor(rng.normal(0, 1, (n, 3, size, size)), dtype=torch.float32)
        self.relations = torch.zeros(n, size // 4, size // 4, dtype=torch.long)
        for i in range(n):
            if i in (0, 5):
                self.images[i, :, 8:24, 8:24] += 2.0
                self.relations[i, 2:6, 2:6] = 1
                self.relations[i, 1:7, 1] = 255
            else:
                self.relations[i, :, : 2 + i % 4] = 255

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "relation": self.relations[i]}


def train_tiny_irnet(variant: str = "exact") -> dict:
    """``irnet_step.train_irnet`` (the package's step 2, shuffled batches of the whole set) on frozen
    small-CNN stages with batch norm; in a rank: that rank's share. ``variant='per_rank_mean'``:
    each rank averages its pairs over its own counts, as a naive data-parallel port does."""
    from wsss_edu import irnet
    from wsss_edu.cam import CAMClassifier

    saved = distributed.batch_mean
    if variant == "per_rank_mean":
        distributed.batch_mean = lambda total, count: total / count.clamp(min=1)
    try:
        torch.manual_seed(3)
        clf = CAMClassifier(2, "small", width=4, depth=2)
        with torch.no_grad():  # frozen stages with non-trivial statistics
            for m in clf.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        stages = irnet.backbone_stages(clf)
        before = {k: v.clone() for k, v in torch.nn.ModuleList(stages).state_dict().items()}
        cfg = irnet_step.IRNetConfig(
            radius=3, epochs=3, batch_size=8, width=8, lr_boundary=0.1, lr_displacement=0.3
        )
        net = irnet_step.train_irnet(stages, PairImages(), cfg, progress=False)
    finally:
        distributed.batch_mean = saved
    return {"state": net.state_dict(), "stages_before": before}


def test_irnet_on_two_processes_keeps_the_global_pair_balance(two_ranks):
    """The failure IRNet's users met (jiwoon-ahn/irn#13: multi-GPU training ruins its results),
    as it would arise here: each rank normalising its pair losses by its own pair counts changes
    the balance of background, foreground and negative pairs. With the global counts
    (wsss_edu.distributed.batch_mean) two ranks train exactly the one-process IRNet; the frozen
    backbone's batch-norm statistics stay untouched."""
    two = two_ranks["irnet"]
    one = train_tiny_irnet()
    assert_same_weights(two["exact"]["state"], one["state"])
    stages = {
        k[len("stages.") :]: v for k, v in two["exact"]["state"].items() if k.startswith("stages.")
    }
    assert_same_weights(stages, two["exact"]["stages_before"])  # frozen: never updated
    assert any("running_mean" in k for k in stages)
    assert max_difference(two["per_rank_mean"]["state"], one["state"]) > 1e-3


# ------------------------------------------------------------------------------------------------
# (b) end to end: a cached training through launch, stored under the one-process cache key
# ------------------------------------------------------------------------------------------------


class MirroredToy:
    """Toy images and masks made left-right symmetric, so the random flips of training change
    nothing and the one- and two-process runs see the same data."""

    def __init__(self, n=8, size=32):
        from wsss_edu.toy import ToyDataset

        self.base = ToyDataset("train", n=n, seed=0, size=size)
        self.names, self.classes, self.num_classes = (
            self.base.names,
            self.base.classes,
            self.base.num_classes,
        )

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = dict(self.base[i])
        half = s["image"].shape[1] // 2
        for k in ("image", "mask"):
            a = s[k].copy()
            a[:, half:] = a[:, :half][:, ::-1]
            s[k] = a
        return s


def test_cached_segmenter_trains_on_two_processes_into_the_same_cache_entry(tmp_path, monkeypatch):
    from wsss_edu.cache import artifact_path

    calls = []
    real_launch = distributed.launch
    monkeypatch.setattr(
        distributed, "launch", lambda *a, **k: calls.append(a[2]) or real_launch(*a, **k)
    )
    ds = MirroredToy()
    cfg = segmenter_step.SegmenterConfig(
        model="unet", width=4, epochs=3, batch_size=8, optimizer="sgd", lr=0.05
    )
    monkeypatch.setenv(distributed.PROCESSES_ENV, "2")
    two = segmenter_step.cached_segmenter(
        tmp_path / "two", ds, {"labels": "mirrored"}, cfg, progress=False
    )
    assert calls == [2]
    monkeypatch.setenv(distributed.PROCESSES_ENV, "1")
    one = segmenter_step.cached_segmenter(
        tmp_path / "one", ds, {"labels": "mirrored"}, cfg, progress=False
    )
    assert calls == [2]  # forced to one process
    key = segmenter_step._segmenter_key({"labels": "mirrored"}, cfg)
    for root in ("one", "two"):
        assert artifact_path(
            tmp_path / root, "segmenter", key, segmenter_step.CODE_VERSION
        ).exists()
    assert_same_weights(two.state_dict(), one.state_dict())
    assert not two.training


# ------------------------------------------------------------------------------------------------
# RRM: a loss that switches the network to eval mode and calls model.cam inside the step
# ------------------------------------------------------------------------------------------------


def image_labels(images, cams, tags, *args, **kwargs):
    """Stand-in for RRM's reliable labels, a fixed function of the image: dark pixels background,
    bright ones the image's first tag, the rest 255. RRM's own labels threshold the network's CAMs
    and the CRF's output, so float-rounding differences (batch norm summed in another order) flip
    a few near-tied pixels; fixed labels make the comparison exact."""
    g = torch.as_tensor(images).float().mean(-1)
    out = torch.full(g.shape, 255, dtype=torch.long)
    out[g < 90] = 0
    bright = g > 160
    out[bright] = (tags.float().argmax(1) + 1)[:, None, None].expand_as(out)[bright]
    return out


def train_tiny_rrm() -> dict:
    """``rrm_step.train_rrm`` (its loss switches the network to eval mode and computes CAMs inside each
    step, then split cross-entropy and the dense energy) for 2 steps on the mirrored toy images,
    batch = the whole set, with :func:`image_labels` for its labels."""
    from wsss_edu import rrm
    from wsss_edu.cam import CAMClassifier

    saved = rrm.batch_reliable_labels
    rrm.batch_reliable_labels = image_labels
    try:
        ds = MirroredToy()
        torch.manual_seed(5)
        init = CAMClassifier(ds.num_classes - 1, "small", width=4, depth=2).state_dict()
        cfg = rrm_step.RRMConfig(
            width=4,
            depth=2,
            seg_channels=8,
            epochs=2,
            batch_size=8,
            sigma_xy=10.0,
            optimizer="sgd",
            lr=0.01,
        )
        return rrm_step.train_rrm(ds, cfg, progress=False, init=init).state_dict()
    finally:
        rrm.batch_reliable_labels = saved


def test_rrm_on_two_processes_equals_one(two_ranks):
    assert_same_weights(two_ranks["rrm"], train_tiny_rrm())


# ------------------------------------------------------------------------------------------------
# Errors name the fix
# ------------------------------------------------------------------------------------------------


def odd_batch():
    """fit with batch 5 on two ranks: an error naming the fix."""
    from torch.utils.data import DataLoader

    from wsss_edu import data, models

    net = models.UNet(2, width=4, depth=1)
    loader = DataLoader(
        data.ArrayDataset(fx_training.red_squares(10, ignore_half=True)), batch_size=5
    )
    train.fit(
        net,
        loader,
        train.cross_entropy_loss,
        torch.optim.SGD(net.parameters(), 0.1),
        1,
        "cpu",
        progress=False,
    )


def test_a_batch_that_does_not_split_over_the_ranks_names_the_fix(two_ranks):
    assert (
        "divisible by 2" in two_ranks["odd_batch"]
        and distributed.PROCESSES_ENV in two_ranks["odd_batch"]
    )


def test_a_failing_rank_comes_back_with_its_traceback_and_log(tmp_path):
    (tmp_path / "error-rank1.txt").write_text("Traceback ...\nValueError: bad crop")
    (tmp_path / "rank1.log").write_text("epoch 1\nValueError: bad crop")
    msg = distributed._failure_message(tmp_path, 2, 1)
    assert "rank 1 of 2 failed" in msg and "bad crop" in msg and "epoch 1" in msg
    assert f"{distributed.PROCESSES_ENV}=1" in msg
    (tmp_path / "error-rank1.txt").unlink()
    (tmp_path / "launcher.log").write_text("SIGKILL")
    assert "SIGKILL" in distributed._failure_message(tmp_path, 2, -9)
    with pytest.raises(Exception, match="module"):
        distributed.launch(lambda: 1, {}, 2)  # not importable by the ranks


def test_process_count_from_the_environment(monkeypatch):
    from wsss_edu.errors import ParameterError

    monkeypatch.delenv(distributed.PROCESSES_ENV, raising=False)
    assert distributed.train_processes("cpu") == 1 and distributed.train_processes(None) == 1
    monkeypatch.setenv(distributed.PROCESSES_ENV, "3")
    assert distributed.train_processes("cpu") == 3
    monkeypatch.setenv(distributed.PROCESSES_ENV, "two")
    with pytest.raises(ParameterError, match="whole number"):
        distributed.train_processes("cpu")
    assert distributed.world() == 1 and distributed.is_main() and not distributed.active()
    t = torch.tensor(6.0)
    assert (
        distributed.batch_mean(t, torch.tensor(0)) == 6
        and distributed.batch_mean(t, torch.tensor(3)) == 2
    )
