"""Metrics against a brute-force computation, ignore handling, accumulation over a split."""

import numpy as np
import pytest
import torch

from wsss_edu.metrics import ConfusionMeter, confusion_matrix, iou_from_confusion, miou


def brute_iou(gts, preds, c):
    tp = fp = fn = 0
    for g, p in zip(gts, preds):
        for gv, pv in zip(g.ravel(), p.ravel()):
            if gv == 255:
                continue
            tp += (gv == c) and (pv == c)
            fp += (gv != c) and (pv == c)
            fn += (gv == c) and (pv != c)
    return tp / (tp + fp + fn) if tp + fp + fn else np.nan


def test_iou_matches_brute_force_with_ignore():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 4, (7, 9)) for _ in range(3)]
    for g in gts:
        g[rng.random(g.shape) < 0.2] = 255
    preds = [rng.integers(0, 4, (7, 9)) for _ in range(3)]
    m = ConfusionMeter(4)
    for g, p in zip(gts, preds):
        m.update(g, p)
    expected = [brute_iou(gts, preds, c) for c in range(4)]
    assert np.allclose(m.iou, expected)
    assert m.miou == pytest.approx(np.nanmean(expected))
    assert miou(gts, preds, 4) == pytest.approx(m.miou)


def test_split_level_not_mean_of_images():
    g1, p1 = np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]])
    g2, p2 = np.array([[1, 0, 0, 0]]), np.array([[0, 0, 0, 0]])
    m = ConfusionMeter(2).update(g1, p1).update(g2, p2)
    assert m.iou[1] == pytest.approx(4 / 5)  # one matrix over the split


def test_absent_class_is_nan_and_skipped():
    cm = confusion_matrix(np.zeros((3, 3)), np.zeros((3, 3)), 3)
    assert cm.shape == (3, 4)
    iou = iou_from_confusion(cm)
    assert iou[0] == 1 and np.isnan(iou[1]) and np.isnan(iou[2])


def test_accepts_tensors_and_rejects_shape_mismatch():
    m = ConfusionMeter(3).update(torch.tensor([[0, 1], [2, 255]]), torch.tensor([[0, 1], [2, 0]]))
    assert m.miou == 1.0 and m.pixel_accuracy == 1.0
    with pytest.raises(ValueError, match="one shape"):
        confusion_matrix(np.zeros(4), np.zeros(5), 2)


def test_out_of_range_prediction_is_a_miss_not_the_last_class():
    m = ConfusionMeter(3).update(np.array([[0, 0, 1, 1]]), np.array([[0, 255, 1, 1]]))
    assert np.allclose(m.iou[:2], [0.5, 1.0]) and np.isnan(m.iou[2])
    assert m.miou == pytest.approx(0.75)
    assert m.iou[0] == pytest.approx(
        brute_iou([np.array([0, 0, 1, 1])], [np.array([0, 9, 1, 1])], 0)
    )
