"""Tests of the dataset loaders on tiny fabricated folders (no downloads)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wsss_edu import datasets as ds
from wsss_edu.errors import DataFileError, DatasetNotFoundError, ParameterError
from wsss_edu.io import read_mask

try:
    from . import fixtures_datasets as fx
except ImportError:
    import fixtures_datasets as fx

REPO = Path(__file__).resolve().parents[1]


def check_sample(s, num_classes):
    """The sample format of wsss_edu.labels."""
    h, w = s["mask"].shape
    assert s["image"].dtype == np.uint8 and s["image"].shape == (h, w, 3)
    assert s["mask"].dtype == np.uint8
    assert s["instances"] is None or (
        s["instances"].dtype == np.int32 and s["instances"].shape == (h, w)
    )
    assert s["boxes"].dtype == np.int64 and s["boxes"].ndim == 2 and s["boxes"].shape[1] == 4
    assert s["box_labels"].dtype == np.int64 and s["box_labels"].shape == (len(s["boxes"]),)
    assert s["labels"].dtype == np.float32 and s["labels"].shape == (num_classes - 1,)
    assert isinstance(s["pixel_label"], bool) and isinstance(s["name"], str)


# ------------------------------------------------------------------------------------------------
# VOC
# ------------------------------------------------------------------------------------------------


def test_voc_sample_format_labels_and_instance_boxes(tmp_path):
    fx.make_voc(tmp_path)
    d = ds.VOCSegmentation(tmp_path, "train")
    assert len(d) == 2 and d.names == ["2007_000001", "2007_000002"]
    assert d.classes == list(ds.VOC_CLASSES) and d.num_classes == 21
    assert d.palette.shape == (256, 3) and d.palette.dtype == np.uint8
    s = d[0]
    check_sample(s, 21)
    mask, obj, boxes, labels = fx.voc_hand_mask()
    np.testing.assert_array_equal(s["mask"], mask)
    assert s["name"] == "2007_000001" and s["pixel_label"]
    expected_tags = np.zeros(20, np.float32)
    expected_tags[[0, 14]] = 1  # aeroplane (1), person (15)
    np.testing.assert_array_equal(s["labels"], expected_tags)
    assert s["instances"].max() == 3 and (s["instances"][obj == 255] == 0).all()
    order = np.argsort(s["boxes"][:, 0])
    np.testing.assert_array_equal(s["boxes"][order], boxes)
    np.testing.assert_array_equal(s["box_labels"][order], labels)


def test_voc_without_object_maps_uses_components(tmp_path):
    fx.make_voc(tmp_path, objects=False)
    s = ds.VOCSegmentation(tmp_path, "train")[0]
    assert s["instances"] is None
    order = np.argsort(s["boxes"][:, 0])
    # the two touching persons merge into one component
    np.testing.assert_array_equal(s["boxes"][order], [[2, 3, 16, 10], [20, 12, 35, 25]])
    np.testing.assert_array_equal(s["box_labels"][order], [15, 1])


def test_voc_splits_and_root_variants(tmp_path):
    voc = fx.make_voc(tmp_path)
    assert len(ds.VOCSegmentation(tmp_path, "val")) == 1
    assert len(ds.VOCSegmentation(tmp_path, "trainval")) == 3
    assert len(ds.VOCSegmentation(voc, "train")) == 2  # VOC2012 itself
    assert len(ds.VOCSegmentation(voc.parent, "train")) == 2  # VOCdevkit
    bare = fx.make_voc(tmp_path / "bare", layout="bare")
    assert len(ds.VOCSegmentation(bare, "val")) == 1


def test_voc_transform_and_index_errors(tmp_path):
    fx.make_voc(tmp_path)
    d = ds.VOCSegmentation(tmp_path, "train", transform=lambda s: {**s, "seen": True})
    assert d[1]["seen"] and d[-1]["name"] == "2007_000002"
    with pytest.raises(IndexError):
        d[2]
    assert len(list(iter(d))) == 2


def test_classes_txt_changes_the_classes(tmp_path):
    names = ["background", "circle", "square", "triangle"]
    masks = {"t0": fx.simple_mask(2), "t1": fx.simple_mask(3, 1), "v0": fx.simple_mask(1, 2)}
    fx.make_voc(tmp_path, train=("t0", "t1"), val=("v0",), classes=names, masks=masks)
    d = ds.get_dataset("voc", tmp_path, "train")
    assert d.classes == names and d.num_classes == 4
    s = d[0]
    check_sample(s, 4)
    np.testing.assert_array_equal(s["labels"], [0, 1, 0])
    # a classes.txt at the root given (above VOCdevkit) is found too
    other = tmp_path / "other"
    fx.make_voc(other, train=("t0",), val=("v0",), masks=masks)
    (other / "classes.txt").write_text("background\nblob\n")
    assert ds.VOCSegmentation(other).classes == ["background", "blob"]
    # explicit classes win
    assert ds.VOCSegmentation(other, classes=["a", "b"]).classes == ["background", "a", "b"]


def test_classes_txt_must_start_with_background(tmp_path):
    fx.make_voc(tmp_path, classes=["circle", "square"])
    with pytest.raises(DataFileError, match="classes.txt.*background"):
        ds.VOCSegmentation(tmp_path)


def test_voc_extra_list_file_is_a_valid_split(tmp_path):
    voc = fx.make_voc(tmp_path)
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("2007_000003\n")
    assert ds.VOCSegmentation(tmp_path, "test").names == ["2007_000003"]


def test_voc_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"python -m wsss_edu.download voc --root"):
        ds.VOCSegmentation(tmp_path / "nothing")
    with pytest.raises(
        DatasetNotFoundError,
        match=r"wsss_edu.download voc --root .*wsss_edu.download sbd --root"
        r" .*wsss_edu.prepare_voc_trainaug --root",
    ):
        ds.get_dataset("voc", tmp_path / "nothing", "train_aug")
    with pytest.raises(ParameterError, match=r"'train'.*'val'.*'trainval'.*'train_aug'"):
        ds.VOCSegmentation(tmp_path, split="training")
    voc = fx.make_voc(tmp_path)
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"val.txt.*wsss_edu.download voc"):
        ds.VOCSegmentation(tmp_path, "val")
    with pytest.raises(
        DatasetNotFoundError,
        match=r"wsss_edu.download sbd --root .*wsss_edu.prepare_voc_trainaug --root",
    ):
        ds.VOCSegmentation(tmp_path, "train_aug")


def test_corrupt_jpeg_names_the_file(tmp_path):
    voc = fx.make_voc(tmp_path)
    bad = voc / "JPEGImages" / "2007_000002.jpg"
    bad.write_bytes(b"this is not a jpeg")
    d = ds.VOCSegmentation(tmp_path)
    d[0]  # the others still load
    with pytest.raises(DataFileError, match="2007_000002.jpg"):
        d[1]


def test_mask_of_other_size_names_both_files(tmp_path):
    voc = fx.make_voc(tmp_path)
    from wsss_edu.io import write_mask

    write_mask(voc / "SegmentationClass" / "2007_000002.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(
        DataFileError,
        match=r"SegmentationClass.*2007_000002.png.*12x10.*"
        r"2007_000002.jpg.*40x30",
    ):
        ds.VOCSegmentation(tmp_path)[1]


# ------------------------------------------------------------------------------------------------
# train_aug
# ------------------------------------------------------------------------------------------------


def test_prepare_trainaug_ids_pngs_and_loader(tmp_path):
    voc, ids, expected = fx.make_voc_with_sbd(tmp_path)
    out = ds.prepare_voc_trainaug(tmp_path)
    a, b, e, f = (ids[k] for k in "abef")
    assert out == [a, b, e, f]
    listed = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert listed == [a, b, e, f]
    aug = voc / "SegmentationClassAug"
    assert sorted(p.stem for p in aug.glob("*.png")) == [a, b, e, f]
    for n, m in expected.items():
        np.testing.assert_array_equal(read_mask(aug / f"{n}.png"), m)  # VOC wins for a, b
        with Image.open(aug / f"{n}.png") as im:
            assert im.mode == "L"
    d = ds.VOCSegmentation(tmp_path, "train_aug")
    assert d.names == [a, b, e, f]
    s = d[2]
    check_sample(s, 21)
    np.testing.assert_array_equal(s["mask"], expected[e])


def test_prepare_trainaug_is_resumable(tmp_path):
    voc, ids, expected = fx.make_voc_with_sbd(tmp_path)
    ds.prepare_voc_trainaug(tmp_path)
    aug = voc / "SegmentationClassAug"
    marker = np.full(fx.simple_mask(1).shape, 7, np.uint8)
    fx.write_grey(aug / f"{ids['e']}.png", marker)  # an existing file is kept
    (aug / f"{ids['f']}.png").unlink()  # a missing one is rebuilt
    ds.prepare_voc_trainaug(tmp_path)
    np.testing.assert_array_equal(read_mask(aug / f"{ids['e']}.png"), marker)
    np.testing.assert_array_equal(read_mask(aug / f"{ids['f']}.png"), expected[ids["f"]])


def test_trainaug_falls_back_to_segmentation_class(tmp_path):
    voc, ids, expected = fx.make_voc_with_sbd(tmp_path)
    ds.prepare_voc_trainaug(tmp_path)
    (voc / "SegmentationClassAug" / f"{ids['a']}.png").unlink()
    s = ds.VOCSegmentation(tmp_path, "train_aug")[0]
    np.testing.assert_array_equal(s["mask"], expected[ids["a"]])


def test_prepare_trainaug_without_sbd_names_the_command(tmp_path):
    fx.make_voc(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"python -m wsss_edu.download sbd --root"):
        ds.prepare_voc_trainaug(tmp_path)


def _load_script(name):
    """Import a data_scripts/*.py file as a module (in-process: no second torch import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "data_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_trainaug_script(tmp_path, capsys):
    fx.make_voc_with_sbd(tmp_path)
    script = _load_script("prepare_voc_trainaug")
    assert script.main(["--root", str(tmp_path)]) == 0
    assert "4 train_aug ids" in capsys.readouterr().out
    assert script.main(["--root", str(tmp_path / "none")]) == 1
    assert "python -m wsss_edu.download voc" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Cityscapes
# ------------------------------------------------------------------------------------------------


def test_cityscapes_mapping_and_instance_boxes(tmp_path):
    fx.make_cityscapes(tmp_path)
    d = ds.Cityscapes(tmp_path, "train")
    assert len(d) == 3 and d.classes == ["background", "car", "person"]
    assert d.names[0] == "aachen_000000_000019" and d.names[-1] == "bochum_000000_000019"
    s = d[0]
    check_sample(s, 3)
    lab, _ = fx.cityscapes_hand_ids()
    m = s["mask"]
    assert (m[lab == 26] == 1).all() and (m[lab == 24] == 2).all()
    assert (m[lab == 0] == 255).all() and (m[lab == 1] == 255).all()
    assert (m[lab == 7] == 0).all() and (m[lab == 25] == 0).all()  # rider not chosen
    np.testing.assert_array_equal(s["labels"], [1, 1])
    assert s["instances"].max() == 3  # 2 cars + 1 person
    order = np.argsort(s["boxes"][:, 0])
    np.testing.assert_array_equal(
        s["boxes"][order], [[2, 5, 8, 12], [8, 5, 14, 12], [20, 4, 24, 16]]
    )
    np.testing.assert_array_equal(s["box_labels"][order], [1, 1, 2])


def test_cityscapes_class_order_and_extra_classes(tmp_path):
    fx.make_cityscapes(tmp_path)
    d = ds.Cityscapes(tmp_path / "cityscapes", "val", classes=("rider", "person", "car"))
    assert len(d) == 1 and d.classes == ["background", "rider", "person", "car"]
    s = d[0]
    lab, _ = fx.cityscapes_hand_ids()
    assert (s["mask"][lab == 25] == 1).all() and (s["mask"][lab == 26] == 3).all()
    order = np.argsort(s["boxes"][:, 0])
    np.testing.assert_array_equal(s["box_labels"][order], [3, 3, 2, 1])
    np.testing.assert_array_equal(s["boxes"][order][-1], [30, 4, 33, 10])


def test_cityscapes_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"cityscapes-dataset.com.*gtFine_trainvaltest"):
        ds.get_dataset("cityscapes", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="cityscapes"):
        ds.get_dataset("cityscapes")
    with pytest.raises(ParameterError, match=r"'train'.*'val'.*'test'"):
        ds.Cityscapes(tmp_path, "training")
    with pytest.raises(ParameterError, match="'car'"):
        ds.Cityscapes(tmp_path, classes=("cars",))


# ------------------------------------------------------------------------------------------------
# CamVid
# ------------------------------------------------------------------------------------------------


def test_camvid_mapping_and_list_file_paths(tmp_path):
    fx.make_camvid(tmp_path)
    for root in (tmp_path, tmp_path / "CamVid"):
        d = ds.CamVid(root, "train")
        assert d.names == ["0001TP_006690", "0001TP_006720"]
    assert d.classes == ["background", "car", "pedestrian"]
    s = d[1]
    check_sample(s, 3)
    raw = fx.camvid_hand_mask()
    m = s["mask"]
    assert (m[raw == 8] == 1).all() and (m[raw == 9] == 2).all() and (m[raw == 11] == 255).all()
    assert (m[(raw == 0) | (raw == 3)] == 0).all()
    np.testing.assert_array_equal(s["labels"], [1, 1])
    order = np.argsort(s["boxes"][:, 0])
    np.testing.assert_array_equal(s["boxes"][order], [[4, 20, 14, 28], [30, 10, 34, 30]])
    np.testing.assert_array_equal(s["box_labels"][order], [1, 2])
    assert s["instances"].dtype == np.int32 and s["instances"].max() == 2


def test_camvid_without_list_files_pairs_by_name(tmp_path):
    fx.make_camvid(tmp_path, list_files=False, nested=False)
    d = ds.get_dataset("camvid", tmp_path, "val")
    assert d.names == ["0016E5_07959"]
    assert (d[0]["mask"] == 255).sum() == 6 * 8


def test_camvid_all_classes(tmp_path):
    fx.make_camvid(tmp_path)
    d = ds.CamVid(tmp_path, "test", classes="all")
    assert d.num_classes == 12 and d.classes[1:] == list(ds.CAMVID_CLASSES)
    s = d[0]
    raw = fx.camvid_hand_mask()
    np.testing.assert_array_equal(s["mask"], np.where(raw == 11, 255, raw + 1))
    np.testing.assert_array_equal(np.flatnonzero(s["labels"]) + 1, [1, 4, 9, 10])


def test_camvid_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"python -m wsss_edu.download camvid --root"):
        ds.get_dataset("camvid", tmp_path)
    with pytest.raises(ParameterError, match=r"'train'.*'val'.*'test'"):
        ds.CamVid(tmp_path, "trainval")
    with pytest.raises(ParameterError, match="'all'"):
        ds.CamVid(tmp_path, classes="everything")
    base = fx.make_camvid(tmp_path)
    (base / "train.txt").write_text("/SegNet/CamVid/train/x.png\n")
    with pytest.raises(DataFileError, match="train.txt line 1"):
        ds.CamVid(tmp_path, "train")


# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------


def test_coco_without_pycocotools_names_pip(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        ds.get_dataset("coco", tmp_path, "val2014")


def check_coco(d):
    assert d.classes == ["background", "person", "dog"]  # sorted category ids: 1, 18
    s = d[0]
    check_sample(s, 3)
    np.testing.assert_array_equal(s["labels"], [1, 1])
    order = np.argsort(s["boxes"][:, 0])
    np.testing.assert_array_equal(s["boxes"][order], [[2, 2, 7, 12], [20, 10, 30, 20]])
    np.testing.assert_array_equal(s["box_labels"][order], [1, 2])
    assert (s["mask"][10:20, 20:30] == 2).all() and (s["mask"][2:12, 2:7] == 1).all()
    assert (s["mask"][24:28, 34:38] == 255).all()  # crowd -> ignore, no box
    assert s["instances"].max() == 2


def test_coco_loader_logic_with_a_fake_pycocotools(tmp_path, monkeypatch):
    fx.make_coco(tmp_path)
    fake = types.ModuleType("pycocotools.coco")
    fake.COCO = fx.FakeCOCO
    monkeypatch.setitem(sys.modules, "pycocotools", types.ModuleType("pycocotools"))
    monkeypatch.setitem(sys.modules, "pycocotools.coco", fake)
    check_coco(ds.get_dataset("coco", tmp_path, "val"))
    d = ds.COCOSegmentation(tmp_path / "coco", "val2014", classes=["dog"])
    assert d.classes == ["background", "dog"]
    np.testing.assert_array_equal(d[0]["box_labels"], [1])
    with pytest.raises(DatasetNotFoundError, match="cocodataset.org"):
        ds.COCOSegmentation(tmp_path, "train2014")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own numpy-2 warnings
def test_coco_with_real_pycocotools(tmp_path):
    pytest.importorskip("pycocotools")
    fx.make_coco(tmp_path)
    check_coco(ds.get_dataset("coco", tmp_path, "val"))


# ------------------------------------------------------------------------------------------------
# get_dataset and collate
# ------------------------------------------------------------------------------------------------


def test_get_dataset_unknown_name_lists_valid():
    with pytest.raises(ParameterError, match=r"'toy'.*'voc'.*'cityscapes'.*'camvid'.*'coco'"):
        ds.get_dataset("imagenet")


def test_get_dataset_without_root_names_the_command():
    with pytest.raises(DatasetNotFoundError, match=r"python -m wsss_edu.download voc --root"):
        ds.get_dataset("voc")


def test_get_dataset_toy_forwards_its_arguments(monkeypatch):
    calls = []

    class FakeToy:
        def __init__(self, **kw):
            calls.append(kw)

    monkeypatch.setattr(ds, "ToyDataset", FakeToy)
    d = ds.get_dataset("toy", split="val", n=4, size=32)
    assert isinstance(d, FakeToy) and calls == [{"split": "val", "n": 4, "size": 32}]


def test_collate_samples(tmp_path):
    fx.make_camvid(tmp_path)
    d = ds.CamVid(tmp_path, "train")
    b = next(iter(DataLoader(d, batch_size=2, collate_fn=ds.collate_samples)))
    assert b["image"].dtype == torch.float32 and b["image"].shape == (2, 3, fx.CV_H, fx.CV_W)
    from wsss_edu.data import images_to_tensor  # the same normalisation as every training path

    assert torch.allclose(b["image"], images_to_tensor(np.stack([d[0]["image"], d[1]["image"]])))
    assert b["mask"].dtype == torch.long and b["mask"].shape == (2, fx.CV_H, fx.CV_W)
    assert b["labels"].dtype == torch.float32 and b["labels"].shape == (2, 2)
    assert b["pixel_label"].tolist() == [True, True]
    assert isinstance(b["boxes"], list) and b["boxes"][0].shape == (2, 4)
    assert b["boxes"][0].dtype == torch.long and b["box_labels"][1].tolist() in ([1, 2], [2, 1])
    assert b["instances"][0].shape == (fx.CV_H, fx.CV_W) and b["name"] == d.names
    from wsss_edu.data import tensor_to_images

    assert np.array_equal(tensor_to_images(b["image"])[0], d[0]["image"])


def test_collate_samples_of_different_sizes_says_how_to_fix(tmp_path):
    s1 = {"image": np.zeros((4, 5, 3), np.uint8), "mask": np.zeros((4, 5), np.uint8)}
    s2 = {"image": np.zeros((6, 5, 3), np.uint8), "mask": np.zeros((6, 5), np.uint8)}
    with pytest.raises(ParameterError, match="transform"):
        ds.collate_samples([s1, s2])


def test_voc_xml_boxes_are_one_based_inclusive(tmp_path):
    """A hand-written VOC annotation: xmin=1 is the first pixel column, xmax=10 the tenth."""
    from wsss_edu.datasets import VOC_CLASSES, read_voc_boxes

    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><object><name>car</name><bndbox><xmin>1</xmin><ymin>3</ymin>"
        "<xmax>10</xmax><ymax>4</ymax></bndbox></object><object><name>unicorn</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox>"
        "</object></annotation>"
    )
    boxes, labels = read_voc_boxes(xml, list(VOC_CLASSES))
    assert boxes.tolist() == [[0, 2, 10, 4]] and labels.tolist() == [VOC_CLASSES.index("car")]
    xml.write_text("<annotation><object><name>car</name>")
    with pytest.raises(DataFileError, match="a.xml"):
        read_voc_boxes(xml, list(VOC_CLASSES))


def test_a_truncated_sbd_class_map_is_named_with_the_command_that_refetches_it(tmp_path):
    from wsss_edu.datasets import read_sbd_mat

    bad = tmp_path / "2008_000001.mat"
    bad.write_bytes(b"MAT")  # an interrupted download: fewer bytes than a header
    with pytest.raises(DataFileError, match=r"2008_000001\.mat.*wsss_edu\.download sbd"):
        read_sbd_mat(bad)
