"""URN against the original code: the uncertainty block of XMed-Lab/URN's
``EncoderDecoder.aug_test`` (golden outputs in tests/data/reference/urn_case*.npz, described in
tests/data/reference/README.md), and the same rule on cases beyond the files (an absent channel,
five classes) checked against a direct computation written here from the rule."""

from pathlib import Path

import numpy as np
import pytest

from wsss_edu import urn

pytest.importorskip("pydensecrf")

REF = Path(__file__).parent / "data" / "reference"
CASES = ["urn_case1_48x64_c3.npz", "urn_case2_48x64_c3.npz"]


def load(name):
    with np.load(REF / name) as d:
        return {k: d[k] for k in d.files}


@pytest.mark.parametrize("name", CASES)
def test_inputs_are_the_package_presets(name):
    from wsss_edu.crf import PRESETS, CRFParams

    d = load(name)
    iters, g_compat, g_sxy, b_compat, b_sxy, b_srgb = d["crf_params"]
    assert CRFParams(g_sxy, g_compat, b_sxy, b_srgb, b_compat, int(iters)) == PRESETS["urn"]
    assert tuple(d["scales"]) == urn.VOC_FACTORS


@pytest.mark.parametrize("name", CASES)
def test_every_step_matches_the_reference(name):
    d = load(name)
    s = urn.urn_steps(d["image"], d["P"])  # the defaults are the reference's choices
    np.testing.assert_allclose(s.marginals, d["crf_Q"], rtol=0, atol=1e-4)
    assert np.array_equal(s.cyclic, d["pseudo_mask"])
    assert np.array_equal(urn.cyclic_pseudo_mask(d["image"], d["P"]), d["pseudo_mask"])
    assert np.array_equal(s.classes, d["labels"]) and np.array_equal(s.scaled, d["labels"])
    np.testing.assert_allclose(s.variance, d["u_c"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.u, d["u"], rtol=0, atol=1e-12)
    assert np.array_equal(s.weight, d["weight"])
    # the array the reference hands to cv2.imwrite is [label, weight, weight] in BGR order: the
    # package's 'RGB' layout reversed
    rgb = urn.label_weight_array(s.cyclic, s.weight, "RGB")
    assert rgb.dtype == np.uint8 and np.array_equal(rgb[..., ::-1], d["mask_weight_written"])
    # urn_uncertainty is the same computation
    cyclic, u = urn.urn_uncertainty(d["image"], d["P"])
    assert np.array_equal(cyclic, s.cyclic) and np.array_equal(u, s.u)


@pytest.mark.parametrize("name", CASES)
def test_the_step_functions_one_by_one(name):
    d = load(name)
    classes = urn.present_classes(d["pseudo_mask"])
    assert np.array_equal(classes, d["labels"])
    masks = urn.scaled_masks(
        d["image"], d["P"][classes], range(len(classes)), tuple(d["scales"]), "urn"
    )
    var = urn.scaling_variance(masks)
    np.testing.assert_allclose(var, d["u_c"], rtol=0, atol=1e-12)
    u = urn.uncertainty_map(var)
    assert u.dtype == np.float64
    np.testing.assert_allclose(u, d["u"], rtol=0, atol=1e-12)
    assert np.array_equal(urn.weight_to_uint8(1 - u), d["weight"])
    assert np.array_equal(urn.weight_to_uint8(1 - d["u"]), d["weight"])


@pytest.mark.parametrize("name", CASES)
def test_reads_the_reference_file(name, tmp_path):
    from PIL import Image

    d = load(name)
    written = d["mask_weight_written"]
    assert written.min() >= 0 and written.max() <= 255
    # cv2.imwrite takes the channels as B, G, R: as an RGB image that is the reversed order
    path = tmp_path / "ref.png"
    Image.fromarray(np.ascontiguousarray(written[..., ::-1]).astype(np.uint8)).save(path)
    label, w = urn.read_label_and_weight(path)
    assert label.dtype == np.uint8 and np.array_equal(label, d["pseudo_mask"])
    assert np.array_equal(w * 255, d["weight"].astype(np.float32))
    assert np.array_equal(urn.weight_to_uint8(w), d["weight"])
    # the package writes the same pixels with layout='RGB', and its own layout reads back alike
    for layout in ("RGB", "LA"):
        out = tmp_path / f"pkg_{layout}.png"
        urn.write_label_and_weight(out, d["pseudo_mask"], 1 - d["u"], layout=layout)
        with Image.open(out) as im:
            assert im.mode == layout
            if layout == "RGB":
                assert np.array_equal(np.asarray(im), written[..., ::-1])
        label2, w2 = urn.read_label_and_weight(out)
        assert np.array_equal(label2, label) and np.array_equal(w2, w)


def test_an_rgb_file_that_is_not_label_and_weight_is_refused(tmp_path):
    from PIL import Image

    from wsss_edu.errors import DataFileError

    arr = np.zeros((4, 5, 3), np.uint8)
    arr[..., 0], arr[..., 1] = 200, 100  # R and G differ
    Image.fromarray(arr).save(tmp_path / "x.png")
    with pytest.raises(DataFileError, match="'LA'.*'RGB'.*G = R"):
        urn.read_label_and_weight(tmp_path / "x.png")
    Image.fromarray(arr[..., 0]).save(tmp_path / "grey.png")  # a plain mask: mode L
    with pytest.raises(DataFileError, match="mode L.*'LA'.*'RGB'"):
        urn.read_label_and_weight(tmp_path / "grey.png")


# ------------------------------------------------------------------------------------------------
# The rule beyond the two files
# ------------------------------------------------------------------------------------------------


def synthetic_case(c, seed, h=48, w=64, absent=(), weak=1e-6):
    """P = softmax(3 · a smooth Gaussian field) per class (the shape of the golden cases), with the
    channels ``absent`` set to ``weak`` everywhere before renormalising (tiny: they never win an
    argmax), and an image coloured by P."""
    from scipy import ndimage

    g = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(g.standard_normal((h, w)), 6) for _ in range(c)])
    field /= field.std(axis=(1, 2), keepdims=True)
    z = np.exp(3 * (field - field.max(0)))
    z /= z.sum(0)
    z[list(absent)] = weak
    p = (z / z.sum(0)).astype(np.float32)
    palette = g.integers(0, 256, (c, 3)).astype(np.float64)
    image = np.clip(np.einsum("chw,ck->hwk", p, palette), 0, 255).astype(np.uint8)
    return image, p


