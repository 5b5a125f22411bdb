"""How far the package is from the original IRN, URN and RRM code on the golden cases.

    python tools/reference_check.py [--data tests/data/reference]

Feeds every golden file's inputs (tests/data/reference/, see its README) to the package's public
functions and prints one markdown row per reference step: the largest difference, or the share of
labels that differ, with the package's defaults and with each switch that keeps the old behaviour.
The tests (tests/test_reference_*.py) assert the defaults' rows; this prints the numbers.
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from wsss_edu import irnet, rrm, urn
from wsss_edu.steps import irnet_step


def load(folder, name):
    with np.load(Path(folder) / name) as d:
        return {k: d[k] for k in d.files}


def irn_rows(folder):
    rows = []
    d = load(folder, "irn_pathindex_r5_12x16.npz")
    ref = {}
    for k in range(int(d["n_lengths"])):
        for path in d[f"search_paths_{k}"]:
            ref[tuple(int(v) for v in path[0])] = {tuple(int(v) for v in p) for p in path}
    for kind in irnet.PATHS:
        n = sum(set(irnet.path_points(dy, dx, kind)) != pts for (dy, dx), pts in ref.items())
        rows.append(
            (
                "IRN PathIndex paths, radius 5",
                f"path_points(path='{kind}')",
                f"{n} of {len(ref)} paths hold other pixels",
            )
        )
    e = load(folder, "irn_edge_to_affinity_r10_20x32.npz")
    edge = torch.from_numpy(e["edge"])[0, 0]
    h, w = edge.shape
    rf = int(e["radius_floor"])
    src = e["src_indices"]
    offs = [tuple(int(v) for v in o) for o in e["search_dst"]]
    for kind in irnet.PATHS:
        aff = irnet.pair_affinity(edge, offs, kind).numpy()[:, src // w, src % w]
        rows.append(
            (
                "IRN edge_to_affinity, radius 10 (152 directions)",
                f"pair_affinity(path='{kind}')",
                f"max abs diff {np.abs(aff - e['aff'][0]).max():.2g}",
            )
        )
    assert rf == int(np.ceil(int(e["radius"])) - 1)
    r = load(folder, "irn_rw_r5_beta10_exp8.npz")
    x, b = torch.from_numpy(r["x"]), torch.from_numpy(r["edge"])[0]
    rw, rw64 = r["rw"][:, 0], r["rw_float64"][:, 0]
    for label, kw in (
        ("dense route (12×16 grid)", {}),
        ("pair route, float64 (default)", {"max_dense": 0}),
        ("pair route, float32 (pair_dtype=None)", {"max_dense": 0, "pair_dtype": None}),
        ("dense route, path='thin'", {"path": "thin"}),
    ):
        v = irnet.random_walk(x, b, 5, 10.0, 8, **kw).numpy()
        rows.append(
            (
                "IRN random walk (β 10, 2⁸ steps)",
                f"random_walk, {label}",
                f"max diff / max: {np.abs(v - rw).max() / np.abs(rw).max():.1e} vs float32 reference, "
                f"{np.abs(v - rw64).max() / np.abs(rw64).max():.1e} vs float64; within rtol 1e-4, "
                f"atol 1e-6: {np.allclose(v, rw, rtol=1e-4, atol=1e-6)}",
            )
        )
    v64 = irnet.random_walk(x.double(), b.double(), 5, 10.0, 8, max_dense=0).numpy()
    rows.append(
        (
            "IRN random walk (β 10, 2⁸ steps)",
            "random_walk, float64 inputs, pair route",
            f"max abs diff vs float64 reference {np.abs(v64 - rw64).max():.1e}",
        )
    )
    size = tuple(int(v) for v in r["post_orig_img_size"])
    lab = irnet_step.walk_labels(
        torch.from_numpy(rw), r["post_cam_keys"], size, float(r["post_bg_thres"])
    )
    direct = torch.nn.functional.interpolate(
        torch.from_numpy(rw)[None], size=size, mode="bilinear", align_corners=False
    )[0]
    direct = torch.cat(
        [torch.full_like(direct[:1], float(r["post_bg_thres"])), direct / direct.max()]
    ).argmax(0)
    old = np.concatenate([[0], r["post_cam_keys"] + 1])[direct.numpy()]
    rows.append(
        (
            "IRN walk → labels (45×61 image)",
            "walk_labels (×4 upsample, crop)",
            f"{(lab != r['post_sem_seg']).mean():.1%} of pixels differ",
        )
    )
    rows.append(
        (
            "IRN walk → labels (45×61 image)",
            "(the former direct resize)",
            f"{(old != r['post_sem_seg']).mean():.1%} of pixels differ",
        )
    )
    return rows


def urn_rows(folder):
    rows = []
    for name in ("urn_case1_48x64_c3.npz", "urn_case2_48x64_c3.npz"):
        d = load(folder, name)
        s = urn.urn_steps(d["image"], d["P"])
        rows.append(
            (
                f"URN uncertainty block, {name[:9]}",
                "urn_steps (defaults)",
                f"CRF max diff {np.abs(s.marginals - d['crf_Q']).max():.1g}; cyclic mask "
                f"{(s.cyclic != d['pseudo_mask']).sum()} px differ; classes equal "
                f"{np.array_equal(s.classes, d['labels'])}; u_c {np.abs(s.variance - d['u_c']).max():.1g}; "
                f"U {np.abs(s.u - d['u']).max():.1g}; weight {(s.weight != d['weight']).sum()} px differ",
            )
        )
        old = urn.urn_steps(d["image"], d["P"], eps=0.0, rounding="round")
        rows.append(
            (
                f"URN uncertainty block, {name[:9]}",
                "eps=0, rounding='round' (former)",
                f"U {np.abs(old.u - d['u']).max():.1g}; weight {(old.weight != d['weight']).sum()} px differ",
            )
        )
        paper = urn.urn_steps(
            d["image"],
            d["P"],
            d["pseudo_mask"],
            present_from="pseudo_mask",
            include_background=False,
        )
        rows.append(
            (
                f"URN uncertainty block, {name[:9]}",
                "present_from='pseudo_mask', include_background=False (notebook 06)",
                f"weight {(paper.weight != d['weight']).mean():.1%} of px differ",
            )
        )
    return rows


def rrm_rows(folder):
    rows = []
    for name in ("rrm_case1_48x64_1cls.npz", "rrm_case2_48x64_2cls.npz"):
        d = load(folder, name)
        classes = np.flatnonzero(d["cam_label"].astype(np.uint8)).tolist()
        p_fg = torch.from_numpy(d["norm_cam"])
        ref = rrm.reliable_region_labels(d["ori_img"], p_fg, classes, rule="reference")
        q = max(np.abs(np.asarray(ref[k]) - d[k]).max() for k in ("crf_la", "crf_ha"))
        for label, out in (
            ("rule='reference' (default)", ref),
            (
                "rule='paper', one CRF",
                rrm.reliable_region_labels(d["ori_img"], p_fg, classes, rule="paper"),
            ),
            (
                "rule='paper', two_crf=(4, 32)",
                rrm.reliable_region_labels(
                    d["ori_img"], p_fg, classes, two_crf=(4, 32), rule="paper"
                ),
            ),
        ):
            diff = (np.asarray(out["reliable"]) != d["seg_label"]).mean()
            extra = f"; CRF marginals max diff {q:.1g}" if out is ref else ""
            rows.append(
                (f"RRM compute_seg_label, {name[:9]}", label, f"{diff:.1%} of labels differ{extra}")
            )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "reference")
    )
    args = ap.parse_args()
    print("| reference step | package function | result |\n| --- | --- | --- |")
    for row in irn_rows(args.data) + urn_rows(args.data) + rrm_rows(args.data):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
