"""wsss_edu.rrm's rule='reference' against the original RRM code (zbf1991/RRM,
``tool/myTool.py::compute_seg_label``): its saved outputs (tests/data/reference/rrm_*.npz, see the
README there, section 3) and, on more synthetic cases made the way that README describes, a
straightforward re-statement of its rule written here from the README's description (numpy
float32, pydensecrf called directly)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss_edu import rrm
from wsss_edu.steps import rrm_step

DATA = Path(__file__).parent / "data" / "reference"
CASES = ["rrm_case1_48x64_1cls.npz", "rrm_case2_48x64_2cls.npz"]


def load(name):
    d = np.load(DATA / name)
    return {k: d[k] for k in d.files}


def tags_of(case):
    return np.nonzero(case["cam_label"].astype(np.uint8))[0].tolist()


# ------------------------------------------------------------------------------------------------
# An independent statement of the reference rule (from tests/data/reference/README.md, section 3)
# ------------------------------------------------------------------------------------------------


def readme_crf(img, cams, present, alpha):
    """bg = (1 - max over the present cams)**alpha; CRF on [bg, present cams] with
    unary_from_softmax, Gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10, 10 steps;
    scattered to 1 + K channels (float64, absent 0)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = cams.shape
    v = np.array([cams[c] for c in present])
    bg = np.power(1 - np.max(v, axis=0, keepdims=True), alpha)
    x = np.concatenate((bg, v), axis=0)
    d = dcrf.DenseCRF2D(w, h, x.shape[0])
    d.setUnaryEnergy(unary_from_softmax(x))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(img), compat=10)
    q = np.array(d.inference(10)).reshape(x.shape[0], h, w)
    full = np.zeros((k + 1, h, w))
    full[0] = q[0]
    for i, c in enumerate(present):
        full[c + 1] = q[i + 1]
    return full


def readme_rule(img, cam_label, norm_cam, on_empty="raise"):
    """The README's rule, literally (python scalars compared with float32 arrays: numpy 2's NEP 50
    compares in float32). ``on_empty``: 'raise' (the reference's IndexError when a class of the
    CRF's argmax has no CAM value > 0.1 in its CAM region) or 'skip' (that class adds nothing)."""
    present = [i for i in range(len(cam_label)) if cam_label.astype(np.uint8)[i] > 0]
    cams = np.zeros_like(norm_cam)
    for i in present:
        cams[i] = norm_cam[i]
    la = readme_crf(img, norm_cam, present, 4)
    ha = readme_crf(img, norm_cam, present, 32)
    la_arg, ha_arg = la.argmax(0), ha.argmax(0)
    label = la_arg.copy()
    label[la_arg == 0] = 255
    label[ha_arg == 0] = 0
    cam_all = np.concatenate((np.power(1 - np.max(cams, 0), 32)[None], cams))
    cam_img = np.argmax(cam_all, 0)
    cam_sure = np.zeros(cam_img.shape, bool)
    for k in np.unique(la_arg):
        score = cam_all[k]  # a view: zeroed outside the region, as the reference
        score[cam_img != k] = 0
        if k == 0:
            cam_sure |= score > 0.8
            continue
        ordered = np.sort(score[score > 0.1])
        if ordered.shape[0] == 0 and on_empty == "skip":
            continue
        cam_sure |= score > ordered[int(ordered.shape[0] * 0.6)]
    crf_sure = np.max(np.concatenate((ha[:1], la[1:])), 0) >= 0.8
    label[~cam_sure | ~crf_sure] = 255
    return {"reliable": label, "crf_la": la, "crf_ha": ha}


def smooth_noise(rng, h, w, cells=(5, 7)):
    coarse = torch.as_tensor(rng.normal(size=(1, 1) + cells), dtype=torch.float32)
    return torch.nn.functional.interpolate(
        coarse, size=(h, w), mode="bilinear", align_corners=True
    )[0, 0].numpy()


