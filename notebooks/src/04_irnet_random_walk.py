# %% [markdown]
# # 04 · IRNet: class boundaries learned from CAMs, and a random walk that fills objects up to them
#
# Step 2 of the three-step pipeline of *NoPeopleAllowed* (paper 001). Notebook 03 ended with CAMs
# that find objects but cover only their most discriminative parts (a cat's head, a boat's sail)
# and spill over their edges. IRNet (Ahn, Cho & Kwak, CVPR 2019) fixes both without any new
# label:
#
# 1. from the CAMs, keep only the pixels that are **confidently** foreground of a class or
#    confidently background; the pairs of such pixels say "same class" or "different class";
# 2. train a network to predict a **class boundary map** $B$ such that two pixels are related
#    (affinity $a_{ij} = 1 - \max_{k \in \text{path}(i,j)} B(k)$ close to 1) exactly when no
#    boundary lies between them — and a **displacement field** $D$ pointing every pixel at the
#    centre of its object (IRNet's instance branch, trained here as the paper does);
# 3. let the CAM scores **random-walk** over the affinities: they spread freely inside an object
#    and stop at its boundary.
#
# The paper's Table 2 reports this step at 31.87 mIoU on LID val, up from 31.06 after step 1
# (IRNet's own paper: 48.3 → 66.5 on VOC train). This notebook measures the same step on the toy
# world, scores the pseudo-labels on the training split (`miou_irnet`) and stores them for
# notebook 05.

# %% tags=["parameters"]
DATASET = "toy"        # toy | msrc (real photos, no background class) | voc
DATA_ROOT = ""
OUTPUT_DIR = ""
PROFILE = "quick"
DEVICE = "auto"
SEED = 0
WORKERS = 0            # DataLoader workers, and processes for the CRFs (0 on a laptop; 8-16 on a GPU machine)
# Step 1, as notebook 03 ran it (the same values find its cached classifier and CAMs):
DROP_CLASS = None      # (None: the dataset's, notebook 03)
BALANCE = None
MISSING_RATE = 0.5
IMBALANCE = 4.0
IMAGE_SIZE = None      # (64 | 320)
N_TRAIN = None         # (800 | 5000)
N_VAL = None           # (200 | 1000)
BACKBONE = None        # step 1's classifier (small | resnet50)
EPOCHS = None          # step 1's epochs (10 | 5)
LR_NEW = None
CROP = None
AUGMENT = None         # (flip | strong), as notebook 03
CAM_SCALES = None
FROZEN_BLOCKS = None
WEIGHTS = "imagenet"
# Step 2 (None = the profile's default, quick | full):
CONFIDENCE = 0.8       # images whose every tag has a classifier probability above this train IRNet
IR_BACKBONE = None     # classifier (reuse step 1's frozen stages) | resnet50 (IRNet's)
IR_EPOCHS = None       # (5 | 3)
IR_RADIUS = None       # training pairs within this many stride-4 cells (5 | 10)
IR_BATCH = None        # (16 | 32)
IR_CROP = None         # random rescale 0.5-1.5 + crop on real images (None | 512; msrc: 224 | 320)
IR_LR = 0.1            # boundary branch; the displacement branch gets 10x (IRNet's 0.1 / 1.0)
IR_MOMENTUM = None     # SGD's (0.9 | 1e-4: IRN passes its weight decay as momentum, so in effect none)
IR_AUGMENT = None      # flip | strong, as step 1's (flip | strong)
IR_COPY_SCALES = None  # paper 001's rescaled copies of each training image (None | (0.5, 1.0, 1.5, 2.0))
IR_PATH = "thick"      # the pixels between a pair: thick (as in the reference code) | thin (a one-pixel line)
IR_SOURCES = "all"     # pairs from every cell | reference (not the border cells its PathIndex skips)
# The random walk: a grid of settings, the best chosen on the validation split.
WALK_RADII = None      # ([2, 3, 5] | [5]; msrc: [5])
WALK_EXP_TIMES = None  # ([1, 2, 4, 8] | [8]; msrc: [4, 6] | [8])
WALK_BETAS = None      # ([4, 10] | [10]; msrc: [10])
WALK_BG = None         # background thresholds ([0.1, ..., 0.5] | [0.25]; none without a background class)

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

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch

from wsss_edu import cam, irnet, params, viz
from wsss_edu.data import images_to_tensor
from wsss_edu.steps import cam_step, irnet_step

run = params.setup("04_irnet_random_walk", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE,
                   SEED, namespace=globals())
settings = irnet_step.step2_values(PROFILE, DATASET,   # the profile's value on this dataset wherever a knob is None
    IR_BACKBONE=IR_BACKBONE, IR_EPOCHS=IR_EPOCHS, IR_RADIUS=IR_RADIUS, IR_BATCH=IR_BATCH,
    IR_CROP=IR_CROP, IR_MOMENTUM=IR_MOMENTUM, IR_AUGMENT=IR_AUGMENT, IR_COPY_SCALES=IR_COPY_SCALES,
    WALK_RADII=WALK_RADII, WALK_EXP_TIMES=WALK_EXP_TIMES, WALK_BETAS=WALK_BETAS,
    WALK_BG=WALK_BG)
print(settings)

# %% [markdown]
# ## 1 · Step 1's output
#
# `cam_step.step1` is notebook 03 in one call: the same data, classifier and CAM folders, found in the
# cache when notebook 03 ran with the same parameters (else computed now). The background
# threshold θ of the CAM pseudo-labels is chosen on the validation split, as there.

# %%
STEP1 = dict(IMAGE_SIZE=IMAGE_SIZE, N_TRAIN=N_TRAIN, N_VAL=N_VAL, BACKBONE=BACKBONE, EPOCHS=EPOCHS,
             LR_NEW=LR_NEW, CROP=CROP, AUGMENT=AUGMENT, CAM_SCALES=CAM_SCALES,
             FROZEN_BLOCKS=FROZEN_BLOCKS)
step1 = cam_step.step1(run, DATASET, DROP_CLASS, BALANCE, MISSING_RATE, IMBALANCE, WEIGHTS, WORKERS,
                       **STEP1)
