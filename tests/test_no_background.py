"""Datasets without a background class (MSRC: every pixel is one of its classes) through the
three-step pipeline: no plane in the CAM labels, the CRF, IRNet's relation labels and walk; the
MobileNetV2 pieces a laptop runs on real photos (stages, DeepLabv3+ encoder, frozen blocks); and
the one-pass TTA evaluation."""

import numpy as np
import pytest
import torch

from wsss_edu import cam, irnet, params
from wsss_edu.labels import IGNORE
from wsss_edu.steps import cam_step, irnet_step, segmenter_step


def _two_class_cams(h=24, w=32):
    """Normalised CAMs (K=4, H, W): class 1 strong on the left half, class 3 on the right, 0 and 2
    absent (all zero); a weak band in the middle where neither reaches 0.3."""
    cams = torch.zeros(4, h, w)
    x = torch.linspace(0, 1, w)
    cams[1] = (1 - x).clamp(min=0)[None].expand(h, w)
    cams[3] = x[None].expand(h, w)
    return cams


def _image(h=24, w=32):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 40, 40)
    img[:, w // 2 :] = (40, 40, 200)
    return img


def test_crf_without_background_keeps_only_the_image_classes():
    cams = _two_class_cams()
    lab = cam.crf_cam_labels(_image(), cams, None)
    assert set(np.unique(lab)) == {2, 4}  # classes 1 and 3, never 0
    assert (lab[:, :10] == 2).all() and (lab[:, -10:] == 4).all()
    with_plane = cam.crf_cam_labels(_image(), cams, 0.9)
    assert 0 in np.unique(with_plane)  # the plane at 0.9 takes the weak pixels
    one = cam.crf_label_map(_image(), np.full((24, 32), 3), [2], background=False)
    assert (one == 3).all()  # a single class: nothing to compete


def test_cam_confusions_without_plane_score_the_argmax_over_the_tags(tmp_path):
    from wsss_edu.metrics import ConfusionMeter

    cams = _two_class_cams()
    cam_step.save_cams(tmp_path, "a", cams, torch.tensor([0, 1, 0, 1.0]))
    mask = np.where(np.arange(32)[None] < 16, 2, 4).repeat(24, 0).astype(np.uint8)

    class One:
        num_classes = 5

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"name": "a", "mask": mask}

    m = cam_step.cam_confusions(One(), tmp_path, [None, 0.6], progress=False)
    expect = ConfusionMeter(5).update(mask, cam.cams_to_labels(cams[None], None)[0])
    assert np.array_equal(m[0].cm, expect.cm) and m[0].cm[:, 0].sum() == 0  # nothing predicted 0
    assert m[1].cm[:, 0].sum() > 0  # the plane predicts 0


def test_relation_labels_without_background_are_confident_where_the_winner_is_strong():
    cams = _two_class_cams()
    rel = irnet.relation_labels(_image(), cams, fg_threshold=0.30, bg_threshold=None)
    assert set(np.unique(rel)) <= {2, 4, IGNORE} and 0 not in rel
    x = np.linspace(0, 1, 32)
    own = np.where(rel == 2, 1 - x[None], np.where(rel == 4, x[None], 1.0))
    assert (own[rel != IGNORE] >= 0.30).all()  # confident: the winner's own CAM >= 0.3
    assert (rel[:, :5] == 2).all() and (rel[:, -5:] == 4).all()
    offsets = irnet.pair_offsets(2)
    pos_bg, pos_fg, neg = irnet.pair_label_masks(torch.as_tensor(rel)[None], offsets)
    assert pos_bg.sum() == 0 and pos_fg.sum() > 0  # no background pairs exist
    # an all-weak map: everything unsure
    weak = irnet.relation_labels(_image(), cams * 0.2, bg_threshold=None)
    assert (weak == IGNORE).all()


