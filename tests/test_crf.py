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
    probs = [np.stack([np.full((32, 40), a), np.full((32, 40), 1 - a)]).astype(np.float32)
             for a in (0.3, 0.5, 0.7)]
    serial = crf_map([img] * 3, probs, "scores", processes=1)
    pooled = crf_map([img] * 3, probs, "scores", processes=2)
    for a, b in zip(serial, pooled):
        assert np.allclose(a, b)


def test_crf_accepts_read_only_images_as_pil_gives_them():
    from PIL import Image
    img = np.asarray(Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)))
    assert not img.flags.writeable
    labels = np.zeros((8, 8), np.int64); labels[2:6, 2:6] = 1
    assert crf_on_labels(img, labels, 2).shape == (2, 8, 8)
