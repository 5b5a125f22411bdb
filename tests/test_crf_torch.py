"""The PyTorch dense CRF (wsss_edu.crf_torch) and the backend choice of wsss_edu.crf: the torch
mean field equals a naive numpy one written from the paper (Potts mu = [l != l'], all pairs); it
agrees with pydensecrf2 on the presets (measured numbers below); 'auto' falls back to it when
pydensecrf cannot be imported; forcing 'pydensecrf' without it names the install command."""

import sys
import warnings

import numpy as np
import pytest

from wsss_edu import crf
from wsss_edu.crf import PRESETS, CRFBackendMissing, crf_map, crf_on_labels, crf_on_scores
from wsss_edu.crf_torch import dense_crf
from wsss_edu.errors import ParameterError


def toy_scene(h=64, w=64, classes=4, seed=0):
    """A toy-world-like image: a textured background and ``classes - 1`` coloured blobs, with
    noisy, spatially correlated class probabilities (argmax right on ~70 % of the pixels at 64 x 64)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack(
        [60 + 40 * np.sin(xx / 7.0), 120 + 30 * np.cos(yy / 9.0), 60 + 0 * xx], -1
    ).astype(float)
    truth = np.zeros((h, w), int)
    for k in range(1, classes):
        cy, cx = rng.integers(h // 6, h - h // 6), rng.integers(w // 6, w - w // 6)
        ry, rx = rng.integers(max(1, h // 10), max(2, h // 4), 2)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        truth[blob] = k
        img[blob] = rng.integers(0, 255, 3)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    smooth = rng.normal(0, 1, (classes, h + 4, w + 4))
    smooth = sum(smooth[:, i : i + h, j : j + w] for i in range(5) for j in range(5)) / 5
    logits = (
        2.0 * np.eye(classes)[truth].transpose(2, 0, 1)
        + smooth
        + rng.normal(0, 0.8, (classes, h, w))
    )
    p = np.exp(logits - logits.max(0))
    return img, (p / p.sum(0)).astype(np.float32), truth


def naive_mean_field(unary, image, prm):
    """Paper eq. 4 / Algorithm 1 written out in numpy float64, independently of wsss_edu.crf_torch:
    explicit (N, N) kernels of eq. 3 from pixel coordinates and colours, each normalised
    symmetrically (D^-1/2 K D^-1/2, pydensecrf's default), Potts mu(l, l') = [l != l'] summed over
    l', Q started at softmax(-U). Like pydensecrf, j runs over all pixels (j = i included)."""
    c, h, w = unary.shape
    ys, xs = np.divmod(np.arange(h * w), w)
    rgb = image.reshape(-1, 3).astype(np.float64)
    dpos2 = (xs[:, None] - xs[None]) ** 2 + (ys[:, None] - ys[None]) ** 2
    drgb2 = ((rgb[:, None, :] - rgb[None, :, :]) ** 2).sum(-1)
    smooth = np.exp(-dpos2 / (2 * prm.gauss_sxy**2))
    appearance = np.exp(-dpos2 / (2 * prm.bilateral_sxy**2) - drgb2 / (2 * prm.bilateral_srgb**2))
    kernels = []
    for k in (smooth, appearance):
        d = k.sum(1)
        kernels.append(k / np.sqrt(d[:, None] * d[None, :]))
    u = unary.reshape(c, -1).astype(np.float64)
    potts = 1.0 - np.eye(c)
    q = np.exp(-u) / np.exp(-u).sum(0)
    for _ in range(prm.iterations):
        pairwise = sum(
            wt * potts @ (q @ k.T)
            for wt, k in zip((prm.gauss_compat, prm.bilateral_compat), kernels)
        )
        e = np.exp(-(u + pairwise) - (-(u + pairwise)).max(0))
        q = e / e.sum(0)
    return q.reshape(c, h, w)


def run_torch(unary, img, prm, **kw):
    return dense_crf(
        unary,
        img,
        prm.gauss_sxy,
        prm.gauss_compat,
        prm.bilateral_sxy,
        prm.bilateral_srgb,
        prm.bilateral_compat,
        prm.iterations,
        **kw,
    )


@pytest.mark.parametrize("preset", ["irn_labels", "urn"])
def test_torch_mean_field_equals_a_naive_numpy_one(preset):
    img, p, _ = toy_scene(9, 11, 3, seed=3)
    unary = -np.log(np.clip(p, 1e-5, 1))
    prm = PRESETS[preset]
    expected = naive_mean_field(unary, img, prm)
    import torch

    exact = run_torch(unary, img, prm, dtype=torch.float64)
    assert np.abs(exact - expected).max() < 1e-5
    assert np.abs(run_torch(unary, img, prm) - expected).max() < 1e-4  # float32, the default
    # the uncached, block-by-block path (blocks of 7 rows, none kept) gives the same numbers
    blocks = run_torch(unary, img, prm, dtype=torch.float64, chunk=7, cache_mib=0)
    assert np.abs(blocks - expected).max() < 1e-5
    # the pairwise terms do something here: the result is not the initial softmax(-U)
    assert np.abs(expected - p / p.sum(0)).max() > 0.05


def test_zero_iterations_is_the_softmax_of_the_unary():
    img, p, _ = toy_scene(8, 8, 3, seed=1)
    unary = -np.log(p)
    q = run_torch(unary, img, PRESETS["urn"].__class__(3, 3, 50, 5, 10, 0))
    assert np.allclose(q, p / p.sum(0), atol=1e-6)


# Measured on toy_scene() (64 x 64, 4 classes, seed 0; input argmax 0.728 right), torch vs
# pydensecrf2 1.1, per preset: label agreement / mean |dQ| / 99th percentile |dQ| / max |dQ|
# (command: the body of this test printing these four numbers) —
#   irn_labels 0.9983 / 0.00082 / 0.0001 / 0.999;  rrm_test 0.9988 / 0.00082 / 0.0066 / 0.892;
#   rrm_train  1.0000 / 0.00001 / 0.0000 / 0.017;  urn      0.9949 / 0.00279 / 0.0108 / 0.955;
# labels right (vs the scene's truth), pydensecrf / torch: 0.996/0.998, 0.996/0.997, 1.000/1.000,
# 0.989/0.993. The max is a few pixels where the marginal sits near 1/2 and the lattice's wider,
# blockier kernel tips it: pydensecrf's permutohedral lattice approximates the Gaussian sums that
# the torch backend computes exactly. The asserts leave a margin over these numbers.
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_torch_agrees_with_pydensecrf_on_the_presets(preset):
    pytest.importorskip("pydensecrf")
    img, p, truth = toy_scene()
    a = crf_on_scores(img, p, preset, backend="pydensecrf")
    b = crf_on_scores(img, p, preset, backend="torch")
    diff = np.abs(a - b)
    assert (a.argmax(0) == b.argmax(0)).mean() >= 0.99
    assert diff.mean() < 5e-3 and np.quantile(diff, 0.99) < 0.05
    assert np.allclose(b.sum(0), 1, atol=1e-4)
    assert (b.argmax(0) == truth).mean() > (p.argmax(0) == truth).mean() + 0.1  # it cleans up


def test_label_crf_agrees_with_pydensecrf():
    pytest.importorskip("pydensecrf")
    img, p, _ = toy_scene(seed=2)
    labels = p.argmax(0)
    a = crf_on_labels(img, labels, 4, backend="pydensecrf")
    b = crf_on_labels(img, labels, 4, backend="torch")
    assert (a.argmax(0) == b.argmax(0)).mean() >= 0.99


# Images above crf.TORCH_EXACT_PIXELS (64 x 64) run on a coarser grid of at most that many pixels.
# Measured on toy_scene(213, 320, 5, seed=5) (input argmax 0.670 right) against pydensecrf2 at full
# size, over the four presets: label agreement 0.989-0.993, mean |dQ| 0.0050-0.0074; labels right
# 0.991-0.993 (torch) vs 0.998-1.000 (pydensecrf). A 16384-pixel grid: agreement 0.993-0.996,
# mean |dQ| 0.0025-0.0047, right 0.995-0.997, at about 20x the time. What is lost is the exact
# edge, as with crf_on_scores_rescaled. This test runs a 96 x 128 image to stay fast.
def test_large_images_use_the_coarse_grid(monkeypatch):
    pytest.importorskip("pydensecrf")
    from wsss_edu import crf_torch

    img, p, truth = toy_scene(96, 128, 4, seed=4)
    seen = []
    real = crf_torch.dense_crf
    monkeypatch.setattr(
        crf, "dense_crf", lambda u, *a, **k: seen.append(u.shape) or real(u, *a, **k)
    )
    b = crf_on_scores(img, p, "rrm_train", backend="torch")
    assert len(seen) == 1 and seen[0][1] * seen[0][2] <= crf.TORCH_EXACT_PIXELS
    assert b.shape == p.shape and np.allclose(b.sum(0), 1, atol=1e-3)
    a = crf_on_scores(img, p, "rrm_train", backend="pydensecrf")
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.97
    assert (b.argmax(0) == truth).mean() > (p.argmax(0) == truth).mean()


@pytest.fixture
def no_pydensecrf(monkeypatch):
    """pydensecrf made unimportable (None in sys.modules), the one-time warning re-armed."""
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    crf._warn_torch_fallback.cache_clear()
    yield
    crf._warn_torch_fallback.cache_clear()


def test_auto_falls_back_to_torch_once_warned(no_pydensecrf):
    img, p, _ = toy_scene(16, 16, 3)
    with pytest.warns(UserWarning, match=r'torch.*pip install "wsss_edu\[crf\]"'):
        q = crf_on_scores(img, p, "urn")
    assert np.array_equal(q, crf_on_scores(img, p, "urn", backend="torch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        crf_on_labels(img, p.argmax(0), 3)
        assert crf.resolve_backend("auto") == "torch"
    serial = crf_map([img, img], [p, p[::-1].copy()], "scores", params="urn")
    assert np.array_equal(serial[0], q)


def test_forcing_pydensecrf_when_missing_names_the_install_command(no_pydensecrf):
    img, p, _ = toy_scene(16, 16, 3)
    with pytest.raises(CRFBackendMissing, match=r'pip install "wsss_edu\[crf\]".*backend=.torch.'):
        crf_on_scores(img, p, backend="pydensecrf")
    with pytest.raises(ImportError):  # also an ImportError, as callers may expect
        crf.resolve_backend("pydensecrf")


def test_auto_prefers_pydensecrf_and_bad_backends_are_named():
    pytest.importorskip("pydensecrf")
    assert crf.resolve_backend("auto") == "pydensecrf"
    assert crf.resolve_backend("torch") == "torch"
    img, p, _ = toy_scene(16, 16, 3)
    assert np.array_equal(
        crf_on_scores(img, p, "urn"), crf_on_scores(img, p, "urn", backend="pydensecrf")
    )
    with pytest.raises(ParameterError, match="'auto', 'pydensecrf', 'torch'"):
        crf_on_scores(img, p, backend="cuda")


def test_crf_map_and_rescaled_pass_the_backend():
    img, p, _ = toy_scene(32, 32, 3)
    direct = crf_on_scores(img, p, "urn", backend="torch")
    assert np.array_equal(crf_map([img], [p], "scores", params="urn", backend="torch")[0], direct)
    from wsss_edu.crf import crf_on_scores_rescaled

    assert np.array_equal(crf_on_scores_rescaled(img, p, "urn", 1.0, backend="torch"), direct)
    half = crf_on_scores_rescaled(img, p, "urn", 0.5, backend="torch")
    assert half.shape == p.shape and np.allclose(half.sum(0), 1, atol=1e-3)


def test_pool_runs_the_torch_backend_after_torch_ran_here():
    """crf_map's workers are spawned: forked ones hung (OpenMP) once this process had run torch."""
    img, p, _ = toy_scene(24, 24, 3)
    serial = crf_on_scores(img, p, "urn", backend="torch")  # torch's threads now exist
    pooled = crf_map([img, img], [p, p], "scores", processes=2, params="urn", backend="torch")
    assert all(np.array_equal(q, serial) for q in pooled)