def test_walk_labels_without_plane_take_the_argmax_of_the_image_classes():
    walked = torch.rand(3, 6, 8)
    lab = irnet.walk_to_labels(walked, [0, 2], None, size=(21, 30))
    v = irnet.walk_to_image(walked[[0, 2]], (21, 30))
    assert torch.equal(lab, torch.tensor([1, 3])[v.argmax(0)])
    out = irnet_step.walk_labels(walked[[0, 2]], np.array([4, 9]), (21, 30), None)
    assert set(np.unique(out)) <= {5, 10} and out.shape == (21, 30)
    with_plane = irnet_step.walk_labels(walked[[0, 2]], np.array([4, 9]), (21, 30), 2.0)
    assert (with_plane == 0).all()  # a plane above every walked value


def test_every_dataset_says_whether_it_has_a_background():
    from wsss_edu.data import Relabeled
    from wsss_edu.datasets import get_dataset

    toy = get_dataset("toy", split="val", n=2, seed=0, size=32)
    assert toy.has_background and Relabeled(toy).has_background


def test_step1_values_on_msrc_and_the_configs_they_make():
    v = cam_step.step1_values("quick", "msrc")
    assert v["BACKBONE"] == "mobilenet_v2" and v["DROP_CLASS"] == "" and v["BALANCE"] is False
    assert v["IMAGE_SIZE"] == cam_step.STEP1_PROFILE["IMAGE_SIZE"][0]  # the toy knobs stay
    toy = cam_step.step1_values("quick", "toy", EPOCHS=3)
    assert toy["DROP_CLASS"] == "person" and toy["EPOCHS"] == 3 and toy["BACKBONE"] == "small"
    pre = cam_step.classifier_config(v, 1, "imagenet")
    assert pre.freeze_bn and pre.frozen_blocks == 7 and pre.lr_pretrained == 1e-4
    scratch = cam_step.classifier_config(v | {"FROZEN_BLOCKS": 0}, 1, None)
    assert (
        not scratch.freeze_bn
        and scratch.lr_pretrained == scratch.lr_new
        and scratch.weights is None
    )
    small = cam_step.classifier_config(toy, 0)
    assert small.weights is None and small.lr_pretrained == cam_step.ClassifierConfig.lr_pretrained
    assert params.for_dataset({"A": (1, 2), "B": (3, 4)}, {"x": {"B": (5, 6)}}, "x") == {
        "A": (1, 2),
        "B": (5, 6),
    }
    g = irnet_step.step2_values("quick", "msrc")
    assert g["IR_CROP"] == 224 and g["WALK_RADII"] == [5] and g["IR_EPOCHS"] == 3


