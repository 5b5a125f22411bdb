"""The MSRC v2 loader: both layouts a user can have (the cleaned-up .mat annotations, the original
colour-coded BMPs), fabricated here; the split; bad files named; and, when the real data is there
(``../shared/realdata`` or ``WSSS_MSRC_ROOT``), its tags against the dataset's own tag file."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_edu import datasets as D
from wsss_edu.errors import DataFileError, DatasetNotFoundError, ParameterError

try:
    from .fixtures_datasets import shared_msrc_root
except ImportError:
    from fixtures_datasets import shared_msrc_root

# The documented colours of the original ground truth (MSRC v2's colour table), written out here
# independently of the package's palette arithmetic.
DOCUMENTED_COLOURS = {
    "building": (128, 0, 0),
    "grass": (0, 128, 0),
    "tree": (128, 128, 0),
    "cow": (0, 0, 128),
    "horse": (128, 0, 128),
    "sheep": (0, 128, 128),
    "sky": (128, 128, 128),
    "mountain": (64, 0, 0),
    "aeroplane": (192, 0, 0),
    "water": (64, 128, 0),
    "face": (192, 128, 0),
    "car": (64, 0, 128),
    "bicycle": (192, 0, 128),
    "flower": (64, 128, 128),
    "sign": (192, 128, 128),
    "bird": (0, 64, 0),
    "book": (128, 64, 0),
    "chair": (0, 192, 0),
    "road": (128, 64, 128),
    "cat": (0, 192, 128),
    "dog": (128, 192, 128),
    "body": (64, 64, 0),
    "boat": (192, 64, 0),
}


def _class_maps(n=20, h=12, w=16, seed=0):
    """``n`` fabricated class maps (MSRC ids 0..22, 255 = unlabelled): stripes of random classes,
    a car blob, an unlabelled corner; horse (4) and mountain (7) appear too."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        for r in range(0, h, 4):
            m[r : r + 4] = rng.integers(0, 23)
        if i % 3 == 0:
            m[2:6, 3:8] = D.MSRC_CLASSES.index("car")
        if i % 5 == 0:
            m[-3:, -3:] = 255
        if i == 1:
            m[:4] = D.MSRC_CLASSES.index("horse")
        maps.append(m)
    return maps


def _write_mat_layout(root: Path, maps, image_ext=".bmp", folder="msrc_v2"):
    from scipy.io import savemat

    base = root / folder
    (base / "Images").mkdir(parents=True)
    (base / "newsegmentations_mats").mkdir()
    for i, m in enumerate(maps):
        name = f"{i // 5 + 1}_{i % 5 + 1}_s"
        # segments: one per (class, row band); the unlabelled pixels form the last segment, unlabelled
        seg = np.zeros(m.shape, np.uint8)
        labels = []
        for c in [v for v in np.unique(m) if v != 255]:
            labels.append(int(c) + 1)  # the .mat files count classes from 1
            seg[m == c] = len(labels)
        if (m == 255).any():
            seg[m == 255] = len(labels) + 1  # a segment id without a label
        savemat(
            base / "newsegmentations_mats" / f"{name}_GT.mat",
            {"newseg": seg, "newlabels": np.array(labels, np.uint8).reshape(1, -1)},
        )
        image = np.full(m.shape + (3,), 40 + i, np.uint8)
        Image.fromarray(image).save(base / "Images" / f"{name}{image_ext}")
    return base


def _write_bmp_layout(root: Path, maps):
    base = root / "MSRC_ObjCategImageDatabase_v2"
    (base / "Images").mkdir(parents=True)
    (base / "GroundTruth").mkdir()
    colours = np.zeros((256, 3), np.uint8)
    for c, name in enumerate(D.MSRC_CLASSES):
        colours[c] = DOCUMENTED_COLOURS[name]
    colours[255] = (0, 0, 0)  # void is black
    for i, m in enumerate(maps):
        name = f"{i // 5 + 1}_{i % 5 + 1}_s"
        Image.fromarray(colours[m]).save(base / "GroundTruth" / f"{name}_GT.bmp")
        Image.fromarray(np.full(m.shape + (3,), 40 + i, np.uint8)).save(
            base / "Images" / f"{name}.bmp"
        )
    return base


