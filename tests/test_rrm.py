"""wsss_edu.rrm (paper 003): reliable regions and the dense energy loss, against independent
computations (brute-force double sums, autograd of the brute force, hand-made maps)."""

import numpy as np
import pytest
import torch

from wsss_edu import rrm
from wsss_edu.steps import rrm_step, segmenter_step


def brute_energy(probs, image, labels, sigma_xy, sigma_rgb):
    """Eqs. (10)-(14) literally: every ordered pair i != j, every pair of different classes."""
    c, h, w = probs.shape
    p = probs.reshape(c, -1)
    pos = [(x, y) for y in range(h) for x in range(w)]
    rgb = image.reshape(3, -1)
    total = 0.0
    for i in range(h * w):
        s = 1 - p[:, i].max() if labels.reshape(-1)[i] != 255 else torch.tensor(1.0, dtype=p.dtype)
        for j in range(h * w):
            if i == j:
                continue
            d2 = (pos[i][0] - pos[j][0]) ** 2 + (pos[i][1] - pos[j][1]) ** 2
            r2 = ((rgb[:, i] - rgb[:, j]) ** 2).sum()
            g = torch.exp(-d2 / (2 * sigma_xy**2) - r2 / (2 * sigma_rgb**2))
            e = sum(p[a, i] * p[b, j] for a in range(c) for b in range(c) if a != b)  # eq. (10)
            total = total + s * g * e
    return total


def tiny(seed=0, c=3, h=4, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, c, h, w, generator=g, dtype=torch.float64)
    image = torch.randint(0, 256, (1, 3, h, w), generator=g).double()
    labels = torch.randint(0, c, (1, h, w), generator=g)
    labels[0, 0, :2] = 255
    return logits, image, labels


@pytest.mark.parametrize("chunk", [3, 7, 1000])
def test_energy_equals_the_brute_force_double_sum(chunk):
    logits, image, labels = tiny()
    probs = logits.softmax(1)
    e = rrm.dense_energy_loss(
        probs, image, labels, sigma_xy=2.0, sigma_rgb=40.0, normalize="none", chunk=chunk
    )
    ref = brute_energy(probs[0], image[0], labels[0], 2.0, 40.0)
    assert e.item() == pytest.approx(ref.item(), rel=1e-9)
    assert e.item() >= 0
    n = 4 * 5
    assert rrm.dense_energy_loss(
        probs, image, labels, 2.0, 40.0, normalize="pixels", chunk=chunk
    ).item() == pytest.approx(ref.item() / n, rel=1e-9)
    assert rrm.dense_energy_loss(
        probs, image, labels, 2.0, 40.0, normalize="pairs", chunk=chunk
    ).item() == pytest.approx(ref.item() / n**2, rel=1e-9)


