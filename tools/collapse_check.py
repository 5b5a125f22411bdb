"""Why do the box-aware rows of paper 000 collapse when the object is rare, and what prevents it?

    .venv/bin/python tools/collapse_check.py --car-probs 0.85 0.25 --seeds 5 --out /tmp/collapse.json

Notebook 02 run unchanged on a held-out street-scene dataset (binary car, 367 training images of
which 66 pixel-perfect) collapsed to "no car anywhere" on one seed of two for both box-aware rows
(ignore box interiors, and ours), never for box-BCE. That dataset is not here, so this tool rebuilds
the situation on the toy world: the same 367 / 66 images, notebook 02's quick defaults otherwise
(48 px, U-Net width 8, 16 epochs of which 12 warm-up, tau 0.5, Adam 2e-3 with a cosine schedule),
and the car made rarer by lowering the probability that an image holds one (``--car-probs``; the
notebooks' toy world uses 0.85).

The suspected cause: when box interiors carry no label (the 'ignore_box' row, and the warm-up of
'ours', 12 of 16 epochs), the only car pixels with a label are those of the few pixel-perfect images,
while every image labels its background. With a rare car most batches hold no labelled car pixel
at all, and the network learns "background everywhere" before it has seen enough cars. Box-BCE
labels every box interior as car, so it always has car pixels. The tool prints, per car
probability, those data figures (the true car share, the car share of the labelled pixels
each row trains on, ``lu_experiments.labelled_object_share``, and the share of random batches without one
labelled car pixel, ``lu_experiments.batches_without_object``) and then
every row with each candidate remedy (``--remedies``):

* 'none': notebook 02's settings;
* 'pp_per_batch': every batch holds ``--pp-per-batch`` pixel-perfect images (``pp_per_batch`` of
  ``lu_experiments.train_experiment``): labelled car pixels in (almost) every batch;
* 'low_lr': a four times lower learning rate (is it the optimiser running away?);
* 'warmup_on_boxes': ours only, mu learns the box labels during the warm-up
  (``lu_experiments.BootstrapConfig.warmup_on_boxes``, notebook 02b's setting): the warm-up sees every box.

Every run is scored on the toy world's *test* split (150 images drawn with the same car
probability). Means ± std are over the runs that did not collapse (``lu_experiments.collapsed``); the collapsed
are counted. Writes every run's numbers to ``--out`` (JSON). Not part of ``make test``; about 90 s
per (car probability, remedy) on 2 cores.
"""

import argparse
import json
import time

from wsss_edu import label_uncertainty as lu
from wsss_edu.stats import mean_std
from wsss_edu.steps import lu_experiments

REMEDIES = ("none", "pp_per_batch", "low_lr", "warmup_on_boxes")


def parse(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--car-probs",
        type=float,
        nargs="+",
        default=[0.85, 0.25],
        help="probability that a toy image holds a car (the notebooks: 0.85)",
    )
    ap.add_argument(
        "--dataset",
        choices=("toy", "msrc"),
        default="toy",
        help="msrc: real photos, binary car (its train split, scored on its test split; "
        "--size is then the height, width 2x; --car-probs is ignored)",
    )
    ap.add_argument("--data-root", default="", help="folder holding msrc_v2/ (for --dataset msrc)")
    ap.add_argument(
        "--remedies", default=",".join(REMEDIES), help=f"comma-separated, from {REMEDIES}"
    )
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per row (0, 1, ...)")
    ap.add_argument("--n-train", type=int, default=367)
    ap.add_argument(
        "--n-pp", type=int, default=66, help="pixel-perfect images among the training images"
    )
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--size", type=int, default=48, help="toy image side (px)")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=lu_experiments.BATCH_SIZE)
    ap.add_argument("--pp-per-batch", type=int, default=4)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--out", default="collapse_check.json")
    return ap.parse_args(argv)


