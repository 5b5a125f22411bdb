"""IRNet's paths, affinities, random walk and walk labels against the original code's outputs
(tests/data/reference/irn_*.npz, made by jiwoon-ahn/irn's ``misc/indexing.py`` and the
post-processing of ``step/make_sem_seg_labels.py``; see that folder's README), and the same rules
on cases the files do not hold (other radii, walk parameters, image sizes), against a plain dense
computation written here from the rules."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_edu import irnet as I
from wsss_edu.steps import irnet_step

REF = Path(__file__).parent / "data" / "reference"


def load(name):
    return dict(np.load(REF / name))


def reference_paths(d):
    """{(dy, dx): set of path points} from a golden file's ``search_paths_*``."""
    out = {}
    for k in range(int(d["n_lengths"]) if "n_lengths" in d else 0):
        for path in d[f"search_paths_{k}"]:
            out[tuple(int(v) for v in path[0])] = {tuple(int(v) for v in p) for p in path}
    return out


def test_directions_and_thick_paths_are_the_references_pathindex():
    d = load("irn_pathindex_r5_12x16.npz")
    ref = reference_paths(d)
    assert set(ref) == set(I.pair_offsets(5)) == {tuple(v) for v in d["search_dst"]}
    for (dy, dx), pts in ref.items():
        assert set(I.path_points(dy, dx)) == pts, (dy, dx)
    # the thin digital line is what differed: it holds other pixels on most paths
    differ = sum(set(I.path_points(dy, dx, "thin")) != pts for (dy, dx), pts in ref.items())
    assert differ == 26


def test_path_indices_on_the_references_grid():
    """The flat indices of every path pixel of every source equal the reference's
    ``path_indices`` (sources at (y, radius_floor + x), partners at + (dy, dx))."""
    d = load("irn_pathindex_r5_12x16.npz")
    (_, w), rf = d["default_size"], int(d["radius_floor"])
    src = d["src_indices"]
    rows, cols = src // w, src % w
    assert (cols.min(), rows.min()) == (rf, 0)
    for k in range(int(d["n_lengths"])):
        for path, idx in zip(d[f"search_paths_{k}"], d[f"path_indices_{k}"]):
            dy, dx = (int(v) for v in path[0])
            mine = sorted(I.path_points(dy, dx))
            want = np.sort(idx, axis=0)
            got = np.sort(np.stack([(rows + py) * w + cols + px for py, px in mine]), axis=0)
            assert np.array_equal(got, want), (dy, dx)


