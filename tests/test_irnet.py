"""IRNet: pairs, paths, labels, affinities and the random walk against brute-force computations."""

import numpy as np
import pytest
import torch

from wsss_edu import irnet as I
from wsss_edu.steps import cam_step, irnet_step


def dense_transition_matrix(boundary, radius, beta):
    """T built pixel pair by pixel pair with Python loops: the independent reference."""
    h, w = boundary.shape
    a = torch.zeros(h * w, h * w, dtype=boundary.dtype)
    for y in range(h):
        for x in range(w):
            a[y * w + x, y * w + x] = 1.0
            for dy, dx in I.pair_offsets(radius, half=False):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    peak = max(float(boundary[y + py, x + px]) for py, px in I.path_points(dy, dx))
                    a[y * w + x, yy * w + xx] = 1 - peak
    a = a.clamp(min=0) ** beta
    return a / a.sum(0, keepdim=True).clamp(min=1e-12)


@pytest.mark.parametrize("radius", [1, 2, 5, 10])
def test_pair_offsets_match_brute_force(radius):
    yy, xx = np.meshgrid(
        np.arange(-radius, radius + 1), np.arange(-radius, radius + 1), indexing="ij"
    )
    d2 = yy**2 + xx**2
    every = {
        (int(a), int(b)) for a, b, d in zip(yy.ravel(), xx.ravel(), d2.ravel()) if 0 < d < radius**2
    }
    assert set(I.pair_offsets(radius, half=False)) == every
    half = I.pair_offsets(radius)
    assert len(half) == len(set(half)) == len(every) // 2
    for o in every:  # exactly one of o, -o
        assert (o in half) != ((-o[0], -o[1]) in half)


@pytest.mark.parametrize("radius", [5, 10])
def test_thick_path_is_every_box_pixel_within_distance_one_of_the_line(radius):
    for dy, dx in I.pair_offsets(radius, half=False):
        pts = I.path_points(dy, dx)
        assert pts[0] == (0, 0) and pts[-1] == (dy, dx) and len(set(pts)) == len(pts)
        box = [
            (y, x)
            for y in range(-radius, radius + 1)
            for x in range(-radius, radius + 1)
            if min(0, dy) <= y <= max(0, dy) and min(0, dx) <= x <= max(0, dx)
        ]
        # distance of (y, x) to the line through 0 and (dy, dx), in floating point
        near = {(y, x) for y, x in box if abs(dy * x - dx * y) / np.hypot(dy, dx) < 1 - 1e-12}
        assert set(pts) == near
        assert set(I.path_points(dy, dx, "thin")) <= set(pts)  # the digital line lies inside it
        back = {(dy + a, dx + b) for a, b in I.path_points(-dy, -dx)}
        assert back == set(pts)


@pytest.mark.parametrize("radius", [5, 10])
def test_thin_path_points_are_the_nearest_grid_points_of_the_segment(radius):
    for dy, dx in I.pair_offsets(radius, half=False):
        pts = I.path_points(dy, dx, "thin")
        assert pts[0] == (0, 0) and pts[-1] == (dy, dx)
        m = max(abs(dy), abs(dx))
        assert len(pts) == m + 1 and len(set(pts)) == m + 1
        # brute force: for each step along the major axis, the grid point closest to the line
        # (ties to the larger coordinate) among all points of the bounding box
        major_y = abs(dy) >= abs(dx)
        for a, b in pts:
            t = (a / dy) if major_y else (b / dx)
            exact = t * (dx if major_y else dy)
            cands = range(min(0, dx if major_y else dy) - 1, max(0, dx if major_y else dy) + 2)
            best = min(cands, key=lambda c: (abs(c - exact), -c))
            assert (b if major_y else a) == best
        # the path from the other end covers the same pixels
        back = {(dy + a, dx + b) for a, b in I.path_points(-dy, -dx, "thin")}
        assert back == set(pts)


def test_pair_label_masks_brute_force():
    g = np.random.default_rng(0)
    lab = torch.as_tensor(g.choice([0, 1, 2, 255], size=(7, 9), p=[0.4, 0.25, 0.2, 0.15]))
    offs = I.pair_offsets(3)
    pos_bg, pos_fg, neg = I.pair_label_masks(lab, offs)
    assert pos_bg.shape == (len(offs), 7, 9)
    for p, (dy, dx) in enumerate(offs):
        for y in range(7):
            for x in range(9):
                a = int(lab[y, x])
                inside = 0 <= y + dy < 7 and 0 <= x + dx < 9
                b = int(lab[y + dy, x + dx]) if inside else 255
                ok = a != 255 and b != 255
                assert pos_bg[p, y, x] == (ok and a == b == 0)
                assert pos_fg[p, y, x] == (ok and a == b and a > 0)
                assert neg[p, y, x] == (ok and a != b)


