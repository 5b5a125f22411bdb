"""The same toy scenes drawn larger: do paper 001's test-time augmentation and paper 002's URN
weights pay when the images are bigger than the quick profile's 64 px? The evidence behind the
"What reproduced" sections of notebooks 05 and 06.

The toy world draws its scenes from continuous shapes, so ``size`` changes the resolution, not
the scenes. This script reuses what notebooks 03-05 cached in OUTPUT at the quick defaults (the
64-px IRNet pseudo-labels), resizes them (nearest) to the scenes drawn at ``--size`` px
(``datasets.PseudoLabeled(resize=True)``) and trains notebook 05's DeepLabv3+ there:

    python -m wsss_edu.runner --only 03 04 05 --output runs/size      # once, ~9 min
    python tools/image_size_check.py tta --output runs/size --size 128 --seeds 0 1
    python tools/image_size_check.py urn --output runs/size --size 128 --seeds 0 1

``tta``: per seed, one network trained with DeepLab's usual augmentation (random rescale 0.5-2,
a crop of the image's size, flips; ``--no-rescale``: flips only, as the quick profile; ``--epochs``:
longer training than notebook 05's 10 epochs); val mIoU
without TTA, each scale alone (+ flip) and the paper's TTA (0.5, 1, 2 × flip).
``urn``: F_S = the network trained with flips only (seed 0), the uncertainty pass (notebook 06's
settings), then per seed the plain (Y = 1) and the URN (t = 0.05) networks on the cyclic masks;
the share of each class's pixels that Y down-weights.
Networks and the uncertainty pass are cached under OUTPUT/cache; the numbers are printed and
written to OUTPUT/size_check/<kind>_<size>px.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from functools import partial
from pathlib import Path

import numpy as np

from wsss_edu import datasets, params, urn
from wsss_edu.cache import cache_key, params_key
from wsss_edu.steps import cam_step, irnet_step, segmenter_step, urn_step

TTA_SCALES = (0.5, 1.0, 2.0)


def pipeline(output):
    """Notebooks 03-04 at the quick defaults, from OUTPUT's cache: (setup, step 1, step 2)."""
    s = params.setup("image_size_check", "toy", "", output, "quick", "cpu", 0)
    st = cam_step.step1(s, progress=False)
    ircfg, backbone, weights = irnet_step.step2_config("quick", s.seed)
    return (
        s,
        st,
        irnet_step.step2(s, st, ircfg, backbone, weights, progress=False, labels_bg=0.3),
    )  # notebook 05's labels


def resized_splits(s, st, ir, size):
    """The training scenes drawn at ``size`` px with step 2's pseudo-labels resized to them, and
    the validation scenes at ``size`` px (true masks)."""
    knobs = {k: st.data_key[k] for k in ("missing_label_rate", "imbalance")} | {
        "size": size
    }  # step 1's
    train, val = params.load_splits(s, len(st.train), len(st.val), **knobs)
    return datasets.PseudoLabeled(cam_step.tagged_view(train, st.cfg), ir.folder, resize=True), val


def network(s, data, ir, size, seed, rescale, epochs=None):
    cfg = segmenter_step.step3_config(
        "quick", seed, SEG_CROP=size if rescale else None, SEG_EPOCHS=epochs
    )
    key = {"pseudo_labels": ir.folder.name, "size": size}
    return segmenter_step.cached_segmenter(s.output_dir, data, key, cfg, "cpu", progress=False), cfg


def tta(output, size, seeds, rescale=True, epochs=None):
    s, st, ir = pipeline(output)
    data, val = resized_splits(s, st, ir, size)
    out = {}
    for seed in seeds:
        net, _ = network(s, data, ir, size, seed, rescale, epochs)
        row = {"no TTA": segmenter_step.evaluate(net, val, progress=False).miou}
        row |= {
            f"scale {x} + flip": segmenter_step.evaluate(
                net, val, tta=True, scales=(x,), progress=False
            ).miou
            for x in TTA_SCALES
        }
        row["TTA"] = segmenter_step.evaluate(
            net, val, tta=True, scales=TTA_SCALES, progress=False
        ).miou
        out[f"seed {seed}"] = row
        print(f"seed {seed}:", {k: round(v, 3) for k, v in row.items()}, flush=True)
    return out


def urn_check(output, size, seeds, t=0.05):
    s, st, ir = pipeline(output)
    data, val = resized_splits(s, st, ir, size)
    teacher, seg = network(s, data, ir, size, 0, rescale=False)
    key = {
        "teacher": {
            "pseudo_labels": ir.folder.name,
            "size": size,
            "segmenter": params_key(dataclasses.asdict(seg)),
        },
        "factors": list(urn.VOC_FACTORS),
        "p_scales": [1.0],
        "crf": "urn",
        "background": False,
    }
    folder = s.output_dir / "cache" / "urn" / cache_key(key, urn_step.CODE_VERSION)
    urn_step.uncertainty_pass(
        teacher,
        data,
        folder,
        urn.VOC_FACTORS,
        (1.0,),
        "urn",
        False,
        processes=2,
        device="cpu",
        model_factory=partial(segmenter_step.make_model, data.num_classes, seg),
        progress=False,
    )
    labelled, down = np.zeros(data.num_classes), np.zeros(data.num_classes)
    for i in range(len(data)):
        label, w = urn.read_label_and_weight(folder / f"{data.names[i]}.png")
        band = urn.loss_weight(1 - w, t) < 1
        for c in range(data.num_classes):
            labelled[c] += (label == c).sum()
            down[c] += (band & (label == c)).sum()
    out = {
        "teacher": segmenter_step.evaluate(teacher, val, progress=False).miou,
        "down-weighted share": dict(
            zip(data.classes, np.round(down / np.maximum(labelled, 1), 3).tolist())
        ),
    }
    rows = {"plain": ("ce", 1.0), "URN": ("weighted", t)}
    jobs = [
        (
            urn_step.URNLabeled(data, folder, tt),
            {"urn": folder.name, "t": tt},
            dataclasses.replace(seg, loss=loss, seed=seed),
        )
        for seed in seeds
        for loss, tt in rows.values()
    ]
    nets = segmenter_step.cached_segmenters(
        s.output_dir, jobs, "cpu", 2, "plain and URN networks", progress=False
    )
    for (seed, row), net in zip([(sd, r) for sd in seeds for r in rows], nets):
        m = segmenter_step.evaluate(net, val, progress=False)
        out[f"{row}, seed {seed}"] = {
            "miou": m.miou,
            "iou": dict(zip(data.classes, np.round(m.iou, 3).tolist())),
        }
        print(f"{row}, seed {seed}: mIoU {m.miou:.3f}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("kind", choices=("tta", "urn"))
    ap.add_argument("--output", required=True, help="the OUTPUT_DIR notebooks 03-05 ran into")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-rescale", action="store_true", help="tta: train with flips only")
    ap.add_argument(
        "--epochs", type=int, default=None, help="tta: training epochs (default: notebook 05's, 10)"
    )
    a = ap.parse_args(argv)
    if a.kind == "tta":
        res = tta(a.output, a.size, a.seeds, rescale=not a.no_rescale, epochs=a.epochs)
    else:
        res = urn_check(a.output, a.size, a.seeds)
    tag = ("_no_rescale" if a.no_rescale else "") + (f"_{a.epochs}epochs" if a.epochs else "")
    path = Path(a.output) / "size_check" / f"{a.kind}{tag}_{a.size}px.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    print("written", path)


if __name__ == "__main__":
    main()
