# %% [markdown]
# # 00 · The weakly-supervised segmentation problem, and the toy world
#
# **Semantic segmentation** gives every pixel a class. Training a network for it normally needs a
# *pixel-perfect mask* per image, the most expensive label in computer vision. **Weakly-supervised
# semantic segmentation (WSSS)** trains the same pixel-accurate model from cheaper labels:
#
# | label | what the annotator gives | cost per image (PASCAL VOC) |
# | --- | --- | --- |
# | **mask** | a class for every pixel | ≈ 240 s (Bearman et al. 2016) |
# | **boxes** | two corners per object | ≈ 7 s (extreme clicking) to 35 s (drawing) per box (Papadopoulos et al. 2017) |
# | **tags** | which classes occur (image-level, multi-hot) | ≈ 20 s (Bearman et al. 2016) |
#
# This course builds four published methods on top of each other:
#
# 1. **01-02** boxes plus a few masks, with *aleatoric logits and online bootstrapping* (Neven et al.);
# 2. **03-05** tags only: classifier + CAM → IRNet → DeepLabv3+ (*NoPeopleAllowed*, Dobko et al.);
# 3. **06** *URN*: how uncertain each pseudo-mask pixel is, used as a loss weight (Li et al.);
# 4. **07** *RRM*: reliable regions and a dense energy loss in one network (Zhang et al.);
# 5. **08** all of them side by side.
#
# Real datasets (PASCAL VOC, Cityscapes, CamVid, COCO) take hours on a GPU. So every notebook runs by
# default on a **toy world** the package draws itself, small enough for a laptop CPU and built so that
# each paper's problem shows up in it. This notebook introduces the label types, the toy world and its
# knobs, and trains a *fully-supervised* reference model: the upper bound every later notebook
# compares against.
#
# The first code cell holds the parameters. Change them here, or from the command line with papermill
# (`-p PROFILE full -p DATASET voc -p DATA_ROOT /data`).

# %% tags=["parameters"]
DATASET = "toy"        # toy | voc | cityscapes | camvid | coco
DATA_ROOT = ""         # folder holding a real dataset (`python -m wsss_edu.download --help`)
OUTPUT_DIR = ""        # default: $WSSS_OUTPUT_DIR or <repo>/runs
PROFILE = "quick"      # quick (CPU minutes) | full (paper settings, a GPU)
DEVICE = "auto"        # auto | cpu | cuda | mps
SEED = 0
# Size knobs: None = the profile's default (quick | full).
IMAGE_SIZE = None      # toy-world image side in px (64 | 320)
N_TRAIN = None         # toy-world training images (1000 | 5000)
N_VAL = None           # toy-world validation images (200 | 1000)
EPOCHS = None          # (10 | 30)
BATCH_SIZE = None      # (16 | 16)
CROP = None            # training crop on real datasets, px (256 | 512)
WEIGHTS = "imagenet"   # full profile backbone weights: "imagenet" | None (from scratch)

# %% tags=["colab"] jupyter={"source_hidden": true}
# On Colab only (a no-op anywhere else): install the course's package into this runtime.
# From a repository: run `%env WSSS_EDU_SOURCE=git+https://github.com/<owner>/wsss_edu` first.
import sys

if "google.colab" in sys.modules:
    import importlib
    import os
    import subprocess

    _source = os.environ.get("WSSS_EDU_SOURCE", "wsss_edu[notebooks]")
    if "://" in _source and " @ " not in _source:  # a URL: with the notebooks' extra
        _source = f"wsss_edu[notebooks] @ {_source}"
    print(f"Colab: pip install {_source}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", _source])
    importlib.invalidate_caches()
    print(
        f"Colab: installed {_source} (if pip upgraded a package already imported, "
        "Runtime > Restart session, then run the cells again)"
    )

# %% [markdown]
# `setup` checks the parameters (a typo lists the valid values), seeds every random generator and
# picks the device. The `full` profile swaps the small U-Net for torchvision's DeepLabv3 with a
# ResNet-50 backbone and draws the toy world larger.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from wsss_edu import params, stats, toy, viz

