"""The toy world: sample format, determinism, disjoint splits, and each phenomenon and knob."""

import numpy as np
import pytest

from wsss_edu import stats
from wsss_edu.errors import ParameterError
from wsss_edu.labels import IGNORE, box_of
from wsss_edu.toy import CLASSES, ToyDataset, ignore_band, make_config, write_voc_layout

K = len(CLASSES) - 1


@pytest.fixture(scope="module")
def world():
    return ToyDataset("train", n=300, seed=0, size=64)


def test_sample_format(world):
    s = world[0]
    assert s["image"].shape == (64, 64, 3) and s["image"].dtype == np.uint8
    assert s["mask"].shape == (64, 64) and s["mask"].dtype == np.uint8
    assert set(np.unique(s["mask"])) <= set(range(len(CLASSES))) | {IGNORE}
    assert s["instances"].dtype == np.int32
    assert s["boxes"].dtype == np.int64 and s["boxes"].shape[1] == 4
    assert len(s["boxes"]) == len(s["box_labels"]) >= 1
    assert s["labels"].shape == (K,) and s["labels"].dtype == np.float32
    assert s["pixel_label"] is True


def test_boxes_cover_their_objects_and_match_the_tags(world):
    for i in range(len(world)):
        s = world[i]
        tags = {k + 1 for k in np.flatnonzero(s["labels"])}
        assert set(s["box_labels"].tolist()) == tags  # a box for every tagged class, none else
        for b, c in zip(s["boxes"], s["box_labels"]):
            assert 0 <= b[0] < b[2] <= 64 and 0 <= b[1] < b[3] <= 64  # non-empty, inside
            inside = s["mask"][b[1] : b[3], b[0] : b[2]]
            assert (inside == c).any()  # the box holds its object
            # the object's pixels of this instance lie inside its box
            ids = np.unique(s["instances"][b[1] : b[3], b[0] : b[2]])
            assert any(np.array_equal(box_of(s["instances"] == k), b) for k in ids if k)


def test_same_seed_same_arrays_and_index_independent_of_n():
    a = ToyDataset("train", n=5, seed=3, size=64)
    b = ToyDataset("train", n=50, seed=3, size=64, cache=False)
    for i in range(5):
        for k in ("image", "mask", "instances", "boxes", "labels"):
            assert np.array_equal(a[i][k], b[i][k])
    c = ToyDataset("train", n=5, seed=4, size=64)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_splits_are_disjoint_streams():
    tr = ToyDataset("train", n=30, seed=0, size=64).arrays(("image",))["image"]
    va = ToyDataset("val", n=30, seed=0, size=64).arrays(("image",))["image"]
    te = ToyDataset("test", n=30, seed=0, size=64).arrays(("image",))["image"]
    hashes = [{x.tobytes() for x in arr} for arr in (tr, va, te)]
    assert (
        not (hashes[0] & hashes[1]) and not (hashes[0] & hashes[2]) and not (hashes[1] & hashes[2])
    )


def test_ignore_band_only_at_foreground_edges():
    sem = np.zeros((10, 10), np.uint8)
    sem[3:7, 3:7] = 2
    band = ignore_band(sem, 1)
    # both sides of each edge, nothing else
    expected = np.zeros((10, 10), bool)
    expected[2:8, 3:7] = True
    expected[3:7, 2:8] = True
    expected[4:6, 4:6] = False
    assert np.array_equal(band, expected)
    assert not ignore_band(np.zeros((5, 5), np.uint8), 1).any()
    assert ignore_band(sem, 2).sum() > band.sum()


def test_car_fills_only_part_of_its_box(world):
    fill = stats.box_fill_fraction(world, len(CLASSES))
    car = fill[CLASSES.index("car")]
    assert 0.45 < car < 0.8, car  # a box is wrong on a third of its pixels or so


def test_boats_always_on_water_and_water_rare_without(world):
    water = np.array([world[i]["has_water"] for i in range(len(world))])
    boat = np.array([world[i]["labels"][CLASSES.index("boat") - 1] for i in range(len(world))]) > 0
    assert boat.sum() > 30
    assert water[boat].all()
    assert water[~boat].mean() < 0.25


def test_person_cooccurs_and_overlaps(world):
    co = stats.cooccurrence(world)
    p = CLASSES.index("person") - 1
    assert co[p].sum() - 1 > 0.5  # a person is usually with another class
    touching = 0
    for i in range(len(world)):
        s = world[i]
        pb = s["boxes"][s["box_labels"] == CLASSES.index("person")]
        ob = s["boxes"][s["box_labels"] != CLASSES.index("person")]
        touching += any(
            min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
            for a in pb
            for b in ob
        )
    assert touching > 40


def test_cat_and_dog_differ_only_in_small_head():
    from wsss_edu import toy

    s = 96
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    cat = toy._draw_cat(np.random.default_rng(1), yy, xx, s, 48, 48, 1.0)
    dog = toy._draw_dog(np.random.default_rng(1), yy, xx, s, 48, 48, 1.0)
    assert np.array_equal(cat[0][0], dog[0][0])  # same body part
    body = cat[0][0].sum()
    head = sum(m.sum() for m, _ in cat[1:])
    assert head < 0.35 * (body + head)