def synthetic_case(seed, classes, h=48, w=64, k=20):
    """As the README's generator: a flat colour image with a class-coloured ellipse per class and
    smooth noise; CAMs relu(Gaussian blobs + smooth noise · 0.08), each divided by its max + 1e-5;
    the untagged classes' maps 0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(30, 220, 3)
    cams = np.zeros((k, h, w), np.float32)
    for c in classes:
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = rng.uniform(7, 15), rng.uniform(9, 20)
        img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = rng.uniform(0, 255, 3)
        blob = np.zeros((h, w))
        for _ in range(rng.integers(1, 3)):  # one or two blobs, off the ellipse's centre
            by, bx = cy + rng.normal(0, ry / 3), cx + rng.normal(0, rx / 3)
            blob += rng.uniform(0.5, 1) * np.exp(
                -((yy - by) ** 2 + (xx - bx) ** 2) / (2 * rng.uniform(4, 9) ** 2)
            )
        cam = np.maximum(blob + 0.08 * smooth_noise(rng, h, w), 0).astype(np.float32)
        cams[c] = cam / (cam.max() + 1e-5)
    for ch in range(3):
        img[..., ch] += 12 * smooth_noise(rng, h, w)
    label = np.zeros(k, np.float32)
    label[list(classes)] = 1
    return np.clip(img, 0, 255).astype(np.uint8), label, cams


# ------------------------------------------------------------------------------------------------
# The reference's saved outputs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_reference_rule_reproduces_compute_seg_label_on_the_saved_cases(name):
    pytest.importorskip("pydensecrf")
    case = load(name)
    out = rrm.reliable_region_labels(
        case["ori_img"], torch.as_tensor(case["norm_cam"]), tags_of(case)
    )
    for key in ("crf_la", "crf_ha"):
        assert out[key].shape == case[key].shape
        np.testing.assert_allclose(out[key].numpy(), case[key], rtol=0, atol=1e-6, err_msg=key)
    assert out["reliable"].dtype == torch.int64
    assert np.array_equal(out["reliable"].numpy(), case["seg_label"])
    # the intermediates say why: the final label is the CRF label where CAM-sure and CRF-sure
    rel = np.where((out["cam_sure"] & out["crf_sure"]).numpy(), out["crf"].numpy(), 255)
    assert np.array_equal(rel, case["seg_label"])
    assert set(np.unique(out["cam"].numpy())) <= {0, 255} | {c + 1 for c in tags_of(case)}


@pytest.mark.parametrize("name", CASES)
def test_reference_rule_from_numpy_inputs_and_the_readme_statement_agree_with_the_saved_cases(name):
    pytest.importorskip("pydensecrf")
    case = load(name)
    out = rrm.reference_reliable_labels(case["ori_img"], case["norm_cam"], tags_of(case))
    assert np.array_equal(out["reliable"], case["seg_label"])
    mine = readme_rule(case["ori_img"], case["cam_label"], case["norm_cam"])
    assert np.array_equal(mine["reliable"], case["seg_label"])
    np.testing.assert_allclose(mine["crf_la"], case["crf_la"], rtol=0, atol=1e-6)


def test_paper_rule_differs_from_the_reference_on_the_saved_cases():
    """rule='paper' is the literal eqs. 4-7, not the reference: on these cases its labels differ
    from compute_seg_label's on 26 % of the pixels (one CRF) and 7.6 % / 21.8 % (two CRFs)."""
    pytest.importorskip("pydensecrf")
    for name in CASES:
        case = load(name)
        p = torch.as_tensor(case["norm_cam"])
        for two_crf in (None, (4.0, 32.0)):
            out = rrm.reliable_region_labels(
                case["ori_img"], p, tags_of(case), two_crf=two_crf, rule="paper"
            )
            assert set(out) == {"cam", "crf", "reliable"}
            assert (out["reliable"].numpy() != case["seg_label"]).mean() > 0.05


# ------------------------------------------------------------------------------------------------
# More cases of the same kind, against the README's statement
# ------------------------------------------------------------------------------------------------

SYNTHETIC = [
    (101, (11,)),
    (102, (0, 14)),
    (103, (3,)),
    (104, (5, 6, 19)),
    (105, (2, 8)),
    (106, (0, 7, 12)),
    (107, (19,)),
    (108, (4, 9, 15)),
]


