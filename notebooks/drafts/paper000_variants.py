"""Measure rows of paper 000's tables on the toy world for any setting and BootstrapConfig (the
evidence behind issue 3's notes; not part of the course or the tests).

    .venv/bin/python notebooks/drafts/paper000_variants.py --size 48 --n 200 --pp 20 --epochs 16 \\
        --methods pp_only,boxes_bce,ignore_box,ours --cfg '{"tau": 0.5, "warmup_epochs": 12}'

``--classes car,person`` gives the multi-class table (mIoU); ``--auroc`` also prints, for "ours"
in the binary table, how well sigma^2 separates background from car pixels inside the boxes of 40
box-labelled training images (lu_experiments.uncertainty_auroc) after every epoch.
"""

import argparse
import json
import time

import numpy as np
import torch

from wsss_edu import label_uncertainty as lu
from wsss_edu.steps import lu_experiments
from wsss_edu.toy import CLASSES, ToyDataset

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
ap.add_argument("--size", type=int, default=48)
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--pp", type=int, default=20)
ap.add_argument("--val", type=int, default=150)
ap.add_argument("--epochs", type=int, default=16)
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--width", type=int, default=8)
ap.add_argument("--border", type=int, default=1, help="toy ignore band at object edges (px)")
ap.add_argument("--classes", default="car")
ap.add_argument("--methods", default=",".join(lu_experiments.METHODS))
ap.add_argument("--cfg", default="{}", help="BootstrapConfig fields as JSON")
ap.add_argument("--auroc", action="store_true")
ap.add_argument(
    "--pp-per-batch", type=int, default=None, help="PP images in every batch (mixed-set rows)"
)
a = ap.parse_args()
torch.set_num_threads(2)
classes = a.classes.split(",")
cmap = {CLASSES.index(c): k + 1 for k, c in enumerate(classes)}
probs = lu.TOY_CLASS_PROBS[tuple(classes)]  # as notebooks 02 and 02b
knobs = dict(size=a.size, class_probs=probs, border=a.border)
train = lu.mixed_supervision_arrays(ToyDataset("train", n=a.n, seed=0, **knobs), a.pp, cmap)
val = lu.mixed_supervision_arrays(ToyDataset("val", n=a.val, seed=0, **knobs), a.val, cmap)
cfg = lu_experiments.BootstrapConfig(**json.loads(a.cfg))
num_logits = 1 if len(classes) == 1 else len(classes) + 1
watch = np.flatnonzero(~train["pixel_perfect"])[:40]
bg_in = train["in_box"][watch] & (train["mask"][watch] == 0)
obj_in = train["in_box"][watch] & (train["mask"][watch] == 1)
for m in a.methods.split(","):
    t = time.time()
    extra = (
        {"watch": train["image"][watch]} if (a.auroc and m == "ours" and num_logits == 1) else {}
    )
    hist = [
        lu_experiments.train_experiment(
            train,
            val,
            m,
            num_logits,
            a.epochs,
            s,
            cfg,
            width=a.width,
            lr=a.lr,
            batch_size=a.batch,
            pp_per_batch=a.pp_per_batch,
            progress=False,
            **extra,
        )[1]
        for s in range(a.seeds)
    ]
    final = np.array([h["miou"][-1] for h in hist])
    print(
        f"{m:11s} {'IoU' if num_logits == 1 else 'mIoU'} {final.mean():.3f} ± {final.std():.3f} "
        f"{np.round(final, 3).tolist()} ({(time.time() - t) / a.seeds:.1f} s/run)  "
        f"seed-0 curve {np.round(hist[0]['miou'], 2).tolist()}",
        flush=True,
    )
    if num_logits > 1:
        print(
            f"    per-class IoU by seed {np.round([h['iou'][-1] for h in hist], 3).tolist()}",
            flush=True,
        )
    for s, h in enumerate(hist):
        if "watch" in h:
            auroc = [
                lu_experiments.uncertainty_auroc(s2[:, 0], bg_in, obj_in) for _, s2 in h["watch"]
            ]
            print(f"    seed {s}: sigma^2 AUROC per epoch {np.round(auroc, 2).tolist()}")