DROP_CLASS = step1.dropped_class     # None resolved: the dataset's default ('' on MSRC)
CLASSES, K = step1.classes, len(step1.classes) - 1
THRESHOLDS = step1.thresholds   # cam_step.THRESHOLDS; [None] without a background class (no plane)
val_curve = [m.miou for m in cam_step.cam_confusions(step1.val_view, step1.val_folder, THRESHOLDS,
                                                     progress=False)]
CAM_THRESHOLD = THRESHOLDS[int(np.argmax(val_curve))]
cam_meter = cam_step.cam_confusions(step1.scored_view, step1.folder, [CAM_THRESHOLD],
                                    progress=False)[0]
miou_cam = cam_meter.miou
print(f"step 1: θ = {CAM_THRESHOLD} (val), miou_cam = {miou_cam:.3f} on the training split")

# %% [markdown]
# ## 2 · Relation labels: what the CAMs are sure of
#
# IRNet does not trust a CAM pixel by pixel. It makes two label maps from each image's CAMs, both
# cleaned by the label CRF of notebook 03: with the background plane **high** (0.30) only strong
# CAM pixels become foreground — *confident foreground*; with the plane **low** (0.05) only pixels
# with hardly any CAM stay background — *confident background*. Pixels confident in neither are
# *unsure* (255) and teach nothing.
#
# Paper 001 trains IRNet only on the images whose classification is confident (every tag's
# probability > 0.8, notebook 03 §6).
#
# **Without a background class** (MSRC) there is no "confident background": grass and sky are
# classes with CAMs of their own. Each pixel takes the image's class whose CAM is the largest
# there, cleaned by the same label CRF among the image's classes only, and is confident where
# that class's own CAM reaches the foreground threshold 0.30 (`irnet.relation_labels_without_background`,
# chosen by `bg_threshold=None`). Every pair is then a same-class positive or a different-class
# negative; the background positives of §3 do not occur. This rule is the course's — IRNet was
# only run on VOC-style data.

# %%
IRCFG, IR_BACKBONE, IR_WEIGHTS = irnet_step.step2_config(PROFILE, run.seed, CONFIDENCE, IR_LR, WEIGHTS, IR_PATH, IR_SOURCES,
                                                    DATASET, **{k: settings[k] for k in irnet_step.STEP2_PROFILE})
GRID = {k: settings[k] for k in irnet_step.WALK_GRID}
# MSRC: no plane anywhere
IRCFG, GRID = irnet_step.without_plane_if_no_background(IRCFG, GRID, step1.has_background)
# cam.confident_image_mask
confident = irnet_step.cached_confident_images(run.output_dir, step1.model, step1.train_view,
                                               step1.folder, IRCFG.confidence)
rel_folder = irnet_step.cached_relation_labels(run.output_dir, step1.train_view, step1.folder, confident, IRCFG,
                                          processes=max(1, WORKERS))   # the CRFs over WORKERS processes
print(f"{len(confident)} of {len(step1.train)} training images are confident; relation labels in {rel_folder}")

# %%
from wsss_edu.io import read_mask
from wsss_edu.metrics import ConfusionMeter

check = confident[:300]
rels = [read_mask(rel_folder / f"{step1.train_view.names[i]}.png") for i in check]
masks = [step1.train_view[i]["mask"] for i in check]
unsure = np.mean([(r == 255).mean() for r in rels])
right = sum(((r == m) & (r != 255) & (m != 255)).sum() for r, m in zip(rels, masks))
labelled = sum(((r != 255) & (m != 255)).sum() for r, m in zip(rels, masks))
print(f"{unsure:.0%} of the pixels are unsure; {right / labelled:.1%} of the confident ones are right")

# %%
rows = []
for i in check[:4]:
    s = step1.train_view[i]
    cams_i = cam_step.load_cams(step1.folder, s["name"], K)
    rel = read_mask(rel_folder / f"{s['name']}.png").astype(np.int64)
    rows.append([s["image"], s["mask"], cam.cams_to_labels(cams_i[None], CAM_THRESHOLD)[0].numpy(),
                 rel])
viz.show_grid(rows,
              titles=["image", "true mask", "CAM pseudo-label", "relation label (white: unsure)"])
plt.show()
plt.close()

# %% [markdown]
# The confident labels are right almost everywhere — the point of the two thresholds: precision
# is bought with coverage. What is left unsure is the band around every object, exactly where a
# boundary has to be *learned*. On MSRC (no background, quick defaults) 105 of 266 photos are
# confident; 21 % of their pixels are unsure and 83 % of the confident ones are right — real
# CAMs are less clean than the toy world's, and IRNet learns from their mistakes too.
#
# ## 3 · Pairs, paths and affinities
#
# IRNet works on a grid at stride 4 (a 64-px image: 16×16 cells). Every cell $i$ is paired with
# the cells $j$ within a radius (`irnet.pair_offsets`); a pair of two confident background cells
# is a **background positive**, two cells of the same class a **foreground positive**, two
# confident cells of different classes (object–background included) a **negative**. The network
# never predicts pair affinities directly: it predicts one number per cell, the boundary
# probability $B$, and the affinity of a pair is read off the straight path between them
# (`irnet.path_points`, IRNet eq. 4):
#
# $$ a_{ij} = 1 - \max_{k \in \Pi_{ij}} B(k). $$
#
# A negative pair therefore forces a boundary *somewhere* on its path, a positive pair forbids one
# anywhere on its path — the boundary ends up where only negatives cross.
#
# Which cells are "on the path"? IRNet's code (its `PathIndex`, reproduced here and tested on its
# outputs) keeps every cell of the segment's bounding box within distance 1 of the line — a
# *thick* path, both ends included. A one-cell digital line (`path="thin"`, one cell per step) looks
# equivalent but is not: a diagonal step passes *between* two cells, so a one-cell-wide diagonal
# boundary has gaps the thin path slips through (the cell below: across a one-cell diagonal wall
# the thin path sees affinity 1, the thick path 0). On the toy world the thin paths' walk scored
# 0.498 train mIoU against the thick paths' 0.488 (§6); the course follows IRNet's code.
# `IR_SOURCES="reference"` also keeps IRNet's training-pair sources (its `PathIndex` skips the
# bottom and side $r-1$ cells of each crop; here every cell is a source by default, since at
# radius 5 that rule would skip 62 % of a 16×16 grid). Measured with it: IRNet 0.489 train mIoU
# (every cell: 0.488), 0.516 with the CRF (0.548) — the walk's choice did not move.

