"""Class activation maps: the equations against independent computations, and their invariants."""

import pytest
import torch
import torch.nn.functional as F

from wsss_edu import cam as C
from wsss_edu.steps import cam_step


def small_model(k=4, seed=0):
    torch.manual_seed(seed)
    return C.CAMClassifier(k, "small", width=4, depth=2).eval()


def test_cam_is_the_per_pixel_classifier_and_averages_to_the_logits():
    g = torch.Generator().manual_seed(0)
    f, w = torch.randn(2, 5, 3, 4, generator=g), torch.randn(3, 5, generator=g)
    loop = torch.zeros(2, 3, 3, 4)
    for n in range(2):
        for c in range(3):
            for y in range(3):
                for x in range(4):
                    loop[n, c, y, x] = max(0.0, float((w[c] * f[n, :, y, x]).sum()))
    assert torch.allclose(C.class_activation_map(f, w), loop, atol=1e-5)
    assert torch.allclose(C.class_activation_map(f, w[:, :, None, None]), loop, atol=1e-5)
    # with a GAP + bias-free 1x1 head, the logits are the spatial mean of the CAM before its relu
    net = small_model()
    x = torch.randn(2, 3, 16, 20)
    feats = net.features(x)
    pre = torch.einsum("ndhw,kd->nkhw", feats, net.classifier.weight.flatten(1))
    assert torch.allclose(net(x), pre.mean((2, 3)), atol=1e-5)
    assert net.cam(x).shape == (2, 4, 16 // net.stride, 20 // net.stride)


def test_grad_cam_equals_cam_over_area_for_a_gap_linear_head():
    net = small_model()
    x = torch.randn(2, 3, 16, 16)
    cams = net.cam(x).detach()
    h, w = cams.shape[-2:]
    for c in range(4):
        assert torch.allclose(C.grad_cam(net, x, c), cams[:, c] / (h * w), atol=1e-6)


def test_multiscale_cam_flip_equivariant_and_sums_scales():
    net = small_model()
    x = torch.randn(1, 3, 16, 24)
    m = C.multiscale_cam(net.cam, x)
    assert m.shape == (1, 4, 16, 24) and (m >= 0).all()
    assert torch.allclose(C.multiscale_cam(net.cam, x.flip(-1)), m.flip(-1), atol=1e-4)
    one = C.multiscale_cam(net.cam, x, scales=(1.0,), flip=False)
    ref = F.interpolate(net.cam(x), size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(one, ref, atol=1e-6)
    two = C.multiscale_cam(net.cam, x, scales=(1.0, 2.0), flip=False)
    assert torch.allclose(
        two - one,
        C.multiscale_cam(
            net.cam,
            F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False),
            scales=(1.0,),
            flip=False,
            size=(16, 24),
        ),
        atol=1e-5,
    )


def test_normalize_cams_per_class_and_global():
    cams = torch.zeros(1, 3, 2, 2)
    cams[0, 0, 0, 0], cams[0, 1, 1, 1], cams[0, 2, 0, 1] = 4.0, 1.0, 9.0
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    per = C.normalize_cams(cams, labels, "per_class", eps=0)
    assert per[0, 0].max() == 1 and per[0, 1].max() == 1 and per[0, 2].abs().sum() == 0
    glob = C.normalize_cams(cams, labels, "global", eps=0)
    assert glob[0, 0].max() == 1 and glob[0, 1].max() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="choose one of"):
        C.normalize_cams(cams, labels, "local")


def test_cams_to_labels_without_a_background_picks_among_the_images_classes():
    cams = torch.zeros(2, 3, 2, 2)
    cams[0, 1] = torch.tensor([[0.9, 0.0], [0.2, 0.0]])  # image 0 has classes 1 and 2 (ids 2, 3)
    cams[0, 2] = torch.tensor([[0.1, 0.0], [0.8, 0.3]])
    out = C.cams_to_labels(cams, None)
    # (0, 1) has no CAM at all: still one of the image's classes, never absent class 0 (id 1)
    assert out[0].tolist() == [[2, 2], [3, 3]]
    assert out[1].tolist() == [[0, 0], [0, 0]]  # an image without any map
    # with a plane at 0 every zero pixel would be background instead
    assert C.cams_to_labels(cams, 0.0)[0, 0, 1] == 0


def test_cams_to_labels_background_plane():
    cams = torch.tensor([[[[0.1, 0.6], [0.3, 0.2]], [[0.05, 0.5], [0.9, 0.1]]]])
    assert C.cams_to_labels(cams, 0.15).tolist() == [[[0, 1], [2, 1]]]
    assert C.cams_to_labels(cams, 0.95).tolist() == [[[0, 0], [0, 0]]]


def test_classifier_choices_name_the_fix():
    with pytest.raises(ValueError, match="choose one of"):
        C.CAMClassifier(3, "vgg")
    with pytest.raises(ValueError, match="weights=None"):
        C.CAMClassifier(3, "small", weights="imagenet")


