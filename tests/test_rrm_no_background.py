"""wsss_edu.rrm on a dataset without a background class (MSRC: every pixel is one of its classes)
and on an ImageNet MobileNetV2, against independent computations; and has_background=True
against the code as it was before the flag existed (rrm.py at OLD_COMMIT, loaded from git)."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_edu import rrm
from wsss_edu.steps import rrm_step

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "66e395233c4f533047880c398730d8a196de7166"  # the last rrm.py without has_background


# ------------------------------------------------------------------------------------------------
# Independent computations
# ------------------------------------------------------------------------------------------------


def argmax_among(cams, tags):
    """Per pixel, the tagged class with the largest CAM (ties: the lower class), by a plain loop."""
    k, h, w = cams.shape
    out = np.zeros((h, w), np.int64)
    for y in range(h):
        for x in range(w):
            best = None
            for c in sorted(tags):
                if best is None or cams[c, y, x] > cams[best, y, x]:
                    best = c
            out[y, x] = best
    return out


def cam_side(cams, tags, fraction=0.4, rule="reference"):
    """Eq. (6) without a background, written out: per tagged class, its values > 0.1 inside its
    argmax region; reference: sure = value > sorted[int(n (1 - fraction))]; paper: the top
    round(fraction n) values and their ties."""
    cams = np.asarray(cams, np.float32)
    arg = argmax_among(cams, tags)
    out = np.full(arg.shape, 255, np.int64)
    for c in tags:
        region = arg == c
        vals = cams[c][region & (cams[c] > np.float32(0.1))]
        if rule == "reference":
            pos = int(len(vals) * (1 - fraction))
            if pos < len(vals):
                thr = np.sort(vals)[pos]
                out[region & (cams[c] > thr)] = c
        else:
            keep = int(round(fraction * len(vals)))
            if keep:
                alpha = np.sort(vals)[::-1][keep - 1]
                out[region & (cams[c] > np.float32(0.1)) & (cams[c] >= alpha)] = c
    return out


def crf_side(image, cams, tags, sure=0.8):
    """One CRF over the tagged classes' CAMs, argmax among them, 255 below ``sure`` (None: none)."""
    from wsss_edu.crf import crf_on_scores

    tags = sorted(tags)
    q = crf_on_scores(image, np.asarray(cams, np.float32)[tags], "rrm_train")
    lab = np.asarray(tags)[q.argmax(0)]
    if sure is not None:
        lab = np.where(q.max(0) >= sure, lab, 255)
    return lab.astype(np.int64)


