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
DATA_ROOT = ""         # folder holding a real dataset (see data_scripts/README.md)
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

# %% [markdown]
# `setup` checks the parameters (a typo lists the valid values), seeds every random generator and
# picks the device. The `full` profile swaps the small U-Net for torchvision's DeepLabv3 with a
# ResNet-50 backbone and draws the toy world larger.

# %%
import numpy as np
import matplotlib.pyplot as plt
import torch
from wsss_edu import params, stats, toy, viz
from wsss_edu.datasets import get_dataset

S = params.setup("00_wsss_and_the_toy_world", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE, SEED)
P = params.profile_values(PROFILE, dict(IMAGE_SIZE=(64, 320), N_TRAIN=(1000, 5000), N_VAL=(200, 1000),
                                        EPOCHS=(10, 30), BATCH_SIZE=(16, 16), CROP=(256, 512)),
                          IMAGE_SIZE=IMAGE_SIZE, N_TRAIN=N_TRAIN, N_VAL=N_VAL, EPOCHS=EPOCHS,
                          BATCH_SIZE=BATCH_SIZE, CROP=CROP)
IMAGE_SIZE, N_TRAIN, N_VAL, EPOCHS, BATCH_SIZE, CROP = (P[k] for k in P)
MODEL = "unet" if S.quick else "deeplabv3_resnet50"
print(P, MODEL)

# %% [markdown]
# ## 1 · One sample, three kinds of label
#
# Every dataset in the package, the toy world and the real loaders alike, returns the same *sample*:
# a dict holding the RGB `image`, the semantic `mask` (0 background, 1…K classes, **255 = ignore**, the
# thin band VOC draws around objects), `instances`, `boxes` (x0, y0, x1, y1) with their classes, and
# the image-level `labels` (a multi-hot vector over the K foreground classes). A method uses only the
# part of the sample its label type allows.

# %%
train_set, val_set = params.load_splits(S, N_TRAIN, N_VAL, size=IMAGE_SIZE)
CLASSES = train_set.classes
print(f"{len(train_set)} training / {len(val_set)} validation images; classes: {CLASSES}")
sample = train_set[0]
print({k: (v.shape, v.dtype) if hasattr(v, "shape") else v for k, v in sample.items()})

# %%
viz.show_samples(train_set, range(min(8, len(train_set))))
plt.show(); plt.close()

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
ax.set_xlabel("annotation time (hours)"); ax.set_title("labelling the training split")
plt.show(); plt.close()
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
plt.show(); plt.close()

# %% [markdown]
# ### How much of its box does an object fill?
#
# Paper 000 trains on boxes. Using a box as the mask labels every pixel inside it as the object, so
# the box is wrong on a fraction 1 − *fill* of its pixels:

# %%
fill = stats.box_fill_fraction(train_set, len(CLASSES), limit=1000)
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.bar(CLASSES[1:], fill[1:], color=viz.voc_palette()[1:len(CLASSES)] / 255)
ax.set_ylim(0, 1); ax.set_ylabel("object pixels / box pixels")
plt.show(); plt.close()
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
ax.set_xticks(range(len(CLASSES) - 1), CLASSES[1:], rotation=45); ax.set_yticks(range(len(CLASSES) - 1), CLASSES[1:])
plt.colorbar(im, ax=ax); plt.show(); plt.close()

# %% [markdown]
# ### Explore
#
# `viz.show_toy_world` draws a few samples for any seed and knobs. Below it, sliders for the knobs:
# set them, then press **Run Interact** to redraw.

# %%
viz.show_toy_world(seed=SEED, size=IMAGE_SIZE)
plt.show(); plt.close()

# %%
# NBVAL_IGNORE_OUTPUT
def explore(seed=0, size=64, imbalance=1.0, missing_label_rate=0.0, mask_noise=0.0, pixel_perfect=1.0):
    viz.show_toy_world(seed=seed, size=size, imbalance=imbalance, missing_label_rate=missing_label_rate,
                       mask_noise=mask_noise, pixel_perfect=pixel_perfect)
    plt.show(); plt.close()

viz.sliders(explore, seed=(0, 50), size=(32, 128, 16), imbalance=(1.0, 10.0, 0.5),
         missing_label_rate=(0.0, 1.0, 0.1), mask_noise=(0.0, 1.0, 0.1), pixel_perfect=(0.0, 1.0, 0.1));

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
    ax.set_ylabel("P(water)"); ax.set_title("water_without_boat = 0.1 vs 0.5")
    plt.show(); plt.close()

# %% [markdown]
# **Small discriminative parts.** Cats and dogs share body and fur; only the head differs:

# %%
if DATASET == "toy":
    alone = lambda c: [i for i in range(len(train_set))  # images holding class c and nothing else
                       if train_set[i]["labels_clean"].sum() == 1 and train_set[i]["labels_clean"][c - 1]]
    pets = alone(CLASSES.index("cat"))[:4] + alone(CLASSES.index("dog"))[:4]
    viz.show_grid([[train_set[i]["image"] for i in pets]], titles=["cat"] * 4 + ["dog"] * 4)
    plt.show(); plt.close()

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
        ax.bar(x - 0.2, base, 0.4, label="default"); ax.bar(x + 0.2, turned, 0.4, label="knob turned")
        ax.set_xticks(x, CLASSES[1:], rotation=30); ax.set_ylabel("images tagged"); ax.set_title(title)
    axes[0].legend(); plt.show(); plt.close()