def _expected(m, kept, background):
    """The package's mask for MSRC class map ``m``, computed independently: the k-th kept class ->
    k; others -> 0 with a background, 255 without; 255 stays."""
    out = np.full(m.shape, 0 if background else 255, np.uint8)
    for k, name in enumerate(kept, start=1):
        out[m == D.MSRC_CLASSES.index(name)] = k
    out[m == 255] = 255
    return out


def test_the_package_colours_are_the_documented_ones():
    from wsss_edu.labels import voc_palette

    pal = voc_palette(256)
    for c, name in enumerate(D.MSRC_CLASSES):
        assert tuple(int(v) for v in pal[D.MSRC_COLOUR_INDEX[c]]) == DOCUMENTED_COLOURS[name], name
    assert len(D.MSRC21_CLASSES) == 21 and "horse" not in D.MSRC21_CLASSES


def test_split_is_seeded_disjoint_complete_and_in_shottons_proportions():
    names = [f"{i}_{j}_s" for i in range(1, 21) for j in range(1, 31)]  # 600
    parts = {s: D.msrc_split_names(names, s) for s in D.MSRC_SPLITS}
    assert sorted(sum(parts.values(), [])) == sorted(names)
    assert [len(parts[s]) for s in D.MSRC_SPLITS] == [270, 60, 270]
    assert D.msrc_split_names(list(reversed(names)), "val") == parts["val"]  # order of discovery
    assert D.msrc_split_names(names, "val", seed=1) != parts["val"]
    with pytest.raises(ParameterError, match="train"):
        D.msrc_split_names(names, "trainval")


@pytest.mark.parametrize("layout", ["mat", "bmp"])
def test_both_layouts_give_the_same_samples(tmp_path, layout):
    maps = _class_maps()
    (_write_mat_layout if layout == "mat" else _write_bmp_layout)(tmp_path, maps)
    by_name = {f"{i // 5 + 1}_{i % 5 + 1}_s": m for i, m in enumerate(maps)}
    seen = []
    for split in D.MSRC_SPLITS:
        ds = D.get_dataset("msrc", tmp_path, split)
        assert ds.annotation == layout and not ds.has_background
        assert ds.classes == ["background"] + list(D.MSRC21_CLASSES)
        for s in ds:
            m = by_name[s["name"]]
            assert np.array_equal(s["mask"], _expected(m, D.MSRC21_CLASSES, False)), s["name"]
            present = {D.MSRC_CLASSES[c] for c in np.unique(m) if c != 255} - set(D.MSRC21_DROPPED)
            assert {ds.classes[k + 1] for k in np.flatnonzero(s["labels"])} == present
            assert s["image"].shape == m.shape + (3,) and s["image"].dtype == np.uint8
            assert len(s["boxes"]) == len(s["box_labels"]) >= 1
            seen.append(s["name"])
    assert sorted(seen) == sorted(by_name)


def test_chosen_classes_make_a_background_and_all_keeps_23(tmp_path):
    maps = _class_maps()
    _write_mat_layout(tmp_path, maps)
    by_name = {f"{i // 5 + 1}_{i % 5 + 1}_s": m for i, m in enumerate(maps)}
    car = D.get_dataset("msrc", tmp_path, "train", classes=["car"])
    assert car.has_background and car.classes == ["background", "car"]
    for s in car:
        assert np.array_equal(s["mask"], _expected(by_name[s["name"]], ["car"], True))
        assert all(b == 1 for b in s["box_labels"])  # boxes only around cars
    everything = D.get_dataset("msrc", tmp_path, "train", classes="all")
    assert everything.num_classes == 24 and not everything.has_background
    s = everything[0]
    assert np.array_equal(s["mask"], _expected(by_name[s["name"]], D.MSRC_CLASSES, False))
    with pytest.raises(ParameterError, match="msrc21"):
        D.get_dataset("msrc", tmp_path, "train", classes="msrc-21")
    with pytest.raises(ParameterError, match="car"):
        D.get_dataset("msrc", tmp_path, "train", classes=["cars"])


def test_jpeg_images_are_read_too(tmp_path):
    _write_mat_layout(tmp_path, _class_maps(n=6), image_ext=".jpg", folder="MSRC_v2")
    ds = D.get_dataset("msrc", tmp_path, "test")
    assert len(ds) > 0 and ds[0]["image"].shape == (12, 16, 3)