def test_pair_affinity_is_one_minus_the_path_maximum():
    g = torch.Generator().manual_seed(0)
    b = torch.rand(6, 8, generator=g)
    offs = I.pair_offsets(4, half=False)
    aff = I.pair_affinity(b, offs)
    for p, (dy, dx) in enumerate(offs):
        for y in range(6):
            for x in range(8):
                if 0 <= y + dy < 6 and 0 <= x + dx < 8:
                    ref = 1 - max(float(b[y + py, x + px]) for py, px in I.path_points(dy, dx))
                else:
                    ref = 0.0  # leaving the image: the outside is boundary
                assert float(aff[p, y, x]) == pytest.approx(ref, abs=1e-6)
    # a wall of boundary cuts every pair across it
    wall = torch.zeros(6, 8)
    wall[:, 4] = 1
    a = I.pair_affinity(wall, [(0, 2)])[0]
    assert (a[:, 2:4] == 0).all() and (a[:, :2] == 1).all()


def test_transition_matrix_is_column_stochastic_and_the_walk_equals_its_power():
    g = torch.Generator().manual_seed(1)
    b = torch.rand(5, 6, generator=g, dtype=torch.float64) * 0.6
    b[:, 3] = 0.95  # a strong boundary
    t = dense_transition_matrix(b, radius=3, beta=4.0)
    assert torch.allclose(t.sum(0), torch.ones(30, dtype=torch.float64))
    assert (t >= 0).all()
    cams = torch.rand(2, 5, 6, generator=g, dtype=torch.float64)
    for exp_times in (0, 1, 3):
        dense = (
            (cams * (1 - b)).reshape(2, -1) @ torch.linalg.matrix_power(t, 2**exp_times)
        ).reshape(2, 5, 6)
        walked = I.random_walk(cams, b, radius=3, beta=4.0, exp_times=exp_times, max_dense=0)
        assert torch.allclose(walked, dense, atol=1e-10)  # pair form
        assert torch.allclose(
            I.random_walk(cams, b, radius=3, beta=4.0, exp_times=exp_times), dense, atol=1e-10
        )  # dense squaring
    assert torch.allclose(I.transition_matrix(*I.transition_weights(b, 3, 4.0)), t)
    # a batch walks each image with its own boundary
    b2 = torch.stack([b, b.flip(-1)])
    c2 = torch.stack([cams, cams.flip(0)])
    for md in (0, 1024):
        batch = I.random_walk(c2, b2, radius=3, beta=4.0, exp_times=2, max_dense=md)
        for n in range(2):
            assert torch.allclose(
                batch[n], I.random_walk(c2[n], b2[n], radius=3, beta=4.0, exp_times=2)
            )
    # the pair-form weights are the columns of the same matrix
    offs, w = I.transition_weights(b, radius=3, beta=4.0)
    y, x = 2, 2
    col = t[:, y * 6 + x]
    for p, (dy, dx) in enumerate(offs):
        if 0 <= y + dy < 5 and 0 <= x + dx < 6:
            assert float(w[p, y, x]) == pytest.approx(float(col[(y + dy) * 6 + x + dx]))


def test_walk_stays_behind_a_boundary():
    b = torch.zeros(8, 12)
    b[:, 6] = 1.0
    cams = torch.zeros(1, 8, 12)
    cams[0, 3:5, 1:3] = 1.0  # a seed on the left
    walked = I.random_walk(cams, b, radius=3, beta=10, exp_times=6)
    assert walked[0, :, :6].sum() > 0 and walked[0, :, 7:].abs().max() < 1e-6
    lab = I.walk_to_labels(walked, [0], bg_threshold=0.25)
    assert (lab[:, 7:] == 0).all() and (lab[:, :6] == 1).any()