# %% [markdown]
# **Pixel-perfect / box split** (`pixel_perfect`): the fraction of images whose mask may be used;
# the others offer only their boxes (paper 000). **Label noise**: `mask_noise` corrupts the mask like
# a pseudo-mask (the clean one stays in `mask_clean`, for evaluation), `tag_noise` flips tags,
# `box_noise` jitters boxes.

# %%
if DATASET == "toy":
    mixed = toy.ToyDataset("train", n=8, seed=SEED, size=IMAGE_SIZE, pixel_perfect=0.25, mask_noise=0.6)
    fig, axes = plt.subplots(3, 8, figsize=(14, 5.4))
    for j in range(8):
        s = mixed[j]
        axes[0][j].imshow(s["image"]); viz.draw_boxes(axes[0][j], s["boxes"], s["box_labels"])
        axes[0][j].set_title("pixel-perfect" if s["pixel_label"] else "boxes only", fontsize=8)
        axes[1][j].imshow(viz.colorize(s["mask_clean"])); axes[2][j].imshow(viz.colorize(s["mask"]))
    for a, t in zip(axes[:, 0], ("image, boxes", "clean mask", "mask_noise = 0.6")):
        a.set_ylabel(t, fontsize=8)
    for a in axes.flat:
        a.set_xticks([]); a.set_yticks([])
    plt.show(); plt.close()
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
from wsss_edu import cache, data, models, train

def make_loader(ds, shuffle):
    if DATASET == "toy":
        arrays = ds.arrays(("image", "mask"))
        return torch.utils.data.DataLoader(data.ArrayDataset(arrays, flip=shuffle),
                                           batch_size=BATCH_SIZE, shuffle=shuffle)
    return torch.utils.data.DataLoader(data.SegTransformDataset(ds, crop=CROP if shuffle else None),
                                       batch_size=BATCH_SIZE if shuffle else 1, shuffle=shuffle,
                                       num_workers=4)

train_loader, val_loader = make_loader(train_set, True), make_loader(val_set, False)

# %%
key = dict(notebook="00", dataset=DATASET, data_root=str(DATA_ROOT), model=MODEL, size=IMAGE_SIZE,
           n=len(train_set), epochs=EPOCHS, batch=BATCH_SIZE, crop=CROP, weights=str(WEIGHTS), seed=SEED)

def train_reference():
    train.seed_everything(SEED)
    net = models.make_segmenter(MODEL, len(CLASSES), **({} if S.quick else {"weights": WEIGHTS or None}))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3 if S.quick else 1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"],
                                                total_steps=EPOCHS * len(train_loader))
    hist = train.fit(net, train_loader, train.cross_entropy_loss, opt, EPOCHS, S.device, sched,
                     checkpoint=cache.checkpoint_path(S.output_dir, "reference_model", key), desc="fully supervised")
    return {"model": net.state_dict(), "loss": torch.tensor(hist["loss"])}

ref = cache.cached(S.output_dir, "reference_model", key, train_reference)
net = models.make_segmenter(MODEL, len(CLASSES)).to(S.device)
net.load_state_dict(ref["model"])

# %%
meter = train.evaluate_segmentation(net, val_loader, len(CLASSES), S.device)
miou_full = meter.miou
fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
axes[0].plot(ref["loss"].numpy(), marker="o"); axes[0].set_xlabel("epoch"); axes[0].set_ylabel("training loss")
axes[1].bar(CLASSES, meter.iou, color=viz.voc_palette()[:len(CLASSES)] / 255)
axes[1].set_ylim(0, 1); axes[1].set_title(f"validation IoU per class (mIoU {miou_full:.3f})")
axes[1].tick_params(axis="x", rotation=30); plt.show(); plt.close()
print(" | ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, meter.iou)))

# %%
rows = [[], [], []]
for batch in val_loader:  # the first 8 validation images (real datasets come one per batch)
    with torch.no_grad():
        pred = net(batch["image"].to(S.device)).argmax(1).cpu().numpy().astype(np.uint8)
    rows[0] += list(data.tensor_to_images(batch["image"])); rows[1] += list(batch["mask"].numpy().astype(np.uint8))
    rows[2] += list(pred)
    if len(rows[0]) >= 8:
        break
viz.show_grid([r[:8] for r in rows], row_titles=["image", "ground truth", "prediction"])
plt.show(); plt.close()

# %% [markdown]
# The headline number of this notebook, recorded for the others (`runs/metrics/00_wsss_and_the_toy_world.json`):

# %%
S.record({"miou_full_supervision": miou_full, "toy_car_box_fill": float(fill[CLASSES.index("car")])
          if DATASET == "toy" else None})
print(f"miou_full_supervision = {miou_full:.3f}")

# %% [markdown]
# A check that the reference is worth comparing against: with every mask, the network must segment
# the toy world well (a weakly-supervised method reaching, say, 80 % of this is then meaningful).

# %%
if DATASET == "toy" and S.quick:
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
#
# ## Exercises
#
# 1. Set `missing_label_rate=1.0`: which statistic above changes, and which does not? Why is that a
#    problem for a classifier-based method (notebook 03)?
# 2. Compute the fill fraction of each class's boxes at `IMAGE_SIZE = 64` and `128`. Which class gets
#    worse at low resolution, and why?
# 3. Train the reference with only 100 images (`N_TRAIN = 100`). How far does mIoU fall? Keep this
#    number in mind for paper 000's "few pixel-perfect masks" setting.
# 4. The ignore band (`border`) removes object edges from training and evaluation. Train and evaluate
#    with `border=0`: does mIoU go up or down, and is the comparison fair?
