"""Dense CRF wrappers: both flavours, input checks, the process pool gives the same answer."""

import numpy as np
import pytest

from wsss_edu.crf import PRESETS, crf_map, crf_on_labels, crf_on_scores


def scene():
    rng = np.random.default_rng(0)
    img = np.zeros((32, 40, 3), np.uint8)
    img[:, :20] = (200, 30, 30)
    img[:, 20:] = (30, 30, 200)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    return img


def test_label_crf_snaps_to_colour_edge():
    img = scene()
    labels = np.zeros((32, 40), int)
    labels[:, 16:] = 1  # the given edge is 4 px off the colour edge at x = 20
    q = crf_on_labels(img, labels, 2)
    assert q.shape == (2, 32, 40)
    assert np.allclose(q.sum(0), 1, atol=1e-4)
    out = q.argmax(0)
    assert (out[:, :19] == 0).mean() > 0.95 and (out[:, 21:] == 1).mean() > 0.95


def test_score_crf_cleans_noisy_probabilities():
    img = scene()
    rng = np.random.default_rng(1)
    p1 = np.where(np.arange(40)[None, :] >= 20, 0.65, 0.35) + rng.normal(0, 0.2, (32, 40))
    p1 = np.clip(p1, 0.01, 0.99)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    before = (probs.argmax(0) == (np.arange(40)[None, :] >= 20)).mean()
    after = (crf_on_scores(img, probs, "urn").argmax(0) == (np.arange(40)[None, :] >= 20)).mean()
    assert after > before and after > 0.97


def test_inputs_checked_with_the_fix_named():
    img = scene()
    with pytest.raises(ValueError, match="uint8"):
        crf_on_scores(img.astype(np.float32) / 255, np.ones((2, 32, 40)) / 2)
    with pytest.raises(ValueError, match="0..1"):
        crf_on_labels(img, np.full((32, 40), 3), 2)
    with pytest.raises(ValueError, match="choose one of"):
        crf_on_scores(img, np.ones((2, 32, 40)) / 2, "nope")
    assert set(PRESETS) >= {"irn_labels", "rrm_train", "rrm_test", "urn"}


def test_pool_matches_serial():
    img = scene()
    probs = [
        np.stack([np.full((32, 40), a), np.full((32, 40), 1 - a)]).astype(np.float32)
        for a in (0.3, 0.5, 0.7)
    ]
    serial = crf_map([img] * 3, probs, "scores", processes=1)
    pooled = crf_map([img] * 3, probs, "scores", processes=2)
    for a, b in zip(serial, pooled):
        assert np.allclose(a, b)


def test_crf_accepts_read_only_images_as_pil_gives_them():
    from PIL import Image

    img = np.asarray(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8))
    )
    assert not img.flags.writeable
    labels = np.zeros((8, 8), np.int64)
    labels[2:6, 2:6] = 1
    assert crf_on_labels(img, labels, 2).shape == (2, 8, 8)


def test_rescaled_crf_is_the_crf_at_scale_one_and_keeps_the_edge_at_half_size():
    from wsss_edu.crf import crf_on_scores_rescaled

    img = np.repeat(np.repeat(scene(), 2, 0), 2, 1)  # 64 x 80, colour edge at x = 40
    rng = np.random.default_rng(1)
    right = np.arange(80)[None, :] >= 40
    p1 = np.clip(np.where(right, 0.65, 0.35) + rng.normal(0, 0.2, (64, 80)), 0.01, 0.99)
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    assert np.array_equal(
        crf_on_scores_rescaled(img, probs, "urn", 1.0), crf_on_scores(img, probs, "urn")
    )
    q = crf_on_scores_rescaled(img, probs, "urn", 0.5)
    assert q.shape == probs.shape and q.dtype == np.float32
    assert np.allclose(q.sum(0), 1, atol=1e-3)  # bilinear resizing keeps a distribution
    before = (probs.argmax(0) == right).mean()
    assert (q.argmax(0) == right).mean() > max(before, 0.97)
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            crf_on_scores_rescaled(img, probs, "urn", bad)


def test_rescaled_crf_scales_the_spatial_widths():
    """On a half-size grid the kernels must cover the same part of the image: the result equals
    the plain CRF on the downsized inputs with sxy halved (and not with the original widths)."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from wsss_edu.crf import crf_on_scores_rescaled

    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), (40, 48)).transpose(2, 0, 1).astype(np.float32)
    small = (
        F.interpolate(
            torch.from_numpy(img).permute(2, 0, 1)[None].float(),
            size=(20, 24),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )[0]
        .round()
        .clamp(0, 255)
        .byte()
        .permute(1, 2, 0)
        .numpy()
    )
    p = probs.reshape(3, 20, 2, 24, 2).mean((2, 4))
    half = dataclasses.replace(
        PRESETS["urn"],
        gauss_sxy=PRESETS["urn"].gauss_sxy / 2,
        bilateral_sxy=PRESETS["urn"].bilateral_sxy / 2,
    )
    expected = F.interpolate(
        torch.from_numpy(crf_on_scores(small, p, half))[None],
        size=(40, 48),
        mode="bilinear",
        align_corners=False,
    )[0].numpy()
    got = crf_on_scores_rescaled(img, probs, "urn", 0.5)
    assert np.allclose(got, expected, atol=1e-5)
    unscaled = F.interpolate(
        torch.from_numpy(crf_on_scores(small, p, "urn"))[None],
        size=(40, 48),
        mode="bilinear",
        align_corners=False,
    )[0].numpy()
    assert not np.allclose(got, unscaled, atol=1e-3)
