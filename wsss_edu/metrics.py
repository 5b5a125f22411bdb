"""Segmentation metrics: one confusion matrix accumulated over a whole split (VOC's convention),
then per-class IoU and mIoU from it. Pixels labelled 255 in the ground truth are ignored.

A prediction outside [0, C) (e.g. 255 for "unsure" in a pseudo-mask) is a miss: a false negative
of the ground-truth class and no class's false positive. It is kept in an extra last column, so
matrices are (C, C + 1): rows = ground truth, columns = prediction, then "no class"."""

from __future__ import annotations

import numpy as np

from .labels import IGNORE


def confusion_matrix(gt, pred, num_classes: int) -> np.ndarray:
    """Confusion matrix (C, C + 1): rows = ground truth, columns = predicted class, last column =
    predictions outside [0, C). Ground-truth pixels equal to 255 (or outside [0, C)) are ignored."""
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(
            f"gt has {gt.size} pixels but pred has {pred.size}; pass arrays of one shape"
        )
    keep = (gt != IGNORE) & (gt >= 0) & (gt < num_classes)
    gt, pred = gt[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    c1 = num_classes + 1
    return np.bincount(gt * c1 + pred, minlength=num_classes * c1).reshape(num_classes, c1)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) from a (C, C) or (C, C + 1) matrix; NaN for a class
    absent from both ground truth and prediction."""
    cm = np.asarray(cm, np.float64)
    c = cm.shape[0]
    tp = np.diag(cm[:, :c])
    denom = cm[:, :c].sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


class ConfusionMeter:
    """Accumulates a confusion matrix over a split; ``.miou``, ``.iou``, ``.pixel_accuracy``."""

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.cm = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, gt, pred) -> "ConfusionMeter":
        """Add a batch (any shape; torch tensors are accepted)."""
        self.cm += confusion_matrix(_np(gt), _np(pred), self.num_classes)
        return self

    @property
    def iou(self) -> np.ndarray:
        return iou_from_confusion(self.cm)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes that occur (in gt or prediction)."""
        return float(np.nanmean(self.iou))

    @property
    def pixel_accuracy(self) -> float:
        return float(np.diag(self.cm).sum() / max(self.cm.sum(), 1))


def miou(gts, preds, num_classes: int) -> float:
    """mIoU of lists (or arrays) of ground-truth and predicted label maps, from one confusion
    matrix accumulated over all of them."""
    m = ConfusionMeter(num_classes)
    for g, p in zip(gts, preds):
        m.update(g, p)
    return m.miou


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def auroc(score, positive, negative=None) -> float:
    """The area under the ROC curve of ``score`` for telling the pixels of ``positive`` (bool, the
    shape of ``score``) from those of ``negative`` (default: every other pixel): the probability
    that a random positive pixel scores higher than a random negative one, ties counting half
    (Mann-Whitney U). 1: the score ranks every positive first; 0.5: it knows nothing."""
    from scipy.stats import rankdata

    score = np.asarray(score, np.float64)
    positive = np.asarray(positive, bool)
    negative = ~positive if negative is None else np.asarray(negative, bool)
    pos, neg = score[positive].ravel(), score[negative].ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("auroc needs at least one positive and one negative pixel")
    ranks = rankdata(np.concatenate([pos, neg]))  # ties share their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