@pytest.mark.slow
def test_resnet50_cam_classifier_output_stride_16():
    net = C.CAMClassifier(5, "resnet50", weights=None).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 96)).shape == (1, 5)
        assert net.cam(torch.randn(1, 3, 64, 96)).shape == (1, 5, 4, 6)


def test_vgg16_backbone_stride_16_four_extra_convs_and_two_learning_rates():
    m = C.CAMClassifier(3, "vgg16").eval()
    x = torch.randn(1, 3, 64, 64)
    assert m.stride == 16 and m.cam(x).shape == (1, 3, 4, 4) and m(x).shape == (1, 3)
    assert sum(isinstance(l, torch.nn.Conv2d) for l in m.backbone.new) == 4
    old, new = m.param_groups(1e-4, 1e-3)
    assert (old["lr"], new["lr"]) == (1e-4, 1e-3)
    ids_old, ids_new = {id(p) for p in old["params"]}, {id(p) for p in new["params"]}
    assert not ids_old & ids_new and ids_old | ids_new == {id(p) for p in m.parameters()}
    assert id(m.classifier.weight) in ids_new and id(m.backbone.new[0].weight) in ids_new
    assert len(C.CAMClassifier(3, "small").param_groups()) == 1  # nothing pretrained


def test_drop_class_labels_keeps_the_column():
    y = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert C.drop_class_labels(y, 1).tolist() == [[1, 0, 0], [0, 0, 1]] and y[0, 1] == 1


def test_balance_by_downsampling_against_counts():
    g = torch.Generator().manual_seed(0)
    # imbalanced multi-label set: class 0 in ~60 % of images, class 3 in ~5 %
    y = (torch.rand(400, 4, generator=g) < torch.tensor([0.6, 0.3, 0.15, 0.05])).int()
    idx = C.balance_by_downsampling(y, seed=1)
    counts, rarest = y[idx].sum(0), int(y.sum(0).min())
    assert counts[3] == rarest == y[:, 3].sum()  # the rarest class keeps all its images
    assert (counts >= rarest).all() and counts.max() < y.sum(0).max()
    assert y[idx].any(1).all() and len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, C.balance_by_downsampling(y, seed=1))  # reproducible
    # single-label data: exactly per_class images of every class (or all of a smaller one)
    single = F.one_hot(torch.tensor([0] * 50 + [1] * 20 + [2] * 5), 3)
    assert single[C.balance_by_downsampling(single, per_class=10)].sum(0).tolist() == [10, 10, 5]


def test_confident_image_mask_needs_every_labelled_class_above_threshold():
    probs = torch.tensor([[0.9, 0.1, 0.95], [0.9, 0.1, 0.5], [0.2, 0.99, 0.3], [0.9, 0.9, 0.9]])
    labels = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0]])
    assert C.confident_image_mask(probs, labels, 0.8).tolist() == [True, False, True, False]


def test_grad_cam_at_an_earlier_layer_matches_finite_differences():
    torch.manual_seed(0)
    net = C.CAMClassifier(2, "small", width=2, depth=2).double().eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.double)
    layer = net.backbone.body[5]  # the ReLU ending stage 1 (stride 2)
    acts = net.backbone.body[:6](x)
    rest = lambda a: net.classifier(net.backbone.body[6:](a).mean((2, 3), keepdim=True)).flatten(1)
    assert torch.allclose(rest(acts), net(x))
    for c in range(2):  # d logit_c / d A by central differences
        grad, eps = torch.zeros_like(acts), 1e-6
        for i in range(acts.numel()):
            d = torch.zeros_like(acts).flatten()
            d[i] = eps
            d = d.view_as(acts)
            grad.view(-1)[i] = (rest(acts + d)[0, c] - rest(acts - d)[0, c]) / (2 * eps)
        ref = F.relu((grad.mean((2, 3), keepdim=True) * acts).sum(1))
        assert torch.allclose(C.grad_cam(net, x, c, layer=layer), ref, atol=1e-6)
    assert C.grad_cams(net, x, layer).shape == (1, 2, 4, 4)
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():  # usable as multiscale_cam's cam_fn
        assert C.multiscale_cam(lambda v: C.grad_cams(net, v, layer), x).shape == (1, 2, 8, 8)


def test_multilabel_f1_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.1], [0.8, 0.7, 0.1], [0.1, 0.6, 0.2], [0.3, 0.1, 0.4]])
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    f1 = C.multilabel_f1(probs, labels)
    # class 0: tp 2, fp 0, fn 1 -> 4/5; class 1: tp 1, fp 1, fn 0 -> 2/3; class 2: never -> nan
    assert f1[0] == pytest.approx(0.8) and f1[1] == pytest.approx(2 / 3) and torch.isnan(f1[2])