def test_energy_gradient_matches_autograd_of_the_brute_force_with_the_filter_held_constant():
    logits, image, labels = tiny(1)
    a = logits.clone().requires_grad_(True)
    rrm.dense_energy_loss(
        a.softmax(1), image, labels, 2.0, 40.0, normalize="none", chunk=5
    ).backward()
    b = logits.clone().requires_grad_(True)
    probs = b.softmax(1)
    # the brute force with S(i) computed from detached probabilities, as the reference's backward
    s_probs = probs.detach()
    c, h, w = probs.shape[1:]
    total = 0
    p = probs[0].reshape(c, -1)
    f = rrm.pixel_features(image[0], 2.0, 40.0).double()
    for i in range(h * w):
        s = 1 - s_probs[0].reshape(c, -1)[:, i].max() if labels.reshape(-1)[i] != 255 else 1.0
        for j in range(h * w):
            if i != j:
                g = torch.exp(-0.5 * ((f[i] - f[j]) ** 2).sum())
                total = total + s * g * (p[:, i] * (1 - p[:, j])).sum()
    total.backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_dropping_the_constant_gives_the_references_negative_loss_with_the_same_gradient():
    """sum_c P_c(i)(1 - P_c(j)) = 1 - <P(i), P(j)>: the reference keeps only -<P(i), (GP)(i)>."""
    logits, image, _ = tiny(2)
    a = logits.clone().requires_grad_(True)
    ours = rrm.dense_energy_loss(a.softmax(1), image, None, 2.0, 40.0, normalize="none")
    ours.backward()
    b = logits.clone().requires_grad_(True)
    p = b.softmax(1)[0].reshape(3, -1).T
    f = rrm.pixel_features(image[0], 2.0, 40.0).double()
    g = rrm.gaussian_kernel(f, f)
    g.fill_diagonal_(0)
    dropped = -(p * (g @ p)).sum()
    dropped.backward()
    assert dropped.item() < 0 < ours.item()
    assert ours.item() - dropped.item() == pytest.approx(g.sum().item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_soft_filter():
    probs = torch.tensor([[[0.9, 0.5]], [[0.1, 0.5]]])
    labels = torch.tensor([[1, 255]])
    assert torch.allclose(rrm.soft_filter(probs, labels), torch.tensor([[0.1, 1.0]]))


def test_energy_of_a_constant_labelling_is_zero_and_of_a_checkerboard_is_large():
    image = torch.full((1, 3, 6, 6), 128.0)
    one = torch.zeros(1, 2, 6, 6)
    one[:, 0] = 1
    assert rrm.dense_energy_loss(one, image, None, 3.0, 15.0).item() == pytest.approx(
        0.0, abs=1e-12
    )
    board = torch.zeros(1, 2, 6, 6)
    yy, xx = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    board[0, 0] = ((yy + xx) % 2 == 0).float()
    board[0, 1] = 1 - board[0, 0]
    half = torch.zeros(1, 2, 6, 6)
    half[0, 0, :, :3] = 1
    half[0, 1, :, 3:] = 1
    e_board = rrm.dense_energy_loss(board, image, None, 3.0, 15.0).item()
    assert e_board > rrm.dense_energy_loss(half, image, None, 3.0, 15.0).item() > 0


def test_background_probability_and_the_alpha_rule_keep_the_requested_fraction():
    g = torch.Generator().manual_seed(4)
    p_fg = torch.rand(1, 2, 12, 12, generator=g) ** 3  # distinct scores (no ties)
    bg = rrm.background_probability(p_fg, gamma=2.0)
    assert torch.allclose(bg[0, 0], (1 - p_fg[0].amax(0)) ** 2)
    probs = rrm.cam_probabilities(p_fg, 2.0)[0]
    for fraction in (0.2, 0.4, 0.6, 1.0):
        lab = rrm.top_fraction_labels(probs, [0, 1, 2], fraction, min_score=0.0)
        assert set(lab.unique().tolist()) <= {0, 1, 2, 255}
        for c in (0, 1, 2):
            region = probs.argmax(0) == c
            kept = lab == c
            assert kept.sum().item() == round(fraction * region.sum().item())
            assert bool((kept <= region).all())  # only inside its argmax region
            rest = region & ~kept
            if kept.any() and rest.any():  # and the class's highest scores
                assert probs[c][kept].min() > probs[c][rest].max()
    flat = torch.zeros(1, 1, 4, 4)  # no CAM anywhere: P_bg = 1 tied
    lab = rrm.top_fraction_labels(rrm.cam_probabilities(flat)[0], [0, 1], 0.4)
    assert torch.all(lab == 0)  # ties at alpha are all kept


def test_reliable_labels_are_255_wherever_cam_and_crf_disagree():
    g = torch.Generator().manual_seed(3)
    cam_l = torch.randint(0, 3, (8, 8), generator=g)
    cam_l[0] = 255
    crf_l = torch.randint(0, 3, (8, 8), generator=g)
    out = rrm.reliable_labels(cam_l, crf_l)
    agree = (cam_l == crf_l) & (cam_l != 255)
    assert torch.equal(out[agree], cam_l[agree]) and torch.all(out[~agree] == 255)


def test_reliable_region_labels_on_a_drawn_object():
    pytest.importorskip("pydensecrf")
    h = w = 32
    image = np.full((h, w, 3), 40, np.uint8)
    image[8:24, 8:24] = (220, 60, 60)  # a red square object
    yy, xx = np.mgrid[:h, :w]
    cam = np.exp(-((yy - 16) ** 2 + (xx - 14) ** 2) / (2 * 7.0**2))  # a blurry, off-centre CAM
    p_fg = torch.zeros(2, h, w)
    p_fg[1] = torch.as_tensor(cam / cam.max(), dtype=torch.float32)  # class 1 of 2
    # rule='paper' (eqs. 4-7: the precision can only rise from the CAM label to eq. 7's); the
    # default rule is now the reference code's, checked below and in tests/test_reference_rrm.py
    out = rrm.reliable_region_labels(image, p_fg, [1], gamma=4.0, fraction=0.4, rule="paper")
    truth = np.zeros((h, w), int)
    truth[8:24, 8:24] = 2
    for key in ("cam", "crf", "reliable"):
        assert set(out[key].unique().tolist()) <= {0, 2, 255}, key
    rel, cam_l = out["reliable"].numpy(), out["cam"].numpy()
    assert (rel != 255).sum() <= (cam_l != 255).sum()
    precision = lambda lab: (lab[lab != 255] == truth[lab != 255]).mean()
    assert precision(rel) >= precision(cam_l)
    two = rrm.reliable_region_labels(image, p_fg, [1], two_crf=(4.0, 32.0), rule="paper")
    assert set(two["crf"].unique().tolist()) <= {0, 2, 255}
    ref = rrm.reliable_region_labels(image, p_fg, [1])  # rule='reference'
    for key in ("cam", "crf", "reliable"):
        assert set(ref[key].unique().tolist()) <= {0, 2, 255}, key
    ref_rel = ref["reliable"].numpy()
    assert (ref_rel == 2).any() and precision(ref_rel) > 0.9
    # its background is strict: CAM-sure needs (1 - CAM)^32 > 0.8, i.e. CAM < 1 - 0.8^(1/32) ≈
    # 0.007 (a few corner pixels of this blurry CAM), and the gamma-32 CRF, whose background score
    # is that small wherever the CAM is not ≈ 0, labels no pixel background: none is kept
    assert (ref["cam"] == 0).sum() < 10 and not (ref_rel == 0).any()


def test_rrm_net_and_one_joint_step_on_toy_images():
    pytest.importorskip("pydensecrf")
    from wsss_edu.data import images_to_tensor
    from wsss_edu.toy import ToyDataset

    torch.manual_seed(0)
    ds = ToyDataset("train", n=4, seed=0, size=32)
    x = images_to_tensor(np.stack([ds[i]["image"] for i in range(4)]))
    tags = torch.as_tensor(np.stack([ds[i]["labels"] for i in range(4)])).float()
    k = tags.shape[1]
    net = rrm.RRMNet(k, "small", dilation=2, seg_channels=32, width=8)
    logits, seg, _ = net(x)
    assert logits.shape == (4, k) and seg.shape == (4, k + 1, 32, 32)
    out = rrm.rrm_loss(net, {"image": x, "labels": tags}, sigma_xy=10.0, energy_weight=1.0)
    assert all(torch.isfinite(v) for k, v in out.items() if k != "target")
    assert out["target"].shape == (4, 32, 32)
    assert out["energy"] > 0 and 0 < out["labelled"] <= 1
    out["loss"].backward()
    for part in (net.classifier_net.backbone, net.classifier_net.classifier, net.seg_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    ce_only = rrm.rrm_loss(net, {"image": x, "labels": tags}, joint=False)
    assert ce_only["energy"] == 0


def test_split_cross_entropy_averages_background_and_foreground_separately():
    logits = torch.zeros(1, 3, 1, 4)
    target = torch.tensor([[[0, 0, 0, 2]]])
    ce = torch.log(torch.tensor(3.0))  # uniform logits: every pixel ln 3
    assert rrm.split_cross_entropy(logits, target).item() == pytest.approx(2 * ce.item())
    target = torch.tensor([[[0, 255, 0, 0]]])
    assert rrm.split_cross_entropy(logits, target).item() == pytest.approx(ce.item())


def test_train_rrm_runs_end_to_end_and_predicts_one_step():
    pytest.importorskip("pydensecrf")
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=8, seed=0, size=32)
    cfg = rrm_step.RRMConfig(width=8, seg_channels=16, epochs=1, batch_size=4, sigma_xy=10.0)
    net = rrm_step.train_rrm(ds, cfg, progress=False)
    m = segmenter_step.evaluate(rrm.SegmentationBranch(net), ds, progress=False)
    assert m.cm.sum() > 0 and 0 <= m.miou <= 1


def test_energy_gradient_through_the_soft_filter_matches_autograd_of_the_brute_force():
    """detach_filter=False: S(i) = 1 - max_c P(i) is differentiated too (the hand-written backward
    returns dE/dS, autograd carries it through the max)."""
    logits, image, labels = tiny(3)
    a = logits.clone().requires_grad_(True)
    rrm.dense_energy_loss(
        a.softmax(1), image, labels, 2.0, 40.0, normalize="none", chunk=4, detach_filter=False
    ).backward()
    b = logits.clone().requires_grad_(True)
    brute_energy(b.softmax(1)[0], image[0], labels[0], 2.0, 40.0).backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_pair_normalised_energy_does_not_change_with_the_resolution():
    """Two flat colour halves, labelled by halves with some mixing: at 16² and 32² px (sigma_xy
    scaled with the image) the mean over pairs agrees within 5 %; the per-pixel mean grows 4×."""

    def scene(n):
        img = torch.zeros(1, 3, n, n)
        img[:, :, :, : n // 2] = 200.0
        p = torch.full((1, 2, n, n), 0.2)
        p[0, 0, :, : n // 2] = 0.8
        p[0, 1] = 1 - p[0, 0]
        return p, img

    e = {}
    for n in (16, 32):
        p, img = scene(n)
        e[n] = {
            k: rrm.dense_energy_loss(
                p, img, None, sigma_xy=n / 4, sigma_rgb=15.0, normalize=k
            ).item()
            for k in ("pairs", "pixels")
        }
    assert e[32]["pairs"] == pytest.approx(e[16]["pairs"], rel=0.05)
    assert e[32]["pixels"] / e[16]["pixels"] == pytest.approx(4.0, rel=0.05)


def test_reference_weight_turns_the_pair_mean_into_the_references_sum():
    logits, image, labels = tiny(4, h=6, w=6)
    p = logits.softmax(1)
    plain = rrm.dense_energy_loss(p, image, labels, 2.0, 40.0, normalize="none")
    w = rrm.reference_energy_weight(1e-7, side=6, lattice_gain=0.55)
    pairs = rrm.dense_energy_loss(p, image, labels, 2.0, 40.0, weight=w, normalize="pairs")
    assert pairs.item() == pytest.approx(1e-7 * 0.55 * plain.item(), rel=1e-9)
    assert rrm.reference_energy_weight() == pytest.approx(1e-7 * 0.55 * 160.5**4)
    with pytest.raises(ValueError, match="pairs"):
        rrm.dense_energy_loss(p, image, labels, normalize="mean")


def test_gaussian_kernel_floors_the_exponent_instead_of_producing_subnormal_floats():
    f = torch.tensor([[0.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [30.0, 0, 0, 0, 0]])
    g = rrm.gaussian_kernel(f, f)
    assert g[0, 1].item() == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert torch.allclose(torch.diagonal(g), torch.ones(3))
    assert g[0, 2].item() == pytest.approx(np.exp(-80.0), rel=1e-5)  # exact: exp(-450)
    assert (g[g > 0] >= torch.finfo(torch.float32).tiny).all()


def test_cam_source_is_eq6_alone_and_rrm_labels_lie_inside_it():
    pytest.importorskip("pydensecrf")
    from wsss_edu.data import images_to_tensor, tensor_to_images
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=3, seed=1, size=32)
    x = images_to_tensor(np.stack([ds[i]["image"] for i in range(3)]))
    tags = torch.as_tensor(np.stack([ds[i]["labels"] for i in range(3)])) > 0
    cams = torch.rand(3, tags.shape[1], 32, 32, generator=torch.Generator().manual_seed(0))
    rgb = tensor_to_images(x)
    # rule='paper' (eqs. 6-7): the default rule is now the reference code's, whose labels need not
    # lie inside eq. (6)'s (tests/test_reference_rrm.py tests it)
    cam_l = rrm.batch_reliable_labels(rgb, cams, tags, source="cam", rule="paper")
    rel = rrm.batch_reliable_labels(rgb, cams, tags, source="rrm", rule="paper")
    from wsss_edu.cam import normalize_cams

    p = rrm.cam_probabilities(normalize_cams(cams, tags))
    for i in range(3):
        present = [0] + (torch.nonzero(tags[i]).flatten() + 1).tolist()
        assert torch.equal(cam_l[i], rrm.top_fraction_labels(p[i], present))
    kept = rel != 255
    assert torch.equal(rel[kept], cam_l[kept])
    with pytest.raises(ValueError, match="rrm"):
        rrm.batch_reliable_labels(rgb, cams, tags, source="crf")


def test_param_groups_cover_every_parameter_once_with_faster_heads():
    net = rrm.RRMNet(3, "small", dilation=2, seg_channels=8, width=4, depth=2)
    groups = net.param_groups(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]


def _tiny_rrm_setup(tmp_path):
    from wsss_edu.cam import CAMClassifier
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=8, seed=0, size=32)
    cfg = rrm_step.RRMConfig(
        width=4, depth=2, seg_channels=8, epochs=1, batch_size=4, sigma_xy=10.0
    )
    init = CAMClassifier(len(ds.classes) - 1, "small", width=4, depth=2).state_dict()
    return ds, cfg, init


def test_cached_rrm_starts_from_the_classifier_and_reads_back_from_the_cache(tmp_path):
    pytest.importorskip("pydensecrf")
    from wsss_edu.errors import ParameterError

    ds, cfg, init = _tiny_rrm_setup(tmp_path)
    with pytest.raises(ParameterError, match="init_key"):
        rrm_step.cached_rrm(tmp_path, ds, {"d": 1}, cfg, init=init)
    untrained = rrm_step.make_rrm(
        len(ds.classes) - 1, rrm_step.RRMConfig(width=4, depth=2, seg_channels=8, epochs=0)
    )
    untrained.classifier_net.load_state_dict(init)
    net = rrm_step.cached_rrm(
        tmp_path, ds, {"d": 1}, cfg, init, {"classifier": "x"}, progress=False
    )
    again = rrm_step.cached_rrm(
        tmp_path, ds, {"d": 1}, cfg, init, {"classifier": "x"}, progress=False
    )
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    # trained from the given weights: one epoch moves the backbone away from them, not far
    w0 = untrained.classifier_net.backbone.body[0].weight
    w1 = net.classifier_net.backbone.body[0].weight
    assert 0 < (w1 - w0).abs().max() < w0.abs().max()
    assert len(list((tmp_path / "cache" / "rrm").glob("*.pt"))) == 1


def test_write_pseudo_labels_keeps_the_image_tags_and_resumes(tmp_path):
    pytest.importorskip("pydensecrf")
    from wsss_edu.io import read_mask

    ds, cfg, init = _tiny_rrm_setup(tmp_path)
    net = rrm_step.make_rrm(len(ds.classes) - 1, cfg).eval()
    folder = tmp_path / "pl"
    rrm_step.write_pseudo_labels(net, ds, folder, progress=False)
    assert (folder / "complete").exists()
    for i in range(len(ds)):
        s = ds[i]
        allowed = {0} | {c + 1 for c in np.nonzero(np.asarray(s["labels"]))[0]}
        assert set(np.unique(read_mask(folder / f"{s['name']}.png")).tolist()) <= allowed
    # resumable: a removed file is written again, the others are left as they are
    first = folder / f"{ds.names[0]}.png"
    mtime = (folder / f"{ds.names[1]}.png").stat().st_mtime_ns
    first.unlink()
    (folder / "complete").unlink()
    rrm_step.write_pseudo_labels(net, ds, folder, crf_params=None, progress=False)
    assert first.exists() and (folder / f"{ds.names[1]}.png").stat().st_mtime_ns == mtime


def test_energy_is_computed_in_float32_inside_a_bfloat16_autocast_region():
    """On a GPU the training runs under bfloat16 autocast; the kernel's exponents (hundreds)
    would lose whole units there. The loss and its gradient must not change."""
    logits, image, labels = tiny(5, h=8, w=8)
    logits, image = logits.float(), image.float()

    def run():
        z = logits.clone().requires_grad_(True)
        e = rrm.dense_energy_loss(z.softmax(1), image, labels, 3.0, 15.0)
        e.backward()
        return e.detach(), z.grad

    e32, g32 = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e16, g16 = run()
    assert e16.dtype == torch.float32
    assert e16.item() == pytest.approx(e32.item(), rel=1e-6)
    assert torch.allclose(g16, g32, rtol=1e-5, atol=1e-9)


def test_pairwise_energy_backward_passes_gradcheck_on_unnormalised_inputs():
    """The hand-written backward against finite differences, with P not summing to one (so an
    error constant over the classes of a pixel, which the softmax would hide, shows) and S free."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.rand(12, generator=g, dtype=torch.float64, requires_grad=True)
    f = torch.randn(12, 5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: rrm._PairwiseEnergy.apply(a, b, f, 5), (p, s))


def test_rrm_loss_keeps_the_crop_padding_out_of_the_labels_and_the_energy():
    pytest.importorskip("pydensecrf")
    from wsss_edu.data import SegTransformDataset
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=2, seed=0, size=24)
    batch = torch.utils.data.default_collate(
        [SegTransformDataset(ds, crop=40, scale=(1.0, 1.0), flip=True)[i] for i in range(2)]
    )
    valid = batch["valid"]
    assert valid.dtype == torch.bool and valid.sum(dim=(1, 2)).tolist() == [24 * 24, 24 * 24]
    net = rrm.RRMNet(ds.num_classes - 1, "small", dilation=2, seg_channels=8, width=4, depth=2)
    out = rrm.rrm_loss(net, batch, sigma_xy=10.0)
    assert (out["target"][~valid] == 255).all()
    assert (out["target"][valid] != 255).any()


def test_cache_keys_tell_configs_and_init_weights_apart(tmp_path):
    from wsss_edu.cache import artifact_path

    cfg = rrm_step.RRMConfig()
    keys = {
        artifact_path(tmp_path, "rrm", rrm_step.rrm_key(d, i, c))
        for d, i, c in [
            ({"d": 1}, {"c": 1}, cfg),
            ({"d": 1}, {"c": 2}, cfg),
            ({"d": 2}, {"c": 1}, cfg),
            ({"d": 1}, {"c": 1}, rrm_step.RRMConfig(joint=False)),
            ({"d": 1}, {"c": 1}, rrm_step.RRMConfig(labels="cam")),
            ({"d": 1}, {"c": 1}, rrm_step.RRMConfig(rule="paper")),
        ]
    }
    assert len(keys) == 6


def test_rrm_config_keeps_given_zeros_and_follows_step1s_backbone():
    from wsss_edu.steps.cam_step import ClassifierConfig

    cfg, ratios = rrm_step.rrm_config(
        "quick", 3, ClassifierConfig(width=8, depth=3), GAMMA=0.0, FRACTION=None
    )
    assert (
        cfg.gamma == 0.0
        and cfg.fraction == 0.4
        and cfg.width == 8
        and cfg.depth == 3
        and cfg.seed == 3
    )
    assert ratios == (0.1, 0.4, 1.0) and cfg.rule == "reference"
    full, _ = rrm_step.rrm_config(
        "full", 0, ClassifierConfig(backbone="resnet50", weights="imagenet")
    )
    assert (
        full.backbone == "resnet50"
        and full.weights is None
        and full.crop == 321
        and full.sigma_xy == 100.0
    )
    assert full.rule == "reference"


def _bn_and_stem(net):
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    stem = next(m for m in net.classifier_net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    state = {f"bn{i}.{k}": v.clone() for i, m in enumerate(bns) for k, v in m.state_dict().items()}
    return state | {f"stem.{k}": v.clone() for k, v in stem.state_dict().items()}


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_batch_norm_keeps_statistics_affine_and_first_conv_as_the_reference(freeze):
    """freeze_bn: the reference's frozen BN (running statistics and affine) and conv1a stay as they
    were through SGD steps in train mode; every other layer moves. Without it, they all move."""
    pytest.importorskip("pydensecrf")
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=8, seed=0, size=32)
    cfg = rrm_step.RRMConfig(
        width=8,
        seg_channels=16,
        epochs=1,
        batch_size=4,
        sigma_xy=10.0,
        optimizer="sgd",
        lr=0.05,
        momentum=5e-4,
        freeze_bn=freeze,
    )
    torch.manual_seed(cfg.seed)  # train_rrm seeds the same way: the same start
    start = rrm_step.make_rrm(len(ds.classes) - 1, cfg)
    before, head_before = _bn_and_stem(start), start.seg_head[0].weight.clone()
    net = rrm_step.train_rrm(ds, cfg, progress=False)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(start.state_dict().values(), net.state_dict().values())
    )
    after = _bn_and_stem(net)
    assert before.keys() == after.keys() and any(k.endswith("running_mean") for k in before)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    if freeze:
        assert not moved and net.frozen_bn
        net.train()
        assert not any(
            m.training
            for m in net.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        )
    else:
        assert any("running_mean" in k for k in moved) and any(k.startswith("stem.") for k in moved)
    assert not torch.equal(head_before, net.seg_head[0].weight)  # the rest trains either way


def test_full_profile_takes_the_references_momentum_and_frozen_batch_norm():
    from wsss_edu.steps.cam_step import ClassifierConfig

    quick, _ = rrm_step.rrm_config("quick", 0, ClassifierConfig())
    full, _ = rrm_step.rrm_config(
        "full", 0, ClassifierConfig(backbone="resnet50", weights="imagenet")
    )
    assert (full.momentum, full.freeze_bn, full.optimizer) == (5e-4, True, "sgd")
    assert not quick.freeze_bn and quick.optimizer == "adam"
    assert rrm_step.rrm_config("full", 0, ClassifierConfig(), FREEZE_BN=False)[0].freeze_bn is False
