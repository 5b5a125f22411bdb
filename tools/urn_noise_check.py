"""URN on pseudo-masks whose only noise is the one it was designed for: does it beat plain training
then? The evidence behind notebook 06's verdict "URN does not beat plain training here", which
rested on two seeds of IRNet pseudo-masks (whose errors are mostly whole missed objects).

Controlled noise: the clean toy scenes (train split, 64 px as the quick profile, notebook 03's
class imbalance), each object's true region grown (dilated) or shrunk (eroded) by a random radius
of 1..``--noise`` pixels, half of the objects each way: paper 002's Figure 2, a response range too
wide (false positives) or too narrow (missed pixels). Then URN with the package's functions, as
notebook 06 runs it at the quick defaults:

(a) F_S (notebook 05's quick DeepLabv3+) trained on the noisy masks; the uncertainty pass
    (``urn_step.uncertainty_pass``: P over scale 1 + flip, VOC factors, foreground classes scaled,
    present classes from the pseudo-mask); the retraining rows 'plain' (Y = 1) and 'URN' (t = 0.05)
    of ``urn.table_rows`` (one loss, one reduction: ``urn.TABLE_LOSS``) on the cyclic masks, each
    for ``--seeds`` seeds, scored on the toy test split; how well U marks the wrong pixels (AUROC).
(b) the random control 'random': Y = t on as many pixels of each class, in each image, as URN's
    band holds, chosen at random within the class (a band per seed), everything else as 'URN'.
    URN below random: U puts its band in the wrong place; both below plain: down-weighting that
    many pixels of the class hurts wherever they are.
(c) the reference code's settings: the background scaled too, present classes from argmax CRF(P),
    and P over six scales (``urn_step.URN_TTA_SCALES``) + flip (``--c-scales 1``: scale 1 + flip, to
    separate the two: F_S is trained on whole 64-px images without rescaling, as the quick profile,
    so P over six scales is out of its training distribution and shrinks the objects); rows plain,
    URN (and random with b).

Timing (2 cores shared with other jobs, 800 images, 10 epochs): one network 80-90 s alone, 145-200 s
two at a time under the load; the uncertainty pass ~5 min (a) / ~5 min (c, six scales); (a) + (b)
with 5 seeds took 30 min under that load (~15 min estimated on 2 free cores), (c) ~20 min more.

    python tools/urn_noise_check.py                         # (a) + (b), 5 seeds
    python tools/urn_noise_check.py --parts a b c           # + the reference's settings
    python tools/urn_noise_check.py --parts a b c --c-scales 1
    python tools/urn_noise_check.py --n-train 400 --epochs 6 --seeds 3    # a quicker look

Everything (noisy masks, URN folders, networks) is cached under ``--output``: a second run with
the same arguments only scores. The tables are printed (markdown) and written with every number
to OUTPUT/results.json. Outside ``make test``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from functools import partial
from pathlib import Path

import numpy as np

from wsss_edu import datasets, toy, urn
from wsss_edu.cache import cache_key, params_key
from wsss_edu.io import folder_complete, mark_folder_complete, write_mask
from wsss_edu.metrics import ConfusionMeter, auroc
from wsss_edu.steps import segmenter_step, urn_step

SIZE = 64  # the quick profile's IMAGE_SIZE
IMBALANCE = 4.0  # notebook 03's default (bottle the rarest class)
T = urn.T_DEFAULT  # 0.05
QUICK_SCALES = (1.0,)  # the quick profile's P_SCALES (notebook 06)
SETTINGS = {  # the uncertainty pass of each part: notebook 06's quick reading, the reference's
    "a": dict(scales=QUICK_SCALES, include_background=False, present_from="pseudo_mask"),
    "c": dict(scales=urn_step.URN_TTA_SCALES, include_background=True, present_from="crf"),
}
C_SCALES = {"6": urn_step.URN_TTA_SCALES, "1": QUICK_SCALES}  # --c-scales
_T0 = time.perf_counter()


def say(*args):
    print(f"[{time.perf_counter() - _T0:6.0f} s]", *args, flush=True)


# ------------------------------------------------------------------------------------------------
# The noise: each object too big or too small (small glue, not part of the method)
# ------------------------------------------------------------------------------------------------


def disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= r * r


def resize_objects(instances: np.ndarray, instance_classes, rng, max_radius: int):
    """The 'response range' noise: every object (``instances`` (H, W), ids 1..n in drawing order,
    ``instance_classes`` their class names) grown by a disk of radius r (r > 0) or shrunk (r < 0),
    |r| uniform in 1..``max_radius``, the sign a coin flip; an erosion that would remove the
    object takes the largest smaller radius that keeps some of it (the noise changes an object's
    extent, never whether it is there). Painted in drawing order on background, no ignore label.
    Returns (mask uint8 (H, W), the radii applied)."""
    from scipy import ndimage

    out = np.zeros(instances.shape, np.uint8)
    radii = []
    for j, cls in enumerate(instance_classes, start=1):
        region = instances == j
        if not region.any():
            continue
        r = (
            int(rng.integers(1, max_radius + 1)) * (1 if rng.random() < 0.5 else -1)
            if max_radius > 0
            else 0
        )
        if r > 0:
            region = ndimage.binary_dilation(region, disk(r))
        elif r < 0:
            for rr in range(-r, 0, -1):  # border_value=1: the image edge does not erode an object
                shrunk = ndimage.binary_erosion(region, disk(rr), border_value=1)
                if shrunk.any():
                    region, r = shrunk, -rr
                    break
            else:
                r = 0
        out[region] = toy.CLASSES.index(cls)
        radii.append(r)
    return out, radii


def noisy_mask_folder(
    output: Path, train, max_radius: int, noise_seed: int = 0
) -> tuple[Path, dict]:
    """The noisy pseudo-mask of every training image (``resize_objects`` of the scene's own
    objects, redrawn from its seed) as grey PNGs in a folder named after the settings; with the
    noisy masks' train mIoU and the radii's spread."""
    key = {
        "n": len(train),
        "seed": train.seed,
        "knobs": {"size": train.config.size, "imbalance": train.config.imbalance},
        "max_radius": max_radius,
        "noise_seed": noise_seed,
        "noise": "resize_objects v1",
    }
    folder = output / "noisy_masks" / params_key(key)
    info_path = folder / "info.json"
    if folder_complete(folder) and info_path.exists():
        return folder, json.loads(info_path.read_text())
    meter, radii, vanished = ConfusionMeter(train.num_classes), [], 0
    for i, name in enumerate(train.names):
        image, _, inst, inst_classes, _ = toy.render_scene(
            toy.image_rng(train.seed, train.split, i), train.config
        )
        sample = train[i]
        assert np.array_equal(image, sample["image"]), name  # the same scene as the dataset's
        noisy, r = resize_objects(
            inst, inst_classes, np.random.default_rng([noise_seed, i]), max_radius
        )
        truth_classes = set(np.unique(sample["mask"])) - {255}
        vanished += len(truth_classes - set(np.unique(noisy)))
        meter.update(sample["mask"], noisy)
        radii += r
        write_mask(folder / f"{name}.png", noisy)
    info = {
        "key": key,
        "train_miou_noisy": meter.miou,
        "train_iou_noisy": meter.iou.tolist(),
        "objects": len(radii),
        "radius_counts": {str(k): int(v) for k, v in zip(*np.unique(radii, return_counts=True))},
        "classes_vanished": vanished,
    }
    info_path.write_text(json.dumps(info, indent=1))
    mark_folder_complete(folder, len(train))
    return folder, info


# ------------------------------------------------------------------------------------------------
# The random control's weights (small glue)
# ------------------------------------------------------------------------------------------------


def random_band(label: np.ndarray, band: np.ndarray, rng) -> np.ndarray:
    """A bool map with, for every class c of ``label`` (255 = ignore), as many pixels as
    ``band & (label == c)`` holds, drawn uniformly among the pixels of class c."""
    out = np.zeros(label.shape, bool)
    flat_label, flat_out = label.ravel(), out.ravel()
    for c in np.unique(flat_label):
        if c == 255:
            continue
        k = int((band.ravel() & (flat_label == c)).sum())
        if k:
            flat_out[rng.choice(np.flatnonzero(flat_label == c), k, replace=False)] = True
    return out


def random_band_folder(urn_folder: Path, names, t: float, seed: int) -> Path:
    """A label + weight folder beside ``urn_folder``: the same cyclic masks, W = 0 on a random band
    (``random_band`` of URN's band, the pixels where ``urn.loss_weight`` gives Y < 1) and 1
    elsewhere, so that ``urn_step.URNLabeled(..., t)`` gives Y = t exactly there, as URN's rows."""
    folder = urn_folder.parent.parent / "urn_random" / f"{urn_folder.name}_t{t:g}_seed{seed}"
    if folder_complete(folder):
        return folder
    for i, name in enumerate(names):
        label, w = urn.read_label_and_weight(urn_folder / f"{name}.png")
        band = urn.loss_weight(1 - w, t) < 1
        chosen = random_band(label, band, np.random.default_rng([seed, i, 0x5A]))
        urn.write_label_and_weight(folder / f"{name}.png", label, np.where(chosen, 0.0, 1.0))
    mark_folder_complete(folder, len(names))
    return folder


# ------------------------------------------------------------------------------------------------
# The pipeline, with the package's functions
# ------------------------------------------------------------------------------------------------


def uncertainty_folder(
    output: Path,
    teacher,
    pl,
    teacher_key: dict,
    seg,
    settings: dict,
    processes: int,
    progress: bool,
) -> Path:
    """``urn_step.uncertainty_pass`` of F_S over the noisy-mask dataset, into a folder keyed like
    notebook 06's (F_S's key + ``urn_step.pass_settings``)."""
    pass_kw = dict(
        factors=urn.VOC_FACTORS,
        scales=settings["scales"],
        crf_params="urn",
        include_background=settings["include_background"],
        present_from=settings["present_from"],
    )
    key = {
        "teacher": teacher_key | {"segmenter": params_key(dataclasses.asdict(seg))},
        "pass": urn_step.pass_settings(**pass_kw),
    }
    folder = output / "urn" / cache_key(key, urn_step.CODE_VERSION)
    urn_step.uncertainty_pass(
        teacher,
        pl,
        folder,
        processes=processes,
        device="cpu",
        progress=progress,
        model_factory=partial(segmenter_step.make_model, pl.num_classes, seg),
        **pass_kw,
    )
    (folder / "key.json").write_text(json.dumps(key, indent=1))
    return folder


def row_jobs(pl, urn_folder: Path, random_folders: dict, student, seeds, with_random: bool) -> list:
    """[(row, seed, (dataset, label key, cfg))]: 'plain' and 'URN' from ``urn.table_rows`` (the
    same loss and reduction), 'random' the URN row's loss, t and reduction on a random band."""
    rows = urn.table_rows((1.0, T), T, urn_folder, None)
    chosen = {"plain": rows["plain"], "URN": rows[f"t = {T:g}"]}
    jobs = []
    for seed in seeds:
        for name, (loss, t, split, folder) in chosen.items():
            key = {"urn": folder.name, "t": t, "split": split}
            jobs.append(
                (
                    name,
                    seed,
                    (
                        urn_step.URNLabeled(pl, folder, t, split),
                        key,
                        dataclasses.replace(student, loss=loss, seed=seed),
                    ),
                )
            )
        if with_random:
            loss, t, split, _ = chosen["URN"]
            folder = random_folders[seed]
            key = {"urn": urn_folder.name, "random_band": folder.name, "t": t, "split": split}
            jobs.append(
                (
                    "random",
                    seed,
                    (
                        urn_step.URNLabeled(pl, folder, t, split),
                        key,
                        dataclasses.replace(student, loss=loss, seed=seed),
                    ),
                )
            )
    return jobs


def detection(teacher, pl, urn_folder: Path, random_folders: dict, scales, t: float) -> dict:
    """How U of ``urn_folder`` marks the wrong pixels of the training images (labelled in the
    truth): AUROC of U and of 1 - max P (P: F_S over ``scales`` + flip) for 'the noisy mask is
    wrong' and 'the cyclic mask is wrong'; the bands' sizes and error rates; per class, the share
    of the cyclic mask's pixels in URN's band and in the random bands (all pixels, as training
    sees them); the train mIoU of the cyclic masks."""
    K = pl.num_classes
    cols = {k: [] for k in ("u", "conf", "wrong_noisy", "wrong_cyclic", "band")}
    rand_cols = {s: [] for s in random_folders}
    labelled, down, down_rand = np.zeros(K), np.zeros(K), {s: np.zeros(K) for s in random_folders}
    n_pixels = 0
    m_cyclic = ConfusionMeter(K)
    for s, p in urn_step.averaged_probs(teacher, pl, list(range(len(pl))), scales, 64, "cpu"):
        label, w = urn.read_label_and_weight(urn_folder / f"{s['name']}.png")
        band = urn.loss_weight(1 - w, t) < 1
        truth = s["true_mask"]
        ok = truth != 255
        for k, v in (
            ("u", 1 - w),
            ("conf", 1 - p.max(0)),
            ("wrong_noisy", s["mask"] != truth),
            ("wrong_cyclic", label != truth),
            ("band", band),
        ):
            cols[k].append(v[ok])
        m_cyclic.update(truth, label)
        n_pixels += label.size
        lab = label[label != 255]
        labelled += np.bincount(lab, minlength=K)[:K]
        down += np.bincount(label[band & (label != 255)], minlength=K)[:K]
        for seed, folder in random_folders.items():
            rl, rw = urn.read_label_and_weight(folder / f"{s['name']}.png")
            assert np.array_equal(rl, label)
            rb = urn.loss_weight(1 - rw, t) < 1
            rand_cols[seed].append(rb[ok])
            down_rand[seed] += np.bincount(label[rb & (label != 255)], minlength=K)[:K]
    c = {k: np.concatenate(v) for k, v in cols.items()}
    out = {"train_miou_cyclic": m_cyclic.miou, "train_iou_cyclic": m_cyclic.iou.tolist()}
    for target in ("wrong_noisy", "wrong_cyclic"):
        wrong = c[target]
        out[target] = {
            "share": float(wrong.mean()),
            "auroc_u": auroc(c["u"], wrong) if 0 < wrong.sum() < wrong.size else None,
            "auroc_1_minus_max_p": auroc(c["conf"], wrong)
            if 0 < wrong.sum() < wrong.size
            else None,
        }

    def band_row(b, n_all):
        return {
            "pixels_all": n_all / n_pixels,
            "pixels": float(b.mean()),
            "wrong_noisy_in": float(c["wrong_noisy"][b].mean()) if b.any() else None,
            "wrong_noisy_out": float(c["wrong_noisy"][~b].mean()),
            "noisy_errors_caught": float(b[c["wrong_noisy"]].mean())
            if c["wrong_noisy"].any()
            else None,
            "wrong_cyclic_in": float(c["wrong_cyclic"][b].mean()) if b.any() else None,
            "wrong_cyclic_out": float(c["wrong_cyclic"][~b].mean()),
            "cyclic_errors_caught": float(b[c["wrong_cyclic"]].mean())
            if c["wrong_cyclic"].any()
            else None,
        }

    out["band_urn"] = band_row(c["band"], float(down.sum()))
    rows = [
        band_row(np.concatenate(v), float(down_rand[seed].sum())) for seed, v in rand_cols.items()
    ]
    if rows:  # mean over the random bands (one per seed)
        out["band_random"] = {
            k: None if rows[0][k] is None else float(np.mean([r[k] for r in rows])) for k in rows[0]
        }
    out["share_down_urn"] = (down / np.maximum(labelled, 1)).tolist()
    if down_rand:
        same = all(np.array_equal(d, down) for d in down_rand.values())
        out["share_down_random"] = (
            np.mean(list(down_rand.values()), 0) / np.maximum(labelled, 1)
        ).tolist()
        out["random_matches_urn_per_class"] = bool(same)
    out["pixel_share_cyclic"] = (labelled / labelled.sum()).tolist()
    return out


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def mean_std(x) -> str:
    x = np.asarray(x, float)
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def paired(a, b) -> dict:
    from scipy import stats

    d = np.asarray(a, float) - np.asarray(b, float)
    res = {
        "per_seed": d.tolist(),
        "mean": float(d.mean()),
        "std": float(d.std(ddof=1)) if len(d) > 1 else None,
    }
    if len(d) > 1 and d.std() > 0:
        t = stats.ttest_1samp(d, 0.0)
        res |= {"t": float(t.statistic), "p": float(t.pvalue)}
    return res


def print_tables(
    title: str, miou: dict, seeds, teacher_miou: float, det: dict, iou: dict, classes
) -> dict:
    print(f"\n### {title}\n")
    print("| row | test mIoU (mean ± std) | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("| --- | --- |" + " --- |" * len(seeds))
    print(f"| F_S (noisy masks, seed 0) | {teacher_miou:.3f} |" + " |" * len(seeds))
    for row, v in miou.items():
        print(f"| {row} | {mean_std(v)} | " + " | ".join(f"{x:.3f}" for x in v) + " |")
    diffs = {f"{row} − plain": paired(miou[row], miou["plain"]) for row in miou if row != "plain"}
    if "random" in miou:
        diffs["URN − random"] = paired(miou["URN"], miou["random"])
    print("\n| paired difference | mean ± std | per seed | t (p) |\n| --- | --- | --- | --- |")
    for name, d in diffs.items():
        tp = f"{d['t']:.2f} ({d['p']:.3f})" if "t" in d else "–"
        sd = f" ± {d['std']:.3f}" if d["std"] is not None else ""
        print(
            f"| {name} | {d['mean']:+.3f}{sd} | "
            + ", ".join(f"{x:+.3f}" for x in d["per_seed"])
            + f" | {tp} |"
        )

    def pct(x):
        return "–" if x is None else f"{100 * x:.1f} %"

    print(
        "\n| detector (training pixels, truth labelled) | AUROC: noisy mask wrong | AUROC: cyclic mask wrong |"
        "\n| --- | --- | --- |"
    )
    for name, k in (("U (URN)", "auroc_u"), ("1 − max P", "auroc_1_minus_max_p")):
        a, b = det["wrong_noisy"][k], det["wrong_cyclic"][k]
        print(
            f"| {name} | {'–' if a is None else f'{a:.3f}'} | {'–' if b is None else f'{b:.3f}'} |"
        )
    print(
        f"\nwrong pixels: noisy masks {pct(det['wrong_noisy']['share'])}, cyclic masks "
        f"{pct(det['wrong_cyclic']['share'])}; train mIoU: cyclic masks {det['train_miou_cyclic']:.3f}"
    )
    print(
        "\n| band (Y = t) | of all pixels | of truth-labelled pixels | noisy wrong in / out | noisy errors caught |"
        " cyclic wrong in / out | cyclic errors caught |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for name, k in (("URN (U > 1 − t)", "band_urn"), ("random (mean over seeds)", "band_random")):
        if k in det:
            b = det[k]
            print(
                f"| {name} | {pct(b['pixels_all'])} | {pct(b['pixels'])} | {pct(b['wrong_noisy_in'])} / {pct(b['wrong_noisy_out'])} | "
                f"{pct(b['noisy_errors_caught'])} | {pct(b['wrong_cyclic_in'])} / {pct(b['wrong_cyclic_out'])} | "
                f"{pct(b['cyclic_errors_caught'])} |"
            )
    rows = list(iou)
    print(
        "\n| class | pixel share (M_c) | share of its M_c pixels down-weighted (URN = random) | "
        + " | ".join(f"test IoU {r}" for r in rows)
        + " |\n| --- | --- | --- |"
        + " --- |" * len(rows)
    )
    for k, cls in enumerate(classes):
        print(
            f"| {cls} | {100 * det['pixel_share_cyclic'][k]:.2f} % | {100 * det['share_down_urn'][k]:.1f} % | "
            + " | ".join(f"{iou[r][k]:.3f}" for r in rows)
            + " |"
        )
    if "random_matches_urn_per_class" in det:
        print(
            f"\nrandom bands hold exactly URN's per-class counts: {det['random_matches_urn_per_class']}"
        )
    return diffs


# ------------------------------------------------------------------------------------------------


def run_part(
    part: str, a, output: Path, teacher, pl, teacher_key, seg, student, test, seeds
) -> dict:
    settings = SETTINGS[part] | ({"scales": C_SCALES[a.c_scales]} if part == "c" else {})
    say(f"part {part}: uncertainty pass {settings}")
    folder = uncertainty_folder(
        output, teacher, pl, teacher_key, seg, settings, a.processes, a.progress
    )
    with_random = "b" in a.parts
    randoms = {s: random_band_folder(folder, pl.names, T, s) for s in seeds} if with_random else {}
    jobs = row_jobs(pl, folder, randoms, student, seeds, with_random)
    say(f"part {part}: {len(jobs)} networks (cached ones are read)")
    nets = segmenter_step.cached_segmenters(
        output,
        [j[2] for j in jobs],
        "cpu",
        a.processes,
        f"retraining ({part})",
        progress=a.progress,
    )
    miou, ious = {}, {}
    for (row, seed, _), net in zip(jobs, nets):
        m = segmenter_step.evaluate(net, test, progress=False)
        miou.setdefault(row, []).append(m.miou)
        ious.setdefault(row, []).append(m.iou)
    say(f"part {part}: scoring U")
    det = detection(teacher, pl, folder, randoms, settings["scales"], T)
    teacher_meter = segmenter_step.evaluate(teacher, test, progress=False)
    iou = {"F_S": teacher_meter.iou} | {r: np.nanmean(v, 0) for r, v in ious.items()}
    title = {
        "a": "(a) + (b): notebook 06's quick settings"
        if with_random
        else "(a): notebook 06's quick settings",
        "c": f"(c): the reference code's settings (P over {len(settings['scales'])} scale(s) + flip, "
        "background scaled, classes of argmax CRF(P))",
    }[part]
    diffs = print_tables(title, miou, seeds, teacher_meter.miou, det, iou, pl.classes)
    return {
        "urn_folder": str(folder),
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "test_miou": miou,
        "test_iou_mean": {k: np.asarray(v).tolist() for k, v in iou.items()},
        "teacher_test_miou": teacher_meter.miou,
        "paired": diffs,
        "detection": det,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--output", default="runs/urn_noise_check", help="caches and results.json")
    ap.add_argument(
        "--seeds", type=int, default=5, help="retrained networks per row (seeds 0..n-1)"
    )
    ap.add_argument("--n-train", type=int, default=800, help="training images (quick profile: 800)")
    ap.add_argument("--n-test", type=int, default=200, help="test images (quick profile: 200)")
    ap.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs of F_S and of every retrained network (quick: 10)",
    )
    ap.add_argument(
        "--processes", type=int, default=2, help="worker processes (pass and trainings)"
    )
    ap.add_argument(
        "--noise",
        type=int,
        default=4,
        help="max radius (px) by which an object is dilated or eroded (the truth's 1-px ignore "
        "border hides radius 1 from the scores; 4: noisy masks at train mIoU 0.60)",
    )
    ap.add_argument(
        "--imbalance", type=float, default=IMBALANCE, help="toy class imbalance (notebook 03: 4)"
    )
    ap.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b"])
    ap.add_argument(
        "--c-scales",
        choices=sorted(C_SCALES),
        default="6",
        help="(c): P over the reference's six scales (default) or scale 1 only (+ flip); F_S is "
        "trained on whole 64-px images without rescaling (quick profile), so P over six "
        "scales is out of its training distribution",
    )
    ap.add_argument("--progress", action="store_true", help="progress bars (tqdm)")
    a = ap.parse_args(argv)
    if a.noise < 1 or a.seeds < 1 or a.n_train < 16:
        ap.error("need --noise >= 1, --seeds >= 1, --n-train >= 16")
    if "a" not in a.parts:
        a.parts.append("a")  # (b) and (c) need F_S; (a)'s rows come with it
    output = Path(a.output)
    output.mkdir(parents=True, exist_ok=True)
    seeds = list(range(a.seeds))
    knobs = dict(size=SIZE, imbalance=a.imbalance)
    train = toy.ToyDataset("train", n=a.n_train, seed=0, **knobs)
    test = toy.ToyDataset("test", n=a.n_test, seed=0, **knobs)
    say(f"noisy masks: {a.n_train} training images, objects dilated/eroded by 1..{a.noise} px")
    noisy_folder, info = noisy_mask_folder(output, train, a.noise)
    say(
        f"noisy masks: train mIoU {info['train_miou_noisy']:.3f}, {info['objects']} objects, radii "
        f"{info['radius_counts']}, classes vanished from a mask: {info['classes_vanished']}"
    )
    pl = datasets.PseudoLabeled(train, noisy_folder)
    seg = dataclasses.replace(
        segmenter_step.step3_config("quick", 0), epochs=a.epochs
    )  # F_S: notebook 05's quick network
    student = seg  # STUDENT_EPOCHS = SEG_EPOCHS here
    teacher_key = {"pseudo_labels": noisy_folder.name}
    say(f"F_S: {seg}")
    [teacher] = segmenter_step.cached_segmenters(
        output, [(pl, teacher_key, seg)], "cpu", a.processes, "F_S", progress=a.progress
    )
    path = output / "results.json"  # one entry per part and its settings; other runs' entries kept
    results = json.loads(path.read_text()) if path.exists() else {}
    results = {"noisy_masks": info, "parts": {}} if results.get("noisy_masks") != info else results
    for part in ("a", "c"):
        if part in a.parts:
            name = part if part == "a" else f"c (P over {a.c_scales} scale(s))"
            results["parts"][name] = run_part(
                part, a, output, teacher, pl, teacher_key, seg, student, test, seeds
            )
            results["parts"][name]["args"] = vars(a)
            path.write_text(json.dumps(results, indent=1, default=float))
    say(f"written {output / 'results.json'}")


if __name__ == "__main__":
    main()
