"""Training helpers: device choice, seeding, a loop that learns, checkpoints and resume."""

import dataclasses

import numpy as np
import pytest
import torch

from wsss_edu import data, models, train
from wsss_edu.datasets import PseudoLabeled
from wsss_edu.errors import ParameterError
from wsss_edu.steps import segmenter_step

try:
    from . import fixtures_training as fx_training
except ImportError:
    import fixtures_training as fx_training


def test_device_always_usable():
    assert train.get_device("auto").type in ("cpu", "cuda", "mps")
    assert train.get_device("cpu").type == "cpu"
    with pytest.raises(ParameterError, match="choose one of"):
        train.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="available"):
            train.get_device("cuda")


def test_seeding_reproduces():
    train.seed_everything(1)
    a = torch.rand(3), np.random.rand(3)
    train.seed_everything(1)
    b = torch.rand(3), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def make(seed=0):
    train.seed_everything(seed)
    net = models.UNet(2, width=8, depth=2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    return net, opt


def test_fit_learns_and_evaluates():
    arrays = fx_training.red_squares(32, background=50)
    loader = torch.utils.data.DataLoader(data.ArrayDataset(arrays), batch_size=8)
    net, opt = make()
    hist = train.fit(net, loader, train.cross_entropy_loss, opt, 8, "cpu", progress=False)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    m = train.evaluate_segmentation(net, loader, 2, progress=False)
    assert m.iou[1] > 0.7


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    arrays = fx_training.red_squares(32, background=50)
    loader = torch.utils.data.DataLoader(
        data.ArrayDataset(arrays, flip=True), batch_size=8, shuffle=True
    )  # shuffling and flips must resume too
    net, opt = make()
    full = train.fit(net, loader, train.cross_entropy_loss, opt, 4, "cpu", progress=False)
    ck = tmp_path / "run.ckpt"
    net2, opt2 = make()
    train.fit(net2, loader, train.cross_entropy_loss, opt2, 2, "cpu", checkpoint=ck, progress=False)
    net3, opt3 = make(seed=5)  # a fresh process: other weights and RNG, resumed from the file
    resumed = train.fit(
        net3, loader, train.cross_entropy_loss, opt3, 4, "cpu", checkpoint=ck, progress=False
    )
    assert np.allclose(resumed["loss"], full["loss"], rtol=1e-4)
    for a, b in zip(net.state_dict().values(), net3.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    state = torch.load(ck, weights_only=True)  # plain state_dicts
    assert state["epoch"] == 3
    again = train.fit(
        net3, loader, train.cross_entropy_loss, opt3, 4, "cpu", checkpoint=ck, progress=False
    )  # finished: trains no more
    assert again["loss"] == resumed["loss"]


def test_unet_any_size_and_tensor_round_trip():
    net = models.UNet(3, width=4, depth=3).eval()
    assert net(torch.zeros(1, 3, 37, 50)).shape == (1, 3, 37, 50)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 3)).astype(np.uint8)
    assert np.array_equal(data.tensor_to_images(data.images_to_tensor(imgs)), imgs)


def test_full_profile_model_builds_without_weights():
    net = models.make_segmenter("deeplabv3_resnet50", 5, weights=None).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    with pytest.raises(ParameterError, match="choose one of"):
        models.make_segmenter("segformer", 5)


def test_augmentation_differs_across_epochs_and_workers():
    arrays = fx_training.red_squares(16, background=50)
    ds = data.ArrayDataset(arrays, flip=True)
    train.seed_everything(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
    e1, e2 = [next(iter(loader))["image"] for _ in range(2)]
    assert not torch.equal(e1, e2)  # a new epoch draws new flips
    train.seed_everything(0)
    again = next(iter(loader))["image"]
    assert torch.equal(e1, again)  # and the run reproduces


def test_relabeled_dataset_and_whole_image_flip():
    from wsss_edu.data import Relabeled, SegTransformDataset
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=6, size=32)
    new = np.zeros((6, 6), np.float32)
    new[:, 2] = 1
    view = Relabeled(ds, new, indices=[4, 1])
    assert len(view) == 2 and view.names == [ds.names[4], ds.names[1]]
    assert (
        view[0]["labels"].tolist() == new[4].tolist() and (view[1]["image"] == ds[1]["image"]).all()
    )
    with pytest.raises(ValueError, match="rows"):
        Relabeled(ds, new[:3])
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        s = SegTransformDataset(ds, flip=True)[0]
        flipped = torch.equal(s["mask"], torch.as_tensor(ds[0]["mask"][:, ::-1].copy()).long())
        same = torch.equal(s["mask"], torch.as_tensor(ds[0]["mask"]).long())
        assert flipped or same
        seen.add(flipped)
    assert seen == {True, False}
    assert torch.equal(SegTransformDataset(ds)[0]["mask"], torch.as_tensor(ds[0]["mask"]).long())