@pytest.mark.parametrize(
    "name, key, padded",
    [
        ("irn_edge_to_affinity_r10_20x32.npz", "aff", False),
        ("irn_rw_r5_beta10_exp8.npz", "sparse_aff_padded", True),
    ],
)
def test_pair_affinity_is_the_references_edge_to_affinity(name, key, padded):
    d = load(name)
    r = int(d["radius"])
    edge = torch.from_numpy(d["edge"]).reshape(d["edge"].shape[-2:])
    if padded:  # propagate_to_edge pads (left r, right r, top 0, bottom r) with 1
        edge = F.pad(edge[None, None], (r, r, 0, r), value=1.0)[0, 0]
        dst = load("irn_pathindex_r5_12x16.npz")["search_dst"]  # same radius, same order
    else:
        dst = d["search_dst"]
    h, w = edge.shape
    rf = int(np.ceil(r) - 1)
    ys, xs = np.meshgrid(np.arange(h - rf), np.arange(rf, w - rf), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    offsets = [tuple(int(v) for v in o) for o in dst]
    aff = I.pair_affinity(edge, offsets).numpy()
    got = aff[:, ys, xs]
    assert np.array_equal(got, d[key][0])  # exactly: the max of the same values
    thin = I.pair_affinity(edge, offsets, "thin").numpy()[:, ys, xs]
    assert np.abs(thin - d[key][0]).max() > 0.1  # what the thin path got wrong


def test_a_diagonal_one_pixel_boundary_separates_only_with_the_thick_path():
    b = torch.zeros(6, 6)
    for k in range(6):
        b[k, 5 - k] = 1.0  # an 8-connected anti-diagonal wall
    a_thick = I.pair_affinity(b, [(1, 1)])[0]
    a_thin = I.pair_affinity(b, [(1, 1)], "thin")[0]
    assert a_thick[1, 3] == 0.0 and a_thin[1, 3] == 1.0  # (1,3) -> (2,4) crosses the wall


def rw_inputs(d):
    return torch.from_numpy(d["x"]), torch.from_numpy(d["edge"])[0]


def test_dense_affinity_and_transition_matrix_are_the_references():
    d = load("irn_rw_r5_beta10_exp8.npz")
    _, edge = rw_inputs(d)
    pairs = I.pair_offsets(5, half=False)
    planes = torch.cat([torch.ones(1, *edge.shape), I.pair_affinity(edge, pairs)])
    dense = I.transition_matrix([(0, 0)] + pairs, planes).numpy()
    assert np.array_equal(dense, d["dense_aff"])
    t = I.transition_matrix(*I.transition_weights(edge, 5, 10.0))
    for _ in range(8):
        t = t @ t
    np.testing.assert_allclose(t.numpy(), d["trans_mat"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("max_dense", [1024, 0], ids=["dense route", "pair route"])
def test_random_walk_is_the_references_propagate_to_edge(max_dense):
    d = load("irn_rw_r5_beta10_exp8.npz")
    x, edge = rw_inputs(d)
    rw = I.random_walk(x, edge, 5, 10.0, 8, max_dense=max_dense)
    assert rw.dtype == torch.float32
    np.testing.assert_allclose(rw.numpy(), d["rw"][:, 0], rtol=1e-4, atol=1e-6)
    rw64 = I.random_walk(x.double(), edge.double(), 5, 10.0, 8, max_dense=max_dense)
    np.testing.assert_allclose(rw64.numpy(), d["rw_float64"][:, 0], rtol=0, atol=1e-10)


def test_float32_pair_route_error_is_the_stated_one():
    """Walking the pair route in float32 (``pair_dtype=None``) drifts over 256 sequential steps:
    measured 6e-5 of the maximum against the float64 walk and 2.5e-4 of a value against the
    reference's float32 walk, outside its tolerance (rtol 1e-4), so the default walks it in
    float64 (above); the error stays below 1e-3 of the maximum."""
    d = load("irn_rw_r5_beta10_exp8.npz")
    x, edge = rw_inputs(d)
    ref = d["rw_float64"][:, 0]
    rel = lambda v: np.abs(v.numpy() - ref).max() / np.abs(ref).max()  # noqa: E731
    r32 = rel(I.random_walk(x, edge, 5, 10.0, 8, max_dense=0, pair_dtype=None))
    r64 = rel(I.random_walk(x, edge, 5, 10.0, 8, max_dense=0))
    print(f"float32 pair route: {r32:.2e} of the maximum; float64: {r64:.2e}")
    assert 1e-5 < r32 < 1e-3
    assert r64 < 1e-6
    assert not np.allclose(
        I.random_walk(x, edge, 5, 10.0, 8, max_dense=0, pair_dtype=None).numpy(),
        d["rw"][:, 0],
        rtol=1e-4,
        atol=1e-6,
    )


def test_walk_labels_are_the_references_make_sem_seg_labels_on_a_45x61_image():
    d = load("irn_rw_r5_beta10_exp8.npz")
    rw = torch.from_numpy(d["rw"][:, 0])
    size = tuple(int(v) for v in d["post_orig_img_size"])
    up = I.walk_to_image(rw, size)
    np.testing.assert_allclose(up.numpy(), d["post_rw_up_norm"], rtol=0, atol=1e-6)
    lab = irnet_step.walk_labels(rw, d["post_cam_keys"], size, float(d["post_bg_thres"]))
    assert np.array_equal(lab, d["post_sem_seg"].astype(np.int64))
    # resizing straight to the image size, as the package did, changes about a tenth of the labels
    direct = F.interpolate(rw[None], size=size, mode="bilinear", align_corners=False)[0]
    direct = torch.cat([torch.full_like(direct[:1], 0.25), direct / direct.max()]).argmax(0).numpy()
    old = np.concatenate([[0], d["post_cam_keys"] + 1])[direct]
    assert 0.05 < (old != d["post_sem_seg"]).mean() < 0.2


# ------------------------------------------------------------------------------------------------
# The rules on other cases: a plain dense computation from the reference's definitions
# ------------------------------------------------------------------------------------------------


def dense_walk(x, edge, radius, beta, exp_times):
    """The walk written out pixel pair by pixel pair in float64: a_ij = 1 - max of the edge over
    the pixels of the segment's bounding box within distance 1 of the line (both ends), for
    0 < |j - i|² < radius², a_ii = 1; T = A^beta / column sums, squared exp_times times;
    (x (1 - edge)) T."""
    x, e = x.double().numpy(), edge.double().numpy()
    h, w = e.shape
    a = np.eye(h * w)
    for y in range(h):
        for xx in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    dy, dx = y2 - y, x2 - xx
                    if not 0 < dy * dy + dx * dx < radius * radius:
                        continue
                    peak = max(
                        e[y + py, xx + px]
                        for py in range(min(0, dy), max(0, dy) + 1)
                        for px in range(min(0, dx), max(0, dx) + 1)
                        if (dy * px - dx * py) ** 2 / (dy * dy + dx * dx) < 1
                    )
                    a[y * w + xx, y2 * w + x2] = 1 - peak
    t = a**beta
    t = t / t.sum(0, keepdims=True)
    for _ in range(exp_times):
        t = t @ t
    return ((x * (1 - e)).reshape(len(x), -1) @ t).reshape(x.shape)


@pytest.mark.parametrize(
    "radius, beta, exp_times, h, w",
    [(3, 10.0, 4, 7, 9), (4, 1.0, 2, 9, 6), (6, 5.0, 3, 10, 11), (5, 10.0, 8, 5, 13)],
)
@pytest.mark.parametrize("max_dense", [1024, 0], ids=["dense route", "pair route"])
def test_random_walk_follows_the_rule_for_other_radii_and_walks(
    radius, beta, exp_times, h, w, max_dense
):
    g = torch.Generator().manual_seed(radius * 100 + h)
    x = torch.rand(2, h, w, generator=g)
    edge = torch.rand(h, w, generator=g) * 0.3
    edge[:, w // 2] = 0.95
    want = dense_walk(x, edge, radius, beta, exp_times)
    got = I.random_walk(x.double(), edge.double(), radius, beta, exp_times, max_dense=max_dense)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("size", [(45, 61), (17, 9), (32, 32), (13, 4)])
def test_walk_to_image_upsamples_by_four_and_crops_for_any_image_size(size):
    g = torch.Generator().manual_seed(size[0])
    grid = (-(-size[0] // 4), -(-size[1] // 4))
    rw = torch.rand(3, *grid, generator=g)
    up = I.walk_to_image(rw, size)
    assert up.shape == (3, *size) and up.max() == 1
    # bilinear, align_corners=False, x4: output pixel p samples input coordinate (p + 0.5) / 4 - 0.5
    full = F.interpolate(
        rw[None], size=(4 * grid[0], 4 * grid[1]), mode="bilinear", align_corners=False
    )[0, :, : size[0], : size[1]]
    torch.testing.assert_close(up, full / full.max())
    if min(grid) >= 3:  # pixel (6, 6) samples grid coordinate 6.5 / 4 - 0.5 = 1.125 on both axes
        f = 0.125
        row = lambda y: (1 - f) * rw[:, y, 1] + f * rw[:, y, 2]  # noqa: E731
        torch.testing.assert_close(full[:, 6, 6], (1 - f) * row(1) + f * row(2))
    with pytest.raises(ValueError, match="ceil"):
        I.walk_to_image(rw[:, :-1], size)


@pytest.mark.parametrize(
    "name", ["irn_pathindex_r5_12x16.npz", "irn_edge_to_affinity_r10_20x32.npz"]
)
def test_reference_source_mask_is_pathindexs_sources(name):
    d = load(name)
    h, w = (int(v) for v in d["default_size"])
    m = I.reference_source_mask(h, w, int(d["radius"]))
    assert np.array_equal(np.flatnonzero(m.numpy().reshape(-1)), np.sort(d["src_indices"]))


def test_irnet_loss_with_reference_sources_uses_only_their_pairs():
    """Labels only in the bottom r_f rows: every pair among them starts from a pixel that is not a
    reference source, so with ``sources='reference'`` nothing teaches (loss 0)."""
    torch.manual_seed(0)
    stages = [torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4, padding=1))]
    net = I.IRNet(stages, width=4).eval()
    rel = torch.full((1, 12, 12), 255, dtype=torch.long)
    rel[:, 10:, :6], rel[:, 10:, 6:] = 0, 1
    batch = {"image": torch.rand(1, 3, 48, 48), "relation": rel}
    offs = I.pair_offsets(3)
    assert I.irnet_loss(net, batch, offs, sources="all", radius=3) > 0.1
    assert I.irnet_loss(net, batch, offs, sources="reference", radius=3) == 0