def test_losses_vanish_for_perfect_predictions():
    lab = torch.zeros(1, 6, 6, dtype=torch.long)
    lab[0, 1:4, 1:4] = 1  # one object, centred at (2, 2)
    offs = I.pair_offsets(3)
    pos_bg, pos_fg, neg = I.pair_label_masks(lab, offs)
    boundary = torch.zeros(1, 6, 6)  # a boundary around the object...
    perfect = torch.where(lab > 0, torch.zeros(1, 6, 6), torch.ones(1, 6, 6))
    assert I.affinity_loss(I.pair_affinity(perfect, offs), pos_bg & False, pos_fg, neg) < 1e-4
    assert I.affinity_loss(I.pair_affinity(boundary, offs), pos_bg, pos_fg, neg) > 1  # ...missed
    yy, xx = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    disp = torch.stack([2 - yy, 2 - xx])[None]  # every pixel points at the centroid
    l_fg, l_bg = I.displacement_loss(disp, offs, pos_fg, pos_bg)
    assert float(l_fg) == pytest.approx(0, abs=1e-6) and float(l_bg) > 0
    l_fg0, l_bg0 = I.displacement_loss(torch.zeros(1, 2, 6, 6), offs, pos_fg, pos_bg)
    assert float(l_bg0) == 0 and float(l_fg0) > 0
    e = torch.zeros(1, 3, 6, 6, dtype=torch.bool)  # empty sets contribute nothing
    assert I.affinity_loss(torch.rand(1, 3, 6, 6), e, e, e) == 0


def test_irnet_shapes_frozen_stages_and_training_step():
    from wsss_edu.cam import CAMClassifier

    torch.manual_seed(0)
    clf = CAMClassifier(3, "small", width=4, depth=2)
    net = I.IRNet(I.backbone_stages(clf), width=8).train()
    assert all(not m.training for m in net.stages.modules())
    x = torch.randn(2, 3, 30, 34)
    b, d = net(x)
    assert b.shape == (2, 8, 9) and d.shape == (2, 2, 8, 9) and ((b >= 0) & (b <= 1)).all()
    rel = torch.randint(0, 3, (2, 8, 9))
    before = [p.clone() for p in net.stages.parameters()]
    opt = torch.optim.SGD(net.param_groups(0.1, 0.1), lr=0.1)
    loss = I.irnet_loss(net, {"image": x, "relation": rel}, I.pair_offsets(3))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.equal(a, p) for a, p in zip(before, net.stages.parameters()))
    assert all(p.grad is None for p in net.stages.parameters())
    groups = net.param_groups()
    assert {id(p) for g in groups for p in g["params"]} == {
        id(p) for p in net.parameters() if p.requires_grad
    }


def test_relation_labels_confident_fg_bg_and_unsure_between():
    img = np.random.default_rng(0).integers(
        0, 256, (16, 16, 3), dtype=np.uint8
    )  # no edges to snap to
    cams = torch.zeros(2, 16, 16)
    cams[1, 4:12, 4:12] = 1.0
    cams[1, 2:14, 2:14] = torch.maximum(cams[1, 2:14, 2:14], torch.tensor(0.15))  # a weak halo
    rel = I.relation_labels(img, cams, 0.30, 0.05)
    assert set(np.unique(rel)) <= {0, 2, 255}
    assert (rel[6:10, 6:10] == 2).all() and (rel[0, :] == 0).all()
    assert (rel == 255).any()  # the halo: neither confident


