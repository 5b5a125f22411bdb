"""URN (paper 002): response scaling, the uncertainty map, the loss weight, the weighted loss and
the label + weight PNG."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_edu import urn
from wsss_edu.steps import segmenter_step, urn_step


def random_probs(c=4, h=12, w=10, seed=0):
    g = np.random.default_rng(seed)
    p = g.random((c, h, w)).astype(np.float32) + 0.05
    return p / p.sum(0)


def test_scale_response_touches_only_its_channel():
    p = random_probs()
    for c in range(len(p)):
        s = urn.scale_response(p, c, 0.2)
        assert np.allclose(s[c], p[c] ** 0.2)
        others = [k for k in range(len(p)) if k != c]
        assert np.array_equal(s[others], p[others])
    assert np.array_equal(p, random_probs())  # the input is not modified
    t = torch.as_tensor(p)
    st = urn.scale_response(t, 1, 5.0)
    assert (
        torch.allclose(st[1], t[1] ** 5)
        and torch.equal(st[0], t[0])
        and torch.equal(t, torch.as_tensor(p))
    )


def test_factor_below_one_widens_above_one_narrows():
    p = random_probs(seed=1)
    factors = (0.15, 0.5, 1.0, 2.0, 6.0)
    masks = urn.scaled_masks(None, p, [2], factors, crf_params=None)
    areas = masks[0].reshape(len(factors), -1).sum(1)
    assert masks.shape == (1, len(factors), 12, 10) and masks.dtype == bool
    assert np.all(np.diff(areas) <= 0) and areas[0] > areas[-1]
    assert np.array_equal(masks[0, 2], p.argmax(0) == 2)  # factor 1: the plain argmax


def test_one_factor_gives_zero_variance_and_zero_uncertainty():
    p = random_probs(seed=2)
    masks = urn.scaled_masks(None, p, [0, 1, 2, 3], (4.0,), crf_params=None)
    var = urn.scaling_variance(masks)
    assert var.shape == (4, 12, 10) and np.all(var == 0)
    assert np.all(urn.uncertainty_map(var) == 0)


def test_variance_on_a_hand_made_example():
    # one class, six factors; pixel (0, j) is on in j of the six masks
    masks = np.zeros((1, 6, 1, 7), bool)
    for j in range(7):
        masks[0, :j, 0, j] = True
    k = np.arange(7)
    assert np.allclose(urn.scaling_variance(masks)[0, 0], k * (6 - k) / 36)
    assert np.allclose(urn.scaling_variance(masks, ddof=1)[0, 0], k * (6 - k) / 30)
    # eps=0: the plain min-max, which removes the constant factor exactly
    u0 = urn.uncertainty_map(urn.scaling_variance(masks), eps=0)
    u1 = urn.uncertainty_map(urn.scaling_variance(masks, ddof=1), eps=0)
    assert np.allclose(u0, u1, rtol=0, atol=1e-15)  # Norm removes the constant factor
    assert np.allclose(
        u0[0], (k * (6 - k)) / 9, rtol=0, atol=1e-15
    )  # max k(6-k) = 9 at k = 3; min 0
    # the default, the reference's (U - min) / (max - min + 1e-6): the top level is 0.999996, not 1,
    # and the constant factor no longer cancels exactly (a few 1e-6 apart)
    ur = urn.uncertainty_map(urn.scaling_variance(masks))
    assert np.allclose(ur[0], (k * (6 - k) / 36) / (9 / 36 + 1e-6), rtol=0, atol=1e-15)
    assert ur.max() == pytest.approx(0.999996, abs=1e-7)
    assert np.allclose(
        ur, urn.uncertainty_map(urn.scaling_variance(masks, ddof=1)), rtol=0, atol=1e-5
    )
    # max over classes: a second class that varies only where the first does not
    two = np.concatenate([masks, np.zeros_like(masks)])
    two[1, :3, 0, 0] = True  # pixel 0: class 1 on in 3 of 6
    assert urn.uncertainty_map(urn.scaling_variance(two), eps=0)[0, 0] == 1.0
    assert urn.uncertainty_map(urn.scaling_variance(two))[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_loss_weight_takes_only_t_and_one():
    u = np.random.default_rng(3).random((20, 20)).astype(np.float32)
    for t in (0.0, 0.05, 0.1, 0.5, 1.0):
        y = urn.loss_weight(u, t)
        assert set(np.unique(y)) <= {np.float32(t), np.float32(1.0)}
        assert np.array_equal(y, np.where((1 - u) >= t, 1.0, t).astype(np.float32))
        yt = urn.loss_weight(torch.as_tensor(u), t)
        assert torch.equal(yt, torch.as_tensor(y))
    assert np.all(urn.loss_weight(u, 1.0)[u > 0] == 1.0)  # t = 1: every pixel weighs 1
    assert np.all(urn.loss_weight(u, 0.0) == 1.0)  # and, read literally, t = 0 as well


def test_loss_weight_split_drops_the_pixels_t_would_down_weight():
    u = np.random.default_rng(4).random((20, 20)).astype(np.float32)
    y05 = urn.loss_weight(u, 0.05)
    y0 = urn.loss_weight(u, 0.0, split=0.05)  # Table 3's "t = 0": drop them
    assert np.array_equal(y0 == 0, y05 < 1) and np.all(y0[y05 == 1] == 1)
    assert (y0 == 0).any()
    assert np.array_equal(urn.loss_weight(u, 0.3, split=0.3), urn.loss_weight(u, 0.3))


def test_weighted_cross_entropy_is_plain_ce_when_weight_is_one():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    ones = torch.ones(2, 6, 7)
    assert urn.weighted_cross_entropy(logits, target, ones).item() == pytest.approx(
        F.cross_entropy(logits, target).item()
    )
    # with ignored pixels: the sum over labelled pixels divided by ALL pixels (the reference's mean)
    target[0, :3] = 255
    loss = urn.weighted_cross_entropy(logits, target, ones)
    labelled = (target != 255).sum().item()
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=255).item() * labelled / target.numel(),
        rel=1e-5,
    )
    # a weight scales each pixel's term
    w = torch.rand(2, 6, 7, generator=g)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert urn.weighted_cross_entropy(logits, target, w).item() == pytest.approx(
        (per_pixel * w).mean().item(), rel=1e-6
    )
    urn.weighted_cross_entropy(logits, target, w).backward()
    assert torch.isfinite(logits.grad).all()


def test_every_table_row_trains_one_loss_and_plain_is_weight_one_with_ignored_pixels():
    """Tables 3/5 compare like with like: the plain row's loss equals the weighted loss with Y = 1
    on a batch with ignored pixels (crop padding), where a mean over labelled pixels would not."""

    rows = urn.table_rows((0, 0.05, 1), 0.05, "u", "p")
    assert {r[0] for r in rows.values()} == {urn.TABLE_LOSS}
    loss, t, split, _ = rows["plain"]
    assert t == 1 and split is None and rows["t = 0"][1:3] == (0, 0.05)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[:, :2] = 255  # 40% padding
    uncertainty = torch.rand(2, 5, 6, generator=g)
    batch = {
        "image": torch.zeros(2, 3, 5, 6),
        "mask": target,
        "weight": urn.loss_weight(uncertainty, t, split),
    }
    model = lambda x: logits  # noqa: E731
    plain = segmenter_step.LOSSES[loss](model, batch)
    ones = urn.weighted_cross_entropy(logits, target, torch.ones(2, 5, 6))
    assert plain.item() == pytest.approx(ones.item(), rel=1e-6)
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert plain.item() == pytest.approx(per_pixel.sum().item() / target.numel(), rel=1e-6)
    labelled_mean = segmenter_step.LOSSES["ce"](model, batch)
    assert (
        abs(labelled_mean.item() - plain.item()) > 0.3 * plain.item()
    )  # what the old plain row trained


def test_probability_weight_is_the_detached_target_probability():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 5, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (1, 4, 5), generator=g)
    target[0, 0, 0] = 255
    w = urn.probability_weight(logits, target)
    p = logits.softmax(1)
    assert not w.requires_grad and w[0, 0, 0] == 0
    i, j = 2, 3
    assert w[0, i, j].item() == pytest.approx(p[0, target[0, i, j], i, j].item())
    assert ((w >= 0) & (w <= 1)).all()


def test_cyclic_mask_uses_only_the_kept_channels():
    p = random_probs(c=5, seed=4)
    m = urn.cyclic_pseudo_mask(None, p, np.array([0, 3]), crf_params=None)
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 3}
    assert np.array_equal(m, np.where(p[3] > p[0], 3, 0))


def test_label_and_weight_png_round_trip(tmp_path):
    g = np.random.default_rng(5)
    label = g.integers(0, 21, (17, 23)).astype(np.uint8)
    label[0, :4] = 255
    w = g.random((17, 23)).astype(np.float32)
    path = tmp_path / "sub" / "a.png"
    urn.write_label_and_weight(path, label, w)
    back, w_back = urn.read_label_and_weight(path)
    assert np.array_equal(back, label)
    assert np.array_equal(
        urn.weight_to_uint8(w_back), urn.weight_to_uint8(w)
    )  # the stored bytes, exactly
    # the byte is int(255 W) (truncation, as the reference), so W comes back at most 1/255 lower
    assert np.all(w_back <= w + 1e-7) and np.abs(w_back - w).max() < 1 / 255 + 1e-7
    urn.write_label_and_weight(path, label, w, rounding="round")  # the nearest byte
    back, w_round = urn.read_label_and_weight(path)
    assert np.array_equal(back, label) and np.abs(w_round - w).max() <= 0.5 / 255 + 1e-7
    assert not list(path.parent.glob(".*tmp*"))
    from wsss_edu.errors import DataFileError
    from wsss_edu.io import write_mask

    write_mask(tmp_path / "plain.png", label)
    with pytest.raises(DataFileError, match="uncertainty pass"):
        urn.read_label_and_weight(tmp_path / "plain.png")


def test_uncertainty_marks_the_ambiguous_band_with_the_crf():
    # a flat grey image (no colour edge for the CRF to snap to); P is confident far from x = 16 and
    # undecided near it, so scaling the response moves the boundary there
    h, w = 24, 40
    x = np.arange(w)[None].repeat(h, 0)
    image = np.full((h, w, 3), 128, np.uint8)
    p1 = 1 / (1 + np.exp(-(x - 19.5)))  # class 1 on the right
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    mask = (x >= 20).astype(np.uint8)
    for include_background in (False, True):
        for present_from in ("crf", "pseudo_mask"):
            cyclic, u = urn.urn_uncertainty(
                image, probs, mask, include_background=include_background, present_from=present_from
            )
            assert cyclic.shape == (h, w) and u.shape == (h, w)
            # the top level is 1 - 4e-6 with the reference's + 1e-6 in Norm (eps), 1 with eps=0
            assert u.min() == 0 and u.max() == pytest.approx(1.0, abs=1e-5)
            assert u[:, 16:24].mean() > 0.5
            assert u[:, :3].max() == 0 and u[:, -3:].max() == 0  # far from it: certain
            assert np.array_equal(cyclic, mask)
    # nothing labelled (eq. 5 read from the pseudo-mask): nothing to learn from; the reference's
    # reading takes the classes from argmax CRF(P) and never finds none
    cyclic, u = urn.urn_uncertainty(
        image, probs, np.full((h, w), 255, np.uint8), present_from="pseudo_mask"
    )
    assert np.all(cyclic == 255) and np.all(u == 0)
    cyclic, u = urn.urn_uncertainty(image, probs, np.full((h, w), 255, np.uint8))
    assert np.array_equal(cyclic, mask)


class TinySet:
    """Samples {'image', 'mask', 'name'}: squares on a dark background, the mask a shifted square
    (a noisy pseudo-mask)."""

    def __init__(self, n=6, size=24, seed=0):
        g = np.random.default_rng(seed)
        self.samples = []
        for i in range(n):
            img = np.full((size, size, 3), 30, np.uint8)
            mask = np.zeros((size, size), np.uint8)
            y, x, c = g.integers(2, size // 2, 2).tolist() + [int(g.integers(1, 3))]
            img[y : y + 9, x : x + 9] = (200, 60, 60) if c == 1 else (60, 60, 200)
            mask[y + 1 : y + 11, x : x + 9] = c
            self.samples.append({"image": img, "mask": mask, "name": f"im{i}"})
        self.names = [s["name"] for s in self.samples]
        self.num_classes = 3

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def tiny_model():
    from wsss_edu.models import UNet

    torch.manual_seed(0)
    return UNet(3, width=4, depth=2).eval()


def test_uncertainty_pass_writes_every_image_resumes_and_matches_in_workers(tmp_path):
    ds, net = TinySet(), tiny_model()
    factors = (0.25, 4.0)
    assert (
        urn_step.uncertainty_pass(net, ds, tmp_path / "one", factors, scales=(1.0,), progress=False)
        == 6
    )
    assert (
        urn_step.uncertainty_pass(net, ds, tmp_path / "one", factors, scales=(1.0,), progress=False)
        == 0
    )
    (tmp_path / "one" / "im2.png").unlink()
    assert (
        urn_step.uncertainty_pass(net, ds, tmp_path / "one", factors, scales=(1.0,), progress=False)
        == 1
    )
    from functools import partial

    from wsss_edu.models import UNet

    with pytest.raises(ValueError, match="model_factory"):
        urn_step.uncertainty_pass(
            net, ds, tmp_path / "two", factors, scales=(1.0,), processes=2, progress=False
        )
    assert (
        urn_step.uncertainty_pass(
            net,
            ds,
            tmp_path / "two",
            factors,
            scales=(1.0,),
            processes=2,
            batch_size=2,
            model_factory=partial(UNet, 3, width=4, depth=2),
            progress=False,
        )
        == 6
    )
    for s in ds:
        label, w = urn.read_label_and_weight(tmp_path / "one" / f"{s['name']}.png")
        label2, w2 = urn.read_label_and_weight(tmp_path / "two" / f"{s['name']}.png")
        assert np.array_equal(label, label2) and np.array_equal(w, w2)
        assert set(np.unique(label)) <= set(np.unique(s["mask"]))  # only the pseudo-mask's classes
        assert w.shape == s["mask"].shape and 0 <= w.min() and w.max() <= 1
        # the same numbers as the per-image function on the network's softmax
        from wsss_edu.data import images_to_tensor
        from wsss_edu.models import tta_probs

        p = tta_probs(net, images_to_tensor(s["image"][None]), (1.0,))[0].numpy()
        # (the pass's defaults: the pseudo-mask's classes, foreground scaled; urn_uncertainty's
        # are the reference's, so they are passed here)
        cyclic, u = urn.urn_uncertainty(
            s["image"], p, s["mask"], factors, include_background=False, present_from="pseudo_mask"
        )
        assert np.array_equal(cyclic, label) and np.array_equal(urn.weight_to_uint8(1 - u), w * 255)


def test_uncertainty_pass_options_and_its_settings_record(tmp_path):
    import json

    from wsss_edu.data import images_to_tensor
    from wsss_edu.errors import ParameterError
    from wsss_edu.models import tta_probs

    ds, net = TinySet(n=3), tiny_model()
    factors = (0.25, 4.0)
    kw = dict(factors=factors, scales=(1.0,), progress=False)
    ref = dict(include_background=True, present_from="crf", layout="RGB")  # the reference's choices
    assert urn_step.uncertainty_pass(net, ds, tmp_path / "ref", **kw, **ref) == 3
    record = json.loads((tmp_path / "ref" / urn_step.SETTINGS_FILE).read_text())
    assert record == urn_step.pass_settings(factors, (1.0,), "urn", **ref)
    assert record["eps"] == 1e-6 and record["rounding"] == "truncate"
    for smp in ds:
        p = tta_probs(net, images_to_tensor(smp["image"][None]), (1.0,))[0].numpy()
        steps = urn.urn_steps(smp["image"], p, None, factors)
        label, w = urn.read_label_and_weight(tmp_path / "ref" / f"{smp['name']}.png")
        assert np.array_equal(label, steps.cyclic) and np.array_equal(w * 255, steps.weight)
    # the same folder with another setting is refused, naming it; the same settings resume
    with pytest.raises(ParameterError, match="present_from"):
        urn_step.uncertainty_pass(
            net, ds, tmp_path / "ref", **kw, include_background=True, layout="RGB"
        )
    assert urn_step.uncertainty_pass(net, ds, tmp_path / "ref", **kw, **ref) == 0
    # a folder written before the record existed: a warning, no record
    (tmp_path / "old").mkdir()
    urn.write_label_and_weight(tmp_path / "old" / "im0.png", ds[0]["mask"], np.ones((24, 24)))
    with pytest.warns(UserWarning, match="earlier wsss_edu"):
        assert urn_step.uncertainty_pass(net, ds, tmp_path / "old", **kw) == 2
    assert not (tmp_path / "old" / urn_step.SETTINGS_FILE).exists()
    with pytest.raises(ParameterError, match="rounding"):
        urn_step.pass_settings(rounding="nearest")


def test_weight_follows_the_mask_through_flip_and_crop():
    from wsss_edu.data import SegTransformDataset, random_scale_crop_flip

    g = np.random.default_rng(6)
    img = g.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    mask = g.integers(0, 4, (20, 30)).astype(np.uint8)
    weight = mask.astype(np.float32) / 10 + 0.05  # a weight that encodes the label
    for seed in range(8):
        i2, m2, w2 = random_scale_crop_flip(
            img, mask, 24, (0.5, 1.5), np.random.default_rng(seed), weight
        )
        i1, m1 = random_scale_crop_flip(img, mask, 24, (0.5, 1.5), np.random.default_rng(seed))
        assert np.array_equal(i1, i2) and np.array_equal(
            m1, m2
        )  # the same draws with or without it
        pad = m2 == 255
        assert np.allclose(w2[~pad], m2[~pad] / 10 + 0.05) and np.all(w2[pad] == 0)

    class One:
        names = ["a"]

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": img, "mask": mask, "weight": weight, "labels": np.zeros(3, np.float32)}

    for crop in (None, 16):
        for _ in range(6):
            s = SegTransformDataset(One(), crop=crop, flip=True)[0]
            ok = s["mask"] != 255
            assert torch.allclose(s["weight"][ok], s["mask"][ok].float() / 10 + 0.05)


def test_label_probability_picks_the_label_channel():
    rng = np.random.default_rng(5)
    p = rng.random((4, 6, 7)).astype(np.float32)
    p /= p.sum(0)
    label = rng.integers(0, 4, (6, 7)).astype(np.uint8)
    label[0, :3] = 255
    w = urn.label_probability(p, label)
    for y in range(6):
        for x in range(7):
            assert w[y, x] == (0 if label[y, x] == 255 else p[label[y, x], y, x])


def test_urn_labeled_reads_cyclic_masks_and_weights(tmp_path):
    ds = TinySet(n=3)
    w = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    for s in ds:
        urn.write_label_and_weight(
            tmp_path / f"{s['name']}.png", (s["mask"] > 0).astype(np.uint8), w
        )
    data = urn_step.URNLabeled(ds, tmp_path, t=0.3)
    s = data[1]
    assert np.array_equal(s["true_mask"], ds[1]["mask"]) and np.array_equal(
        s["mask"], ds[1]["mask"] > 0
    )
    assert set(np.unique(s["weight"])) == {np.float32(0.3), np.float32(1.0)}
    assert np.array_equal(s["weight"] == 1, urn.weight_to_uint8(w) >= 0.3 * 255)
    assert np.all(urn_step.URNLabeled(ds, tmp_path, t=1.0)[0]["weight"] == 1)
    raw = urn_step.URNLabeled(ds, tmp_path, t=None)[1]["weight"]  # the stored weight itself
    assert np.array_equal(raw, urn.weight_to_uint8(w).astype(np.float32) / 255)
    (tmp_path / "im0.png").unlink()
    with pytest.raises(FileNotFoundError, match="uncertainty_pass"):
        urn_step.URNLabeled(ds, tmp_path)


def test_segmenter_trains_with_each_loss(tmp_path):

    ds = TinySet(n=4)
    w = np.ones((24, 24), np.float32)
    for s in ds:
        urn.write_label_and_weight(tmp_path / f"{s['name']}.png", s["mask"], w)

    class Tagged(TinySet):
        def __getitem__(self, i):
            return dict(self.samples[i], labels=np.zeros(2, np.float32))

    data = urn_step.URNLabeled(Tagged(n=4), tmp_path, t=0.05)
    for loss in ("ce", "weighted", "probability"):
        cfg = segmenter_step.SegmenterConfig(
            model="unet", width=4, epochs=1, batch_size=2, optimizer="adam", lr=1e-3, loss=loss
        )
        net = segmenter_step.train_segmenter(data, cfg, progress=False)
        assert not net.training
    with pytest.raises(ValueError, match="weighted"):
        segmenter_step.train_segmenter(data, dataclasses.replace(cfg, loss="focal"), progress=False)


def test_uncertainty_pass_on_a_coarser_crf_grid(tmp_path, monkeypatch):
    """crf_scale travels to every CRF of the pass and into its settings record; the files are at
    the image's size, and equal urn_steps with the same crf_scale; another scale is refused."""
    import json

    from wsss_edu import crf
    from wsss_edu.data import images_to_tensor
    from wsss_edu.errors import ParameterError
    from wsss_edu.models import tta_probs

    ds, net = TinySet(n=2), tiny_model()
    kw = dict(factors=(0.25, 4.0), scales=(1.0,), progress=False)
    seen, plain = [], crf.crf_on_scores_rescaled
    monkeypatch.setattr(urn, "crf_on_scores_rescaled", lambda *a: seen.append(a[3]) or plain(*a))
    assert urn_step.uncertainty_pass(net, ds, tmp_path / "half", **kw, crf_scale=0.5) == 2
    assert seen and set(seen) == {0.5}  # every CRF of the pass ran on the coarser grid
    assert json.loads((tmp_path / "half" / urn_step.SETTINGS_FILE).read_text())["crf_scale"] == 0.5
    for smp in ds:
        p = tta_probs(net, images_to_tensor(smp["image"][None]), (1.0,))[0].numpy()
        half = urn.urn_steps(
            smp["image"],
            p,
            smp["mask"],
            (0.25, 4.0),
            include_background=False,
            present_from="pseudo_mask",
            crf_scale=0.5,
        )
        label, w = urn.read_label_and_weight(tmp_path / "half" / f"{smp['name']}.png")
        assert label.shape == smp["mask"].shape
        assert np.array_equal(label, half.cyclic) and np.array_equal(w * 255, half.weight)
    with pytest.raises(ParameterError, match="crf_scale"):
        urn_step.uncertainty_pass(net, ds, tmp_path / "half", **kw)