def direct_rule(image, p, factors=urn.VOC_FACTORS, eps=1e-6):
    """The reference's block as its README describes it, written out plainly."""
    from wsss_edu.crf import crf_on_scores

    q = crf_on_scores(image, p, "urn")
    cyclic = q.argmax(0)
    labels = sorted(set(cyclic.flatten().tolist()))
    u_c = []
    for ci in range(len(labels)):
        ms = []
        for n in factors:
            sub = p[labels].copy()
            sub[ci] = sub[ci] ** n
            ms.append(crf_on_scores(image, sub, "urn").argmax(0) == ci)
        u_c.append(np.var(np.stack(ms), axis=0))
    big = np.max(np.stack(u_c), axis=0)
    u = (big - big.min()) / (big.max() - big.min() + eps)
    return q, cyclic, np.array(labels), np.stack(u_c), u, ((1 - u) * 255).astype("uint8")


@pytest.mark.parametrize("c, seed, absent", [(4, 21, (2,)), (5, 22, ()), (5, 23, (1, 4))])
def test_the_rule_on_more_cases(c, seed, absent):
    image, p = synthetic_case(c, seed, absent=absent)
    q, cyclic, labels, u_c, u, weight = direct_rule(image, p)
    assert not set(absent) & set(labels.tolist())  # an absent channel is not present
    assert len(labels) == c - len(absent)
    assert len(np.unique(weight)) > 1  # a case where something varies
    s = urn.urn_steps(image, p)
    assert np.array_equal(s.marginals, q) and np.array_equal(s.cyclic, cyclic)
    assert np.array_equal(s.classes, labels)
    np.testing.assert_allclose(s.variance, u_c, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.u, u, rtol=0, atol=1e-12)
    assert np.array_equal(s.weight, weight)


