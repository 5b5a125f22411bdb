"""Measure rows of paper 000's Table 1 on the toy world for any setting and BootstrapConfig
(the evidence behind issue 3's note; not part of the course or the tests).

    .venv/bin/python notebooks/drafts/paper000_variants.py --size 48 --n 200 --pp 20 --epochs 10 \
        --methods pp_only,boxes_bce,ignore_box,ours --cfg '{"tau": 0.5, "warmup_epochs": 0}'
"""
import argparse
import json
import time

import numpy as np
import torch

from wsss_edu import label_uncertainty as lu
from wsss_edu.toy import CLASSES, ToyDataset

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
ap.add_argument("--size", type=int, default=48)
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--pp", type=int, default=20)
ap.add_argument("--val", type=int, default=150)
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--seeds", type=int, default=3)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--width", type=int, default=8)
ap.add_argument("--methods", default=",".join(lu.METHODS))
ap.add_argument("--cfg", default="{}", help="BootstrapConfig fields as JSON")
a = ap.parse_args()
torch.set_num_threads(2)
car = CLASSES.index("car")
knobs = dict(size=a.size, class_probs={"car": 0.85})
train = lu.mixed_supervision_arrays(ToyDataset("train", n=a.n, seed=0, **knobs), a.pp, {car: 1})
val = lu.mixed_supervision_arrays(ToyDataset("val", n=a.val, seed=0, **knobs), a.val, {car: 1})
cfg = lu.BootstrapConfig(**json.loads(a.cfg))
for m in a.methods.split(","):
    t = time.time()
    curves = [lu.train_experiment(train, val, m, 1, a.epochs, s, cfg, width=a.width, lr=a.lr,
                                  progress=False)[1]["miou"] for s in range(a.seeds)]
    final = np.array([c[-1] for c in curves])
    print(f"{m:11s} car IoU {final.mean():.3f} ± {final.std():.3f} {np.round(final, 3).tolist()} "
          f"({(time.time() - t) / a.seeds:.1f} s/run)  seed-0 curve {np.round(curves[0], 2).tolist()}",
          flush=True)