@pytest.mark.parametrize("seed,classes", SYNTHETIC)
def test_reference_rule_equals_the_readme_statement_on_synthetic_cases(seed, classes):
    pytest.importorskip("pydensecrf")
    img, label, cams = synthetic_case(seed, classes)
    want = readme_rule(img, label, cams)
    got = rrm.reliable_region_labels(img, torch.as_tensor(cams), list(classes))
    assert np.array_equal(got["crf_la"].numpy(), want["crf_la"].astype(np.float32))
    assert np.array_equal(got["crf_ha"].numpy(), want["crf_ha"].astype(np.float32))
    assert np.array_equal(got["reliable"].numpy(), want["reliable"])
    assert (got["reliable"] != 255).any()


def test_reference_rule_with_an_absent_class_and_an_untagged_channel():
    """A tagged class whose CAM is too weak to win anywhere in the CRF (absent from its argmax, so
    it contributes no CAM-sure pixel), and an untagged class whose channel is not zero (ignored,
    as the reference's tag vector ignores it)."""
    pytest.importorskip("pydensecrf")
    img, label, cams = synthetic_case(7, (3, 9))
    cams[9] *= 0.05  # tagged, weak
    want = readme_rule(img, label, cams)
    assert 10 not in np.unique(want["crf_la"].argmax(0))  # absent from the CRF's argmax
    noisy = cams.copy()
    noisy[12] = np.random.default_rng(0).random(cams.shape[1:]).astype(np.float32)  # untagged
    for p in (cams, noisy):
        got = rrm.reliable_region_labels(img, torch.as_tensor(p), [3, 9])
        assert np.array_equal(got["reliable"].numpy(), want["reliable"])
        assert np.array_equal(got["crf_la"].numpy(), want["crf_la"].astype(np.float32))


def test_reference_rule_with_other_class_counts_than_voc():
    """K need not be 20 (the toy dataset has fewer): the rule is the same on a K-channel input."""
    pytest.importorskip("pydensecrf")
    img, label, cams = synthetic_case(9, (1, 4), k=6)
    want = readme_rule(img, label, cams)
    got = rrm.reliable_region_labels(img, torch.as_tensor(cams), [4, 1, 4])  # order, repeats
    assert got["crf_la"].shape == (7, 48, 64)
    assert np.array_equal(got["reliable"].numpy(), want["reliable"])


def test_a_crf_class_without_cam_values_above_0_1_in_its_region_adds_no_sure_pixel():
    """The reference raises IndexError here (an empty sort); the package's choice: that class adds
    no CAM-sure pixel. Built with two classes whose CAMs exceed 1 on the same blob (CAMs that are
    not max-normalised): the CRF clips both to 1, they tie, and its argmax takes the lower class 2;
    the CAM argmax takes class 5 (larger) there and leaves class 2 only the rim, where its CAM is
    at most float32(0.1) — not above 0.1 in float32."""
    pytest.importorskip("pydensecrf")
    img, _, base = synthetic_case(11, (2,))
    g = base[2]
    core = g > np.float32(0.1)
    cams = np.zeros_like(base)
    cams[2] = np.where(core, 1 + 0.25 * g, g)
    cams[5] = np.where(core, 1 + 0.5 * g, g)
    label = np.zeros(20, np.float32)
    label[[2, 5]] = 1
    with pytest.raises(IndexError):
        readme_rule(img, label, cams)
    want = readme_rule(img, label, cams, on_empty="skip")
    got = rrm.reliable_region_labels(img, torch.as_tensor(cams), [2, 5])
    assert 3 in np.unique(got["crf_la"].argmax(0).numpy())  # class 2 wins in the CRF ...
    region = got["cam_argmax"].numpy() == 3
    assert region.any() and cams[2][region].max() <= np.float32(0.1)  # ... with no value > 0.1
    assert not rrm.reference_class_sure_region(cams[2], region).any()
    assert np.array_equal(got["reliable"].numpy(), want["reliable"])
    assert (got["crf"] == 3).any() and (got["reliable"] != 255).any()


