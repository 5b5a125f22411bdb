"""Fault injection for labels and images (issue 24, item 4 and its poor errors): impossible class
ids, boxes and pixel formats are refused naming the file and the value, or fixed by a stated rule;
decompression bombs and invisible characters in split files get errors that name the fix; a
rerun of write_toy_voc.py leaves exactly the new world.

Every test builds its bad input in ``tmp_path`` (tiny VOC-layout folders from
``fixtures_datasets``) and checks the observable outcome."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from wsss_edu import datasets as ds
from wsss_edu import io
from wsss_edu.errors import DataFileError, ParameterError

try:
    from . import fixtures_datasets as fx
except ImportError:
    import fixtures_datasets as fx

REPO = Path(__file__).resolve().parents[1]
NAME = "2007_000002"  # the second train id of fx.make_voc


def _mask_with(*values) -> np.ndarray:
    """A 40x30 VOC mask: a person (15), a 255 border, and one 2x2 block of each given value."""
    m = fx.simple_mask(15)
    m[0, :] = 255
    for k, v in enumerate(values):
        m[20:22, 2 + 3 * k : 4 + 3 * k] = v
    return m


# ------------------------------------------------------------------------------------------------
# Impossible class ids: refused at load, naming the file, the values and the valid range
# ------------------------------------------------------------------------------------------------


def test_voc_mask_with_class_ids_21_and_50_is_refused_naming_file_values_and_range(tmp_path):
    fx.make_voc(tmp_path, masks={NAME: _mask_with(21, 50)})
    d = ds.VOCSegmentation(tmp_path, "train")
    d[0]  # the good one still loads
    with pytest.raises(DataFileError) as e:
        d[1]
    msg = str(e.value)
    assert f"SegmentationClass/{NAME}.png" in msg
    assert "21 (4 px)" in msg and "50 (4 px)" in msg
    assert "0..20" in msg and "255 (ignore)" in msg and "21 classes" in msg


def test_valid_ids_and_ignore_still_load_unchanged(tmp_path):
    m = _mask_with(20, 0, 255)
    fx.make_voc(tmp_path, masks={NAME: m})
    np.testing.assert_array_equal(ds.VOCSegmentation(tmp_path, "train")[1]["mask"], m)


def test_the_valid_range_follows_classes_txt(tmp_path):
    """A world of 7 classes (classes.txt): id 7 is impossible there, though VOC has it."""
    toy = ["background", "person", "car", "boat", "cat", "dog", "bottle"]
    mask = fx.simple_mask(1)
    mask[20:22, 2:4], mask[20:22, 5:7] = 6, 7
    fx.make_voc(tmp_path, classes=toy, masks={NAME: mask})
    with pytest.raises(
        DataFileError,
        match=rf"{NAME}\.png holds class ids 7 \(4 px\) .*"
        r"7 classes: 0\.\.6, 255 \(ignore\).*classes\.txt",
    ):
        ds.VOCSegmentation(tmp_path, "train")[1]


def test_train_aug_mask_with_an_impossible_id_is_refused(tmp_path):
    voc, ids, _ = fx.make_voc_with_sbd(tmp_path)
    ds.prepare_voc_trainaug(tmp_path)
    bad = ids["e"]  # its mask comes from SBD only
    io.write_mask(voc / "SegmentationClassAug" / f"{bad}.png", _mask_with(33))
    d = ds.VOCSegmentation(tmp_path, "train_aug")
    with pytest.raises(DataFileError, match=rf"SegmentationClassAug/{bad}\.png holds class ids 33"):
        d[d.names.index(bad)]


def test_sbd_class_map_with_an_impossible_id_is_refused_before_it_is_converted(tmp_path):
    voc, ids, _ = fx.make_voc_with_sbd(tmp_path)
    sbd_cls = tmp_path / "SBD" / "benchmark_RELEASE" / "dataset" / "cls"
    fx.write_sbd_mat(sbd_cls / f"{ids['e']}.mat", _mask_with(40))
    with pytest.raises(
        DataFileError, match=rf"{ids['e']}\.mat holds class ids 40.*wsss_edu\.download sbd"
    ):
        ds.prepare_voc_trainaug(tmp_path)
    assert not (voc / "ImageSets" / "Segmentation" / "train_aug.txt").exists()


def test_cityscapes_label_id_beyond_the_table_is_refused_and_255_is_void(tmp_path):
    base = fx.make_cityscapes(tmp_path, cities={"train": {"aachen": 2}})
    lab, _ = fx.cityscapes_hand_ids()
    gt = base / "gtFine" / "train" / "aachen"
    bad, void = lab.copy(), lab.copy()
    bad[1, 1] = 40
    void[1, 1] = 255
    fx.write_grey(gt / "aachen_000000_000019_gtFine_labelIds.png", bad)
    fx.write_grey(gt / "aachen_000001_000019_gtFine_labelIds.png", void)
    d = ds.Cityscapes(tmp_path, "train")
    with pytest.raises(
        DataFileError,
        match=r"aachen_000000_000019_gtFine_labelIds\.png holds class "
        r"ids 40 \(1 px\).*0\.\.33.*labelIds",
    ):
        d[0]
    assert d[1]["mask"][1, 1] == 255  # was background 0 before


def test_camvid_id_beyond_void_is_refused(tmp_path):
    base = fx.make_camvid(tmp_path)
    m = fx.camvid_hand_mask()
    m[30, 40] = 31  # a 32-class CamVid id
    fx.write_grey(base / "trainannot" / "0001TP_006690.png", m)
    d = ds.CamVid(tmp_path, "train")
    with pytest.raises(
        DataFileError,
        match=r"0001TP_006690\.png holds class ids 31 \(1 px\).*"
        r"0\.\.10, 11, 255",
    ):
        d[0]
    assert (d[1]["mask"][fx.camvid_hand_mask() == 11] == 255).all()


def test_msrc_annotation_with_negative_segment_ids_is_refused(tmp_path):
    from scipy.io import savemat

    path = tmp_path / "1_1_s_GT.mat"
    seg = np.ones((6, 8), np.int16)
    seg[0, 0] = -3
    savemat(path, {"newseg": seg, "newlabels": np.array([[2]], np.uint8)})
    with pytest.raises(DataFileError, match=r"1_1_s_GT\.mat has negative segment ids \(min -3\)"):
        ds.read_msrc_mat(path)


def test_coco_annotation_of_an_undefined_category_is_refused(tmp_path, monkeypatch):
    import json

    base = fx.make_coco(tmp_path)
    ann_file = base / "annotations" / "instances_val2014.json"
    ann = json.loads(ann_file.read_text())
    ann["annotations"][1]["category_id"] = 99
    ann_file.write_text(json.dumps(ann))
    fake = types.ModuleType("pycocotools.coco")
    fake.COCO = fx.FakeCOCO
    monkeypatch.setitem(sys.modules, "pycocotools", types.ModuleType("pycocotools"))
    monkeypatch.setitem(sys.modules, "pycocotools.coco", fake)
    d = ds.COCOSegmentation(tmp_path, "val2014")
    with pytest.raises(
        DataFileError,
        match=r"annotation 2 of .*COCO_val2014_000000000001\.jpg has "
        r"category_id 99",
    ):
        d[0]


def test_pseudo_label_of_another_class_list_is_refused(tmp_path):
    fx.make_voc(tmp_path)
    d = ds.VOCSegmentation(tmp_path, "train")
    for n in d.names:
        io.write_mask(tmp_path / "pl" / f"{n}.png", _mask_with(3))
    io.write_mask(tmp_path / "pl" / f"{NAME}.png", _mask_with(21))
    pl = ds.PseudoLabeled(d, tmp_path / "pl")
    assert pl[0]["mask"][20, 2] == 3
    with pytest.raises(DataFileError, match=rf"pl/{NAME}\.png holds class ids 21"):
        pl[1]


def test_urn_label_of_another_class_list_is_refused(tmp_path):
    """URN's label + weight PNGs (notebook 06's retraining) are checked as the pseudo-labels are."""
    from wsss_edu.steps.urn_step import URNLabeled
    from wsss_edu.urn import write_label_and_weight

    fx.make_voc(tmp_path)
    d = ds.VOCSegmentation(tmp_path, "train")
    for n in d.names:
        m = _mask_with(21 if n == NAME else 3)
        write_label_and_weight(tmp_path / "u" / f"{n}.png", m, np.ones(m.shape, np.float32))
    u = URNLabeled(d, tmp_path / "u")
    assert u[0]["mask"][20, 2] == 3
    with pytest.raises(DataFileError, match=rf"u/{NAME}\.png holds class ids 21"):
        u[1]


# ------------------------------------------------------------------------------------------------
# VOC XML boxes: clipped to the image by rule, empty ones refused
# ------------------------------------------------------------------------------------------------


def _xml(path, *boxes, size=None):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    sz = f"<size><width>{size[1]}</width><height>{size[0]}</height></size>" if size else ""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"<annotation>{sz}{objs}</annotation>")


def test_voc_box_at_zero_and_past_the_border_is_clipped_to_the_image(tmp_path):
    voc = fx.make_voc(tmp_path)
    _xml(voc / "Annotations" / f"{NAME}.xml", ("car", 0, 0, 5, 6), ("person", 30, 20, 60, 99))
    s = ds.VOCSegmentation(tmp_path, "train")[1]
    assert s["boxes"].tolist() == [[0, 0, 5, 6], [29, 19, 40, 30]]  # image is 40x30
    assert s["box_labels"].tolist() == [7, 15]
    # without a size from the loader, the file's own <size> clips
    _xml(tmp_path / "a.xml", ("car", 0, 3, 50, 4), size=(30, 40))
    assert ds.read_voc_boxes(tmp_path / "a.xml", list(ds.VOC_CLASSES))[0].tolist() == [
        [0, 2, 40, 4]
    ]


@pytest.mark.parametrize(
    "box, why",
    [((10, 5, 4, 8), "xmax < xmin"), ((45, 5, 50, 8), "outside"), ((3, 40, 6, 50), "below")],
)
def test_voc_box_empty_inside_the_image_is_refused_naming_file_object_and_values(
    tmp_path, box, why
):
    voc = fx.make_voc(tmp_path)
    _xml(voc / "Annotations" / f"{NAME}.xml", ("car", 1, 1, 5, 5), ("dog", *box))
    a, b, c, d = box
    with pytest.raises(
        DataFileError,
        match=rf"{NAME}\.xml: object 2 \('dog'\) has the box xmin={a} "
        rf"ymin={b} xmax={c} ymax={d}, empty inside the 40x30 image",
    ):
        ds.VOCSegmentation(tmp_path, "train")[1]


# ------------------------------------------------------------------------------------------------
# Pixel formats: 16-bit images converted by rule, wide masks with impossible values refused
# ------------------------------------------------------------------------------------------------


def test_16_bit_image_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    grey = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    img = io.read_image(path)
    assert img.dtype == np.uint8 and img.shape == (30, 40, 3)
    np.testing.assert_array_equal(img[..., 0], grey >> 8)
    assert (img == 255).mean() < 0.01  # PIL's own convert("RGB"): 99.5 % white
    # through the VOC loader (PIL reads by content, whatever the suffix)
    voc = fx.make_voc(tmp_path / "voc")
    Image.fromarray(grey).save(voc / "JPEGImages" / f"{NAME}.jpg", format="PNG")
    np.testing.assert_array_equal(
        ds.VOCSegmentation(tmp_path / "voc")[1]["image"][..., 2], grey >> 8
    )


def test_32_bit_image_beyond_16_bits_is_refused_naming_the_values(tmp_path):
    path = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 5), -7, np.int32)).save(path)
    with pytest.raises(DataFileError, match=r"i32\.tif is a int32 grey image with values -7\.\.-7"):
        io.read_image(path)
    ok = tmp_path / "ok.tif"
    Image.fromarray(np.full((4, 5), 512, np.int32)).save(ok)
    assert (io.read_image(ok) == 2).all()  # 512 >> 8


def test_int32_mask_holding_minus_one_is_refused_not_made_ignore(tmp_path):
    voc = fx.make_voc(tmp_path)
    m = fx.simple_mask(15).astype(np.int32)
    m[0, :3] = -1
    path = voc / "SegmentationClass" / f"{NAME}.png"
    Image.fromarray(m).save(path, format="TIFF")  # what a numpy-to-image script can leave
    assert Image.open(path).mode == "I"
    with pytest.raises(
        DataFileError,
        match=rf"{NAME}\.png is a int32 image \(PIL mode I\) holding "
        r"values -1 \(3 pixels\) outside 0\.\.255",
    ):
        ds.VOCSegmentation(tmp_path, "train")[1]


def test_16_bit_mask_of_valid_indices_still_loads(tmp_path):
    m = fx.simple_mask(15)
    path = tmp_path / "m16.png"
    Image.fromarray(m.astype(np.uint16)).save(path)
    np.testing.assert_array_equal(io.read_mask(path), m)
    big = m.astype(np.uint16)
    big[0, 0] = 300
    Image.fromarray(big).save(path)
    with pytest.raises(DataFileError, match=r"m16\.png .* holding values 300 \(1 pixels\)"):
        io.read_mask(path)


# ------------------------------------------------------------------------------------------------
# Clear errors: decompression bombs, split files with a BOM / CRLF / invisible characters
# ------------------------------------------------------------------------------------------------


def test_decompression_bomb_names_the_file_and_the_limit_to_raise(tmp_path, monkeypatch):
    voc = fx.make_voc(tmp_path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # 40x30 = 1200 > 2 x 100: PIL's error
    d = ds.VOCSegmentation(tmp_path, "train")
    with pytest.raises(
        DataFileError,
        match=r"image .*JPEGImages/2007_000001\.jpg is larger than "
        r"PIL's decompression-bomb limit.*MAX_IMAGE_PIXELS",
    ):
        d[0]
    with pytest.raises(DataFileError, match=rf"mask .*{NAME}\.png is larger.*MAX_IMAGE_PIXELS"):
        io.read_mask(voc / "SegmentationClass" / f"{NAME}.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", None)  # the fix the message names
    assert d[0]["image"].shape == (30, 40, 3)


def test_split_file_with_bom_and_crlf_gives_clean_ids(tmp_path):
    voc = fx.make_voc(tmp_path, classes=list(ds.VOC_CLASSES))
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_bytes("\ufeff2007_000001\r\n  2007_000002 \r\n\r\n".encode("utf-8"))
    (voc / "classes.txt").write_bytes(("\ufeff" + "\r\n".join(ds.VOC_CLASSES) + "\r\n").encode())
    d = ds.VOCSegmentation(tmp_path, "train")
    assert d.names == ["2007_000001", "2007_000002"] and d.classes == list(ds.VOC_CLASSES)
    assert d[0]["name"] == "2007_000001"


def test_split_file_with_an_invisible_character_is_refused_naming_line_and_character(tmp_path):
    voc = fx.make_voc(tmp_path)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\u200b\n")
    with pytest.raises(
        DataFileError,
        match=r"val\.txt line 1 holds the invisible character\(s\) "
        r"U\+200B",
    ):
        ds.VOCSegmentation(tmp_path, "val")


def test_sbd_and_camvid_lists_with_bom_and_crlf(tmp_path):
    voc, ids, _ = fx.make_voc_with_sbd(tmp_path)
    sbd = tmp_path / "SBD" / "benchmark_RELEASE" / "dataset"
    (sbd / "train.txt").write_bytes(f"\ufeff{ids['b']}\r\n{ids['e']}\r\n{ids['c']}\r\n".encode())
    assert ds.train_aug_ids(tmp_path) == sorted(ids[k] for k in "abef")
    base = fx.make_camvid(tmp_path / "cv")
    text = (base / "train.txt").read_text().replace("\n", "\r\n")
    (base / "train.txt").write_bytes(("\ufeff" + text).encode())
    d = ds.CamVid(tmp_path / "cv", "train")
    assert d.names == ["0001TP_006690", "0001TP_006720"] and d[0]["mask"].shape == (
        fx.CV_H,
        fx.CV_W,
    )


# ------------------------------------------------------------------------------------------------
# write_toy_voc.py: a rerun leaves exactly the new world, keeps foreign files, refuses a real VOC
# ------------------------------------------------------------------------------------------------


def _script():
    """The command's module (data_scripts/write_toy_voc.py only runs its main:
    tests/test_install_usable.py)."""
    return importlib.import_module("wsss_edu.write_toy_voc")


def _tree(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_write_toy_voc_rerun_leaves_exactly_the_new_world_and_keeps_foreign_files(tmp_path, capsys):
    script = _script()
    args = ["--root", str(tmp_path / "w"), "--size", "24"]
    assert script.main(args + ["--train", "3", "--val", "2", "--test", "2"]) == 0
    voc = tmp_path / "w" / "VOCdevkit" / "VOC2012"
    assert (voc / "ImageSets" / "Segmentation" / "test.txt").is_file()
    (voc / "SegmentationClassAug").mkdir()
    (voc / "SegmentationClassAug" / "mine.png").write_bytes(b"user's")
    (voc / "notes.txt").write_text("user's")
    assert script.main(args + ["--train", "2", "--val", "1", "--seed", "1"]) == 0
    fresh = tmp_path / "fresh"
    assert (
        script.main(
            ["--root", str(fresh), "--size", "24", "--train", "2", "--val", "1", "--seed", "1"]
        )
        == 0
    )
    fresh_voc = fresh / "VOCdevkit" / "VOC2012"
    assert _tree(voc) == _tree(fresh_voc) | {"SegmentationClassAug/mine.png", "notes.txt"}
    assert not (voc / "ImageSets" / "Segmentation" / "test.txt").exists()
    for rel in _tree(fresh_voc):
        assert (voc / rel).read_bytes() == (fresh_voc / rel).read_bytes(), rel
    assert ds.VOCSegmentation(tmp_path / "w", "val").names == ["val_000000"]
    assert list((tmp_path / "w").iterdir()) == [tmp_path / "w" / "VOCdevkit"]  # no temp folder left
    assert (voc / "notes.txt").read_text() == "user's"


def test_write_toy_voc_interrupted_rerun_leaves_the_previous_world(tmp_path, monkeypatch):
    script = _script()
    root = tmp_path / "w"
    script.write_world(root, 2, 1, 2, seed=0, size=24)
    voc = root / "VOCdevkit" / "VOC2012"
    before = {rel: (voc / rel).read_bytes() for rel in _tree(voc)}

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "write_voc_layout", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script.write_world(root, 3, 1, 0, seed=1, size=24)
    assert {rel: (voc / rel).read_bytes() for rel in _tree(voc)} == before
    assert [p.name for p in root.iterdir()] == ["VOCdevkit"]


def test_write_toy_voc_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    voc = fx.make_voc(tmp_path)  # a real-VOC-like folder
    before = _tree(voc)
    assert (
        _script().main(["--root", str(tmp_path), "--size", "24", "--train", "1", "--val", "1"]) == 2
    )
    err = capsys.readouterr().err
    assert f"{voc} holds files this script did not write" in err and "another --root" in err
    assert _tree(voc) == before


def test_write_toy_voc_cleans_a_toy_world_written_before_the_manifest(tmp_path):
    from wsss_edu.toy import write_voc_layout

    voc = write_voc_layout(tmp_path, 2, 1, 2, seed=0, size=24)  # the old script's output
    (voc / "JPEGImages" / "mine.jpg").write_bytes(b"user's")
    _script().write_world(tmp_path, 2, 1, 0, seed=0, size=24)
    assert not (voc / "ImageSets" / "Segmentation" / "test.txt").exists()
    assert not list((voc / "JPEGImages").glob("test_*"))
    assert (voc / "JPEGImages" / "mine.jpg").read_bytes() == b"user's"
    with pytest.raises(ParameterError, match="did not write"):
        _script().check_ours(fx.make_voc(tmp_path / "real"))


def test_mask_value_check_is_cheap():
    """The check runs on every load: a 500x375 VOC mask with ignore border costs well under 1 ms
    (measured 0.01-0.02 ms); the budget here is loose so a busy machine does not fail it."""
    import time

    m = np.zeros((375, 500), np.uint8)
    m[50:300, 100:400] = 15
    m[49, 99:401] = 255
    t = time.perf_counter()
    for _ in range(50):
        io.check_label_values(m, "x.png", 21)
    assert (time.perf_counter() - t) / 50 < 0.005
