"""The sample format shared by every dataset, and the helpers that derive weak labels from masks.

A *sample* is a dict of NumPy arrays:

=============  =====================  ===============================================================
key            dtype / shape          meaning
=============  =====================  ===============================================================
``image``      uint8 (H, W, 3)        RGB
``mask``       uint8 (H, W)           0 background, 1..K foreground classes, 255 ignore (void/border)
``instances``  int32 (H, W) or None   0 = no instance, 1..N instance ids
``boxes``      int64 (N, 4)           x0, y0, x1, y1 in pixels, x1/y1 exclusive
``box_labels`` int64 (N,)             class index (1..K) of each box
``labels``     float32 (K,)           image-level multi-hot over the K foreground classes
``pixel_label`` bool                  True when ``mask`` is pixel-perfect for this sample (else the
                                      sample is meant to be used with its boxes / tags only)
``name``       str                    image id
=============  =====================  ===============================================================

``labels[k - 1]`` is class ``k`` of the mask: background has no tag. Masks are shown and written
as palette PNGs in :func:`voc_palette`'s colours.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n, 3) uint8: class k's colour from the bits of k; 255 is white-ish
    in VOC's convention (we force it to white so the ignore band reads as 'no label')."""
    pal = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[k] = (r, g, b)
    if n > 255:
        pal[255] = (255, 255, 255)
    return pal


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Image-level multi-hot (K,) over foreground classes 1..K present in ``mask``.

    ``num_classes`` counts background: K = num_classes - 1. Ignore (255) is skipped.
    """
    present = np.unique(mask)
    present = present[(present > 0) & (present < num_classes)]
    out = np.zeros(num_classes - 1, np.float32)
    out[present.astype(np.int64) - 1] = 1.0
    return out


def box_of(region: np.ndarray) -> np.ndarray:
    """Tight box [x0, y0, x1, y1] (x1/y1 exclusive) of a boolean region; all zeros when empty."""
    ys = np.flatnonzero(region.any(axis=1))
    xs = np.flatnonzero(region.any(axis=0))
    if len(ys) == 0:
        return np.zeros(4, np.int64)
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.int64)


def boxes_from_instances(instances: np.ndarray, mask: np.ndarray):
    """Boxes and their classes from an instance-id map; the class of an instance is the majority
    class of its pixels in ``mask`` (ignoring 0 and 255). Instances with no class are dropped."""
    boxes, classes = [], []
    for i in np.unique(instances):
        if i == 0:
            continue
        region = instances == i
        vals = mask[region]
        vals = vals[(vals != 0) & (vals != IGNORE)]
        if len(vals) == 0:
            continue
        boxes.append(box_of(region))
        classes.append(np.bincount(vals).argmax())
    return _stack_boxes(boxes, classes)


def boxes_from_components(mask: np.ndarray, classes=None, min_pixels: int = 1):
    """Boxes from the 8-connected components of each class in ``mask`` (for datasets without
    instance maps, e.g. CamVid). ``classes`` limits which class ids get boxes (default: all > 0)."""
    from scipy import ndimage

    if classes is None:
        classes = [c for c in np.unique(mask) if c not in (0, IGNORE)]
    boxes, labels = [], []
    structure = np.ones((3, 3), bool)
    for c in classes:
        comp, n = ndimage.label(mask == c, structure=structure)
        if n == 0:
            continue
        for sl, idx in zip(ndimage.find_objects(comp), range(1, n + 1)):
            if sl is None:
                continue
            if (comp[sl] == idx).sum() < min_pixels:
                continue
            boxes.append(np.array([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop], np.int64))
            labels.append(int(c))
    return _stack_boxes(boxes, labels)


def instances_from_components(mask: np.ndarray, classes=None) -> np.ndarray:
    """An instance-id map (int32) from the connected components of the given classes."""
    from scipy import ndimage

    if classes is None:
        classes = [c for c in np.unique(mask) if c not in (0, IGNORE)]
    out = np.zeros(mask.shape, np.int32)
    nxt = 1
    for c in classes:
        comp, n = ndimage.label(mask == c, structure=np.ones((3, 3), bool))
        out[comp > 0] = comp[comp > 0] + nxt - 1
        nxt += n
    return out


def _stack_boxes(boxes, classes):
    if not boxes:
        return np.zeros((0, 4), np.int64), np.zeros((0,), np.int64)
    return np.stack(boxes).astype(np.int64), np.asarray(classes, np.int64)


def make_sample(
    image,
    mask,
    name,
    num_classes,
    instances=None,
    boxes=None,
    box_labels=None,
    labels=None,
    pixel_label=True,
) -> dict:
    """Assemble a sample dict, deriving what is missing: tags from the mask, boxes from the
    instances (or from connected components when there are none)."""
    if labels is None:
        labels = labels_from_mask(mask, num_classes)
    if boxes is None:
        if instances is not None:
            boxes, box_labels = boxes_from_instances(instances, mask)
        else:
            boxes, box_labels = boxes_from_components(mask)
    return {
        "image": image,
        "mask": mask,
        "instances": instances,
        "boxes": np.asarray(boxes, np.int64).reshape(-1, 4),
        "box_labels": np.asarray(box_labels, np.int64).reshape(-1),
        "labels": np.asarray(labels, np.float32),
        "pixel_label": bool(pixel_label),
        "name": str(name),
    }