run = params.setup("00_wsss_and_the_toy_world", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE,
                   SEED, namespace=globals())
sizes = params.profile_values(PROFILE, dict(IMAGE_SIZE=(64, 320), N_TRAIN=(1000, 5000), N_VAL=(200, 1000),
                                        EPOCHS=(10, 30), BATCH_SIZE=(16, 16), CROP=(256, 512)),
                          IMAGE_SIZE=IMAGE_SIZE, N_TRAIN=N_TRAIN, N_VAL=N_VAL, EPOCHS=EPOCHS,
                          BATCH_SIZE=BATCH_SIZE, CROP=CROP)
IMAGE_SIZE, N_TRAIN, N_VAL, EPOCHS, BATCH_SIZE, CROP = (sizes[k] for k in sizes)
MODEL = "unet" if run.quick else "deeplabv3_resnet50"
print(sizes, MODEL)

# %% [markdown]
# ## 1 · One sample, three kinds of label
#
# Every dataset in the package, the toy world and the real loaders alike, returns the same *sample*:
# a dict holding the RGB `image`, the semantic `mask` (0 background, 1…K classes, **255 = ignore**, the
# thin band VOC draws around objects), `instances`, `boxes` (x0, y0, x1, y1) with their classes, and
# the image-level `labels` (a multi-hot vector over the K foreground classes). A method uses only the
# part of the sample its label type allows.

# %%
train_set, val_set = params.load_splits(run, N_TRAIN, N_VAL, size=IMAGE_SIZE)
CLASSES = train_set.classes
print(f"{len(train_set)} training / {len(val_set)} validation images; classes: {CLASSES}")
sample = train_set[0]
print({k: (v.shape, v.dtype) if hasattr(v, "shape") else v for k, v in sample.items()})

# %%
viz.show_samples(train_set, range(min(8, len(train_set))))
plt.show()
plt.close()

# %% [markdown]
# Top row: the image with its boxes and, as title, its tags. Middle: the mask (white = ignore band).
# Bottom: instances, one colour per object.
#
# ## 2 · What each label type costs
#
# With the per-label times above, annotating this training split would take:

# %%
cost = stats.label_cost_hours(train_set, limit=2000)
fig, ax = plt.subplots(figsize=(4.5, 2.5))
ax.barh(list(cost), list(cost.values()), color=["tab:green", "tab:orange", "tab:red"])
ax.set_xlabel("annotation time (hours)")
ax.set_title("labelling the training split")
plt.show()
plt.close()
print({k: round(v, 1) for k, v in cost.items()})

# %% [markdown]
# Masks cost an order of magnitude more than tags; boxes sit in between. WSSS asks how much of the
# mask-trained accuracy the cheap labels can buy.
#
# ## 3 · The toy world
#
# Six foreground classes, each carrying one of the problems the papers address:
#
# | class | what it is for |
# | --- | --- |
# | `person` | co-occurs with and stands in front of the other classes; its tag can go missing (LID's 'person', paper 001) |
# | `car` | fills only part of its box (body, cabin, wheels): a box is a poor mask (paper 000) |
# | `boat` | always on **water**, a background region rarely seen without boats: CAMs leak into the context (papers 001-003) |
# | `cat`, `dog` | the same body and fur; only the small head tells them apart: CAMs cover the head, not the animal |
# | `bottle` | small, and rarer when class imbalance is switched on |
#
# One example of each class:

# %%
masks = [train_set[i]["mask"] for i in range(min(300, len(train_set)))]
idx = []  # for each class, the image where it covers the most pixels (each image used once)
for c in range(1, len(CLASSES)):
    order = np.argsort([-(m == c).sum() for m in masks])
    idx.append(next((int(i) for i in order if int(i) not in idx), int(order[0])))
viz.show_grid([[train_set[i]["image"] for i in idx], [train_set[i]["mask"] for i in idx]],
              titles=CLASSES[1:])