def test_deeplabv3plus_shapes_groups_and_tta():
    from wsss_edu import models

    torch.manual_seed(0)
    net = models.make_segmenter("deeplabv3plus_small", 4, width=8).eval()
    x = torch.randn(2, 3, 37, 50)
    assert net(x).shape == (2, 4, 37, 50)
    groups = net.param_groups(0.01)
    assert [g["lr"] for g in groups] == [0.01, 0.1]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    p = models.tta_probs(net, x)
    assert p.shape == (2, 4, 37, 50) and torch.allclose(p.sum(1), torch.ones(2, 37, 50), atol=1e-5)
    # one scale, no flip: TTA is the plain softmax; a flip-equivariant model is unchanged by the flip
    assert torch.allclose(
        models.tta_probs(net, x, scales=(1.0,), flip=False), net(x).softmax(1), atol=1e-6
    )

    class Pointwise(torch.nn.Module):
        def forward(self, x):
            return x[:, :2] * 3

    assert torch.allclose(
        models.tta_probs(Pointwise(), x, scales=(1.0,)), (x[:, :2] * 3).softmax(1), atol=1e-6
    )


def test_deeplabv3plus_resnet50_builds_without_weights():
    from wsss_edu import models

    net = models.make_segmenter("deeplabv3plus_resnet50", 3, weights=None).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 80)).shape == (1, 3, 64, 80)


def _toy_pseudo_labeled(folder, n):
    """n toy images of 32 px and a pseudo-label folder holding their true masks."""
    from wsss_edu.io import write_mask
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=n, seed=0, size=32)
    for i in range(len(ds)):
        write_mask(folder / f"{ds.names[i]}.png", ds[i]["mask"])
    return ds, PseudoLabeled(ds, folder)


def test_segmenter_trains_on_pseudo_labels_and_evaluates(tmp_path):
    ds, pl = _toy_pseudo_labeled(tmp_path / "pl", 16)
    cfg = segmenter_step.SegmenterConfig(width=8, epochs=1, batch_size=8, optimizer="adam", lr=1e-3)
    net = segmenter_step.cached_segmenter(tmp_path / "out", pl, {"pl": "x"}, cfg, progress=False)
    m = segmenter_step.evaluate(net, ds, progress=False)
    m_tta = segmenter_step.evaluate(net, ds, tta=True, progress=False)
    assert (
        m.cm.sum()
        == m_tta.cm.sum()
        == 16 * 32 * 32 - (np.stack([ds[i]["mask"] for i in range(16)]) == 255).sum()
    )
    assert list((tmp_path / "out" / "cache" / "segmenter").glob("*.pt"))
    with pytest.raises(FileNotFoundError, match="notebook"):
        PseudoLabeled(ds, tmp_path / "nothing")


def test_pseudo_labels_of_another_resolution_are_resized_only_when_asked(tmp_path):
    """The toy world draws the same scenes at any size: 32-px labels serve the 64-px images
    with resize=True (nearest, so every 2x2 block repeats one label), and are refused without."""
    from wsss_edu.errors import DataFileError
    from wsss_edu.toy import ToyDataset

    small, _ = _toy_pseudo_labeled(tmp_path / "pl", 4)
    big = ToyDataset("train", n=4, seed=0, size=64)
    s = PseudoLabeled(big, tmp_path / "pl", resize=True)[1]
    assert s["image"].shape[:2] == s["mask"].shape == (64, 64)
    assert np.array_equal(s["mask"], np.kron(small[1]["mask"], np.ones((2, 2), np.uint8)))
    assert np.array_equal(s["true_mask"], big[1]["mask"])
    with pytest.raises(DataFileError, match="does not belong"):
        PseudoLabeled(big, tmp_path / "pl")[1]