def test_missing_and_bad_files_are_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="wsss_edu.download msrc"):
        D.get_dataset("msrc", tmp_path / "nothing", "train")
    maps = _class_maps(n=10)
    base = _write_mat_layout(tmp_path / "a", maps)
    ds = D.get_dataset("msrc", tmp_path / "a", "train")
    name = ds.names[0]
    (base / "newsegmentations_mats" / f"{name}_GT.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataFileError, match=f"{name}_GT.mat"):
        ds[0]
    (base / "Images" / f"{ds.names[1]}.bmp").unlink()
    with pytest.raises(DataFileError, match=f"{ds.names[1]}"):
        ds[1]
    # an original mask resized with interpolation holds colours of no class
    base = _write_bmp_layout(tmp_path / "b", maps)
    ds = D.get_dataset("msrc", tmp_path / "b", "train")
    gt = base / "GroundTruth" / f"{ds.names[0]}_GT.bmp"
    rgb = np.asarray(Image.open(gt)).copy()
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(gt)
    with pytest.raises(DataFileError, match=r"_GT\.bmp.*\(10, 20, 30\)"):
        ds[0]
    # an image whose size differs from its mask
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(base / "Images" / f"{ds.names[1]}.bmp")
    with pytest.raises(DataFileError, match="does not belong"):
        ds[1]
    (tmp_path / "c" / "msrc_v2" / "Images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="GroundTruth"):
        D.get_dataset("msrc", tmp_path / "c", "train")


@pytest.mark.skipif(
    shared_msrc_root() is None,
    reason="MSRC v2 not found (../shared/realdata/msrc_v2 or "
    "WSSS_MSRC_ROOT; `python -m wsss_edu.download msrc --root DIR` fetches it)",
)
def test_real_msrc_tags_match_the_datasets_own_tag_file():
    root = shared_msrc_root() / "msrc_v2"
    order = [
        line.strip()[: -len("_GT.mat")]
        for line in (root / "list_newsegmentations_mats.txt").read_text().splitlines()
        if line.strip()
    ]
    tags, current = {}, None
    for line in (root / "MSRC_v2_label").read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["t", "#"]:
            current = order[int(parts[2])]
            tags[current] = set()
        elif parts and parts[0] == "l" and parts[2] == "1":
            tags[current].add(D.MSRC_CLASSES[int(parts[1])])
    total = 0
    for split in D.MSRC_SPLITS:
        ds = D.get_dataset("msrc", root.parent, split, classes="all")
        for i in range(len(ds)):
            s = ds[i]
            assert {ds.classes[k + 1] for k in np.flatnonzero(s["labels"])} == tags[s["name"]], s[
                "name"
            ]
        total += len(ds)
    assert total == len(order) == 591


def test_the_notebooks_load_a_dataset_without_background_and_02_takes_it(tmp_path):
    from wsss_edu import label_uncertainty as lu
    from wsss_edu import params

    _write_mat_layout(tmp_path / "data", _class_maps())
    s = params.setup(
        "06_test", "msrc", str(tmp_path / "data"), str(tmp_path / "out"), verbose=False
    )
    train, val = params.load_splits(s)  # notebooks 03-08 take it
    assert not train.has_background and len(val)
    # paper 000's binary task picks the car: a background exists then
    a = lu.load_mixed_set(
        "msrc", ["car"], 2, "train", n=50, size=16, data_root=str(tmp_path / "data")
    )
    assert a["image"].shape[1:3] == (16, 32) and set(np.unique(a["mask"])) <= {0, 1, 255}
    assert (a["target"][~a["pixel_perfect"]] <= 1).all()  # box targets: 0 or car


def test_kept_samples_are_copies_and_do_not_travel_to_workers(tmp_path):
    import pickle

    _write_mat_layout(tmp_path / "data", _class_maps())
    kept = D.get_dataset("msrc", tmp_path / "data", "train")
    fresh = D.get_dataset("msrc", tmp_path / "data", "train", keep_in_memory=False)
    a = kept[0]
    a["image"][:] = 0  # a caller's in-place change...
    a["mask"][:] = 7
    for s, t in ((kept[0], fresh[0]), (kept[1], fresh[1])):  # ...does not reach the kept sample
        assert s.keys() == t.keys()
        assert all(
            np.array_equal(s[k], t[k]) if isinstance(s[k], np.ndarray) else s[k] == t[k] for k in s
        )
    assert len(kept._kept) == 2 and fresh._kept is None
    clone = pickle.loads(pickle.dumps(kept))
    assert clone._kept == {} and np.array_equal(clone[0]["mask"], fresh[0]["mask"])