def test_missing_label_knob_drops_only_tags():
    base = ToyDataset("train", n=200, seed=0, size=64)
    miss = ToyDataset("train", n=200, seed=0, size=64, missing_label_rate=0.5)
    p = CLASSES.index("person") - 1
    t0 = np.stack([base[i]["labels"] for i in range(200)])
    t1 = np.stack([miss[i]["labels"] for i in range(200)])
    assert 0.3 < 1 - t1[:, p].sum() / t0[:, p].sum() < 0.7
    assert np.array_equal(np.delete(t0, p, 1), np.delete(t1, p, 1))
    assert all(np.array_equal(base[i]["mask"], miss[i]["mask"]) for i in range(20))
    assert np.array_equal(np.stack([miss[i]["labels_clean"] for i in range(200)]), t0)


def test_imbalance_makes_last_class_rarer():
    f1 = stats.tag_frequency(ToyDataset("train", n=400, seed=0, size=64))
    f8 = stats.tag_frequency(ToyDataset("train", n=400, seed=0, size=64, imbalance=8.0))
    assert f8[-1] < 0.5 * f1[-1]
    assert f8[-1] < f8[0] / 3


def test_pixel_perfect_split():
    d = ToyDataset("train", n=100, seed=0, size=64, pixel_perfect=0.2)
    flags = np.array([d[i]["pixel_label"] for i in range(100)])
    assert flags.sum() == 20 and np.array_equal(flags, d.pixel_perfect)


def test_box_noise_keeps_boxes_non_empty_and_knobs_use_their_own_streams():
    d = ToyDataset("train", n=100, seed=0, size=64, box_noise=1.0)
    for i in range(100):
        b = d[i]["boxes"]
        assert (
            ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and (b >= 0).all() and (b <= 64).all()
        )
    a = ToyDataset("train", n=30, seed=0, size=64, tag_noise=0.3)
    both = ToyDataset("train", n=30, seed=0, size=64, tag_noise=0.3, missing_label_rate=0.5)
    p = CLASSES.index("person") - 1
    for i in range(30):  # turning on missing labels changes no other tag's noise
        assert np.array_equal(np.delete(a[i]["labels"], p), np.delete(both[i]["labels"], p))


def test_label_noise_knobs():
    clean = ToyDataset("train", n=30, seed=0, size=64)
    noisy = ToyDataset("train", n=30, seed=0, size=64, mask_noise=0.8, tag_noise=0.2, box_noise=0.2)
    diff = np.mean([(noisy[i]["mask"] != noisy[i]["mask_clean"]).mean() for i in range(30)])
    assert diff > 0.01
    assert all(np.array_equal(noisy[i]["mask_clean"], clean[i]["mask"]) for i in range(30))
    flips = np.mean([(noisy[i]["labels"] != noisy[i]["labels_clean"]).mean() for i in range(30)])
    assert 0.05 < flips < 0.4
    assert any(not np.array_equal(noisy[i]["boxes"], clean[i]["boxes"]) for i in range(30))


def test_bad_knobs_name_the_valid_values():
    with pytest.raises(ParameterError, match="valid knobs"):
        make_config(sizee=64)
    with pytest.raises(ParameterError, match="choose one of"):
        ToyDataset("training")
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        ToyDataset("train", n=2, missing_label_rate=2.0)
    with pytest.raises(ParameterError, match="person"):
        ToyDataset("train", n=2, missing_label_class="human")


def test_voc_layout_refuses_knobs_it_cannot_store(tmp_path):
    with pytest.raises(ParameterError, match="missing_label_rate"):
        write_voc_layout(tmp_path, n_train=2, n_val=0, missing_label_rate=0.5)
    assert not (tmp_path / "VOCdevkit").exists()


def test_voc_layout_round_trip(tmp_path):
    from wsss_edu.datasets import get_dataset

    write_voc_layout(tmp_path, n_train=6, n_val=3, seed=0, size=64)
    voc = get_dataset("voc", tmp_path, split="train")
    toyd = ToyDataset("train", n=6, seed=0, size=64)
    assert voc.classes == list(CLASSES) and len(voc) == 6
    for i in range(6):
        a, b = voc[i], toyd[i]
        assert np.array_equal(a["mask"], b["mask"])  # masks are exact
        assert np.abs(a["image"].astype(int) - b["image"].astype(int)).mean() < 8  # JPEG
        assert sorted(map(tuple, a["boxes"])) == sorted(map(tuple, b["boxes"]))
        assert sorted(a["box_labels"].tolist()) == sorted(b["box_labels"].tolist())
    assert len(get_dataset("voc", tmp_path, split="val")) == 3
    assert len(get_dataset("voc", tmp_path, split="train_aug")) == 6


def test_mean_std_formats_a_row_of_seed_scores():
    from wsss_edu.stats import mean_std

    assert mean_std([0.5, 0.7]) == "0.600 ± 0.100"  # population std, as the tools' tables
    assert mean_std([]) == "–"