def jobs_for(remedy: str, train: dict, test: dict, a) -> list:
    """The runs of one remedy: (method, train_experiment keyword arguments) per method and seed."""
    cfg = lu_experiments.BootstrapConfig(
        warmup_epochs=a.warmup, tau=a.tau, warmup_on_boxes=remedy == "warmup_on_boxes"
    )
    methods = ("ours",) if remedy == "warmup_on_boxes" else ("ignore_box", "ours")
    if remedy == "none":
        methods = ("boxes_bce",) + methods
    extra = {"pp_per_batch": a.pp_per_batch} if remedy == "pp_per_batch" else {}
    lr = a.lr / 4 if remedy == "low_lr" else a.lr
    return [
        dict(
            arrays=train,
            val=test,
            method=m,
            epochs=a.epochs,
            seed=s,
            cfg=cfg,
            width=a.width,
            lr=lr,
            batch_size=a.batch_size,
            eval_every=4,
            **extra,
        )
        for m in methods
        for s in range(a.seeds)
    ]


def main(argv=None):
    a = parse(argv)
    remedies = a.remedies.split(",")
    for r in remedies:
        if r not in REMEDIES:
            raise SystemExit(f"unknown remedy {r!r}; choose from {REMEDIES}")
    result = {"args": vars(a), "collapse_fraction": lu_experiments.COLLAPSE_FRACTION, "probs": {}}
    rows = []
    for p in a.car_probs if a.dataset == "toy" else ["msrc"]:
        knobs = {"class_probs": {"car": p}} if a.dataset == "toy" else {}
        train = lu.load_mixed_set(
            a.dataset, ["car"], a.n_pp, "train", a.n_train, a.size, a.data_root, 0, **knobs
        )
        test = lu.load_mixed_set(
            a.dataset, ["car"], a.n_test, "test", a.n_test, a.size, a.data_root, 0, **knobs
        )
        m = train["mask"]
        data = {
            "true_car_share": float((m == 1).sum() / (m != lu.IGNORE).sum()),
            "images_with_car": int((m == 1).reshape(len(m), -1).any(1).sum()),
            "pp_images_with_car": int(
                (m[train["pixel_perfect"]] == 1).reshape(a.n_pp, -1).any(1).sum()
            ),
            "labelled_car_share_boxes_bce": lu_experiments.labelled_object_share(train, False),
            "labelled_car_share_ignore": lu_experiments.labelled_object_share(train, True),
            "batches_without_car_boxes_bce": lu_experiments.batches_without_object(
                train, a.batch_size, False
            ),
            "batches_without_car_ignore": lu_experiments.batches_without_object(
                train, a.batch_size, True
            ),
        }
        print(f"\ncar probability {p}: {data}" if a.dataset == "toy" else f"\nMSRC, car: {data}")
        result["probs"][str(p)] = {"data": data, "runs": {}}
        for remedy in remedies:
            jobs = jobs_for(remedy, train, test, a)
            t0 = time.time()
            hists = lu_experiments.run_experiments(jobs, a.processes, desc=f"p {p}, {remedy}")
            seconds = time.time() - t0
            for method in dict.fromkeys(j["method"] for j in jobs):
                hs = [h for j, h in zip(jobs, hists) if j["method"] == method]
                iou = [h["miou"][-1] for h in hs]
                flags = [lu_experiments.collapsed(h) for h in hs]
                kept, note = lu_experiments.drop_collapsed(iou, flags)
                rows.append((p, remedy, method, kept, note, sum(flags), iou))
                result["probs"][str(p)]["runs"][f"{remedy}/{method}"] = {
                    "iou": iou,
                    "collapsed": flags,
                    "fg_share": [h["fg_share"][-1] for h in hs],
                    "true_fg_share": hs[0]["true_fg_share"],
                    "curves": [h["miou"] for h in hs],
                    "epochs": hs[0]["epoch"],
                    "seconds": round(seconds, 1),
                }
    print(
        f"\n{len(train['image'])} training images, {a.n_pp} pixel-perfect, {a.seeds} seeds, "
        f"{a.dataset} test split ({len(test['image'])} images)\n"
    )
    print("| car prob. | remedy | row | car IoU (runs not collapsed) | collapsed | per seed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p, remedy, method, kept, note, n, iou in rows:
        print(
            f"| {p} | {remedy} | {method} | {mean_std(kept)}{note} | {n} of {len(iou)} | "
            f"{', '.join(f'{v:.2f}' for v in iou)} |"
        )
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