# %%
offs = irnet.pair_offsets(IRCFG.radius)
i0 = confident[0]
rel4 = irnet_step.labels_at_stride(torch.as_tensor(read_mask(rel_folder / f"{step1.train_view.names[i0]}.png")).long())
pos_bg, pos_fg, neg = irnet.pair_label_masks(rel4, offs)
print(f"radius {IRCFG.radius}: {len(offs)} offsets per cell; this image's {rel4.numel()} cells give "
      f"{int(pos_bg.sum())} background-positive, {int(pos_fg.sum())} foreground-positive, {int(neg.sum())} negative pairs")

# %%
fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
r = IRCFG.radius
grid = np.zeros((2 * r + 1, 2 * r + 1))
for dy, dx in irnet.pair_offsets(r, half=False):
    grid[dy + r, dx + r] = 1
for dy, dx in offs:
    grid[dy + r, dx + r] = 2
axes[0].imshow(grid, cmap="Blues", vmin=0, vmax=2)
axes[0].plot(r, r, "r*")
axes[0].set_title(f"partners of a cell (radius {r})\ndark: the half used in the loss", fontsize=9)
path = np.zeros_like(grid)
for kind, v in (("thick", 1), ("thin", 2)):
    for py, px in irnet.path_points(3, -4 if r > 4 else -r + 1, kind):
        path[py + r, px + r] = v
