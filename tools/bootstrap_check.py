"""What does bootstrapping add over its warm-up? Paper 000's mechanism, measured within runs.

    .venv/bin/python tools/bootstrap_check.py --seeds 5 --schedule restart --out /tmp/check.json

Trains, on the toy world at notebook 02's quick defaults (48 px, 200 training images of which 20
pixel-perfect, U-Net width 8, 16 epochs of which 12 warm-up, tau 0.5), box-BCE, ignore-interiors
and "ours" for ``--seeds`` seeds each, every method with the same epochs and learning-rate
schedule, and evaluates every run on the toy world's *test* split (notebook 02's 150 images) at the
end of the warm-up and at the end of training. For "ours" the difference is what bootstrapping
added to its own warm-up; for the baselines, what the same epochs of their own loss added.

``--schedule`` (``lu_experiments.LR_SCHEDULES``): 'cosine', the notebooks' (one annealing over all epochs:
bootstrapping runs at 15 % of the peak learning rate and below); 'constant' (no annealing);
'restart' (one cosine over the warm-up, another from the peak over the rest).

Prints a markdown table (means ± std over the runs that collapsed at neither point, ``lu_experiments.collapsed``;
the collapsed are counted) and the per-seed differences between methods at the end, and writes
every run's numbers to ``--out`` (JSON). Not part of ``make test``.
"""

import argparse
import json
import math
import time

import numpy as np

from wsss_edu import label_uncertainty as lu
from wsss_edu.stats import mean_std
from wsss_edu.steps import lu_experiments

METHODS = ("boxes_bce", "ignore_box", "ours")


def parse(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per method (0, 1, ...)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=12, help="epochs of warm-up of 'ours'")
    ap.add_argument("--schedule", choices=lu_experiments.LR_SCHEDULES, default="cosine")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--size", type=int, default=48, help="toy image side (px)")
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument(
        "--n-pp", type=int, default=20, help="pixel-perfect images among the training images"
    )
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--out", default=None, help="JSON path (default: bootstrap_check_<schedule>.json)"
    )
    return ap.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    methods = a.methods.split(",")
    for m in methods:
        if m not in lu_experiments.METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {lu_experiments.METHODS}")
    if not 0 < a.warmup < a.epochs:
        raise SystemExit("--warmup must lie strictly between 0 and --epochs")
    train = lu.load_mixed_set("toy", ["car"], a.n_pp, "train", a.n_train, a.size, "", 0)
    test = lu.load_mixed_set("toy", ["car"], a.n_test, "test", a.n_test, a.size, "", 0)
    cfg = lu_experiments.BootstrapConfig(warmup_epochs=a.warmup, tau=a.tau)
    every = math.gcd(a.warmup, a.epochs)  # validates after the warm-up's last epoch and the last
    jobs = [
        dict(
            arrays=train,
            val=test,
            method=m,
            epochs=a.epochs,
            seed=s,
            cfg=cfg,
            width=a.width,
            lr=a.lr,
            eval_every=every,
            lr_schedule=a.schedule,
        )
        for m in methods
        for s in range(a.seeds)
    ]
    t0 = time.time()
    runs = lu_experiments.run_experiments(jobs, a.processes, desc=f"bootstrap check ({a.schedule})")
    seconds = time.time() - t0
    w = runs[0]["epoch"].index(a.warmup)

    result = {
        "args": vars(a),
        "config": vars(cfg),
        "seconds": round(seconds, 1),
        "collapse_fraction": lu_experiments.COLLAPSE_FRACTION,
        "methods": {},
    }
    print(
        f"\nschedule '{a.schedule}', {a.seeds} seeds, {a.epochs} epochs ({a.warmup} warm-up), toy test split "
        f"({len(test['image'])} images), {seconds:.0f} s\n"
    )
    print(
        f"| method | IoU, end of warm-up (ep. {a.warmup}) | IoU, end (ep. {a.epochs}) | end − warm-up "
        f"(within runs) | collapsed (warm-up / end) | per seed: warm-up → end |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for i, m in enumerate(methods):
        hs = runs[i * a.seeds : (i + 1) * a.seeds]
        warm = [h["miou"][w] for h in hs]
        end = [h["miou"][-1] for h in hs]
        c_warm = [lu_experiments.collapsed(h, at=w) for h in hs]
        c_end = [lu_experiments.collapsed(h) for h in hs]
        ok = [not (x or y) for x, y in zip(c_warm, c_end)]
        kw, ke = [v for v, k in zip(warm, ok) if k], [v for v, k in zip(end, ok) if k]
        gain = [e - v for e, v in zip(ke, kw)]
        n_ok = sum(ok)
        note = "" if n_ok == a.seeds else f" ({n_ok} of {a.seeds} runs)"
        seeds = ", ".join(
            f"{x:.3f}→{y:.3f}" + ("*" if not k else "") for x, y, k in zip(warm, end, ok)
        )
        print(
            f"| {m} | {mean_std(kw)}{note} | {mean_std(ke)}{note} | {mean_std(gain):s} | "
            f"{sum(c_warm)} / {sum(c_end)} | {seeds} |"
        )
        result["methods"][m] = {
            "seeds": list(range(a.seeds)),
            "iou_warmup": warm,
            "iou_end": end,
            "fg_share_warmup": [h["fg_share"][w] for h in hs],
            "fg_share_end": [h["fg_share"][-1] for h in hs],
            "true_fg_share": hs[0]["true_fg_share"],
            "collapsed_warmup": c_warm,
            "collapsed_end": c_end,
            "n_collapsed_warmup": sum(c_warm),
            "n_collapsed_end": sum(c_end),
            "epochs": hs[0]["epoch"],
            "curves": [h["miou"] for h in hs],
            "summary": {
                "runs_kept": n_ok,
                "iou_warmup_mean": float(np.mean(kw)) if kw else None,
                "iou_warmup_std": float(np.std(kw)) if kw else None,
                "iou_end_mean": float(np.mean(ke)) if ke else None,
                "iou_end_std": float(np.std(ke)) if ke else None,
                "gain_mean": float(np.mean(gain)) if gain else None,
                "gain_std": float(np.std(gain)) if gain else None,
            },
        }
    print(
        "\n(means ± std over the seeds' runs; * = collapsed at the warm-up's end or the end, left out of "
        "the means)"
    )
    pairs = [
        (x, y)
        for x, y in (("ours", "ignore_box"), ("ours", "boxes_bce"), ("ignore_box", "boxes_bce"))
        if x in methods and y in methods
    ]
    if pairs:
        print(
            "\n| at the end, same seed | difference (mean ± std over seeds) | per seed |\n| --- | --- | --- |"
        )
    result["differences_at_end"] = {}
    for x, y in pairs:
        d = np.subtract(result["methods"][x]["iou_end"], result["methods"][y]["iou_end"])
        print(f"| {x} − {y} | {mean_std(d)} | {np.round(d, 3).tolist()} |")
        result["differences_at_end"][f"{x} - {y}"] = d.tolist()
    out = a.out or f"bootstrap_check_{a.schedule}.json"
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