def test_cam_files_keep_only_the_images_classes_and_extraction_resumes(tmp_path):
    cams = torch.rand(4, 5, 6)
    cam_step.save_cams(tmp_path, "img", cams, torch.tensor([0, 1, 0, 1]))
    import numpy as np

    with np.load(cam_step.cam_path(tmp_path, "img")) as z:
        assert z["keys"].tolist() == [1, 3] and z["cams"].dtype == np.float16
    back = cam_step.load_cams(tmp_path, "img", 4)
    assert torch.allclose(back[[1, 3]], cams[[1, 3]], atol=1e-3) and back[[0, 2]].abs().sum() == 0
    with pytest.raises(FileNotFoundError, match="notebook 03"):
        cam_step.load_cams(tmp_path, "other", 4)
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=5, size=32)
    net = C.CAMClassifier(6, "small", width=4, depth=2)
    assert cam_step.extract_cams(net, ds, tmp_path / "cams", scales=(1.0, 0.5), progress=False) == 5
    first = cam_step.load_cams(tmp_path / "cams", ds[2]["name"], 6)
    assert first.shape == (6, 32, 32) and first.max() <= 1
    assert ((first.flatten(1).amax(1) > 0) <= torch.as_tensor(ds[2]["labels"] > 0)).all()
    assert (
        cam_step.extract_cams(net, ds, tmp_path / "cams", progress=False) == 0
    )  # all there: skipped
    cam_step.cam_path(tmp_path / "cams", ds[4]["name"]).unlink()
    assert (
        cam_step.extract_cams(net, ds, tmp_path / "cams", progress=False) == 1
    )  # resumes the missing one
    # evaluation: the same confusion as cams_to_labels image by image
    from wsss_edu.metrics import miou

    meters = cam_step.cam_confusions(ds, tmp_path / "cams", (0.1, 0.5), progress=False)
    for m, t in zip(meters, (0.1, 0.5)):
        preds = [
            C.cams_to_labels(cam_step.load_cams(tmp_path / "cams", s["name"], 6)[None], t)[0]
            for s in ds
        ]
        assert m.miou == pytest.approx(miou([s["mask"] for s in ds], preds, 7))


def test_crf_cam_labels_uses_only_the_images_classes_and_follows_edges():
    import numpy as np

    img = np.zeros((24, 24, 3), np.uint8)
    img[6:18, 6:18] = 255  # a white square on black
    cams = torch.zeros(4, 24, 24)
    cams[2, 8:20, 8:20] = 1.0  # class 2's CAM, shifted by 2 px
    cams[0] = 0.1  # a weak class everywhere, under the threshold
    out = C.crf_cam_labels(img, cams, bg_threshold=0.15)
    assert set(np.unique(out)) <= {0, 1, 3}
    square = np.zeros((24, 24), bool)
    square[6:18, 6:18] = True
    raw = C.cams_to_labels(cams[None], 0.15)[0].numpy()
    assert ((out == 3) == square).mean() > ((raw == 3) == square).mean()  # CRF snaps to the edge
    assert (C.crf_cam_labels(img, torch.zeros(4, 24, 24)) == 0).all()


def test_train_classifier_learns_image_level_labels():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16, 16)
    y = torch.zeros(64, 2)
    y[:32, 0] = 1
    x[:32, 0, 4:10, 4:10] += 3  # class 0: a red patch
    y[16:48, 1] = 1
    x[16:48, 2, 8:14, 8:14] += 3  # class 1: a blue patch
    perm = torch.randperm(64)  # mixed batches (BN needs both kinds)
    x, y = x[perm], y[perm]
    batches = [{"image": x[i : i + 16], "labels": y[i : i + 16]} for i in range(0, 64, 16)]
    net = C.CAMClassifier(2, "small", width=8, depth=2)
    hist = cam_step.train_classifier(net, batches, epochs=15, lr_new=3e-3, progress=False)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    net.eval()
    with torch.no_grad():
        assert ((torch.sigmoid(net(x)) > 0.5) == y.bool()).float().mean() > 0.9


def test_freeze_bn_keeps_the_statistics_while_the_weights_train():
    torch.manual_seed(0)
    for freeze in (False, True):
        model = C.CAMClassifier(3, "small", freeze_bn=freeze, width=4, depth=2)
        bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        before = [m.running_mean.clone() for m in bn]
        conv = model.backbone.body[0].weight.clone()
        opt = torch.optim.SGD(model.parameters(), 0.1)
        model.train()
        assert all(m.training != freeze for m in bn) and model.training
        loss = model(torch.randn(4, 3, 16, 16) * 3 + 1).sum()
        loss.backward()
        opt.step()
        moved = any(not torch.equal(b, m.running_mean) for b, m in zip(before, bn))
        assert moved != freeze
        assert not torch.equal(conv, model.backbone.body[0].weight)  # the weights train either way