plt.show()
plt.close()

# %% [markdown]
# ### How much of its box does an object fill?
#
# Paper 000 trains on boxes. Using a box as the mask labels every pixel inside it as the object, so
# the box is wrong on a fraction 1 − *fill* of its pixels:

# %%
fill = stats.box_fill_fraction(train_set, len(CLASSES), limit=1000)
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.bar(CLASSES[1:], fill[1:], color=viz.voc_palette()[1:len(CLASSES)] / 255)
ax.set_ylim(0, 1)
ax.set_ylabel("object pixels / box pixels")
plt.show()
plt.close()
print(dict(zip(CLASSES[1:], np.round(fill[1:], 2))))

# %% [markdown]
# ### Who appears with whom
#
# P(column class | row class) over the training tags. The `person` row and column are the busiest: a
# person joins most scenes. A classifier trained on these tags may learn "boat" partly from people
# and water, which is why its class activation maps (notebook 03) spill over.

# %%
co = stats.cooccurrence(train_set, limit=1000)
fig, ax = plt.subplots(figsize=(4, 3.5))
im = ax.imshow(co, vmin=0, vmax=1, cmap="Blues")
ax.set_xticks(range(len(CLASSES) - 1), CLASSES[1:], rotation=45)
ax.set_yticks(range(len(CLASSES) - 1), CLASSES[1:])
plt.colorbar(im, ax=ax)
plt.show()
plt.close()

# %% [markdown]
# ### Explore
#
# `viz.show_toy_world` draws a few samples for any seed and knobs. Below it, sliders for the knobs:
# set them, then press **Run Interact** to redraw.

# %%
viz.show_toy_world(seed=SEED, size=IMAGE_SIZE)
plt.show()
plt.close()


# %%
# NBVAL_IGNORE_OUTPUT
def explore(seed=0, size=64, imbalance=1.0, missing_label_rate=0.0, mask_noise=0.0, pixel_perfect=1.0):
    viz.show_toy_world(seed=seed, size=size, imbalance=imbalance, missing_label_rate=missing_label_rate,
                       mask_noise=mask_noise, pixel_perfect=pixel_perfect)
    plt.show()
    plt.close()

viz.sliders(explore, seed=(0, 50), size=(32, 128, 16), imbalance=(1.0, 10.0, 0.5),
         missing_label_rate=(0.0, 1.0, 0.1), mask_noise=(0.0, 1.0, 0.1), pixel_perfect=(0.0, 1.0, 0.1))

# %% [markdown]
# ## 4 · The knobs
#
# The toy world's knobs switch on the data problems the papers address, one at a time. Each figure
# below compares the default world with one knob turned (the cells are skipped on real datasets,
# whose problems are what they are).
#
# **Context.** Boats always float on water; water without a boat is rare (`water_without_boat`):

# %%
if DATASET == "toy":
    rates = {}
    for w in (0.1, 0.5):
        d = toy.ToyDataset("train", n=400, seed=SEED, size=64, water_without_boat=w)
        water = np.array([d[i]["has_water"] for i in range(len(d))])
        boat = np.array([d[i]["labels"][CLASSES.index("boat") - 1] for i in range(len(d))]) > 0
        rates[w] = (water[boat].mean(), water[~boat].mean())
    fig, ax = plt.subplots(figsize=(4.5, 2.5))
    for j, (w, (pb, pn)) in enumerate(rates.items()):
        ax.bar([j * 3, j * 3 + 1], [pb, pn], color=["tab:blue", "tab:gray"])
    ax.set_xticks([0, 1, 3, 4], ["boat\n(0.1)", "no boat\n(0.1)", "boat\n(0.5)", "no boat\n(0.5)"])
    ax.set_ylabel("P(water)")
    ax.set_title("water_without_boat = 0.1 vs 0.5")
    plt.show()
    plt.close()

# %% [markdown]
# **Small discriminative parts.** Cats and dogs share body and fur; only the head differs:

# %%
if DATASET == "toy":
    alone = lambda c: [i for i in range(len(train_set))  # images holding class c and nothing else
                       if train_set[i]["labels_clean"].sum() == 1 and train_set[i]["labels_clean"][c - 1]]
    pets = alone(CLASSES.index("cat"))[:4] + alone(CLASSES.index("dog"))[:4]
    viz.show_grid([[train_set[i]["image"] for i in pets]], titles=["cat"] * 4 + ["dog"] * 4)
    plt.show()
    plt.close()

# %% [markdown]
# **Missing labels** (`missing_label_rate`) drops the `person` tag (`missing_label_class`) from a
# fraction of images, as in the LID challenge; the masks stay true. **Class imbalance**
# (`imbalance`) makes the classes geometrically rarer, the last `imbalance` times rarer than the first.

# %%
if DATASET == "toy":
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
    for ax, knobs, title in ((axes[0], dict(missing_label_rate=0.6), "missing_label_rate = 0.6"),
                             (axes[1], dict(imbalance=8.0), "imbalance = 8")):
        base = stats.tag_frequency(toy.ToyDataset("train", n=400, seed=SEED, size=64))
        turned = stats.tag_frequency(toy.ToyDataset("train", n=400, seed=SEED, size=64, **knobs))
        x = np.arange(len(CLASSES) - 1)
        ax.bar(x - 0.2, base, 0.4, label="default")
        ax.bar(x + 0.2, turned, 0.4, label="knob turned")
        ax.set_xticks(x, CLASSES[1:], rotation=30)
        ax.set_ylabel("images tagged")
        ax.set_title(title)
    axes[0].legend()
    plt.show()
    plt.close()

# %% [markdown]
# **Pixel-perfect / box split** (`pixel_perfect`): the fraction of images whose mask may be used;
# the others offer only their boxes (paper 000). **Label noise**: `mask_noise` corrupts the mask like
# a pseudo-mask (the clean one stays in `mask_clean`, for evaluation), `tag_noise` flips tags,
# `box_noise` jitters boxes.

# %%
if DATASET == "toy":
    mixed = toy.ToyDataset("train", n=8, seed=SEED, size=IMAGE_SIZE, pixel_perfect=0.25,
                           mask_noise=0.6)
    fig, axes = plt.subplots(3, 8, figsize=(14, 5.4))
    for j in range(8):
        s = mixed[j]
        axes[0][j].imshow(s["image"])
        viz.draw_boxes(axes[0][j], s["boxes"], s["box_labels"])
        axes[0][j].set_title("pixel-perfect" if s["pixel_label"] else "boxes only", fontsize=8)
        axes[1][j].imshow(viz.colorize(s["mask_clean"]))
        axes[2][j].imshow(viz.colorize(s["mask"]))
    for a, t in zip(axes[:, 0], ("image, boxes", "clean mask", "mask_noise = 0.6")):
        a.set_ylabel(t, fontsize=8)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    plt.show()
    plt.close()
    print("pixel-perfect images:", mixed.pixel_perfect.sum(), "of", len(mixed))

# %% [markdown]
# **Splits and seeds.** Train, val and test come from disjoint random streams, and the same seed gives
# the same arrays: results are reproducible, and nothing leaks between splits.

# %%
if DATASET == "toy":
    again = toy.ToyDataset("train", n=4, seed=SEED, size=IMAGE_SIZE)
    assert all(np.array_equal(again[i]["image"], train_set[i]["image"]) for i in range(4))
    assert not np.array_equal(val_set[0]["image"], train_set[0]["image"])
    print("same seed → same images; train and val differ")

# %% [markdown]
# ## 5 · The fully-supervised reference
#
# The best a weakly-supervised method can hope for is what the same network reaches with every mask.
# We train it once here: cross-entropy per pixel (ignore band excluded), Adam, horizontal flips.
# Quality is the **mean intersection-over-union** (mIoU) over the classes, from one confusion matrix
# accumulated over the whole validation split:
#
# $$\mathrm{IoU}_c = \frac{TP_c}{TP_c + FP_c + FN_c}, \qquad \mathrm{mIoU} = \frac{1}{C}\sum_c \mathrm{IoU}_c .$$
#
# The trained weights go to the artifact cache (keyed by the parameters), so notebook 08 and a
# re-run reuse them instead of training again.