axes[1].imshow(path, cmap="Greys", vmin=0, vmax=2)
axes[1].set_title("the path to one partner\nblack: thin line; grey + black: thick", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()
plt.close(fig)

wall = torch.zeros(6, 6)
for k in range(6):
    wall[k, 5 - k] = 1.0                    # a one-cell 8-connected diagonal boundary
for kind in irnet.PATHS:
    print(f"{kind:5s} path: affinity across the diagonal wall = "
          f"{irnet.pair_affinity(wall, [(1, 1)], kind)[0, 1, 3]:.1f}")
assert irnet.pair_affinity(wall, [(1, 1)], "thick")[0, 1, 3] == 0 < irnet.pair_affinity(wall, [(1, 1)], "thin")[0, 1, 3]

# %% [markdown]
# The two losses (IRNet eq. 5-9, `irnet.affinity_loss`, `irnet.displacement_loss`):
#
# $$ \mathcal{L}_{aff} = \tfrac12\Big(\tfrac12\,\overline{-\log a_{ij}}^{\,bg+} + \tfrac12\,\overline{-\log a_{ij}}^{\,fg+} + \overline{-\log(1 - a_{ij})}^{\,-}\Big), \qquad
# \mathcal{L}_D = \tfrac12\Big(\overline{|D_i - D_j - (x_j - x_i)|_1}^{\,fg+} + \overline{|D_i - D_j|_1}^{\,bg+}\Big) $$
#
# (bars: means over the pairs of each kind). The displacement loss asks two cells of one object to
# point at the same place, $x_i + D_i = x_j + D_j$: the field points at object centres. Both
# branches sit on the **frozen** features of a backbone: the quick profile reuses step 1's
# classifier (there is no ImageNet network on a laptop), the full profile IRNet's ResNet-50.
# Training: SGD with momentum, polynomial decay, learning rate `IR_LR` for the boundary branch
# and ten times that for the displacement branch (IRNet's 0.1 / 1.0; paper 001 lists 0.005 /
# 0.05, for its own batch and data). **Momentum** (`IR_MOMENTUM`): IRNet's code passes its weight
# decay, $10^{-4}$, into the momentum slot of SGD, so the reference trains with no momentum to
# speak of; with 0.9 the same learning rate takes steps about ten times larger. The full profile
# takes the reference's $10^{-4}$ with its learning rates; the quick profile keeps 0.9, the value
# its learning rate and epochs were set with. Measured at the quick defaults with the reference's
# $10^{-4}$ instead (`python -m wsss_edu.runner --only 04 -p IR_MOMENTUM=0.0001` after 03): IRNet's
# labels on train 0.463 instead of 0.488 (its walk, chosen on val, 0.465 instead of 0.502 there),
# 0.573 instead of 0.548 after the CRF: five epochs at these learning rates train too little
# without momentum, and the CRF hides part of it. The full profile
# also trains on paper 001's enlarged set — every confident image at 0.5, 1, 1.5 and 2 times its
# size (`IR_COPY_SCALES`) — with its strong augmentation (`IR_AUGMENT`); the quick profile leaves
# both out (a 64-px scene at half size is 8×8 cells, and four copies cost four times the time).

# %%
stages = irnet.backbone_stages(step1.model if IR_BACKBONE == "classifier" else "resnet50",
                               IR_WEIGHTS)
key = irnet_step.step2_key(step1.folder, IRCFG, IR_BACKBONE, IR_WEIGHTS)
rel_data = irnet_step.relation_dataset(step1.train_view, rel_folder, confident, IRCFG)
net = irnet_step.cached_step2(run.output_dir, stages, rel_data, key, IRCFG, run.device, WORKERS)
print(f"IRNet: {sum(p.numel() for p in net.parameters() if p.requires_grad):,} trained parameters "
      f"on {len(rel_data)} images")

# %% [markdown]
# What it learned, on training images it has (first two) and has not (last two) been trained on:
# the boundary map $B$ and the displacement field $D$ (arrows, drawn on the foreground of the
# relation label; they should converge on each object's centre).

# %%
not_conf = np.setdiff1d(np.arange(len(step1.train_view)), confident)
tagged = lambda idx: [i for i in idx if step1.train_view[i]["labels"].sum() > 0]
show = tagged(confident)[:2] + tagged(not_conf)[:2]
fig, axes = plt.subplots(2, len(show), figsize=(2.2 * len(show), 4.4), squeeze=False)
for j, i in enumerate(show):
    s = step1.train_view[i]
    with torch.no_grad():
        b, d = (t[0].cpu() for t in net.eval()(images_to_tensor(s["image"]).to(run.device)))
    axes[0, j].imshow(b, cmap="magma", vmin=0, vmax=1)
    axes[0, j].set_title("B" + (" (trained on)" if i in confident else " (not)"), fontsize=8)
    h, w = b.shape
    yy, xx = np.mgrid[0:h, 0:w]
    lab = irnet_step.labels_at_stride(torch.as_tensor(s["mask"]).long()).numpy()
    fg = (lab > 0) & (lab != 255)
    axes[1, j].imshow(s["image"], extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    axes[1, j].quiver(xx[fg], yy[fg], d[1][fg], -d[0][fg], color="w", angles="xy", scale_units="xy",
                      scale=1, width=0.01)
    axes[1, j].set_title("D on the true foreground", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
plt.show()
plt.close(fig)

# %% [markdown]
# ## 4 · The random walk
#
# The boundary map turns into a transition matrix (IRNet eq. 10, `irnet.transition_weights`):
# every cell is linked to the cells within a radius and to itself, with weight $a_{ij}^\beta$
# ($\beta$ sharpens: a faint boundary becomes a wall), normalised so that each column sums to 1,
#
# $$ T = A^{\circ\beta} D^{-1}, \qquad D_{jj} = \textstyle\sum_i a_{ij}^\beta . $$
#
# The CAMs, first damped by $(1 - B)$ so that boundary cells start with little mass, are walked
# $2^{t}$ steps: $v \leftarrow v\,T^{2^t}$ (eq. 11, `irnet.random_walk`; the reference squares the
# dense matrix $t$ times, here the toy's 256-cell grids do the same and large images walk in pair
# form, memory $O(P\,HW)$). Each step averages a cell's score with its neighbours', but only
# across cells linked by a high affinity.
#
# Where does one cell draw its score from? Column $j$ of $T^{2^t}$ as the number of steps grows,
# for a cell $j$ (star) where the CAM is strong and one where it is weak, both off the boundary:

# %%
inp1 = irnet_step.walk_inputs(net, step1.train_view, step1.folder, [show[1]], device=run.device,
                              progress=False)[0]
b0, c0 = inp1["boundary"], inp1["cams"].amax(0)   # the second image above (tagged): B and its CAM
# at most 32x32 cells: T is dense here
y0, x0 = max(0, b0.shape[0] // 2 - 16), max(0, b0.shape[1] // 2 - 16)
b0, c0 = b0[y0:y0 + 32, x0:x0 + 32], c0[y0:y0 + 32, x0:x0 + 32]
offsets_all, wts = irnet.transition_weights(b0, 5, 10.0, IRCFG.path)
T = irnet.transition_matrix(offsets_all, wts)
h, w = b0.shape
# object / background
cells = [int(torch.argmax(c0 * (1 - b0))), int(torch.argmax((1 - c0) * (1 - b0)))]
rows = []
for cell in cells:
    row, Tp = [b0.numpy()], T.clone()
    for t in range(6):
        row.append((Tp[:, cell] / Tp[:, cell].max()).view(h, w).numpy())
        Tp = Tp @ Tp
    rows.append(row)
fig = viz.show_grid(rows, titles=["B"] + [f"T^{2 ** t}: column of ★" for t in range(6)],
                    row_titles=["object cell", "background cell"], size=1.6, cmap="magma")
for ax, cell in zip(np.reshape(fig.axes, (2, -1)), cells):
    for a in ax:
        a.plot(cell % w, cell // w, "c*", ms=6)
plt.show()
plt.close(fig)

# %% [markdown]
# For a few steps the object cell draws from the boat only and the background cell from the sky
# only: the boundary is a wall. After 16-32 steps the boat's cell draws from the sea too — its
# boundary along the hull is weak, and every step is another chance to cross it. Now the CAM of
# each image's first class walked for $2^t$ steps, $t = 0 \dots 8$, with IRNet's settings
# (radius 5, $\beta$ = 10), each map divided by its maximum:

# %%
STEPS = (0, 1, 2, 4, 6, 8)
rows = []
for inp, i in zip(irnet_step.walk_inputs(net, step1.train_view, step1.folder, show[:2], device=run.device, progress=False), show):
    row = [step1.train_view[i]["image"], inp["cams"][0].numpy()]
    for t in STEPS:
        walked = irnet.random_walk(inp["cams"][None, :1], inp["boundary"][None], 5, 10.0, t,
                                   path=IRCFG.path)[0, 0]
        row.append((walked / walked.max()).numpy())
    rows.append(row)
viz.show_grid(rows, titles=["image", "CAM"] + [f"{2 ** t} step" + "s" * (t > 0) for t in STEPS],
              size=1.5, cmap="jet")
plt.show()
plt.close()

# %% [markdown]
# Two things to see. Where the boundary map closes an object off, the walk evens the score out
# inside it and drops it outside — the CAM's blob, which spilled over the object's edge, is cut
# back to the object. But the walk can only spread a score *within* a region the boundaries
# leave connected: where the CAM missed a part altogether (the cat's striped body), the relation
# labels called that part confident background (§2's first row), IRNet learned a boundary between
# the head and the body, and no number of steps crosses it. And with 256 steps on a 16×16 grid
# even a good object's score leaks away through weak spots in its boundary.

# %% [markdown]
# ## 5 · Choosing the walk on the validation split
#
# IRNet's walk settings (radius 5, $\beta$ = 10, $2^8$ = 256 steps, background 0.25) were tuned for
# VOC images, about 125×94 cells at stride 4. A walker's reach grows like
# $\text{radius} \cdot \sqrt{\text{steps}}$: on a 16×16 grid, 256 steps of radius 5 cross the
# whole image many times over, through any boundary that is not perfect. The settings are
# therefore chosen on the **validation** split (a grid over radius, steps, $\beta$ and the
# background threshold, `irnet_step.choose_walk`, its result cached for notebook 05), and only the
# chosen one is used on the training split.

# %%
WALK, grid = irnet_step.cached_walk_choice(run.output_dir, net, step1.val_view, step1.val_folder, key, GRID, run.device,
                                      path=IRCFG.path)
best = (WALK.radius, WALK.exp_times, WALK.beta, WALK.bg_threshold)
print(f"best on val: {WALK} -> val mIoU {grid[best]:.3f}")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
for r in settings["WALK_RADII"]:
    for b in settings["WALK_BETAS"]:
        ys = [max(grid[(r, t, b, bg)] for bg in GRID["WALK_BG"]) for t in settings["WALK_EXP_TIMES"]]
        ax.plot([2 ** t for t in settings["WALK_EXP_TIMES"]], ys, "o-", label=f"radius {r}, β {b}")
ax.axhline(val_curve[THRESHOLDS.index(CAM_THRESHOLD)], color="k", ls="--", lw=0.8,
           label="CAM (no walk)")
ax.set_xscale("log", base=2)
ax.set_xlabel("steps 2^exp_times")
ax.set_ylabel("val mIoU (best bg threshold)")
ax.legend(fontsize=7, ncol=2)
plt.show()
plt.close(fig)

# %% [markdown]
# ## 6 · Pseudo-labels for step 3
#
# The chosen walk on every training image (`irnet_step.cached_pseudo_labels`: PNGs named after the
# images, written chunk by chunk and resumable, where notebooks 05-06 find them). Walked maps are
# divided by their maximum, a background plane at the threshold goes in front, argmax — over the
# image's own classes only. IRNet's reference stops there (no CRF). Scored on the training split:
# `miou_irnet`.

# %%
pl_folder = irnet_step.cached_pseudo_labels(run.output_dir, net, step1.train_view, step1.folder,
                                            key, WALK, device=run.device)
irn_meter = irnet_step.pseudo_label_confusion(step1.scored_view, pl_folder)
miou_irnet = irn_meter.miou
print(f"train mIoU: CAM {miou_cam:.3f} -> IRNet {miou_irnet:.3f}  ({pl_folder})")

# %%
fig, ax = plt.subplots(figsize=(8, 2.8))
xs = np.arange(len(CLASSES))
ax.bar(xs - 0.2, cam_meter.iou, 0.4, label=f"CAM (θ={CAM_THRESHOLD}): {miou_cam:.3f}")
ax.bar(xs + 0.2, irn_meter.iou, 0.4, label=f"IRNet walk: {miou_irnet:.3f}")
ax.set_xticks(xs, CLASSES, rotation=30)
ax.set_ylabel("train IoU")
ax.legend(fontsize=8)
plt.show()
plt.close(fig)
print("| class | CAM | IRNet |\n| --- | --- | --- |\n" +
      "\n".join(f"| {c} | {a:.3f} | {b:.3f} |" for c, a, b in zip(CLASSES, cam_meter.iou, irn_meter.iou)))

# %%
rows = []
for i in show:
    s = step1.train_view[i]
    c = cam_step.load_cams(step1.folder, s["name"], K)
    rows.append([s["image"], s["mask"], cam.cams_to_labels(c[None], CAM_THRESHOLD)[0].numpy(),
                 read_mask(pl_folder / f"{s['name']}.png").astype(np.int64)])
viz.show_grid(rows, titles=["image", "true mask", "CAM pseudo-label", "IRNet pseudo-label"])
plt.show()
plt.close()

# %% [markdown]
# ### With a CRF after each step
#
# Paper 001 ends step 1 with a dense CRF (its Table 2's step 1 is "classification + CRF"), and says
# every step is followed by post-processing. The same label CRF on both: on the CAMs at step 1's θ
# (as notebook 03), on the walk with its background threshold chosen on val with the CRF (the walk
# itself fixed to the one chosen above):

# %%
from wsss_edu.progress import bar as tqdm  # tqdm.auto here; plain log lines under papermill

val_inputs = irnet_step.walk_inputs(net, step1.val_view, step1.val_folder, device=run.device,
                                    progress=False)
crf_val = [m.miou for m in irnet_step.walk_confusions(step1.val_view, range(len(step1.val_view)), val_inputs, WALK, GRID["WALK_BG"],
                                                 crf=True, device=run.device)]
WALK_CRF = dataclasses.replace(WALK, bg_threshold=GRID["WALK_BG"][int(np.argmax(crf_val))])
cam_crf, irn_crf = ConfusionMeter(len(CLASSES)), ConfusionMeter(len(CLASSES))
pl_crf = irnet_step.cached_pseudo_labels(run.output_dir, net, step1.train_view, step1.folder, key,
                                         WALK_CRF, device=run.device, progress=False)
crf_idx = range(len(step1.scored_view)) if run.quick else range(min(len(step1.scored_view), 1464))
for i in tqdm(crf_idx, desc="CRF"):
    s = step1.scored_view[i]
    keys = np.flatnonzero(s["labels"])
    cam_crf.update(s["mask"],
                   cam.crf_cam_labels(s["image"], cam_step.load_cams(step1.folder, s["name"], K),
                                      CAM_THRESHOLD))
    irn_crf.update(s["mask"], cam.crf_label_map(s["image"], read_mask(pl_crf / f"{s['name']}.png"), keys,
                                                background=step1.has_background))
miou_cam_crf, miou_irnet_crf = cam_crf.miou, irn_crf.miou
viz.bar_table({"CAM": [miou_cam], "CAM + CRF (step 1)": [miou_cam_crf], "IRNet": [miou_irnet],
               f"IRNet + CRF (bg {WALK_CRF.bg_threshold}, val)": [miou_irnet_crf]}, "train mIoU of the pseudo-labels",
              row_header="pseudo-labels")

# %% [markdown]
# What the toy world's quick defaults gave (the table above is the live version): CAM 0.413 →
# IRNet 0.488, and after the CRF 0.527 → 0.548. **On MSRC** (real photos, no background plane
# anywhere, the walk chosen on val: radius 5, $\beta$ 10, $2^4$ steps): CAM 0.501 → IRNet 0.521 on
# train, and every class gains or holds (sheep 0.40 → 0.47, road 0.50 → 0.54); on val the walk
# gains less (0.418 → 0.424, same classifier); with the CRF, 0.546 → 0.545: the walk and the CRF
# repair the same edges. With the one-cell paths (`IR_PATH="thin"`, §3), the same step 1:
# IRNet 0.498, with the CRF 0.542 — the leaky paths score a hair higher here (their val-chosen
# walk: radius 5, 4 steps, background 0.4; IRNet's paths: radius 3, 16 steps, background 0.5). The CRF alone does more than the walk alone here: at 64 px it
# works on every pixel, while IRNet's boundaries live on 4-px cells, so the CRF cleans object edges
# better than the walk can. What the walk adds on top of the CRF is small — as was the paper's gain
# from this step (31.06 → 31.87 on LID val). The cached pseudo-labels that notebook 05 trains on are
# IRNet's
# without a CRF, with the background plane at 0.3 (paper 001's; notebook 05 §1 says why), like
# IRNet's `make_sem_seg_labels` (upsampled ×4, cropped to the image, divided by
# the global maximum, background plane: `irnet_step.walk_labels` gives its labels for the same walked
# maps, tested on the original code's outputs, images of any size).

# %% [markdown]
# ### IRNet's background threshold: paper 001's Table 3
#
# The paper trains step 3 on IRNet pseudo-labels made with the background threshold 0.3 and with
# 0.5. Both are written here (the same walk otherwise) for notebook 05 to train on; their train
# mIoU:

# %%
TABLE3_BG = (0.3, 0.5) if step1.has_background else ()   # no background plane: nothing to compare
table3 = {}
for bg in TABLE3_BG:
    f = irnet_step.cached_pseudo_labels(run.output_dir, net, step1.train_view, step1.folder, key,
                                   dataclasses.replace(WALK, bg_threshold=bg), device=run.device, progress=False)
    table3[bg] = irnet_step.pseudo_label_confusion(step1.scored_view, f).miou
if table3:
    viz.bar_table({f"bg {bg}": [v] for bg, v in table3.items()} | {f"chosen on val (bg {WALK.bg_threshold})": [miou_irnet]},
                  "train mIoU of IRNet pseudo-labels", row_header="walk")

# %% [markdown]
# ### The dropped class, kept
#
# Table 3's last question: what if the person tags stay? The paper adds a person CAM from a
# separate binary classifier; here steps 1-2 simply run again with every tag kept (`cam_step.step1`
# and `irnet_step.step2` are notebook 03 and this notebook in one call each, with `DROP_CLASS = ""`),
# with the walk chosen above and background 0.3, as the paper's row. Notebook 05 trains step 3
# on the result.

# %%
kept_meter = None
if DROP_CLASS:
    st_all = cam_step.step1(run, DATASET, "", BALANCE, MISSING_RATE, IMBALANCE, WEIGHTS, WORKERS,
                            **STEP1)
    KEPT_GRID = dict(WALK_RADII=[WALK.radius], WALK_EXP_TIMES=[WALK.exp_times],
                     WALK_BETAS=[WALK.beta], WALK_BG=[0.3])
    ir_all = irnet_step.step2(run, st_all, IRCFG, IR_BACKBONE, IR_WEIGHTS, KEPT_GRID,
                              workers=WORKERS)
    kept_meter = irnet_step.pseudo_label_confusion(st_all.scored_view, ir_all.folder)
    f03 = irnet_step.pseudo_label_folder(run.output_dir, key,
                                         dataclasses.replace(WALK, bg_threshold=0.3))
    drop_meter = irnet_step.pseudo_label_confusion(step1.scored_view, f03)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(xs - 0.2, drop_meter.iou, 0.4, label=f"{DROP_CLASS} dropped: {drop_meter.miou:.3f}")
    ax.bar(xs + 0.2, kept_meter.iou, 0.4, label=f"every tag kept: {kept_meter.miou:.3f}")
    ax.set_xticks(xs, CLASSES, rotation=30)
    ax.set_ylabel("train IoU (bg 0.3)")
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)
    print(" | ".join(f"{c} {a:.2f} → {b:.2f}" for c, a, b in zip(CLASSES, drop_meter.iou, kept_meter.iou)))

# %% [markdown]
# What the quick defaults gave: keeping the person tags buys the person almost nothing (IoU 0.00 →
# 0.05: with half of its tags missing the classifier hardly learns it), and the mean drops (0.458
# → 0.420), through the background (0.95 → 0.77: persons and the ground they stand on get claimed
# by the classes of the images they appear in), the boat (0.34 → 0.12) and the cat (0.44 → 0.32).
# Other classes gain (car, bottle): the two pipelines also train on different class-balanced
# subsets, so
# single classes move for more than one reason. Notebook 05 asks what this does to step 3.

# %% [markdown]
# ## 7 · Headline numbers

# %%
metrics = {"miou_irnet": miou_irnet, "miou_irnet_crf": miou_irnet_crf,   # miou_cam(_crf): notebook 03's keys
           "walk_radius": WALK.radius, "walk_beta": WALK.beta, "walk_exp_times": WALK.exp_times,
           "walk_bg_threshold": WALK.bg_threshold, "miou_irnet_val_chosen": grid[best],
           "confident_images": int(len(confident)), "relation_unsure_fraction": float(unsure),
           "relation_precision": float(right / labelled)}
metrics |= {f"miou_irnet_bg{int(bg * 100):02d}": v for bg, v in table3.items()}
if kept_meter is not None:
    metrics["miou_irnet_bg30_all_tags_kept"] = kept_meter.miou
irnet_defaults = (5, 8, 10, 0.25)
if irnet_defaults in grid:
    metrics["miou_irnet_defaults_val"] = grid[irnet_defaults]
run.record(metrics)
print({k: v if v is None else round(float(v), 3) for k, v in metrics.items()},
      f"(miou_cam {miou_cam:.3f}, with CRF {miou_cam_crf:.3f})")

# %% [markdown]
# Checked at the quick defaults: the walk improves on the CAMs it starts from.

# %%
if DATASET == "toy" and run.quick:
    assert miou_irnet > miou_cam, metrics

# %% [markdown]
# ## Summary
#
# * IRNet turns CAMs into supervision for *pairs* of pixels, keeping only what the CAMs are sure
#   of; the unsure band around objects is where it must generalise.
# * It predicts one boundary probability per cell; pair affinities are read off paths, so a single
#   map explains every pair.
# * The random walk spreads CAM scores inside regions the boundaries close off. How far it should
#   walk depends on the image's size in cells: the reference's 256 steps over-smooth a 16×16 grid,
#   which is why the settings are chosen on held-out data.

# %% [markdown]
# ## Exercises
#
# Each exercise is one code cell: write your answer between the markers and run it; the `assert`
# lines below the answer check it. They reuse this notebook's relation labels, IRNet and walk:
# nothing is retrained.

# %% [markdown]
# ### Exercise 1 — Counting the pairs by hand
#
# §3 counted the background-positive, foreground-positive and negative pairs of one image with
# `irnet.pair_label_masks`. Count them yourself from the relation label `lab` below (§3's `rel4`,
# one label per stride-4 cell, 255 = unsure): loop over every cell $(y, x)$ and every offset
# $(dy, dx)$ of `offs`, skip the pairs whose partner $(y + dy, x + dx)$ leaves the grid or where
# either cell is unsure, and define `n_bg_pos`, `n_fg_pos` and `n_neg`. Which kind dominates, and
# why does `irnet.affinity_loss` average each kind separately instead of over all pairs?

# %% tags=["exercise"]
lab = rel4.numpy()
h, w = lab.shape
### BEGIN SOLUTION
n_bg_pos = n_fg_pos = n_neg = 0
for y in range(h):
    for x in range(w):
        for dy, dx in offs:
            yy, xx = y + dy, x + dx
            if not (0 <= yy < h and 0 <= xx < w) or lab[y, x] == 255 or lab[yy, xx] == 255:
                continue
            if lab[y, x] != lab[yy, xx]:
                n_neg += 1
            elif lab[y, x] == 0:
                n_bg_pos += 1
            else:
                n_fg_pos += 1
print(f"background-positive {n_bg_pos}, foreground-positive {n_fg_pos}, negative {n_neg}")
# Background pairs dominate by far: most cells are background, and an object's pairs need two
# confident cells of it (small objects give a handful); negatives need confident cells on either
# side of the unsure band. A plain mean over all pairs would mostly teach "no boundary inside the
# background"; averaging each kind on its own gives the few negative pairs -- the only ones that
# ask for a boundary -- half of the affinity loss, and the object pairs a quarter.
### END SOLUTION
assert (n_bg_pos, n_fg_pos, n_neg) == (int(pos_bg.sum()), int(pos_fg.sum()), int(neg.sum()))

# %% [markdown]
# ### Exercise 2 — An affinity is the highest boundary on the path
#
# Eq. 4 reads a pair's affinity off the boundary map: $a_{ij} = 1 - \max_{k \in \Pi_{ij}} B(k)$.
# Compute it by hand for the boundary map `bmap` of §4 (`b0`, the second image of §3's figure):
# define `aff_manual` (P, h, w) with `aff_manual[p, y, x]` the affinity between cell $(y, x)$ and
# its partner at offset `offs[p]`, the path given by `irnet.path_points(dy, dx)` (shifted to start
# at $(y, x)$), and 0 for the pairs whose partner leaves the grid (IRNet pads the map with
# boundary). Then: which pairs does a single boundary cell cut?

# %% tags=["exercise"]
bmap = b0.numpy()
h, w = bmap.shape
### BEGIN SOLUTION
aff_manual = np.zeros((len(offs), h, w))
for p, (dy, dx) in enumerate(offs):
    path = irnet.path_points(dy, dx)
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                aff_manual[p, y, x] = 1 - max(bmap[y + py, x + px] for py, px in path)
# A boundary cell lowers the affinity of every pair whose straight path crosses it -- pairs up
# to the radius away on either side. That is why one map of B explains every pair, and why a
# negative pair (a boundary somewhere on its path) and a positive pair (none anywhere on it)
# together locate the boundary.
### END SOLUTION
assert aff_manual.shape == (len(offs), h, w)
assert np.allclose(aff_manual, irnet.pair_affinity(b0, offs).numpy(), atol=1e-6)

# %% [markdown]
# ### Exercise 3 — Every step of the walk is an average
#
# $T$ is column-stochastic, and a step computes $v_{new}(j) = \sum_i v(i)\,T_{ij}$: a weighted
# average of the scores around $j$. Check both on §4's example: define `col_sums`, the column sums
# of `T` (§4's dense matrix), `start_max`, the largest value of the walk's input for the first
# class of `inp1` (its CAM times $1 - B$, as `irnet.random_walk` starts), and `walked_max`, a list
# of the largest value after $2^t$ steps, $t = 0, \dots, 8$ (`irnet.random_walk`, radius 5,
# $\beta$ = 10). What can the walk never do to a score, and why must §6 divide each walked map by
# its maximum before the background threshold?

# %% tags=["exercise"]
### BEGIN SOLUTION
col_sums = T.sum(0)
start = inp1["cams"][:1] * (1 - inp1["boundary"])
start_max = start.max().item()
walked_max = [irnet.random_walk(inp1["cams"][None, :1], inp1["boundary"][None], 5, 10.0, t).max().item()
              for t in range(9)]
print(f"max of the input {start_max:.3f}; after 2^t steps:", np.round(walked_max, 3).tolist())
# An average never exceeds its largest term: the walk cannot raise the maximum (nor lower the
# minimum) of a map, it only spreads the scores out. As the mass spreads over the object, and
# leaks through weak boundaries, the peak falls steadily, so an absolute threshold would label
# less and less foreground the longer the walk; dividing by the maximum makes the threshold
# relative to the map's own peak.
### END SOLUTION
assert torch.allclose(col_sums, torch.ones_like(col_sums), atol=1e-5)
assert len(walked_max) == 9 and all(m <= start_max + 1e-6 for m in walked_max)
# T^(2^(t+1)) = T^(2^t) T^(2^t)
assert all(b <= a + 1e-6 for a, b in zip(walked_max, walked_max[1:]))


# %% [markdown]
# ### Exercise 4 — What $\beta$ does to a faint boundary
#
# The walk raises every affinity to the power $\beta$. Compare $\beta = 1$ with IRNet's
# $\beta = 10$ on the four images of `show`: `walk_show` below holds each one's boundary map
# (`["boundary"]`, at most 32 × 32 cells), `cells4` an object cell of each (by the true mask,
# where the CAM is strong and $B$ low) and `truth4` each one's true label per cell (flattened;
# 255 = unknown). Define `leak`, a dict {β: the mean over the four images of the share of the
# weight of column `cells4[n]` of $T^{16}$ (`irnet.transition_weights(boundary, 5, β)`,
# `irnet.transition_matrix`) that lies on cells of *another* class (255 does not count as another
# class)}. Why does a larger $\beta$ keep the score inside its object?

# %% tags=["exercise"]
def central(a):             # at most 32x32 cells, as in §4 (the matrices here are dense)
    y, x = max(0, a.shape[-2] // 2 - 16), max(0, a.shape[-1] // 2 - 16)
    return a[..., y:y + 32, x:x + 32]

walk_show = [{k: central(w[k]) for k in ("boundary", "cams")}
             for w in irnet_step.walk_inputs(net, step1.train_view, step1.folder, show, device=run.device, progress=False)]
truth4 = [central(irnet_step.labels_at_stride(torch.as_tensor(step1.train_view[i]["mask"]).long())) for i in show]
cells4 = [int(torch.argmax(w["cams"].amax(0) * (1 - w["boundary"]) * ((t > 0) & (t != 255))))
          for w, t in zip(walk_show, truth4)]
truth4 = [t.flatten() for t in truth4]
### BEGIN SOLUTION
leak = {}
for beta in (1.0, 10.0):
    shares = []
    for w, cell, lab in zip(walk_show, cells4, truth4):
        t16 = torch.linalg.matrix_power(irnet.transition_matrix(*irnet.transition_weights(w["boundary"], 5, beta)), 16)
        other = (lab != lab[cell]) & (lab != 255)
        shares.append(float(t16[other, cell].sum() / t16[:, cell].sum()))
    leak[beta] = float(np.mean(shares))
print({b: round(v, 3) for b, v in leak.items()})
# With beta = 1 an affinity of 0.5 across a faint boundary keeps half its weight and the walk
# crosses it easily; 0.5^10 is 0.001: raising to beta turns every affinity clearly below 1 into
# a wall, while the affinities close to 1 inside an object lose little. (It also makes the walk
# lazier -- the self-loop has affinity 1 -- which keeps the score near its start too.) On a
# single image beta = 10 can leak more, where IRNet drew a false wall between a cell and the
# rest of its own object.
### END SOLUTION
assert set(leak) == {1.0, 10.0} and all(0 <= v <= 1 for v in leak.values())
if DATASET == "toy" and run.quick:       # measured there: on 57 of 60 single images, every random group of four
    assert leak[1.0] > leak[10.0], leak

# %% [markdown]
# ### Exercise 5 — Does the displacement field point at object centres?
#
# The displacement loss asks two cells of one object to point at the same place,
# $x_i + D_i = x_j + D_j$. Test it on the first 16 tagged training images (`imgs16`): for every
# object instance (the sample's `instances` map at stride 4, `irnet_step.labels_at_stride`, restricted
# to cells whose true class is a known object class), compare how spread out its cells' positions
# $x$ are with how spread out their targets $x + D(x)$ are. Define `spread_x` and `spread_target`,
# lists with one number per instance of at least 4 cells: the mean distance (in cells) of the
# points to their centroid.

# %% tags=["exercise"]
net.eval()
imgs16 = tagged(range(len(step1.train_view)))[:16]
### BEGIN SOLUTION
spread_x, spread_target = [], []
for i in imgs16:
    s = step1.train_view[i]
    with torch.no_grad():
        # (2, h, w): dy, dx
        disp = net(images_to_tensor(s["image"]).to(run.device))[1][0].cpu().numpy()
    inst = irnet_step.labels_at_stride(torch.as_tensor(s["instances"].astype(np.int64))).numpy()
    sem = irnet_step.labels_at_stride(torch.as_tensor(s["mask"]).long()).numpy()
    yy, xx = np.mgrid[0:inst.shape[0], 0:inst.shape[1]]
    for k in np.unique(inst[(sem > 0) & (sem != 255)]):
        m = (inst == k) & (sem > 0) & (sem != 255)
        if k == 0 or m.sum() < 4:
            continue
        pos = np.stack([yy[m], xx[m]], 1).astype(float)
        target = pos + disp[:, m].T
        spread_x.append(np.linalg.norm(pos - pos.mean(0), axis=1).mean())
        spread_target.append(np.linalg.norm(target - target.mean(0), axis=1).mean())
print(f"{len(spread_x)} instances: mean spread of x {np.mean(spread_x):.2f} cells, of x + D {np.mean(spread_target):.2f}")
# The targets gather: D points towards the object's centre, so grouping the foreground cells by
# where x + D lands (IRNet's instance step, with its own clustering) would separate objects of
# one class. They do not collapse onto one point: the field is trained on confident cells only
# and a few epochs, and a 16x16 grid leaves little room.
### END SOLUTION
assert len(spread_x) == len(spread_target) > 0
if DATASET == "toy" and run.quick:       # measured there: 99.9 % of random groups of 4 images, 84 % of single instances
    assert np.mean(spread_target) < np.mean(spread_x), (np.mean(spread_target), np.mean(spread_x))
