"""Paper 000's equations against independent computations: Gauss-Hermite quadrature for the
expected sigmoid, Monte-Carlo, brute-force targets, and limits (sigma^2 → 0)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_edu import label_uncertainty as lu
from wsss_edu.steps import lu_experiments


def quadrature_expected_sigmoid(mu, sigma2, n=120):
    """E[sigmoid(l)], l ~ N(mu, sigma^2), by Gauss-Hermite quadrature (independent of the code)."""
    x, w = np.polynomial.hermite.hermgauss(n)
    l = mu[..., None] + np.sqrt(2 * sigma2)[..., None] * x
    return (w / np.sqrt(np.pi) * (1 / (1 + np.exp(-l)))).sum(-1)


def test_probit_form_close_to_monte_carlo_over_a_grid():
    """Within 5e-3 for |mu| <= 3, sigma^2 <= 4 (measured max 4.4e-3); the error grows with |mu|
    and sigma^2 together (measured 1.3e-2 at worst over |mu| <= 6, sigma^2 <= 30)."""
    mu, s2 = np.meshgrid(np.linspace(-3, 3, 13), np.array([0, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4]))
    mu_t, s2_t = torch.tensor(mu), torch.tensor(s2)
    approx = lu.expected_probability(mu_t, s2_t).numpy()
    g = torch.Generator().manual_seed(0)
    mc = lu.mc_expected_probability(mu_t, s2_t, samples=400_000, generator=g).numpy()
    assert np.abs(approx - mc).max() < 5e-3
    assert np.abs(approx - quadrature_expected_sigmoid(mu, s2)).max() < 5e-3
    wide_mu, wide_s2 = np.meshgrid(np.linspace(-6, 6, 25), np.linspace(0, 30, 16))
    wide = lu.expected_probability(torch.tensor(wide_mu), torch.tensor(wide_s2)).numpy()
    assert np.abs(wide - quadrature_expected_sigmoid(wide_mu, wide_s2)).max() < 1.5e-2


def test_monte_carlo_converges_as_samples_grow():
    mu, s2 = np.linspace(-3, 3, 7), np.linspace(0.5, 6, 7)
    exact = quadrature_expected_sigmoid(mu, s2)
    errs = []
    for t in (10, 100, 1000, 10000):
        e = [
            np.abs(
                lu.mc_expected_probability(
                    torch.tensor(mu), torch.tensor(s2), t, torch.Generator().manual_seed(k)
                ).numpy()
                - exact
            ).mean()
            for k in range(20)
        ]
        errs.append(np.mean(e))
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < 2e-3 and errs[0] / errs[3] > 10  # ~1/sqrt(T)


def test_losses_reduce_to_plain_bce_and_ce_as_variance_vanishes():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 5, 6, generator=g) * 3
    y = (torch.rand(2, 5, 6, generator=g) > 0.5).float()
    tiny = torch.full_like(mu, 1e-10)
    bce = F.binary_cross_entropy_with_logits(mu, y, reduction="none")
    assert torch.allclose(lu.uncertain_bce(mu, tiny, y), bce, atol=1e-6)
    # W(0) = sigmoid(tau / slope) -> 1 needs tau >> slope (tau = 1, slope = 0.2 gives W = 0.993)
    assert torch.allclose(lu.bootstrapped_bce(mu, tiny, y, tau=4.0), bce, atol=1e-6)
    mu_c = torch.randn(2, 4, 5, 6, generator=g) * 2
    yc = torch.randint(0, 4, (2, 5, 6), generator=g)
    ce = F.cross_entropy(mu_c, yc, reduction="none")
    got = lu.mc_uncertain_ce(mu_c, torch.full_like(mu_c, 1e-12), yc, samples=8, generator=g)
    assert torch.allclose(got, ce, atol=1e-5)


def test_two_class_monte_carlo_matches_the_binary_expectation():
    """With 2 classes, softmax(l)_1 = sigmoid(l1 - l0), l1 - l0 ~ N(mu1 - mu0, s0 + s1)."""
    mu = torch.tensor([[[[0.3]], [[1.5]]]], dtype=torch.float64)  # (1, 2, 1, 1)
    s2 = torch.tensor([[[[0.7]], [[2.1]]]], dtype=torch.float64)
    p1 = lu.mc_expected_softmax(
        mu, s2, samples=400_000, generator=torch.Generator().manual_seed(1)
    )[0, 1]
    exact = quadrature_expected_sigmoid(np.array(1.2), np.array(2.8))
    assert abs(p1.item() - exact) < 3e-3


def test_log_mean_exp_not_mean_of_logs():
    mu = torch.zeros(1, 3, 1, 1)
    s2 = torch.full((1, 3, 1, 1), 4.0)
    y = torch.zeros(1, 1, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    ours = lu.mc_uncertain_ce(mu, s2, y, samples=20000, generator=g).item()
    eps = torch.randn(20000, 1, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    mean_ce = -F.log_softmax(mu + 2 * eps, 2)[:, 0, 0].mean().item()
    assert ours < mean_ce  # Jensen: -log E[p] <= E[-log p]
    assert ours == pytest.approx(math.log(3), abs=0.05)  # symmetric: E[p_y] = 1/3


def test_gradients_finite_at_large_variance():
    mu = torch.randn(2, 1, 4, 4, requires_grad=True)
    s2 = torch.full((2, 1, 4, 4), 1e6, requires_grad=True)
    y = torch.ones(2, 1, 4, 4)
    loss = lu.combined_loss(
        mu, s2, y, torch.ones_like(y, dtype=torch.bool), tau=1.0, detach_weight=False
    )
    loss.backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(s2.grad).all()
    mu_c = torch.randn(1, 3, 4, 4, requires_grad=True)
    s2_c = torch.full((1, 3, 4, 4), 1e6, requires_grad=True)
    lossc = lu.multiclass_loss(
        mu_c, s2_c, torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 4, 4, dtype=torch.bool)
    )
    lossc.backward()
    assert (
        torch.isfinite(lossc)
        and torch.isfinite(mu_c.grad).all()
        and torch.isfinite(s2_c.grad).all()
    )


def test_weight_rule_and_detaching():
    s2 = torch.tensor([0.0, 1.0, 2.0])
    w = lu.bootstrap_weight(s2, tau=1.0, slope=0.2)
    assert w[0] > 0.99 and w[1] == pytest.approx(0.5) and w[2] < 0.01
    mu = torch.tensor([-2.0, 2.0, -2.0], requires_grad=True)
    s2r = torch.tensor([3.0, 3.0, 3.0], requires_grad=True)
    lu.bootstrapped_bce(mu, s2r, torch.ones(3), tau=1.0, detach_weight=True).sum().backward()
    assert s2r.grad is None or torch.all(s2r.grad == 0)
    s2r.grad = None
    lu.bootstrapped_bce(mu, s2r, torch.ones(3), tau=1.0, detach_weight=False).sum().backward()
    assert s2r.grad[0] < 0  # raising sigma^2 lowers the loss where the network disagrees


def test_flipped_targets():
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    mu = torch.tensor([2.0, -2.0, 2.0, -2.0])
    assert torch.equal(lu.flipped_target(y, mu, "flip"), 1 - y)
    assert torch.equal(lu.flipped_target(y, mu, "hard_belief"), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(lu.flipped_target(y, mu, "soft_belief"), torch.sigmoid(mu))
    with pytest.raises(ValueError, match="choose one of"):
        lu.flipped_target(y, mu, "flipped")


def test_bootstrapped_targets_switch_exactly_where_the_rule_says():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 5, 5, generator=g)
    s2 = torch.rand(2, 3, 5, 5, generator=g) * 2
    y = torch.randint(0, 3, (2, 5, 5), generator=g)
    y[0, 0, 0] = 255
    allowed = torch.rand(2, 5, 5, generator=g) > 0.3
    out = lu.bootstrapped_targets(mu, s2, y, tau=1.2, allowed=allowed)
    for n in range(2):
        for i in range(5):
            for j in range(5):
                switch = s2[n, :, i, j].max() > 1.2 and allowed[n, i, j] and y[n, i, j] != 255
                want = mu[n, :, i, j].argmax() if switch else y[n, i, j]
                assert out[n, i, j] == want


def test_rasterize_boxes_small_box_on_top_and_class_map():
    boxes = np.array([[0, 0, 8, 8], [2, 2, 5, 5], [6, 6, 10, 10]])
    out = lu.rasterize_boxes(boxes, [2, 1, 3], (10, 10))
    assert out[3, 3] == 1 and out[0, 0] == 2 and out[7, 7] == 3 and out[9, 0] == 0
    only_car = lu.rasterize_boxes(boxes, [2, 1, 3], (10, 10), classes={2: 1})
    assert set(np.unique(only_car)) == {0, 1} and only_car[3, 3] == 1


def test_mixed_supervision_arrays():
    from wsss_edu.toy import CLASSES, ToyDataset

    ds = ToyDataset("train", n=20, seed=0, size=48)
    car = CLASSES.index("car")
    a = lu.mixed_supervision_arrays(ds, 5, {car: 1}, seed=0)
    assert a["pixel_perfect"].sum() == 5 and a["target"].shape == (20, 48, 48)
    for i in range(20):
        s = ds[i]
        if a["pixel_perfect"][i]:
            assert np.array_equal(a["target"][i], lu.remap_mask(s["mask"], {car: 1}))
            assert not a["in_box"][i].any()
        else:
            assert set(np.unique(a["target"][i])) <= {0, 1}
            assert np.array_equal(a["in_box"][i], a["target"][i] == 1)
            assert (a["target"][i][a["mask"][i] == 1] == 1).all()  # boxes cover the object


def test_load_mixed_set_maps_classes_in_order_and_takes_the_posters_fraction(tmp_path):
    from wsss_edu.errors import ParameterError
    from wsss_edu.toy import CLASSES, ToyDataset

    a = lu.load_mixed_set("toy", ["car", "person"], 3, n=10, size=32, seed=1)
    assert a["image"].shape == (10, 32, 32, 3) and a["pixel_perfect"].sum() == 3
    ds = ToyDataset(
        "train", n=10, seed=1, size=32, class_probs=lu.TOY_CLASS_PROBS[("car", "person")]
    )
    ref = lu.mixed_supervision_arrays(
        ds, 3, {CLASSES.index("car"): 1, CLASSES.index("person"): 2}, seed=1
    )
    for k in ("image", "target", "mask", "in_box", "pixel_perfect"):
        assert np.array_equal(a[k], ref[k]), k
    # None: 500 PP of Cityscapes' 2,780 images (18 %), of the images actually used
    assert lu.load_mixed_set("toy", ["car"], None, n=10, size=32)["pixel_perfect"].sum() == round(
        10 * 500 / 2780
    )
    assert (
        lu.load_mixed_set("toy", ["car"], 1, "val", n=4, size=32, box_noise=0.2)["image"].shape[0]
        == 4
    )
    with pytest.raises(ParameterError, match="'car'"):
        lu.load_mixed_set("toy", ["dog"], 1, n=2, size=32)
    # a rarer car than the tables' (tools/collapse_check.py): fewer images hold one
    rare = lu.load_mixed_set("toy", ["car"], 3, n=40, size=32, class_probs={"car": 0.1})
    usual = lu.load_mixed_set("toy", ["car"], 3, n=40, size=32)

    def holding(arrays):
        return int((arrays["mask"] == 1).reshape(40, -1).any(1).sum())

    assert holding(rare) < holding(usual) / 2
    with pytest.raises(ValueError, match="box_noise"):
        lu.load_mixed_set("cityscapes", ["car"], 1, data_root=tmp_path, box_noise=0.1)


def test_aleatoric_unet_shapes_and_positive_variance():
    net = lu.AleatoricUNet(3, width=4, depth=2)
    mu, s2 = net(torch.randn(2, 3, 20, 24))
    assert mu.shape == s2.shape == (2, 3, 20, 24) and (s2 > 0).all()


def tiny_mixed(n=24, n_pp=6, size=32):
    from wsss_edu.toy import CLASSES, ToyDataset

    ds = ToyDataset("train", n=n, seed=0, size=size, class_probs={"car": 0.9})
    return lu.mixed_supervision_arrays(ds, n_pp, {CLASSES.index("car"): 1}, seed=0)


def test_method_losses_use_what_each_row_allows():
    a = tiny_mixed()
    g = torch.Generator().manual_seed(0)
    mu, s2 = torch.randn(4, 1, 32, 32, generator=g), torch.rand(4, 1, 32, 32, generator=g) + 0.1
    bb = np.flatnonzero(~a["pixel_perfect"])[:4]
    t, ib = torch.as_tensor(a["target"][bb]).long(), torch.as_tensor(a["in_box"][bb])
    cfg = lu_experiments.BootstrapConfig(warmup_epochs=2)
    flipped = torch.where(ib, 1 - t, t)  # change every box-interior label
    ign = lu_experiments.method_loss("ignore_box", mu, s2, t, ib, 0, cfg)
    assert ign == lu_experiments.method_loss(
        "ignore_box", mu, s2, flipped, ib, 0, cfg
    )  # interiors unused
    # warm-up: mu gets exactly the ignore-interiors gradient, while sigma^2 already learns
    mu_a, mu_b = mu.clone().requires_grad_(), mu.clone().requires_grad_()
    s2_w = s2.clone().requires_grad_()
    lu_experiments.method_loss("ignore_box", mu_a, s2, t, ib, 0, cfg).backward()
    lu_experiments.method_loss("ours", mu_b, s2_w, t, ib, 1, cfg).backward()
    assert torch.allclose(mu_a.grad * (~ib).sum(), mu_b.grad * (t != 255).sum(), atol=1e-6)
    assert s2_w.grad[:, 0][ib].abs().sum() > 0 and s2_w.grad[:, 0][~ib].abs().sum() == 0
    assert (
        lu_experiments.method_loss("ours", mu, s2, t, ib, 2, cfg) != ign
    )  # then the uncertain loss
    assert lu_experiments.method_loss(
        "boxes_bce", mu, s2, t, ib, 0, cfg
    ) != lu_experiments.method_loss("boxes_bce", mu, s2, flipped, ib, 0, cfg)
    with pytest.raises(ValueError, match="choose one of"):
        lu_experiments.method_loss("oracle", mu, s2, t, ib, 0, cfg)


@pytest.mark.parametrize("multiclass", [False, True])
def test_warmup_on_boxes_trains_mu_on_the_boxes_and_sigma2_inside_them(multiclass):
    g = torch.Generator().manual_seed(0)
    c = 3 if multiclass else 1
    mu = torch.randn(2, c, 8, 8, generator=g)
    s2 = torch.rand(2, c, 8, 8, generator=g) + 0.1
    t = torch.randint(0, c if multiclass else 2, (2, 8, 8), generator=g)
    t[0, 0, :3] = 255
    ib = torch.zeros(2, 8, 8, dtype=torch.bool)
    ib[:, 2:6, 3:7] = True
    cfg = lu_experiments.BootstrapConfig(warmup_epochs=1, warmup_on_boxes=True)
    mu_a, mu_b, s2_b = (
        mu.clone().requires_grad_(),
        mu.clone().requires_grad_(),
        s2.clone().requires_grad_(),
    )
    # during the warm-up, mu's gradient is exactly the boxes row's (plain BCE / CE on the targets)
    lu_experiments.method_loss("boxes_bce", mu_a, s2, t, ib, 0, cfg, multiclass).backward()
    lu_experiments.method_loss(
        "ours", mu_b, s2_b, t, ib, 0, cfg, multiclass, torch.Generator().manual_seed(1)
    ).backward()
    assert torch.allclose(mu_a.grad, mu_b.grad, atol=1e-6)
    # sigma^2 learns from the uncertain loss inside boxes only
    inside = s2_b.grad.abs().sum(1)
    assert inside[ib].sum() > 0 and inside[~ib].sum() == 0
    # after the warm-up: the uncertain + bootstrapped loss, no longer the boxes row
    assert lu_experiments.method_loss(
        "ours", mu, s2, t, ib, 1, cfg, multiclass, torch.Generator().manual_seed(1)
    ) != lu_experiments.method_loss("boxes_bce", mu, s2, t, ib, 1, cfg, multiclass)


def test_experiment_arrays_and_equal_steps_for_every_method(monkeypatch):
    a = tiny_mixed()
    assert len(lu_experiments.experiment_arrays(a, "pp_only")["image"]) == 6
    assert np.array_equal(lu_experiments.experiment_arrays(a, "all_pp")["target"], a["mask"])
    calls = {}

    def counting(method, *args, **kw):
        calls[method] = calls.get(method, 0) + 1
        return real(method, *args, **kw)

    real = lu_experiments.method_loss
    monkeypatch.setattr(lu_experiments, "method_loss", counting)
    for m in ("pp_only", "ours"):
        net, hist = lu_experiments.train_experiment(
            a, a, m, epochs=2, width=4, batch_size=8, progress=False
        )
        assert len(hist["miou"]) == 2 and 0.0 <= hist["miou"][-1] <= 1.0
        assert hist["epoch"] == [1, 2]
    assert calls["pp_only"] == calls["ours"] == 2 * 3  # 24 images / batch 8, for both
    # validating every 2nd epoch of 3: after epochs 2 and 3 (the last), same final number
    _, every = lu_experiments.train_experiment(
        a, a, "ours", epochs=3, width=4, batch_size=8, progress=False
    )
    _, sparse = lu_experiments.train_experiment(
        a, a, "ours", epochs=3, width=4, batch_size=8, eval_every=2, progress=False
    )
    assert sparse["epoch"] == [2, 3] and sparse["miou"] == every["miou"][1:]


def test_mixed_arrays_resize_real_sized_images():
    from wsss_edu.data import resize_sample
    from wsss_edu.toy import ToyDataset

    s = ToyDataset("train", n=1, seed=0, size=64)[0]
    r = resize_sample(s, (32, 48))
    assert r["image"].shape == (32, 48, 3) and r["mask"].shape == (32, 48)
    assert set(np.unique(r["mask"])) <= set(np.unique(s["mask"]))  # nearest: no new labels
    b = r["boxes"]
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and b[:, [0, 2]].max() <= 48
    assert np.allclose(b[:, [0, 2]], s["boxes"][:, [0, 2]] * 48 / 64, atol=1)


def test_uncertainty_auroc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s2 = rng.integers(0, 5, size=(6, 7)).astype(float)  # many ties
    pos = rng.random((6, 7)) < 0.4
    neg = ~pos
    p, n = s2[pos], s2[neg]
    brute = ((p[:, None] > n[None]).sum() + 0.5 * (p[:, None] == n[None]).sum()) / (len(p) * len(n))
    assert lu_experiments.uncertainty_auroc(s2, pos, neg) == pytest.approx(brute)
    assert lu_experiments.uncertainty_auroc(s2, neg, pos) == pytest.approx(1 - brute)
    with pytest.raises(ValueError):
        lu_experiments.uncertainty_auroc(s2, np.zeros_like(pos), neg)


def test_run_experiments_in_workers_match_in_process():
    arrays = tiny_mixed()
    val = arrays
    jobs = [
        dict(arrays=arrays, val=val, method=m, epochs=1, seed=0, width=4)
        for m in ("pp_only", "ours")
    ]
    watch = dict(jobs[1], watch=arrays["image"][:2])
    one = lu_experiments.run_experiments(jobs + [watch], processes=1)
    two = lu_experiments.run_experiments(jobs, processes=2)
    assert [len(h["miou"]) for h in two] == [1, 1]
    assert np.allclose([h["miou"][0] for h in one[:2]], [h["miou"][0] for h in two], atol=0.05)
    labels, s2 = one[2]["watch"][0]
    assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8 and s2.shape == (2, 1, 32, 32)


def test_multiclass_loss_with_sigma_only_uncertainty():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    s2 = (torch.rand(2, 3, 6, 6, generator=g) * 2).requires_grad_()
    y = torch.randint(0, 3, (2, 6, 6), generator=g)
    y[0, 0, 0] = 255
    unc = torch.zeros(2, 6, 6, dtype=torch.bool)
    unc[:, 2:5, 1:4] = True
    # warm-up (no bootstrap): mu ignores the uncertain pixels, sigma^2 learns only there
    lu.multiclass_loss(
        mu, s2, y, unc, 1.0, 8, False, torch.Generator().manual_seed(1), uncertainty_trains_mu=False
    ).backward()
    assert mu.grad.abs().sum(1)[unc].max() == 0 and mu.grad.abs().sum(1)[~unc].max() > 0
    assert s2.grad.abs().sum(1)[~unc].max() == 0 and s2.grad.abs().sum(1)[unc].max() > 0
    # bootstrapped: mu's gradient is exactly plain CE's against the eq. (7) target
    mu.grad = s2.grad = None
    loss = lu.multiclass_loss(
        mu, s2, y, unc, 1.0, 8, True, torch.Generator().manual_seed(1), uncertainty_trains_mu=False
    )
    (g_mu,) = torch.autograd.grad(loss, mu)
    target = lu.bootstrapped_targets(mu, s2, y, 1.0, unc)
    ref = F.cross_entropy(mu, target, ignore_index=255, reduction="sum") / (y != 255).sum()
    (g_ref,) = torch.autograd.grad(ref, mu)
    assert torch.allclose(g_mu, g_ref, atol=1e-6)


def test_pp_per_batch_puts_that_many_pixel_perfect_images_in_every_batch(monkeypatch):
    n, size = 20, 16
    pp = np.zeros(n, bool)
    pp[:3] = True
    target = np.zeros((n, size, size), np.uint8)
    target[pp] = 1  # pixel-perfect images: all car; box-labelled ones: no box
    arrays = {
        "image": np.zeros((n, size, size, 3), np.uint8),
        "target": target,
        "mask": target,
        "in_box": np.zeros((n, size, size), bool),
        "pixel_perfect": pp,
    }
    seen = []

    def recording(method, mu, s2, tb, ib, *args, **kw):
        seen.append(int((tb.flatten(1).float().mean(1) == 1).sum()))
        return real(method, mu, s2, tb, ib, *args, **kw)

    real = lu_experiments.method_loss
    monkeypatch.setattr(lu_experiments, "method_loss", recording)
    lu_experiments.train_experiment(
        arrays, arrays, "boxes_bce", epochs=2, width=4, batch_size=8, pp_per_batch=2, progress=False
    )
    assert seen == [2] * 6  # 20 images / batch 8 = 3 steps per epoch, 2 PP in each
    seen.clear()
    lu_experiments.train_experiment(
        arrays, arrays, "boxes_bce", epochs=2, width=4, batch_size=8, progress=False
    )
    # plain shuffle: per epoch 24 draws = one pass over the 20 images (3 PP) + 4 more
    assert 6 <= sum(seen) <= 12 and seen != [2] * 6


def fake_history(fg_share, true_fg_share=0.2, miou=None):
    """A history as train_experiment records it (binary), with the given predicted foreground
    shares per validation."""
    fg = list(fg_share)
    return {
        "epoch": list(range(1, len(fg) + 1)),
        "miou": miou or [0.5] * len(fg),
        "fg_share": fg,
        "pred_share": [[1 - f, f] for f in fg],
        "true_fg_share": true_fg_share,
        "true_share": [1 - true_fg_share, true_fg_share],
    }


def test_collapsed_flags_a_run_that_calls_no_pixel_foreground():
    dead = fake_history([0.15, 0.18, 0.0], miou=[0.6, 0.7, 0.0])  # "no car anywhere" at the end
    healthy = fake_history([0.15, 0.18, 0.21], miou=[0.6, 0.7, 0.8])
    assert lu_experiments.collapsed(dead) and not lu_experiments.collapsed(healthy)
    assert not lu_experiments.collapsed(dead, at=1)  # not yet at the 2nd validation
    assert lu_experiments.collapsed(fake_history([0.019]))  # under a tenth of the true 0.2
    assert not lu_experiments.collapsed(fake_history([0.021]))
    assert not lu_experiments.collapsed(fake_history([0.05]), fraction=0.1)
    assert lu_experiments.collapsed(fake_history([0.05]), fraction=0.5)
    assert not lu_experiments.collapsed(
        fake_history([0.0], true_fg_share=0.0)
    )  # nothing to find: no collapse


def test_drop_collapsed_leaves_out_collapsed_runs_and_says_so():
    assert lu_experiments.drop_collapsed([0.6, 0.7], [False, False]) == ([0.6, 0.7], "")
    kept, note = lu_experiments.drop_collapsed([0.636, 0.0], [False, True])
    assert kept == [0.636] and note == " (1 of 2 collapsed)"
    assert lu_experiments.drop_collapsed([0.0, 0.01], [True, True]) == (
        [0.0, 0.01],
        " (all 2 collapsed)",
    )
    with pytest.raises(ValueError):
        lu_experiments.drop_collapsed([0.5], [True, False])


def test_train_experiment_records_predicted_and_true_foreground_shares():
    a = tiny_mixed()
    _, h = lu_experiments.train_experiment(
        a, a, "boxes_bce", epochs=2, width=4, batch_size=8, progress=False
    )
    m = a["mask"]
    known = m != 255
    assert h["true_fg_share"] == pytest.approx((m == 1).sum() / known.sum())
    assert len(h["fg_share"]) == len(h["pred_share"]) == len(h["epoch"]) == 2
    for fg, shares in zip(h["fg_share"], h["pred_share"]):
        assert sum(shares) == pytest.approx(1.0) and fg == pytest.approx(shares[1])
    assert lu_experiments.collapsed(h) == (h["fg_share"][-1] < 0.1 * h["true_fg_share"])


def test_lr_schedules():
    steps, restart = 16, 12
    assert lu_experiments.lr_factor(0, steps) == 1.0 and lu_experiments.lr_factor(
        restart, steps
    ) == pytest.approx(0.1464, abs=1e-4)
    assert all(lu_experiments.lr_factor(s, steps, "constant") == 1.0 for s in range(steps))
    r = [lu_experiments.lr_factor(s, steps, "restart", restart) for s in range(steps)]
    assert r[0] == r[restart] == 1.0 and r[restart - 1] < 0.02 and r[-1] < 0.15
    assert r[:restart] == [lu_experiments.lr_factor(s, restart) for s in range(restart)]
    assert [lu_experiments.lr_factor(s, steps, "restart", 0) for s in range(steps)] == [
        lu_experiments.lr_factor(s, steps) for s in range(steps)
    ]
    with pytest.raises(ValueError, match="choose one of"):
        lu_experiments.lr_factor(0, steps, "step")
    for (
        schedule
    ) in lu_experiments.LR_SCHEDULES:  # what train_experiment's optimiser sees, step by step
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
        sched = lu_experiments._lr_scheduler(opt, schedule, steps, restart)
        seen = []
        for _ in range(steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert np.allclose(
            seen,
            [2.0 * lu_experiments.lr_factor(s, steps, schedule, restart) for s in range(steps)],
        )


def test_labelled_object_share_and_batches_without_object_on_a_hand_made_mixed_set():
    # 4 images of 2x2 pixels; image 0 pixel-perfect with one car pixel, images 1-3 box-labelled
    target = np.zeros((4, 2, 2), np.uint8)
    target[0, 0, 0] = 1
    target[1, 0, :] = 1  # a box on images 1 and 2 (its interior: ignored by 'ignore_box')
    target[2, 1, :] = 1
    target[3, 1, 1] = 255  # one unlabelled pixel
    in_box = target == 1
    in_box[0] = False  # the PP image has no box interior
    arrays = {"target": target, "in_box": in_box}
    # boxes + BCE: 5 car pixels of 15 labelled; box interiors ignored: 1 of 11
    assert lu_experiments.labelled_object_share(arrays, False) == pytest.approx(5 / 15)
    assert lu_experiments.labelled_object_share(arrays, True) == pytest.approx(1 / 11)
    # batches of 1 image: without the boxes only image 0 has a labelled car pixel
    assert lu_experiments.batches_without_object(arrays, 1, True, draws=4000) == pytest.approx(
        0.75, abs=0.03
    )
    assert lu_experiments.batches_without_object(arrays, 1, False, draws=4000) == pytest.approx(
        0.25, abs=0.03
    )
    # a batch of all 4 images always holds image 0
    assert lu_experiments.batches_without_object(arrays, 4, True, draws=50) == 0.0


def test_run_experiments_keeps_histories_in_the_cache(tmp_path, monkeypatch):
    """With an output folder each history is stored once: a rerun trains nothing and returns the
    same history (arrays as arrays), a changed job or changed data trains again, a damaged file is
    trained again."""
    arrays = tiny_mixed()
    job = dict(
        arrays=arrays,
        val=arrays,
        method="ours",
        epochs=1,
        seed=0,
        width=4,
        watch=arrays["image"][:2],
    )
    first = lu_experiments.run_experiments([job], output_dir=tmp_path)[0]
    calls = []
    monkeypatch.setattr(
        lu_experiments,
        "_experiment",
        lambda kw: calls.append(kw) or lu_experiments.train_experiment(**kw, progress=False)[1],
    )
    again = lu_experiments.run_experiments([job], output_dir=tmp_path)[0]
    assert calls == [] and again["miou"] == first["miou"] and again["epoch"] == first["epoch"]
    labels, s2 = again["watch"][0]
    assert (
        isinstance(labels, np.ndarray)
        and labels.dtype == np.uint8
        and np.array_equal(labels, first["watch"][0][0])
    )
    other = dict(arrays, image=arrays["image"].copy())
    other["image"][0, 0, 0, 0] ^= 1  # one pixel of the data changed
    lu_experiments.run_experiments(
        [job, dict(job, seed=1), dict(job, arrays=other)], output_dir=tmp_path
    )
    assert [c["seed"] for c in calls] == [1, 0] and calls[1]["arrays"] is other
    for f in (tmp_path / "cache" / "experiments").glob("*.pt"):
        f.write_bytes(b"cut short")
    calls.clear()
    lu_experiments.run_experiments([job], output_dir=tmp_path)
    assert len(calls) == 1
    assert lu_experiments.experiment_key(job) == lu_experiments.experiment_key(
        dict(job, arrays={k: v.copy() for k, v in arrays.items()})
    )