def test_segmenters_trained_in_worker_processes_equal_those_trained_in_turn(tmp_path):
    ds, pl = _toy_pseudo_labeled(tmp_path / "pl", 8)
    cfg = segmenter_step.SegmenterConfig(width=8, epochs=1, batch_size=4, optimizer="adam", lr=1e-3)
    jobs = [(pl, {"pl": "x"}, dataclasses.replace(cfg, seed=s)) for s in (0, 1, 2)]
    pooled = segmenter_step.cached_segmenters(tmp_path / "a", jobs, processes=2, progress=False)
    serial = [segmenter_step.cached_segmenter(tmp_path / "b", *j, progress=False) for j in jobs]
    x = (
        torch.as_tensor(np.stack([ds[i]["image"] for i in range(2)])).permute(0, 3, 1, 2).float()
        / 255
    )
    for a, b in zip(pooled, serial):  # same seeds, same steps: the same networks (up to threads)
        with torch.no_grad():
            assert torch.allclose(a(x), b(x), atol=1e-4)
    assert not torch.allclose(pooled[0](x), pooled[1](x))
    again = segmenter_step.cached_segmenters(
        tmp_path / "a", jobs, processes=2, progress=False
    )  # from the cache
    assert all(
        torch.equal(next(p.parameters()), next(q.parameters())) for p, q in zip(again, pooled)
    )


def test_poly_schedule_decays_to_zero():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = train.poly_schedule(opt, 10, power=1.0)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.1)


def test_evaluate_with_crf_post_processing_cleans_salt_noise():
    """segmenter_step.evaluate(crf=...): the dense CRF on the softmax of a network that predicts the true
    mask with 10 % of its pixels replaced by random classes removes most of the noise."""
    pytest.importorskip("pydensecrf")
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("val", n=6, seed=0, size=48)
    rng = np.random.default_rng(0)
    k = ds.num_classes
    logits = []
    for i in range(len(ds)):
        m = np.where(ds[i]["mask"] == 255, 0, ds[i]["mask"])
        m = np.where(rng.random(m.shape) < 0.1, rng.integers(0, k, m.shape), m)
        logits.append(
            3.0 * torch.nn.functional.one_hot(torch.as_tensor(m), k).permute(2, 0, 1).float()
        )

    class Replay(torch.nn.Module):  # returns the prepared logits, batch after batch
        def __init__(self):
            super().__init__()
            self.w, self.at = torch.nn.Parameter(torch.zeros(())), 0

        def forward(self, x):
            out = torch.stack(logits[self.at : self.at + len(x)])
            self.at += len(x)
            return out

    plain = segmenter_step.evaluate(Replay(), ds, progress=False)
    cleaned = segmenter_step.evaluate(Replay(), ds, progress=False, crf="rrm_test")
    assert plain.cm.sum() == cleaned.cm.sum()
    assert cleaned.pixel_accuracy > plain.pixel_accuracy + 0.05, (
        cleaned.pixel_accuracy,
        plain.pixel_accuracy,
    )
    pooled = segmenter_step.evaluate(
        Replay(), ds, progress=False, crf="rrm_test", processes=2
    )  # the CRFs in 2 processes
    assert np.array_equal(pooled.cm, cleaned.cm)
    once = Replay()  # both meters from one forward pass over the images
    both = segmenter_step.evaluate_with_and_without_crf(once, ds, "rrm_test", progress=False)
    assert once.at == len(ds)
    assert np.array_equal(both[0].cm, plain.cm) and np.array_equal(both[1].cm, cleaned.cm)
    with pytest.raises(ValueError, match="rrm_test"):
        segmenter_step.evaluate_with_and_without_crf(Replay(), ds, None)