# %%
from wsss_edu import cache, data, models, threads, train


def make_loader(ds, shuffle):
    if DATASET == "toy":
        arrays = ds.arrays(("image", "mask"))
        return torch.utils.data.DataLoader(data.ArrayDataset(arrays, flip=shuffle),
                                           batch_size=BATCH_SIZE, shuffle=shuffle)
    return torch.utils.data.DataLoader(data.SegTransformDataset(ds, crop=CROP if shuffle else None),
                                       batch_size=BATCH_SIZE if shuffle else 1, shuffle=shuffle,
                                       **threads.loader_options(run.device))

train_loader, val_loader = make_loader(train_set, True), make_loader(val_set, False)

# %%
key = dict(notebook="00", dataset=DATASET, data_root=str(DATA_ROOT), model=MODEL, size=IMAGE_SIZE,
           n=len(train_set), epochs=EPOCHS, batch=BATCH_SIZE, crop=CROP, weights=str(WEIGHTS), seed=SEED)

def train_reference():
    train.seed_everything(SEED)
    net = models.make_segmenter(MODEL, len(CLASSES),
                                **({} if run.quick else {"weights": WEIGHTS or None}))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3 if run.quick else 1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"],
                                                total_steps=EPOCHS * len(train_loader))
    hist = train.fit(net, train_loader, train.cross_entropy_loss, opt, EPOCHS, run.device, sched,
                     checkpoint=cache.checkpoint_path(run.output_dir, "reference_model", key), desc="fully supervised")
    return {"model": net.state_dict(), "loss": torch.tensor(hist["loss"])}

ref = cache.cached(run.output_dir, "reference_model", key, train_reference)
net = models.make_segmenter(MODEL, len(CLASSES)).to(run.device)
net.load_state_dict(ref["model"])