# ------------------------------------------------------------------------------------------------
# The rule's details
# ------------------------------------------------------------------------------------------------


def test_cut_position_is_the_references_int_0_6_n_for_fraction_0_4():
    n = np.arange(0, 10**6 + 1)
    assert 1 - 0.4 == 0.6
    assert np.array_equal((n * (1 - 0.4)).astype(np.int64), (n * 0.6).astype(np.int64))
    for m in list(range(0, 200)) + [999_999, 10**6, 12_345, 54_321]:
        assert rrm.reference_cut_position(m, 0.4) == int(m * 0.6)


def test_class_cut_is_strict_and_counts_only_values_above_float32_0_1():
    f = np.float32
    region = np.ones((1, 6), bool)
    # n = 5 values > 0.1, position int(5 · 0.6) = 3: thr = 0.5, sure strictly above: only 0.7
    score = np.array([[0.1, 0.2, 0.3, 0.3, 0.5, 0.7]], f)
    assert rrm.reference_class_sure_region(score, region).tolist() == [[False] * 5 + [True]]
    # ties at the cut are dropped: thr = 0.4, only 0.9 survives (eq. 6's >= keeps the 0.4s too)
    score = np.array([[0.05, 0.2, 0.4, 0.4, 0.4, 0.9]], f)
    assert rrm.reference_class_sure_region(score, region).tolist() == [[False] * 5 + [True]]
    probs = torch.as_tensor(np.stack([np.full_like(score, 0.01), score]))
    assert (rrm.top_fraction_labels(probs, [0, 1], 0.4) == 1).sum() == 4
    # a value equal to float32(0.1) is not > 0.1 in float32: n = 2, thr = sorted[1] = 0.3, nothing
    # sure (compared in float64 it would count: n = 3, thr = 0.2, and 0.3 would be sure)
    score = np.array([[0.1, 0.2, 0.3, 0, 0, 0]], f)
    assert not score[0, 0] > 0.1 and float(score[0, 0]) > 0.1
    assert not rrm.reference_class_sure_region(score, region).any()
    assert rrm.reference_class_sure_region(score.astype(np.float64), region).tolist() == [
        [False, False, True, False, False, False]
    ]
    # outside the region nothing is sure, and the values there do not enter the cut
    inside = np.array([[True, True, True, False, False, False]])
    score = np.array([[0.2, 0.3, 0.9, 0.95, 0.99, 1.0]], f)
    assert rrm.reference_class_sure_region(score, inside).tolist() == [
        [False, False, True, False, False, False]
    ]
    # no candidate: no sure pixel (the reference: IndexError)
    assert not rrm.reference_class_sure_region(np.full((2, 2), f(0.1)), np.ones((2, 2), bool)).any()
    assert not rrm.reference_class_sure_region(score, np.zeros_like(inside)).any()


def test_crf_sure_region_takes_the_weak_background_crfs_background_and_is_inclusive():
    la = np.zeros((3, 1, 4), np.float32)
    ha = np.zeros((3, 1, 4), np.float32)
    la[0] = [0.99, 0.99, 0.1, 0.1]  # the gamma-4 CRF's background is not used
    ha[0] = [0.8, np.nextafter(np.float32(0.8), np.float32(0)), 0.1, 0.1]
    la[1] = [0, 0, 0.8, 0.5]
    la[2] = [0, 0, 0.1, 0.79]
    ha[1:] = 0.99  # nor the gamma-32 CRF's foreground
    assert rrm.reference_crf_sure_region(la, ha).tolist() == [[True, False, True, False]]


def test_crf_label_lets_the_weak_background_crfs_background_win():
    la = np.zeros((3, 1, 3), np.float32)
    ha = np.zeros((3, 1, 3), np.float32)
    la[:, 0, 0], ha[:, 0, 0] = [0.1, 0.9, 0], [0.6, 0.4, 0]  # gamma-4 fg, gamma-32 bg: 0
    la[:, 0, 1], ha[:, 0, 1] = [0.9, 0.1, 0], [0.4, 0.6, 0]  # gamma-4 bg, gamma-32 fg: 255
    la[:, 0, 2], ha[:, 0, 2] = [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]
    assert rrm.reference_crf_label(la, ha).tolist() == [[0, 255, 2]]


