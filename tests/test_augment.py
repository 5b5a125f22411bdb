"""Paper 001's strong augmentation (data.strong_augment) and IRNet's rescaled copies: the labels
follow every geometric change of the image, the photometric ones leave the labels alone, and the
full profile switches them on."""

import numpy as np
import pytest
import torch

from wsss_edu import data
from wsss_edu.steps import cam_step, irnet_step

PALETTE = np.array([[0, 0, 0], [250, 0, 0], [0, 250, 0], [0, 0, 250]], np.uint8)
NO_PHOTO = dict(noise_var=(0.0, 0.0), brightness=0.0, contrast=0.0, rgb_shift=0.0, median=(1,))


def _scene(h=48, w=64):
    mask = np.zeros((h, w), np.uint8)
    mask[5:30, 8:30], mask[20:44, 35:60], mask[2:12, 40:62] = 1, 2, 3
    return PALETTE[mask], mask


def test_probability_zero_is_the_identity():
    img, mask = _scene()
    out_img, out_mask = data.strong_augment(img, mask, np.random.default_rng(0), dict(p=0.0))
    assert np.array_equal(out_img, img) and np.array_equal(out_mask, mask)


@pytest.mark.parametrize("seed", range(6))
def test_labels_follow_the_geometric_transforms(seed):
    img, mask = _scene()
    out_img, out_mask = data.strong_augment(
        img, mask, np.random.default_rng(seed), dict(p=1.0, **NO_PHOTO)
    )
    assert out_img.shape == img.shape and out_mask.shape == mask.shape
    assert out_img.dtype == np.uint8 and out_mask.dtype == np.uint8
    assert not np.array_equal(out_mask, mask)  # p = 1: flipped and moved
    labelled = out_mask != 255
    assert labelled.mean() > 0.3
    # the image's colour at a labelled pixel is its label's colour, but at bilinear edges
    agree = (
        np.abs(out_img[labelled].astype(int) - PALETTE[out_mask[labelled]].astype(int)).max(1) < 30
    ).mean()
    assert agree > 0.93, agree


def test_photometric_transforms_change_the_image_only():
    img, mask = _scene()
    still = dict(p=1.0, rotate=0.0, scale=0.0, shift=0.0)  # flip (p = 1) is the only geometry
    out_img, out_mask = data.strong_augment(img, mask, np.random.default_rng(3), still)
    assert np.array_equal(out_mask, mask[:, ::-1])
    assert np.abs(out_img.astype(int) - img[:, ::-1].astype(int)).mean() > 2


def test_seg_dataset_strong_augment_and_bad_choice():
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=4, seed=0, size=32, cache=False)
    torch.manual_seed(0)
    s = data.SegTransformDataset(ds, flip=True, augment="strong")[0]
    assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (32, 32)
    with pytest.raises(Exception, match="flip"):
        data.SegTransformDataset(ds, augment="heavy")


def test_irnet_rescaled_copies_and_the_full_profile(tmp_path):
    from wsss_edu.io import write_mask
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=3, seed=0, size=32, cache=False)
    for i in range(3):
        write_mask(tmp_path / f"{ds[i]['name']}.png", ds[i]["mask"])
    cfg = irnet_step.IRNetConfig(copy_scales=(0.5, 1.0, 2.0))
    rel = irnet_step.relation_dataset(ds, tmp_path, [0, 2], cfg)
    assert len(rel) == 6
    sizes = [rel[j]["image"].shape[-1] for j in range(3)]
    assert sizes == [16, 32, 64] and rel[2]["relation"].shape == (16, 16)
    full, _, _ = irnet_step.step2_config("full", 0)
    quick, _, _ = irnet_step.step2_config("quick", 0)
    assert (
        full.augment == "strong"
        and full.copy_scales == (0.5, 1.0, 1.5, 2.0)
        and full.momentum == 1e-4
    )
    assert quick.augment == "flip" and quick.copy_scales is None and quick.momentum == 0.9


def test_step1_full_profile_takes_the_strong_augmentation():
    from wsss_edu import params

    assert params.profile_values("full", cam_step.STEP1_PROFILE)["AUGMENT"] == "strong"
    assert params.profile_values("quick", cam_step.STEP1_PROFILE)["AUGMENT"] == "flip"


@pytest.mark.parametrize("seed", range(4))
def test_a_per_pixel_weight_moves_with_the_labels(seed):
    img, mask = _scene()
    weight = np.array([0.25, 0.5, 0.75, 1.0], np.float32)[mask]  # a weight per label, known
    settings = dict(p=1.0, **NO_PHOTO)
    plain = data.strong_augment(img, mask, np.random.default_rng(seed), settings)
    out_img, out_mask, out_weight = data.strong_augment(
        img, mask, np.random.default_rng(seed), settings, weight=weight
    )
    # the same draws: the image and the labels are those without a weight
    assert np.array_equal(out_img, plain[0]) and np.array_equal(out_mask, plain[1])
    assert out_weight.dtype == np.float32 and out_weight.shape == mask.shape
    inside = out_mask != 255
    assert np.array_equal(
        out_weight[inside], np.array([0.25, 0.5, 0.75, 1.0], np.float32)[out_mask[inside]]
    )
    assert (out_weight[~inside] == 0).all()  # where the image has no pixel


def test_seg_dataset_strong_augment_carries_the_weight():
    from wsss_edu.toy import ToyDataset

    class Weighted(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            s = dict(self.ds[i])
            s["weight"] = (s["mask"] != 0).astype(np.float32) + 0.5  # 0.5 background, 1.5 objects
            return s

    ds = Weighted(ToyDataset("train", n=4, seed=0, size=32, cache=False))
    torch.manual_seed(0)
    for i in range(4):
        s = data.SegTransformDataset(ds, flip=True, augment="strong")[i]
        m, w = s["mask"], s["weight"]
        keep = m != 255
        assert torch.equal(w[keep], (m[keep] != 0).float() + 0.5)
