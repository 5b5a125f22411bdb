"""Step 1 on real photos: does an ImageNet-pretrained backbone make the CAMs? MSRC v2, MobileNetV2.

    .venv/bin/python tools/msrc_cam_check.py --data-root ../shared/realdata --out /tmp/msrc_cam.json

Trains step 1's classifier (``wsss_edu.steps.cam_step.train_step1``: image-level tags only, BCE per class,
Adam, random scale-crops and flips) on MSRC-21's train split (``get_dataset('msrc')``, 266 images)
twice — MobileNetV2 from ImageNet weights (``wsss_edu.pretrained``: torchvision's download, or the
file of ``WSSS_WEIGHTS_DIR`` / ``--weights-file``) and the same network from scratch — and scores
both on the *val* split (59 images):

* tag mAP: the classifier's scores against the image-level tags (average precision per class,
  mean over the classes present in val);
* CAM mIoU: the CAMs (scales ``--scales`` + flip, normalised per class over the image's *true*
  tags) turned into labels without a background plane (``cam.cams_to_labels(.., None)``: MSRC has
  no background class, every pixel belongs to one of the image's classes), mean IoU over the 21
  classes; also over the images with at least two tags (with one tag, any method is perfect);
* a tags-only baseline: each image painted with its most frequent tag (frequency in train pixels).

The pretrained network keeps its BatchNorm statistics (``ClassifierConfig.freeze_bn``: the
offline file's BN layers are fused to the identity); the scratch network trains its BN and all
its layers at ``--lr-scratch``. Not part of ``make test``; about 10 min on 2 cores.
"""

import argparse
import json
import time

import numpy as np
import torch

from wsss_edu import cam as C
from wsss_edu.datasets import get_dataset
from wsss_edu.metrics import ConfusionMeter
from wsss_edu.stats import pixel_frequency
from wsss_edu.steps import cam_step


def parse(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-root", required=True, help="folder holding msrc_v2/")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument(
        "--crop", type=int, default=224, help="random scale-crop side for training (px)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr-pretrained", type=float, default=1e-4, help="Adam, the ImageNet backbone")
    ap.add_argument("--lr-new", type=float, default=1e-2, help="Adam, the new classifier layer")
    ap.add_argument(
        "--lr-scratch", type=float, default=1e-3, help="Adam, every layer of the scratch network"
    )
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5])
    ap.add_argument(
        "--frozen-blocks",
        type=int,
        default=0,
        help="the pretrained MobileNetV2's first blocks kept as they are (ClassifierConfig.frozen_blocks)",
    )
    ap.add_argument("--runs", default="imagenet,scratch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="msrc_cam_check.json")
    return ap.parse_args(argv)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ranking ``positive`` first by ``scores`` (the mean of the precision
    at each positive's rank)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(float)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def cam_scores(model, val, scales, k: int) -> dict:
    """CAM mIoU on ``val`` without a background plane (all images; images with >= 2 tags)."""
    from wsss_edu.data import images_to_tensor

    meters = {"all": ConfusionMeter(k + 1), "two_tags": ConfusionMeter(k + 1)}
    model.eval()
    with torch.no_grad():
        for i in range(len(val)):
            s = val[i]
            x = images_to_tensor(s["image"][None])
            tags = torch.as_tensor(s["labels"])[None]
            cams = C.normalize_cams(C.multiscale_cam(model.cam, x, scales, True), tags)
            pred = C.cams_to_labels(cams, None)[0].numpy()
            meters["all"].update(s["mask"], pred)
            if tags.sum() >= 2:
                meters["two_tags"].update(s["mask"], pred)
    return {name: m.miou for name, m in meters.items()} | {"iou": meters["all"].iou[1:].tolist()}


def tags_only_scores(train, val, k: int) -> dict:
    """Each val image painted with the one of its tags that covers most training pixels."""
    counts = pixel_frequency(train, k + 1)
    meters = {"all": ConfusionMeter(k + 1), "two_tags": ConfusionMeter(k + 1)}
    for i in range(len(val)):
        s = val[i]
        tags = np.flatnonzero(s["labels"]) + 1
        pred = np.full(s["mask"].shape, tags[np.argmax(counts[tags])] if len(tags) else 0)
        meters["all"].update(s["mask"], pred)
        if len(tags) >= 2:
            meters["two_tags"].update(s["mask"], pred)
    return {name: m.miou for name, m in meters.items()}


def main(argv=None):
    a = parse(argv)
    torch.manual_seed(a.seed)
    train = get_dataset("msrc", a.data_root, "train")
    val = get_dataset("msrc", a.data_root, "val")
    k = train.num_classes - 1
    val_tags = np.stack([val[i]["labels"] for i in range(len(val))])
    result = {
        "args": vars(a),
        "n_train": len(train),
        "n_val": len(val),
        "val_images_two_tags": int((val_tags.sum(1) >= 2).sum()),
        "tags_only": tags_only_scores(train, val, k),
        "runs": {},
    }
    print(
        f"MSRC-21: {len(train)} train, {len(val)} val images ({result['val_images_two_tags']} with >= 2 tags); "
        f"tags-only baseline: mIoU {result['tags_only']['all']:.3f} (>= 2 tags {result['tags_only']['two_tags']:.3f})"
    )
    for run in a.runs.split(","):
        pretrained = run == "imagenet"
        cfg = cam_step.ClassifierConfig(
            backbone="mobilenet_v2",
            weights="imagenet" if pretrained else None,
            epochs=a.epochs,
            batch_size=a.batch_size,
            crop=a.crop,
            seed=a.seed,
            lr_pretrained=a.lr_pretrained if pretrained else a.lr_scratch,
            lr_new=a.lr_new if pretrained else a.lr_scratch,
            freeze_bn=pretrained,
            frozen_blocks=a.frozen_blocks if pretrained else 0,
        )
        t0 = time.time()
        model = cam_step.train_step1(train, cfg)
        t_train = time.time() - t0
        probs = cam_step.classifier_probs(model, val, batch_size=16, progress=False).numpy()
        aps = [
            average_precision(probs[:, c], val_tags[:, c] > 0)
            for c in range(k)
            if val_tags[:, c].any()
        ]
        t0 = time.time()
        scores = cam_scores(model, val, a.scales, k)
        t_cam = time.time() - t0
        result["runs"][run] = {
            "tag_map": float(np.mean(aps)),
            "cam_miou": scores["all"],
            "cam_miou_two_tags": scores["two_tags"],
            "cam_iou": scores["iou"],
            "seconds_train": round(t_train, 1),
            "seconds_cams_val": round(t_cam, 1),
        }
        print(
            f"{run}: tag mAP {np.mean(aps):.3f}, CAM mIoU {scores['all']:.3f} (>= 2 tags "
            f"{scores['two_tags']:.3f}); training {t_train:.0f} s, val CAMs {t_cam:.0f} s"
        )
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