def test_present_from_and_include_background_choose_the_classes():
    image, p = synthetic_case(
        4, 24, absent=(2,), weak=0.02
    )  # weak, not negligible: 0.02 ** 0.15 = 0.56
    ref = urn.urn_steps(image, p)
    assert ref.classes.tolist() == [0, 1, 3]  # never the argmax of CRF(P)
    # the pseudo-mask the network was trained on may hold a class the CRF of P never gives (2)
    pm = np.asarray(ref.cyclic).copy()
    pm[:5, :5] = 2
    pm[-3:] = 255
    s = urn.urn_steps(image, p, pm, present_from="pseudo_mask")
    assert s.classes.tolist() == [0, 1, 2, 3] and s.marginals.shape[0] == 4
    assert np.array_equal(s.cyclic, s.classes[s.marginals.argmax(0)])
    # channel 2 is scaled too: P_2 ** 0.15 wins pixels, so its variance (and U) is new
    assert s.variance.shape[0] == 4 and s.variance[2].max() > 0
    assert not np.array_equal(s.weight, ref.weight)
    # even a pseudo-mask with the classes of argmax CRF(P) differs: the CRFs then run without the
    # absent channel, which a weak but not negligible P_2 changes
    fewer = urn.urn_steps(image, p, ref.cyclic, present_from="pseudo_mask")
    assert fewer.classes.tolist() == [0, 1, 3] and fewer.marginals.shape[0] == 3
    assert not np.array_equal(fewer.cyclic, ref.cyclic)
    # with every channel present the two readings agree
    image5, p5 = synthetic_case(5, 22)
    ref5 = urn.urn_steps(image5, p5)
    assert ref5.classes.tolist() == [0, 1, 2, 3, 4]
    same = urn.urn_steps(image5, p5, ref5.cyclic, present_from="pseudo_mask")
    assert np.array_equal(same.cyclic, ref5.cyclic) and np.array_equal(same.weight, ref5.weight)
    # include_background=False: the same CRFs, the background's variance left out of the max
    fg = urn.urn_steps(image, p, include_background=False)
    assert fg.scaled.tolist() == [c for c in ref.classes.tolist() if c != 0]
    np.testing.assert_array_equal(fg.variance, ref.variance[1:])
    np.testing.assert_allclose(fg.u, urn.uncertainty_map(ref.variance[1:]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="present_from"):
        urn.urn_steps(image, p, present_from="labels")


def test_normalisation_eps_and_truncation_are_the_switches():
    var = np.zeros((1, 1, 3))
    var[0, 0] = [0, 5 / 36, 8 / 36]  # max 8/36: u = 0, 5/8, 1 (nearly)
    u_ref, u_plain = urn.uncertainty_map(var), urn.uncertainty_map(var, eps=0)
    assert u_ref.dtype == np.float64 and np.allclose(u_plain, [[0, 0.625, 1]], rtol=0, atol=1e-15)
    assert np.array_equal(u_ref, (var[0] - 0) / (8 / 36 + 1e-6))
    # W = 0.375 → 95.6: the reference truncates to 95, rounding gives 96
    assert urn.weight_to_uint8(1 - u_plain).tolist() == [[255, 95, 0]]
    assert urn.weight_to_uint8(1 - u_plain, "round").tolist() == [[255, 96, 0]]
    assert urn.weight_to_uint8(1 - u_ref).tolist() == [[255, 95, 0]]
    # a constant image: 0 with either eps
    flat = np.full((2, 3, 4), 0.1)
    assert np.all(urn.uncertainty_map(flat) == 0) and np.all(urn.uncertainty_map(flat, eps=0) == 0)
    # every stored byte b, read back as b/255 in float32, gives b again
    b = np.arange(256)
    assert np.array_equal(urn.weight_to_uint8(b.astype(np.float32) / 255), b)