# %%
meter = train.evaluate_segmentation(net, val_loader, len(CLASSES), run.device)
miou_full = meter.miou
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
axes[0].plot(ref["loss"].numpy(), marker="o")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("training loss")
axes[1].bar(CLASSES, meter.iou, color=viz.voc_palette()[:len(CLASSES)] / 255)
axes[1].set_ylim(0, 1)
axes[1].set_title(f"validation IoU per class (mIoU {miou_full:.3f})")
axes[1].tick_params(axis="x", rotation=30)
plt.show()
plt.close()
print(" | ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, meter.iou)))

# %%
rows = [[], [], []]
for batch in val_loader:  # the first 8 validation images (real datasets come one per batch)
    with torch.no_grad():
        pred = net(batch["image"].to(run.device)).argmax(1).cpu().numpy().astype(np.uint8)
    rows[0] += list(data.tensor_to_images(batch["image"]))
    rows[1] += list(batch["mask"].numpy().astype(np.uint8))
    rows[2] += list(pred)
    if len(rows[0]) >= 8:
        break
viz.show_grid([r[:8] for r in rows], row_titles=["image", "ground truth", "prediction"])
plt.show()
plt.close()

# %% [markdown]
# The headline number of this notebook, recorded for the others (`runs/metrics/00_wsss_and_the_toy_world.json`):

# %%
run.record({"miou_full_supervision": miou_full, "toy_car_box_fill": float(fill[CLASSES.index("car")])
          if DATASET == "toy" else None})
print(f"miou_full_supervision = {miou_full:.3f}")

# %% [markdown]
# A check that the reference is worth comparing against: with every mask, the network must segment
# the toy world well (a weakly-supervised method reaching, say, 80 % of this is then meaningful).

# %%
if DATASET == "toy" and run.quick:
    assert miou_full > 0.6, f"the fully-supervised reference is too weak to be an upper bound: {miou_full:.3f}"

# %% [markdown]
# ## Summary
#
# * WSSS trains pixel-accurate models from labels that cost 10× less than masks: boxes, or tags.
# * Every dataset in the package returns the same sample (image, mask with a 255 ignore band,
#   instances, boxes, tags), so each method reads only what its label type allows.
# * The toy world makes each paper's problem visible in CPU minutes: boxes that overfill (car),
#   context bias (boat on water), small discriminative parts (cat vs dog), co-occurrence and missing
#   labels (person), imbalance and label noise as knobs.
# * `miou_full_supervision` is the upper bound the next notebooks measure themselves against.

# %% [markdown]
# ## Exercises
#
# Each exercise is one code cell: write your answer between the markers and run it; the `assert`
# lines below the answer check it. They reuse this notebook's reference network and draw small
# toy worlds (seconds each): nothing is retrained.

# %% [markdown]
# ### Exercise 1 — mIoU by hand, and why over the whole split
#
# Recompute §5's number without the package: run `net` over `val_loader` and define `cm`, the
# C × C confusion matrix (rows = true class, columns = predicted class, pixels labelled 255 left
# out), `my_iou` (C,), the IoU of every class from `cm`, and `my_miou`, their mean. Then define
# `per_image_miou`: the mean over the validation images of each image's *own* mIoU (over the
# classes that occur in its mask or its prediction). Which is larger? Why do VOC and this course
# accumulate one matrix over the split instead?

# %% tags=["exercise"]
C = len(CLASSES)
### BEGIN SOLUTION
def image_ious(c):   # IoU per class from a confusion matrix; NaN for a class absent from both
    tp = np.diag(c).astype(float)
    union = c.sum(0) + c.sum(1) - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

cm, per_image = np.zeros((C, C), np.int64), []
net.eval()
with torch.no_grad():
    for batch in val_loader:
        preds = net(batch["image"].to(run.device)).argmax(1).cpu().numpy()
        for gt, pred in zip(batch["mask"].numpy(), preds):
            keep = gt != 255
            c = np.bincount(gt[keep] * C + pred[keep], minlength=C * C).reshape(C, C)
            cm += c
            per_image.append(np.nanmean(image_ious(c)))
my_iou = image_ious(cm)
my_miou = float(np.nanmean(my_iou))
per_image_miou = float(np.mean(per_image))
print(f"mIoU over the split {my_miou:.3f}, mean of per-image mIoUs {per_image_miou:.3f}")
### END SOLUTION
assert cm.shape == (C, C) and cm.sum() == meter.cm.sum(), "every non-ignored pixel counted once"
assert np.allclose(my_iou, meter.iou, atol=1e-3, equal_nan=True) and abs(my_miou - miou_full) < 1e-3
assert 0 < per_image_miou < 1
if DATASET == "toy" and run.quick:
    assert per_image_miou < my_miou   # small objects weigh as much as large ones in their image

# %% [markdown] tags=["solution"]
# The mean of the per-image mIoUs is lower (0.90 against 0.97 here). In one image, a class is
# often a single small object: the few misclassified pixels on its outline are a large share of
# *its* IoU, and that image's mIoU weighs it as much as the background. The split-level matrix
# weighs every pixel equally, so a class's IoU is dominated by its large instances. Neither is
# wrong, but they are different numbers: the split-level one is the convention (VOC, Cityscapes)
# and does not depend on how the split is cut into images or batches — the per-image mean would
# also be undefined for an image whose every pixel is ignored.

# %% [markdown]
# ### Exercise 2 — The water shortcut
#
# Boats always float on water, and water appears without a boat with probability
# `water_without_boat`. A classifier trained on tags may therefore learn "water ⇒ boat". How good is
# that shortcut? For the two worlds `worlds` below (400 training images each), define
# `shortcut_acc`, a dict {w: share of the images where "the image has water" (`has_water`) equals
# "the image is tagged boat"}, and `p_boat_given_water`, a dict {w: P(boat tag | water)}. Which
# world makes the shortcut attractive, and what does the boat's CAM then highlight?

# %% tags=["exercise"]
BOAT = toy.CLASSES.index("boat") - 1          # the boat's position in the tag vector
worlds = {w: toy.ToyDataset("train", n=400, seed=SEED, size=64, water_without_boat=w) for w in (0.1, 0.5)}
### BEGIN SOLUTION
shortcut_acc, p_boat_given_water = {}, {}
for w, d in worlds.items():
    water = np.array([d[i]["has_water"] for i in range(len(d))])
    boat = np.array([d[i]["labels"][BOAT] for i in range(len(d))]) > 0
    shortcut_acc[w] = float((water == boat).mean())
    p_boat_given_water[w] = float(boat[water].mean())
print({w: round(v, 3) for w, v in shortcut_acc.items()},
      {w: round(v, 3) for w, v in p_boat_given_water.items()})
### END SOLUTION
for w, d in worlds.items():
    p = stats.tag_frequency(d)[BOAT]                                # P(boat)
    p_water = np.mean([d[i]["has_water"] for i in range(len(d))])  # P(water)
    # boats always float on water: the shortcut errs only on water without a boat, and Bayes
    # gives P(boat | water) = P(water | boat) P(boat) / P(water) with P(water | boat) = 1
    assert abs((1 - shortcut_acc[w]) - (p_water - p)) < 1e-6, (w, shortcut_acc[w])
    assert abs(p_boat_given_water[w] - p / p_water) < 1e-6, (w, p_boat_given_water[w])
assert shortcut_acc[0.1] > shortcut_acc[0.5] and p_boat_given_water[0.1] > p_boat_given_water[0.5]

# %% [markdown] tags=["solution"]
# In the default world (`water_without_boat = 0.1`) "water ⇒ boat" gets the boat tag right on about
# 93 % of the images: 80 % of the images with water do show a boat. A classifier minimising its
# loss on tags has every reason to use the water, and its class activation map for *boat* then
# lights the water around the boat as well (notebook 03). At 0.5 the shortcut falls to about 68 %
# accuracy and the classifier must find the boat itself. The rarer the context appears alone, the
# stronger the bias; in VOC, boats on water and trains on rails are the textbook cases.

# %% [markdown]
# ### Exercise 3 — What the ignore band hides, and how it flatters the boxes
#
# §3 measured how much of its box an object fills at 64 px. For image sides 32, 64 and 128, draw 200
# training images with the default ignore band and, as `border=0`, without (the scenes are the same:
# the band is cut out after drawing). Define `hidden`, a dict {size: array (C,)}: the share of each
# class's pixels that the band turns into 255, and `fill`, a dict {size: `stats.box_fill_fraction`
# of the images with the band}. Which classes lose most to the band, how does it scale with the
# size, and why does the *bottle's* box look better filled at 32 px than at 128?

# %% tags=["exercise"]
SIZES, NC = (32, 64, 128), len(toy.CLASSES)
### BEGIN SOLUTION
hidden, fill = {}, {}
for size in SIZES:
    banded = toy.ToyDataset("train", n=200, seed=SEED, size=size)
    plain = toy.ToyDataset("train", n=200, seed=SEED, size=size, border=0)
    kept, total = np.zeros(NC), np.zeros(NC)
    for i in range(len(banded)):
        m, m0 = banded[i]["mask"], plain[i]["mask"]
        kept += np.bincount(m[m != 255].ravel(), minlength=NC)[:NC]
        total += np.bincount(m0.ravel(), minlength=NC)[:NC]
    hidden[size] = 1 - kept / total
    fill[size] = stats.box_fill_fraction(banded, NC)
for size in SIZES:
    print(size, dict(zip(toy.CLASSES, np.round(hidden[size], 2).tolist())))
### END SOLUTION
for size in SIZES:
    assert hidden[size].shape == (NC,) and ((hidden[size] > 0) & (hidden[size] < 1)).all()
    assert hidden[size][0] == hidden[size].min()        # background regions are large: least hidden
for small, large in zip(SIZES, SIZES[1:]):
    # a 1-px band is a larger share of a small object
    assert (hidden[small][1:] > hidden[large][1:]).all()
bottle = toy.CLASSES.index("bottle")
assert fill[32][bottle] > fill[128][bottle]

# %% [markdown] tags=["solution"]
# The band is one pixel on each side of every object edge, so the share it hides is about
# perimeter / area: roughly halved each time the side doubles. The thin classes lose most (boat
# masts and sails, persons, bottles: 40-47 % of their pixels at 64 px, 60-70 % at 32 px), the
# background least. And the ignored pixels are exactly where a box and its object disagree most
# (along the box's edges), so the fill fraction, measured on labelled pixels only, *rises* at low
# resolution: the bottle seems to fill 97 % of its box at 32 px and 77 % at 128 px, the person 82 %
# and 69 %. No class "gets worse" by this measure: the box's error is hidden in the band, not gone.
# The same holds for every later number computed on labelled pixels only (notebook 02 prints the
# share of box pixels in the band for this reason).

# %% [markdown]
# ### Exercise 4 — Evaluating without the ignore band
#
# The band is left out of training *and* of the evaluation. Evaluate the reference `net` on the
# same validation images drawn with `border=0` (`val_plain` below; toy world only): define `pred`
# (N, H, W), the network's labels for them, `miou_no_band`, its mIoU there, and `err_band` and
# `err_rest`, the share of misclassified pixels among the pixels the band hides (`band`: 255 in
# `val_set`'s masks) and among all others. Does mIoU go up or down, and is it fair to
# compare a method evaluated with the band against one evaluated without?

# %% tags=["exercise"]
from wsss_edu.metrics import ConfusionMeter

if DATASET == "toy":
    val_plain = params.load_splits(run, 1, N_VAL, size=IMAGE_SIZE, border=0)[1]
    band = val_set.arrays(("mask",))["mask"] == 255   # the pixels the band hides, (N, H, W)
    ### BEGIN SOLUTION
    preds, truths = [], []
    with torch.no_grad():
        for batch in make_loader(val_plain, False):
            preds.append(net(batch["image"].to(run.device)).argmax(1).cpu().numpy())
            truths.append(batch["mask"].numpy())
    pred, truth = np.concatenate(preds), np.concatenate(truths)
    miou_no_band = ConfusionMeter(len(CLASSES)).update(truth, pred).miou
    err_band = float((pred[band] != truth[band]).mean())
    err_rest = float((pred[~band] != truth[~band]).mean())
    print(f"mIoU with the band ignored {miou_full:.3f}, without {miou_no_band:.3f}; "
          f"error on band pixels {err_band:.1%}, elsewhere {err_rest:.1%}")
    ### END SOLUTION
    plain_masks = val_plain.arrays(("mask",))["mask"]
    assert pred.shape == band.shape == plain_masks.shape
    # the same images as val_set: with the band ignored again, pred must give §5's number
    assert abs(ConfusionMeter(len(CLASSES)).update(val_set.arrays(("mask",))["mask"], pred).miou - miou_full) < 1e-3
    # the overall error is the two rates weighted by the number of pixels each covers
    assert abs((pred != plain_masks).mean() - (err_band * band.sum() + err_rest * (~band).sum()) / band.size) < 1e-9
    assert err_band > 5 * err_rest and miou_no_band < miou_full

# %% [markdown] tags=["solution"]
# The mIoU falls (0.97 → 0.82 here): about a quarter of the band's pixels are misclassified,
# against a fraction of a percent elsewhere. Object edges are where segmentation is hard — the
# label itself is ambiguous there, which is why VOC draws the band — so leaving them out raises
# every method's score. A number evaluated with the band and one evaluated without are different
# metrics: compare methods only on the same evaluation masks. (Training without the band would
# also change the network, adding ambiguous edge labels to its targets; the course keeps the band
# throughout, as VOC does.)