@pytest.mark.slow
def test_walk_of_a_voc_sized_image_stays_under_2_gb():
    import subprocess
    import sys

    code = (
        "import resource, torch; from wsss_edu import irnet as I; torch.manual_seed(0);"
        "b = torch.rand(94, 125) * 0.5; c = torch.rand(3, 94, 125);"
        "v = I.random_walk(c, b, radius=5, beta=10, exp_times=8); assert torch.isfinite(v).all();"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 2 * 1024**2  # KiB: 500x375 at stride 4, 256 steps


def test_labels_at_stride_takes_cell_centres_and_pads_with_ignore():
    lab = torch.arange(10 * 7).view(10, 7)
    out = irnet_step.labels_at_stride(lab, 4)
    assert out.shape == (3, 2)
    assert (
        out[0, 0] == lab[2, 2] and out[1, 1] == lab[6, 6] and out[2, 0] == 255
    )  # row 10 is outside
    assert torch.equal(irnet_step.labels_at_stride(lab.view(1, 10, 7), 4)[0], out)


def test_walk_all_batches_padded_classes_like_single_walks():
    torch.manual_seed(0)
    inputs = [
        {
            "boundary": torch.rand(6, 6) * 0.5,
            "cams": torch.rand(k, 6, 6),
            "keys": torch.arange(k),
            "size": (24, 24),
        }
        for k in (1, 3, 0, 2)
    ]
    walk = irnet_step.WalkConfig(radius=2, beta=4, exp_times=3)
    got = dict(irnet_step.walk_all(inputs, walk, batch_size=3))
    assert sorted(got) == [0, 1, 2, 3]
    for j, g in enumerate(inputs):
        one = I.random_walk(g["cams"][None], g["boundary"][None], 2, 4, 3)[0]
        assert got[j].shape == g["cams"].shape and torch.allclose(got[j], one, atol=1e-5)
    lab = irnet_step.walk_labels(got[1], torch.tensor([4, 0, 2]), (24, 24), 0.25)
    assert lab.shape == (24, 24) and set(np.unique(lab)) <= {0, 5, 1, 3}
    assert (
        irnet_step.walk_labels(got[2], torch.tensor([], dtype=torch.long), (24, 24), 0.25) == 0
    ).all()


def test_step2_pipeline_writes_relations_network_and_pseudo_labels(tmp_path):
    """Steps 1-2 end to end on a tiny toy world: every artifact is written, then found again."""
    from wsss_edu import params
    from wsss_edu.datasets import PseudoLabeled
    from wsss_edu.io import read_mask

    S = params.setup("t", OUTPUT_DIR=str(tmp_path), DEVICE="cpu", verbose=False)
    sizes = dict(IMAGE_SIZE=32, N_TRAIN=24, N_VAL=8, EPOCHS=1)
    st = cam_step.step1(S, progress=False, **sizes)
    cfg = irnet_step.IRNetConfig(confidence=0.0, epochs=1, batch_size=8, radius=3)
    grid = dict(WALK_RADII=[2], WALK_EXP_TIMES=[1, 2], WALK_BETAS=[10], WALK_BG=[0.2, 0.4])
    ir = irnet_step.step2(S, st, cfg, walk_grid=grid, progress=False)
    assert len(ir.grid) == 4 and ir.walk.bg_threshold in (0.2, 0.4)
    assert (ir.folder / "complete").exists()
    lab = read_mask(ir.folder / f"{st.train_view.names[0]}.png")
    assert lab.shape == (32, 32) and lab.max() <= len(st.classes) - 1
    ds = PseudoLabeled(st.train_view, ir.folder)
    assert np.array_equal(ds[0]["mask"], lab) and "true_mask" in ds[0]
    assert 0 <= irnet_step.pseudo_label_confusion(st.scored_view, ir.folder).miou <= 1
    again = irnet_step.step2(S, st, cfg, walk_grid=grid, progress=False)  # all from the cache
    assert again.walk == ir.walk and again.folder == ir.folder


def test_relation_labels_in_two_processes_equal_one(tmp_path):
    from wsss_edu.io import read_mask
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=40, seed=0, size=32)
    g = torch.Generator().manual_seed(0)
    for i in range(len(ds)):
        cam_step.save_cams(
            tmp_path / "cams",
            ds.names[i],
            torch.rand(ds.num_classes - 1, 32, 32, generator=g),
            torch.as_tensor(ds[i]["labels"]),
        )
    cfg = irnet_step.IRNetConfig()
    idx = list(range(0, 40, 2))
    assert (
        irnet_step.write_relation_labels(
            ds, tmp_path / "cams", tmp_path / "a", idx, cfg, False, processes=1
        )
        == 20
    )
    assert (
        irnet_step.write_relation_labels(
            ds, tmp_path / "cams", tmp_path / "b", idx, cfg, False, processes=2
        )
        == 20
    )
    assert (
        irnet_step.write_relation_labels(
            ds, tmp_path / "cams", tmp_path / "b", idx, cfg, False, processes=2
        )
        == 0
    )
    for i in idx:
        n = ds.names[i]
        assert np.array_equal(
            read_mask(tmp_path / "a" / f"{n}.png"), read_mask(tmp_path / "b" / f"{n}.png")
        )


def test_confident_images_error_names_the_fix():
    from wsss_edu.cam import CAMClassifier
    from wsss_edu.errors import ParameterError
    from wsss_edu.toy import ToyDataset

    ds = ToyDataset("train", n=8, seed=0, size=32)
    clf = CAMClassifier(ds.num_classes - 1, "small", width=4, depth=2).eval()
    assert len(irnet_step.confident_images(clf, ds, 0.0, progress=False)) == 8
    with pytest.raises(ParameterError, match="CONFIDENCE"):
        irnet_step.confident_images(clf, ds, 1.0, progress=False)
