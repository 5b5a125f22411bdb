"""Step 2 of paper 001 (IRNet) on the toy world, as a script: the evidence behind issue 4's notes
and the plan of notebook 04 (not part of the course or the tests).

    .venv/bin/python -m wsss_edu.runner --only 03 --output runs/draft     # notebook 03's CAMs
    .venv/bin/python notebooks/drafts/paper001_irnet_prototype.py --output runs/draft

It reads notebook 03's cached classifier and CAMs (default parameters), makes IRNet's relation
labels for the images passing the 0.8 confidence filter, trains the boundary and displacement
branches on the classifier's frozen stages, infers the boundary map (averaged with its flip) of
every training image, and walks the stride-4 CAMs for a grid of walk settings, printing the train
mIoU of each. The settings are compared on the *training* split here (the split the paper reports
on): the notebook must choose them on the validation split.
"""
import argparse
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

from wsss_edu import cam as C
from wsss_edu import irnet as I
from wsss_edu.data import images_to_tensor
from wsss_edu.metrics import ConfusionMeter
from wsss_edu.toy import ToyDataset
from wsss_edu.train import fit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--output", default="runs/draft", help="OUTPUT_DIR notebook 03 ran with")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1, help="boundary branch; displacement 10x")
    ap.add_argument("--train-radius", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    knobs = dict(size=64, missing_label_rate=0.5, imbalance=4.0)     # notebook 03's defaults
    train = ToyDataset("train", n=800, seed=0, **knobs)
    cfg = C.replace(C.ClassifierConfig(), drop_class=0, balance=True)
    view = C.tagged_view(train, cfg)
    tags = C.dataset_tags(view)
    data_key = dict(dataset="toy", n=800, seed=0, **knobs)
    model = C.cached_step1(args.output, train, data_key, cfg)
    folder = C.cached_cams(args.output, model, view, data_key, cfg)
    k = len(train.classes) - 1

    t0 = time.time()
    probs = C.classifier_probs(model, view, progress=False)
    idx = np.flatnonzero(C.confident_image_mask(probs, torch.as_tensor(tags)).numpy())
    rel = np.stack([I.relation_labels(view[i]["image"], C.load_cams(folder, view.names[i], k)) for i in idx])
    masks = np.stack([view[i]["mask"] for i in idx])
    ok = (rel != 255) & (masks != 255)
    print(f"relation labels: {len(idx)} confident images, {time.time() - t0:.1f} s; unsure "
          f"{(rel == 255).mean():.3f}; precision of the confident labels {(rel[ok] == masks[ok]).mean():.3f}")

    rel4 = torch.as_tensor(rel[:, 2::4, 2::4].copy())                 # stride 4 (centre pixels)
    imgs = images_to_tensor(np.stack([view[i]["image"] for i in idx]))
    net = I.IRNet(I.backbone_stages(model), width=32)
    offs = I.pair_offsets(args.train_radius)
    opt = torch.optim.SGD(net.param_groups(args.lr, 10 * args.lr), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    t1 = time.time()
    for _ in range(args.epochs):
        batches = [{"image": imgs[p], "relation": rel4[p]} for p in torch.randperm(len(idx)).split(16)]
        fit(net, batches, lambda m, b: I.irnet_loss(m, b, offs), opt, 1, progress=False)
    print(f"IRNet trained: {time.time() - t1:.1f} s")

    net.eval()
    allimg = images_to_tensor(np.stack([view[i]["image"] for i in range(len(view))]))
    with torch.no_grad():
        b1, _ = net(allimg)
        b2, _ = net(allimg.flip(-1))
    bnd = (b1 + b2.flip(-1)) / 2
    cams = torch.stack([C.load_cams(folder, n, k) for n in view.names])
    cams4 = F.interpolate(cams, size=bnd.shape[-2:], mode="bilinear", align_corners=False)
    print("CAM mIoU (θ 0.25):", round(C.cam_confusions(view, folder, [0.25], progress=False)[0].miou, 3))
    res = []
    for radius, exp_times, beta in itertools.product((2, 3, 5), (2, 4, 6, 8), (4, 10)):
        walked = torch.cat([I.random_walk(cams4[j:j + 100], bnd[j:j + 100], radius, beta, exp_times)
                            for j in range(0, len(view), 100)])
        for bg in (0.1, 0.2, 0.3, 0.4, 0.5):
            meter = ConfusionMeter(k + 1)
            for i in range(len(view)):
                keys = np.flatnonzero(tags[i])
                lab = (np.zeros((64, 64), np.int64) if len(keys) == 0 else
                       I.walk_to_labels(walked[i], keys, bg, size=(64, 64)).numpy())
                meter.update(view[i]["mask"], lab)
            res.append((round(meter.miou, 3), radius, exp_times, beta, bg))
    res.sort(key=lambda r: -r[0])
    print("best (train mIoU, radius, exp_times, beta, bg):", res[:8])
    print("IRNet's defaults (radius 5, exp_times 8, beta 10, bg 0.25 ~ 0.3):",
          [r for r in res if r[1:4] == (5, 8, 10)])


if __name__ == "__main__":
    main()