def test_an_image_without_tags_is_all_background_under_both_rules():
    """The reference crashes on it (the max of an empty stack); the package labels it all
    background under both rules (CAMs as :func:`wsss_edu.cam.normalize_cams` leaves them: 0)."""
    pytest.importorskip("pydensecrf")
    img, _, cams = synthetic_case(3, (4,))
    for rule in ("reference", "paper"):
        out = rrm.reliable_region_labels(img, torch.zeros(cams.shape), [], rule=rule)
        assert (out["reliable"] == 0).all(), rule


def test_rule_is_checked_and_threaded_through_the_batch_labels():
    pytest.importorskip("pydensecrf")
    from wsss_edu.cam import normalize_cams
    from wsss_edu.errors import ParameterError

    imgs, cams, tags = [], [], []
    for seed, classes in [(21, (1,)), (22, (0, 3))]:
        img, label, c = synthetic_case(seed, classes, k=5)
        imgs.append(img)
        cams.append(c * 7.0)  # not normalised: batch_reliable_labels does it
        tags.append(label > 0)
    imgs, cams, tags = (
        np.stack(imgs),
        torch.as_tensor(np.stack(cams)),
        torch.as_tensor(np.stack(tags)),
    )
    p = normalize_cams(cams, tags)
    with pytest.raises(ParameterError, match="reference"):
        rrm.reliable_region_labels(imgs[0], p[0], [1], rule="code")
    with pytest.raises(ParameterError, match="paper"):
        rrm.batch_reliable_labels(imgs, cams, tags, rule="eq7")
    for rule in ("reference", "paper"):
        batch = rrm.batch_reliable_labels(imgs, cams, tags, rule=rule)
        for i in range(2):
            classes = torch.nonzero(tags[i]).flatten().tolist()
            one = rrm.reliable_region_labels(imgs[i], p[i], classes, rule=rule)["reliable"]
            assert torch.equal(batch[i], one), rule
    ref, paper = (
        rrm.batch_reliable_labels(imgs, cams, tags, rule=r) for r in ("reference", "paper")
    )
    assert not torch.equal(ref, paper)
    assert torch.equal(rrm.batch_reliable_labels(imgs, cams, tags), ref)  # the default
    # the CAM side alone under the reference rule: its CAM-sure pixels of every tagged class
    cam_only = rrm.batch_reliable_labels(imgs, cams, tags, source="cam")
    for i in range(2):
        classes = torch.nonzero(tags[i]).flatten().tolist()
        sure, cam_img = rrm.reference_cam_sure_region(p[i], classes, [0] + [c + 1 for c in classes])
        assert np.array_equal(cam_only[i].numpy(), np.where(sure, cam_img, 255))
        full = rrm.reliable_region_labels(imgs[i], p[i], classes)
        labelled = full["reliable"] != 255
        assert bool(full["cam_sure"][labelled].all())


def test_rule_in_the_config_the_profiles_and_the_cache_key(tmp_path):
    from wsss_edu.cache import artifact_path
    from wsss_edu.errors import ParameterError
    from wsss_edu.steps.cam_step import ClassifierConfig

    assert rrm_step.RRMConfig().rule == "reference"
    for profile in ("quick", "full"):
        cfg, _ = rrm_step.rrm_config(profile, 0, ClassifierConfig())
        assert cfg.rule == "reference"
    cfg, _ = rrm_step.rrm_config("quick", 0, ClassifierConfig(), RULE="paper")
    assert cfg.rule == "paper"
    with pytest.raises(ParameterError, match="RULE"):
        rrm_step.rrm_config("quick", 0, ClassifierConfig(), RULE="both")
    # the dataclass is the key (rrm_key: dataclasses.asdict), so the rule tells networks apart
    keys = {
        artifact_path(tmp_path, "rrm", rrm_step.rrm_key({"d": 1}, None, rrm_step.RRMConfig(rule=r)))
        for r in rrm.RULES
    }
    assert len(keys) == 2