def test_frozen_blocks_do_not_move_and_mobilenet_stages_cut_at_the_strides():
    torch.manual_seed(0)
    cfg = cam_step.ClassifierConfig(
        backbone="mobilenet_v2", frozen_blocks=7, lr_pretrained=1e-2, lr_new=1e-2
    )
    model = cam_step.make_classifier(3, cfg)
    before = [p.clone() for p in model.backbone.body[:7].parameters()]
    later = model.backbone.body[10].conv[0][0].weight.clone()
    opt = torch.optim.Adam(model.param_groups(cfg.lr_pretrained, cfg.lr_new))
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(
        p.requires_grad for p in model.parameters()
    )
    loss = model(torch.rand(2, 3, 64, 64)).sum()
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.backbone.body[:7].parameters()))
    assert not torch.equal(later, model.backbone.body[10].conv[0][0].weight)
    with pytest.raises(Exception, match="mobilenet_v2 backbone only"):
        cam_step.make_classifier(3, cam_step.ClassifierConfig(frozen_blocks=2))
    stages = irnet.backbone_stages(model)
    x, sides = torch.rand(1, 3, 64, 96), []
    with torch.no_grad():
        for st in stages:
            x = st(x)
            sides.append((x.shape[1], 64 // x.shape[2]))
    assert sides == [(24, 4), (32, 8), (96, 16), (1280, 16)]
    net = irnet.IRNet(stages, width=8)
    b, d = net(torch.rand(1, 3, 64, 96))
    assert b.shape == (1, 16, 24) and d.shape == (1, 2, 16, 24)


def test_deeplab_on_mobilenet_v2_keeps_pretrained_batch_norms(monkeypatch):
    from wsss_edu import models

    net = models.make_segmenter("deeplabv3plus_mobilenet_v2", 5)
    assert not net.encoder.frozen_bn
    assert net(torch.rand(2, 3, 48, 64)).shape == (2, 5, 48, 64)
    # with ImageNet weights (any state dict of the right shapes here) its BN stays in eval mode
    from torchvision.models import mobilenet_v2

    from wsss_edu import pretrained

    monkeypatch.setattr(
        pretrained,
        "imagenet_state_dict",
        lambda arch, f=None: (mobilenet_v2().state_dict(), "test"),
    )
    net = models.make_segmenter("deeplabv3plus_mobilenet_v2", 5, weights="imagenet").train()
    bns = [m for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and net.decoder.training


def test_evaluate_views_equals_the_separate_evaluations():
    from wsss_edu.datasets import get_dataset
    from wsss_edu.models import make_segmenter

    torch.manual_seed(0)
    ds = get_dataset("toy", split="val", n=6, seed=0, size=32)
    net = make_segmenter("deeplabv3plus_small", ds.num_classes, width=4).eval()
    views = segmenter_step.evaluate_views(net, ds, (0.5, 1.0), progress=False)
    assert np.array_equal(views["plain"].cm, segmenter_step.evaluate(net, ds, progress=False).cm)
    assert np.array_equal(
        views["tta"].cm,
        segmenter_step.evaluate(net, ds, tta=True, scales=(0.5, 1.0), progress=False).cm,
    )
    for s in (0.5, 1.0):
        assert np.array_equal(
            views[s].cm, segmenter_step.evaluate(net, ds, tta=True, scales=(s,), progress=False).cm
        )
    both = segmenter_step.evaluate_views(
        net, ds, (1.0,), flip=False, within_tags=True, progress=False
    )
    assert np.array_equal(both["plain"].cm, views["plain"].cm) and np.array_equal(
        both["tta"].cm, both["plain"].cm
    )
    assert np.array_equal(
        both["plain_within_tags"].cm,
        segmenter_step.evaluate(net, ds, within_tags=True, progress=False).cm,
    )
    with pytest.raises(ValueError, match="lack 1.0"):
        segmenter_step.evaluate_views(net, ds, (0.5, 2.0), progress=False)


def test_evaluate_within_tags_predicts_only_the_image_classes():
    from wsss_edu.data import Relabeled
    from wsss_edu.datasets import get_dataset
    from wsss_edu.models import make_segmenter

    torch.manual_seed(0)
    ds = get_dataset("toy", split="val", n=8, seed=0, size=32)
    net = make_segmenter("deeplabv3plus_small", ds.num_classes, width=4).eval()
    for i in range(4):
        one = Relabeled(ds, indices=[i])
        allowed = {0} | set((np.flatnonzero(ds[i]["labels"]) + 1).tolist())
        for tta in (False, True):
            cm = segmenter_step.evaluate(
                net, one, tta=tta, scales=(1.0,), within_tags=True, progress=False
            ).cm
            assert set(np.flatnonzero(cm.sum(0))) <= allowed


def test_without_a_background_no_plane_is_left_in_step_2():
    cfg, grid = irnet_step.IRNetConfig(), {"WALK_RADII": [5], "WALK_BG": [0.25, 0.3]}
    assert irnet_step.without_plane_if_no_background(cfg, grid, True) == (cfg, grid)
    c, g = irnet_step.without_plane_if_no_background(cfg, grid, False)
    assert (
        c.bg_threshold is None
        and g == {"WALK_RADII": [5], "WALK_BG": [None]}
        and grid["WALK_BG"] == [0.25, 0.3]
    )