def scene(seed, tags, k=5, h=40, w=48, untagged_noise=True):
    """A flat image with one coloured ellipse per tagged class (the first tag fills the rest, as a
    'stuff' class would) and blurry CAMs over them; untagged channels get noise (to be ignored)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(30, 220, 3)
    cams = np.zeros((k, h, w), np.float32)
    first = sorted(tags)[0]
    stuff = 0.3 + 0.2 * rng.random((h, w))
    for c in sorted(tags)[1:]:
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(6, 10), rng.uniform(7, 12)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[inside] = rng.uniform(0, 255, 3)
        stuff[inside] *= 0.2  # the 'stuff' class fires around the objects
        cams[c] = np.exp(-((yy - cy - 2) ** 2 + (xx - cx + 1) ** 2) / (2 * 6.0**2))
    cams[first] = stuff
    if untagged_noise:
        for c in set(range(k)) - set(tags):
            cams[c] = rng.random((h, w))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), cams


# ------------------------------------------------------------------------------------------------
# Probabilities and labels without a background
# ------------------------------------------------------------------------------------------------


def test_cam_probabilities_without_a_background_are_the_cams_themselves():
    p = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        rrm.cam_probabilities(p, 4.0, has_background=False), p
    )  # channel c = class c
    with_bg = rrm.cam_probabilities(p, 4.0)
    assert with_bg.shape == (2, 4, 4, 5)
    assert torch.allclose(with_bg[:, 0], (1 - p.amax(1)) ** 4) and torch.equal(with_bg[:, 1:], p)
    assert rrm.present_labels([2, 0], has_background=False) == [2, 0]
    assert rrm.present_labels([2, 0]) == [0, 3, 1]


def test_cam_labels_without_background_on_a_hand_made_map():
    """Tags {0, 2}; class 1, untagged, has the largest CAM everywhere and must never appear."""
    cams = torch.zeros(3, 1, 8)
    cams[0, 0] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.05, 0.0, 0.2, 0.3])
    cams[1, 0] = 1.0
    cams[2, 0] = torch.tensor([0.1, 0.2, 0.3, 0.65, 0.5, 0.0, 0.9, 0.95])
    # argmax among {0, 2}: 0 0 0 2 2 0 2 2. Class 0's values > 0.1: 0.7 0.8 0.9, cut at
    # sorted[int(3 · 0.6)] = 0.8, strict: only 0.9. Class 2's: 0.5 0.65 0.9 0.95, cut at
    # sorted[int(4 · 0.6)] = 0.9: only 0.95. Paper: round(0.4 · 3) = 1 and round(0.4 · 4) = 2.
    ref = rrm.cam_labels_without_background(cams, [2, 0])
    assert ref.tolist() == [[0, 255, 255, 255, 255, 255, 255, 2]]
    paper = rrm.cam_labels_without_background(cams, [0, 2], rule="paper")
    assert paper.tolist() == [[0, 255, 255, 255, 255, 255, 2, 2]]
    for lab in (ref, paper):
        want = cam_side(cams.numpy(), [0, 2], rule="reference" if lab is ref else "paper")
        assert np.array_equal(lab.numpy(), want)
    # the background rule on the same CAMs labels in the shifted convention (0 = background):
    # the no-background labels are not it
    bg = rrm.batch_reliable_labels(
        np.zeros((1, 1, 8, 3), np.uint8), cams[None], torch.tensor([[1, 0, 1]]) > 0, source="cam"
    )
    assert set(bg.unique().tolist()) <= {0, 1, 3, 255} and not torch.equal(bg[0], ref)
    no_tags = rrm.cam_labels_without_background(cams, [])
    assert (no_tags == 255).all()


@pytest.mark.parametrize("rule", rrm.RULES)
def test_cam_labels_without_background_match_the_written_out_rule_on_random_maps(rule):
    g = torch.Generator().manual_seed(5)
    for tags in ([0, 2, 3], [1], [4, 0]):
        cams = torch.rand(5, 9, 11, generator=g) ** 2
        got = rrm.cam_labels_without_background(cams, tags, 0.4, rule)
        assert np.array_equal(got.numpy(), cam_side(cams.numpy(), tags, 0.4, rule)), tags
        assert set(got.unique().tolist()) <= set(tags) | {255}
        assert (got != 255).any()


@pytest.mark.parametrize("rule", rrm.RULES)
def test_reliable_labels_without_background_are_the_agreement_of_the_two_sides(rule):
    pytest.importorskip("pydensecrf")
    tags = [0, 2, 3]
    img, cams = scene(1, tags)
    p = torch.as_tensor(cams)
    out = rrm.reliable_region_labels(img, p, [3, 0, 2], rule=rule, has_background=False)
    cam_l = cam_side(cams, tags, 0.4, rule)
    crf_l = crf_side(img, cams, tags, 0.8 if rule == "reference" else None)
    assert np.array_equal(out["cam"].numpy(), cam_l)
    assert np.array_equal(out["crf"].numpy(), crf_l)
    agree = np.where((cam_l == crf_l) & (cam_l != 255), cam_l, 255)
    assert np.array_equal(out["reliable"].numpy(), agree)
    rel = out["reliable"]
    assert set(rel.unique().tolist()) <= set(tags) | {255}
    assert all((rel == c).any() for c in tags)  # every class keeps some pixels
    assert out["crf_q"].shape == (5, 40, 48) and (out["crf_q"][[1, 4]] == 0).all()
    direct = rrm.reliable_labels_without_background(img, p, tags, rule=rule)
    assert torch.equal(direct["reliable"], rel)
    # the batch function normalises raw CAMs (each tagged class by its max), then the same rule
    from wsss_edu.cam import normalize_cams

    tagvec = torch.zeros(1, 5, dtype=torch.bool)
    tagvec[0, tags] = True
    raw = 3.0 * p[None]
    norm = normalize_cams(raw, tagvec)[0]
    one = rrm.reliable_region_labels(img, norm, tags, rule=rule, has_background=False)
    batch = rrm.batch_reliable_labels(img[None], raw, tagvec, rule=rule, has_background=False)
    assert torch.equal(batch[0], one["reliable"])
    cam_only = rrm.batch_reliable_labels(
        img[None], raw, tagvec, rule=rule, source="cam", has_background=False
    )
    assert torch.equal(cam_only[0], one["cam"])
    assert np.array_equal(one["cam"].numpy(), cam_side(norm.numpy(), tags, 0.4, rule))


def test_labels_never_leave_the_tags_nor_shift_by_one():
    """Tags {0, 2}: a background-style +1 shift would give 1 and 3, which must never appear."""
    pytest.importorskip("pydensecrf")
    imgs, cams = zip(*(scene(s, [0, 2]) for s in (11, 12)))
    imgs, cams = np.stack(imgs), torch.as_tensor(np.stack(cams))
    tags = torch.tensor([[1, 0, 1, 0, 0], [1, 0, 1, 0, 0]]) > 0
    for rule in rrm.RULES:
        for source in rrm.LABEL_SOURCES:
            lab = rrm.batch_reliable_labels(
                imgs, cams, tags, rule=rule, source=source, has_background=False
            )
            vals = set(lab.unique().tolist())
            assert vals <= {0, 2, 255} and {0, 2} <= vals, (rule, source, vals)
    with pytest.raises(Exception, match="two_crf"):
        rrm.reliable_region_labels(
            imgs[0], cams[0], [0, 2], two_crf=(4.0, 32.0), has_background=False
        )


def test_a_single_tag_and_no_tag_without_background():
    pytest.importorskip("pydensecrf")
    img, cams = scene(3, [1])
    out = rrm.reliable_region_labels(img, torch.as_tensor(cams), [1], has_background=False)
    assert out["crf_sure"].all() and (out["crf"] == 1).all()  # a one-label CRF: sure everywhere
    assert torch.equal(out["reliable"], out["cam"]) and (out["reliable"] == 1).any()
    none = rrm.reliable_region_labels(img, torch.as_tensor(cams), [], has_background=False)
    assert (none["reliable"] == 255).all()  # nothing to fall back on


def test_labelled_cross_entropy_is_the_plain_mean_over_the_reliable_pixels():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    target = torch.randint(0, 3, (2, 4, 5), generator=g)
    target[0, :2] = 255
    want = F.cross_entropy(logits, target, ignore_index=255)
    assert rrm.labelled_cross_entropy(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    assert rrm.labelled_cross_entropy(logits, torch.full_like(target, 255)).item() == 0


# ------------------------------------------------------------------------------------------------
# RRMNet on a MobileNetV2, without a background
# ------------------------------------------------------------------------------------------------


def test_rrm_net_on_a_mobilenet_v2_without_background_trains_one_step():
    pytest.importorskip("pydensecrf")
    from wsss_edu.data import images_to_tensor
    from wsss_edu.steps.cam_step import ClassifierConfig

    k = 4
    step1 = ClassifierConfig(
        backbone="mobilenet_v2", weights="imagenet", freeze_bn=True, frozen_blocks=7
    )
    cfg, _ = rrm_step.rrm_config("quick", 0, step1, has_background=False, RRM_SEG_CHANNELS=16)
    assert (cfg.backbone, cfg.weights, cfg.has_background, cfg.frozen_blocks, cfg.freeze_bn) == (
        "mobilenet_v2",
        None,
        False,
        7,
        True,
    )
    assert (
        rrm_step.rrm_config("quick", 0, step1, FREEZE_BN=False)[0].freeze_bn is False
    )  # a given knob wins
    torch.manual_seed(0)
    net = rrm_step.make_rrm(k, cfg)
    with torch.no_grad():  # untrained (features ~1e-9 with BN in eval mode): positive class weights
        net.classifier_net.classifier.weight.abs_().mul_(
            1e9
        )  # large enough that each CAM fires somewhere
    assert not any(p.requires_grad for p in net.classifier_net.backbone.body[:7].parameters())
    assert all(p.requires_grad for p in net.classifier_net.backbone.body[7:].parameters())
    rrm.freeze_reference_layers(net)
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))

    imgs = np.stack(
        [
            scene(s, t, k=k, h=48, w=64, untagged_noise=False)[0]
            for s, t in ((21, [0, 2]), (22, [1]))
        ]
    )
    x = images_to_tensor(imgs)
    tags = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    logits, seg, f = net(x)
    assert logits.shape == (2, k) and seg.shape == (2, k, 48, 64) and f.shape[1] == 1280
    assert f.shape[-2:] == (3, 4)  # stride 16
    out = rrm.rrm_loss(net, {"image": x, "labels": tags}, sigma_xy=10.0, energy_weight=1.0)
    assert all(torch.isfinite(v) for key, v in out.items() if key != "target")
    target = out["target"]
    assert target.shape == (2, 48, 64)
    assert set(target[0].unique().tolist()) <= {0, 2, 255} and set(target[1].unique().tolist()) <= {
        1,
        255,
    }
    assert (target != 255).any()
    assert out["ce"].item() == pytest.approx(
        F.cross_entropy(seg.detach(), target, ignore_index=255).item(), rel=1e-5
    )
    out["loss"].backward()
    for part in (net.classifier_net.backbone.body[7:], net.classifier_net.classifier, net.seg_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # the dataset's convention for evaluation: K + 1 channels, class c = c + 1, channel 0 never wins
    net.eval()
    with torch.no_grad():
        m = rrm.SegmentationBranch(net)(x)
        assert m.shape == (2, k + 1, 48, 64) and (m[:, 0] == rrm.NO_BACKGROUND_LOGIT).all()
        assert torch.equal(m[:, 1:], net.segment(x)) and (m.argmax(1) >= 1).all()
    # a dataset and a config that disagree on the background are refused
    from wsss_edu.toy import ToyDataset

    with pytest.raises(Exception, match="has_background"):
        rrm_step.train_rrm(ToyDataset("train", n=2, seed=0, size=16), cfg, progress=False)


def test_write_pseudo_labels_without_background_writes_tags_only_as_mask_values(tmp_path):
    """Class c is written c + 1 (the dataset's masks), only the image's tags, never 0."""
    from wsss_edu.io import read_mask

    class Fake:
        has_background = False
        names = ["a", "b"]

        def __init__(self):
            rng = np.random.default_rng(0)
            self.samples = [
                {
                    "image": rng.integers(0, 255, (16, 20, 3), dtype=np.uint8),
                    "labels": np.array(t, np.float32),
                    "name": n,
                }
                for n, t in zip(self.names, ([0, 1, 0, 1], [1, 0, 0, 0]))
            ]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return self.samples[i]

    from wsss_edu.data import images_to_tensor

    torch.manual_seed(0)
    net = rrm.RRMNet(4, "small", dilation=1, seg_channels=8, width=4, depth=1, has_background=False)
    rrm_step.write_pseudo_labels(net, Fake(), tmp_path / "pl", crf_params=None, progress=False)
    a, b = (read_mask(tmp_path / "pl" / f"{n}.png") for n in ("a", "b"))
    with torch.no_grad():
        seg = net.eval().segment(images_to_tensor(np.stack([s["image"] for s in Fake().samples])))
    assert seg.shape[1] == 4
    assert np.array_equal(a, np.where(seg[0, 1] >= seg[0, 3], 2, 4))  # tags {1, 3} -> values 2, 4
    assert (b == 1).all()  # one tag, class 0 -> 1
    assert len(np.unique(a)) == 2  # both tags win somewhere


# ------------------------------------------------------------------------------------------------
# has_background=True: exactly the code before the flag
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old():
    """rrm.py as of OLD_COMMIT, imported as wsss_edu._rrm_before (its relative imports resolve
    against today's package, whose other modules it only calls)."""
    try:
        src = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:wsss_edu/rrm.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {OLD_COMMIT} not available")
    assert "has_background" not in src
    # the one name it imports that has moved since: cam._same_size_batches is data.same_size_batches
    src = src.replace(
        "from .cam import _same_size_batches",
        "from .data import same_size_batches as _same_size_batches",
    )
    name = "wsss_edu._rrm_before"
    mod = types.ModuleType(name)
    mod.__package__ = "wsss_edu"
    mod.__file__ = f"rrm.py@{OLD_COMMIT[:7]}"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    yield mod
    sys.modules.pop(name, None)


def test_with_a_background_the_labels_are_the_old_ones(old):
    pytest.importorskip("pydensecrf")
    g = torch.Generator().manual_seed(7)
    p = torch.rand(2, 4, 6, 7, generator=g)
    assert torch.equal(rrm.cam_probabilities(p, 3.0), old.cam_probabilities(p, 3.0))
    assert torch.equal(rrm.cam_probabilities(p, 3.0, True), old.cam_probabilities(p, 3.0))
    imgs, cams = zip(
        *(scene(s, t, untagged_noise=False) for s, t in ((31, [0, 3]), (32, [2]), (33, [1, 2, 4])))
    )
    imgs, cams = np.stack(imgs), 5.0 * torch.as_tensor(np.stack(cams))
    tags = cams.flatten(2).amax(2) > 0
    for rule in rrm.RULES:
        for source in rrm.LABEL_SOURCES:
            for two_crf in (None, (4.0, 32.0)):
                want = old.batch_reliable_labels(
                    imgs, cams, tags, 4.0, 0.4, "rrm_train", two_crf, source, rule
                )
                args = (imgs, cams, tags, 4.0, 0.4, "rrm_train", two_crf, source, rule)
                for got in (
                    rrm.batch_reliable_labels(*args),
                    rrm.batch_reliable_labels(*args, has_background=True),
                ):
                    assert torch.equal(got, want), (rule, source, two_crf)
        a = rrm.reliable_region_labels(
            imgs[2], cams[2] / cams[2].amax((1, 2), keepdim=True), [1, 2, 4], rule=rule
        )
        b = old.reliable_region_labels(
            imgs[2], cams[2] / cams[2].amax((1, 2), keepdim=True), [1, 2, 4], rule=rule
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), rule


def test_with_a_background_the_network_loss_pseudo_labels_and_cache_key_are_the_old_ones(
    old, tmp_path
):
    pytest.importorskip("pydensecrf")
    from wsss_edu.data import images_to_tensor
    from wsss_edu.io import read_mask
    from wsss_edu.steps.cam_step import ClassifierConfig
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=3, seed=0, size=32)
    x = images_to_tensor(np.stack([ds[i]["image"] for i in range(3)]))
    tags = torch.as_tensor(np.stack([ds[i]["labels"] for i in range(3)])).float()
    k = tags.shape[1]
    torch.manual_seed(3)
    new_net = rrm.RRMNet(k, "small", dilation=2, seg_channels=16, width=4)
    torch.manual_seed(3)
    old_net = old.RRMNet(k, "small", dilation=2, seg_channels=16, width=4)
    sd_new, sd_old = new_net.state_dict(), old_net.state_dict()
    assert sd_new.keys() == sd_old.keys() and all(torch.equal(sd_new[n], sd_old[n]) for n in sd_new)
    assert (
        new_net.segment(x).shape[1] == old_net.segment(x).shape[1] == k + 1
    )  # (both update their BN stats)
    kw = dict(sigma_xy=10.0, energy_weight=1.0)
    for source in rrm.LABEL_SOURCES:
        a = rrm.rrm_loss(new_net, {"image": x, "labels": tags}, source=source, **kw)
        b = old.rrm_loss(old_net, {"image": x, "labels": tags}, source=source, **kw)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (source, name)
        a["loss"].backward()
        b["loss"].backward()
        for (n1, p1), (n2, p2) in zip(new_net.named_parameters(), old_net.named_parameters()):
            assert n1 == n2 and torch.equal(p1.grad, p2.grad), n1
    new_net.eval(), old_net.eval()
    with torch.no_grad():
        assert torch.equal(rrm.SegmentationBranch(new_net)(x), old.SegmentationBranch(old_net)(x))
    rrm_step.write_pseudo_labels(new_net, ds, tmp_path / "new", progress=False)
    old.write_pseudo_labels(old_net, ds, tmp_path / "old", progress=False)
    for n in ds.names:
        assert np.array_equal(
            read_mask(tmp_path / "new" / f"{n}.png"), read_mask(tmp_path / "old" / f"{n}.png")
        )
    # configs and cache keys (networks cached before the new fields are still found)
    for profile in ("quick", "full"):
        c_new, r_new = rrm_step.rrm_config(profile, 1, ClassifierConfig(), RULE="paper", GAMMA=3.0)
        c_old, r_old = old.rrm_config(profile, 1, ClassifierConfig(), RULE="paper", GAMMA=3.0)
        assert r_new == r_old and c_new.has_background and c_new.frozen_blocks == 0
        assert rrm_step.rrm_key({"d": 1}, {"i": 2}, c_new) == old.rrm_key({"d": 1}, {"i": 2}, c_old)
    assert rrm_step.rrm_key({}, None, rrm_step.RRMConfig(has_background=False)) != rrm_step.rrm_key(
        {}, None, rrm_step.RRMConfig()
    )
