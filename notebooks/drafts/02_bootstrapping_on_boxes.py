# DRAFT — not part of the course yet (not built, not run by the tests). Status and evidence: issue 3's
# note. Best quick-scale setting found (48 px, 200 images, 20 PP, 16 epochs, 3 seeds):
# BootstrapConfig(warmup_epochs=12, tau=0.5) → ours 0.814 ± 0.053 vs PP-only 0.771, boxes+BCE 0.668,
# ignore interiors 0.854; one seed of three below PP-only, and 16-epoch runs (~15 s each) do not fit
# the 5-minute budget with Table 2. Reproduce with notebooks/drafts/paper000_variants.py. Move this
# file to notebooks/src/ and build it with tools/nbbuild.py once its asserts pass honestly.
# %% [markdown]
# # 02 · Bootstrapping on boxes: a pixel-accurate model from boxes and a few masks
#
# Notebook 01 built the pieces of paper 000 on single pixels. Here we train networks with them and
# reproduce the poster's two tables on the toy world:
#
# * **Table 1** (binary *car* segmentation; Cityscapes in the poster): a U-Net trained on *all*
#   pixel-perfect (PP) masks; on the *few* PP masks only; on few PP + many boxes (BB) with plain
#   BCE; with box interiors ignored (a natural baseline the poster does not list); and with
#   **uncertainty + bootstrapping** ("ours"). The poster reports IoU 86.9 / 78.6 / 69.43 / — / 85.45.
# * **Table 2** (background / car / person): CE on all PP, CE on few PP, ours on few PP + boxes
#   (mIoU 79.80 / 73.36 / 77.75).
#
# The poster leaves many choices open, and the naive readings do not work. §4 shows why, with
# measurements. `lu.BootstrapConfig` holds every choice; its defaults are the variant that
# reproduces the trend here:
#
# | choice | default | why |
# | --- | --- | --- |
# | where the uncertain loss applies (`region`) | inside the boxes of BB images | elsewhere the labels are right |
# | what y* is (`target`) | the network's hard belief 1[μ > 0] | equals the flipped label exactly where the network disagrees |
# | W detached (`detach_weight`) | yes | otherwise σ² buys cheap targets everywhere: collapse |
# | eq. (2) trains μ (`uncertainty_trains_mu`) | **no**: eq. (2) trains σ² only | its μ-gradient always points at the box label (§4) |
# | τ, slope | 1.0, 0.2 | σ² starts near softplus(0) ≈ 0.69 < τ: undecided pixels follow the label |
# | warm-up (`warmup_epochs`) | 3 epochs ignoring box interiors | gives the network a belief before it may disagree |

# %% tags=["parameters"]
DATASET = "toy"        # toy | cityscapes | camvid (car; car + person/pedestrian)
DATA_ROOT = ""
OUTPUT_DIR = ""
PROFILE = "quick"
DEVICE = "auto"        # the experiments here run on the CPU at quick, on DEVICE at full
SEED = 0
SEEDS = 3              # seeds per row (means ± spread)
# Size knobs: None = the profile's default (quick | full).
IMAGE_SIZE = None      # (48 | 256): toy side, or the height real images are resized to (width 2×)
N_TRAIN = None         # training images, PP + BB (300 | 2780, as Cityscapes' train split)
N_PP = None            # pixel-perfect images among them (30 | 500, as in the poster)
PP_SWEEP = None        # other PP counts for "ours" ([15, 60] | [100, 200, 300, 400])
N_VAL = None           # (150 | 500)
EPOCHS = None          # (12 | 60)
WIDTH = None           # U-Net width (8 | 32)

# %%
import numpy as np
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm
from wsss_edu import params, viz
from wsss_edu import label_uncertainty as lu
from wsss_edu.datasets import get_dataset
from wsss_edu.data import images_to_tensor

S = params.setup("02_bootstrapping_on_boxes", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE, SEED)
P = params.profile_values(PROFILE, dict(IMAGE_SIZE=(48, 256), N_TRAIN=(300, 2780), N_PP=(30, 500),
                                        PP_SWEEP=([15, 60], [100, 200, 300, 400]), N_VAL=(150, 500),
                                        EPOCHS=(12, 60), WIDTH=(8, 32)),
                          IMAGE_SIZE=IMAGE_SIZE, N_TRAIN=N_TRAIN, N_PP=N_PP, PP_SWEEP=PP_SWEEP,
                          N_VAL=N_VAL, EPOCHS=EPOCHS, WIDTH=WIDTH)
IMAGE_SIZE, N_TRAIN, N_PP, PP_SWEEP, N_VAL, EPOCHS, WIDTH = P.values()
CFG = lu.BootstrapConfig()
print(P, CFG)

# %% [markdown]
# ## 1 · The data: a few masks, many boxes
#
# The toy world's `car` fills about two thirds of its box (notebook 00), so a box used as a mask is
# wrong on a third of its pixels. `lu.mixed_supervision_arrays` keeps the mask of `N_PP` images and
# gives every other image its rasterised boxes (`lu.rasterize_boxes`). It also keeps the true masks,
# for evaluation only. On Cityscapes or CamVid the same function reads the real loaders.

# %%
def load(split, n, classes):
    if DATASET == "toy":
        ds = get_dataset("toy", split=split, n=n, seed=SEED, size=IMAGE_SIZE,
                         class_probs={"car": 0.85, "person": 0.6})
        ids = {c: ds.classes.index(c) for c in classes}
        return ds, ids, None
    split = {"train": "train", "val": "val"}[split]
    names = {"cityscapes": {"car": "car", "person": "person"}, "camvid": {"car": "car", "person": "pedestrian"}}[DATASET]
    ds = get_dataset(DATASET, DATA_ROOT, split=split, classes=tuple(names[c] for c in classes))
    return ds, {c: ds.classes.index(names[c]) for c in classes}, (IMAGE_SIZE, 2 * IMAGE_SIZE)

def mixed(classes, n_pp):
    tr, ids, size = load("train", N_TRAIN, classes)
    va, _, _ = load("val", N_VAL, classes)
    cmap = {ids[c]: k + 1 for k, c in enumerate(classes)}
    n_tr, n_va = min(N_TRAIN, len(tr)), min(N_VAL, len(va))
    return (lu.mixed_supervision_arrays(tr, n_pp, cmap, range(n_tr), seed=SEED, size=size),
            lu.mixed_supervision_arrays(va, n_va, cmap, range(n_va), seed=SEED, size=size))

cars, cars_val = mixed(["car"], N_PP)
bb = ~cars["pixel_perfect"]
wrong = (cars["target"][bb] != cars["mask"][bb]) & (cars["mask"][bb] != 255)
print(f"{cars['pixel_perfect'].sum()} PP + {bb.sum()} BB training images, {len(cars_val['image'])} validation; "
      f"box targets are wrong on {wrong.sum() / (cars['target'][bb] == 1).sum():.0%} of their car pixels")

# %%
show = np.flatnonzero(bb)[:6]
viz.show_grid([list(cars["image"][show]), list(cars["mask"][show]), list(cars["target"][show])],
              row_titles=["image", "true mask", "box target"])
plt.show(); plt.close()

# %% [markdown]
# ## 2 · Table 1 on the toy world
#
# One small U-Net with the two heads of notebook 01 ($\mu$, $\sigma^2$), the same for every row; only
# the data and the loss change (`lu.method_loss`). Each row is trained with `SEEDS` seeds. For the
# one-seed "ours" run we also keep snapshots of a few box-labelled training images after each
# epoch, for §3.

# %%
snap_idx = np.flatnonzero(bb)[:3]
snap_x = images_to_tensor(cars["image"][snap_idx])
snapshots = {}

def keep_snapshot(epoch, net):
    labels, s2, _ = lu.predict_labels(net, snap_x)
    snapshots[epoch] = (labels.numpy(), s2[:, 0].numpy())

def run(arrays, val, method, seed, num_logits=1, cfg=CFG, snapshot=None):
    return lu.train_experiment(arrays, val, method, num_logits, EPOCHS, seed, cfg, width=WIDTH,
                               snapshot=snapshot, progress=False)[1]["miou"]

table1 = {}
for method in tqdm(lu.METHODS, desc="Table 1"):
    table1[method] = [run(cars, cars_val, method, SEED + k,
                          snapshot=keep_snapshot if (method == "ours" and k == 0) else None)
                      for k in range(SEEDS)]
final = {m: np.array([h[-1] for h in hs]) for m, hs in table1.items()}

# %%
names = {"all_pp": f"all PP ({N_TRAIN})", "pp_only": f"PP only ({N_PP})", "boxes_bce": f"{N_PP} PP + boxes, BCE",
         "ignore_box": f"{N_PP} PP + boxes, ignore interiors", "ours": f"{N_PP} PP + boxes, ours"}
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.barh([names[m] for m in final], [v.mean() for v in final.values()], xerr=[v.std() for v in final.values()],
        color=["gray", "tab:blue", "tab:red", "tab:orange", "tab:green"])
ax.set_xlim(0, 1); ax.set_xlabel(f"car IoU (val), mean ± std over {SEEDS} seeds"); ax.invert_yaxis()
plt.show(); plt.close()
print("| training data | car IoU |\n| --- | --- |")
for m, v in final.items():
    print(f"| {names[m]} | {v.mean():.3f} ± {v.std():.3f} |")

# %% [markdown]
# ### Fewer masks
#
# The poster's second block: how many pixel-perfect masks does "ours" need? We compare against
# training on those masks alone.

# %%
sweep = {N_PP: {"ours": final["ours"], "pp_only": final["pp_only"]}}
tr, ids, size = load("train", N_TRAIN, ["car"])
for n_pp in tqdm([n for n in PP_SWEEP if n != N_PP], desc="PP sweep"):
    arr = lu.mixed_supervision_arrays(tr, n_pp, {ids["car"]: 1}, range(min(N_TRAIN, len(tr))), seed=SEED, size=size)
    sweep[n_pp] = {m: np.array([run(arr, cars_val, m, SEED + k)[-1] for k in range(SEEDS)]) for m in ("ours", "pp_only")}
counts = sorted(sweep)
fig, ax = plt.subplots(figsize=(5, 2.8))
for m, c in (("ours", "tab:green"), ("pp_only", "tab:blue")):
    mean = np.array([sweep[n][m].mean() for n in counts]); std = np.array([sweep[n][m].std() for n in counts])
    ax.errorbar(counts, mean, std, marker="o", color=c, label=names[m].split(", ")[-1] if m == "ours" else "PP only")
ax.axhline(final["all_pp"].mean(), color="gray", ls="--", label="all PP")
ax.set_xlabel("pixel-perfect images"); ax.set_ylabel("car IoU"); ax.legend(fontsize=8)
plt.show(); plt.close()
print({n: {m: round(float(v.mean()), 3) for m, v in d.items()} for n, d in sweep.items()})

# %% [markdown]
# ## 3 · Watching the labels bootstrap
#
# Validation IoU after every epoch (mean over seeds). "Ours" starts like "ignore interiors" (the
# warm-up); once the uncertain loss switches on, the network contradicts the boxes where it believes
# the background, and does not drift to the boxes solution.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
for m, c in zip(lu.METHODS, ["gray", "tab:blue", "tab:red", "tab:orange", "tab:green"]):
    ax.plot(np.arange(1, EPOCHS + 1), np.mean(table1[m], 0), color=c, label=names[m])
ax.axvline(CFG.warmup_epochs + 0.5, color="k", ls=":", lw=1)
ax.set_xlabel("epoch"); ax.set_ylabel("car IoU (val)"); ax.legend(fontsize=7); ax.set_ylim(0, 1)
plt.show(); plt.close()

# %% [markdown]
# The poster's Figure 3 on three box-labelled *training* images: input, box target, the network's
# uncertainty $\sigma^2$, and its output, at several epochs. Watch $\sigma^2$ light up on the background
# inside the boxes, and the output stop following the box.

# %%
epochs_shown = sorted({CFG.warmup_epochs - 1, CFG.warmup_epochs, (CFG.warmup_epochs + EPOCHS) // 2, EPOCHS - 1})
for k, i in enumerate(snap_idx):
    row = [cars["image"][i], cars["target"][i]] + [a for e in epochs_shown for a in (snapshots[e][1][k], snapshots[e][0][k].astype(np.uint8))]
    titles = ["input", "box target"] + [t for e in epochs_shown for t in (f"σ², epoch {e + 1}", f"output, epoch {e + 1}")]
    viz.show_grid([row], titles=titles if k == 0 else None, size=1.4, cmap="magma")
    plt.show(); plt.close()

# %% [markdown]
# ## 4 · Why the naive readings fail
#
# Three readings of the poster that look equally faithful, each changed from the default in one
# choice (one seed each):
#
# * **eq. (2) also trains μ** (`uncertainty_trains_mu=True`, the literal "combined loss"): its gradient
#   on μ always points at the box label, damped only by $1/\sqrt{1 + \pi\sigma^2/8}$. A confident
#   network's own belief gives almost no gradient (BCE is flat there), so background pixels inside
#   boxes drift to "car" however uncertain they are: we get back the boxes solution.
# * **y\* = 1 − y everywhere** (`target="flip"`): where a car pixel happens to be uncertain, its label
#   is flipped to background. The flipped pixels teach more pixels to be background: collapse.
# * **W not detached**: raising σ² trades the expensive label for the cheap flipped target everywhere.

# %%
naive = {"eq. (2) trains μ": lu.BootstrapConfig(uncertainty_trains_mu=True),
         "y* = 1 − y (flip)": lu.BootstrapConfig(target="flip"),
         "W not detached, flip": lu.BootstrapConfig(target="flip", detach_weight=False)}
naive_curves = {k: run(cars, cars_val, "ours", SEED, cfg=c) for k, c in tqdm(naive.items(), desc="naive readings")}
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(np.arange(1, EPOCHS + 1), table1["ours"][0], "g", lw=2, label="default (ours)")
for k, h in naive_curves.items():
    ax.plot(np.arange(1, EPOCHS + 1), h, label=k)
ax.plot(np.arange(1, EPOCHS + 1), table1["boxes_bce"][0], "r:", label="boxes, BCE")
ax.set_xlabel("epoch"); ax.set_ylabel("car IoU (val)"); ax.set_ylim(0, 1); ax.legend(fontsize=7)
plt.show(); plt.close()
print({k: round(v[-1], 3) for k, v in naive_curves.items()})

# %% [markdown]
# ## 5 · Table 2: background, car and person
#
# With several classes the logit is a vector; the loss is the Monte-Carlo uncertain CE (eq. 5-6,
# `cfg.mc_samples` samples) inside boxes, against the bootstrapped target of eq. (7): argmax μ where
# $\max_c \sigma^2_c > \tau$. Persons stand in front of cars, so boxes overlap; the smaller box wins.

# %%
multi, multi_val = mixed(["car", "person"], N_PP)
table2 = {m: np.array([run(multi, multi_val, m, SEED + k, num_logits=3)[-1] for k in range(SEEDS)])
          for m in tqdm(("all_pp", "pp_only", "ours"), desc="Table 2")}
fig, ax = plt.subplots(figsize=(5.5, 2.2))
ax.barh([names[m] for m in table2], [v.mean() for v in table2.values()], xerr=[v.std() for v in table2.values()],
        color=["gray", "tab:blue", "tab:green"])
ax.set_xlim(0, 1); ax.set_xlabel("mIoU (bg, car, person)"); ax.invert_yaxis()
plt.show(); plt.close()
print({m: f"{v.mean():.3f} ± {v.std():.3f}" for m, v in table2.items()})

# %% [markdown]
# ## Headline numbers and the paper's trend

# %%
keys = {"iou_all_pp": final["all_pp"], "iou_pp_only": final["pp_only"], "iou_boxes_bce": final["boxes_bce"],
        "iou_ignore_box": final["ignore_box"], "iou_ours": final["ours"], "miou_mc_full": table2["all_pp"],
        "miou_mc_pp_only": table2["pp_only"], "miou_mc_ours": table2["ours"]}
S.record({k: float(v.mean()) for k, v in keys.items()} | {k + "_std": float(v.std()) for k, v in keys.items()})
print({k: round(float(v.mean()), 3) for k, v in keys.items()})

# %%
if DATASET == "toy" and S.quick:
    assert final["ours"].mean() >= final["boxes_bce"].mean() + 0.05, keys   # paper: 85.45 vs 69.43
    assert final["ours"].mean() >= final["pp_only"].mean(), keys             # paper: 85.45 vs 78.6
    assert table2["ours"].mean() > table2["pp_only"].mean(), keys            # paper: 77.75 vs 73.36

# %% [markdown]
# ## Summary
#
# * Boxes alone teach a network to paint boxes; a few pixel-perfect masks alone teach it too little.
#   Aleatoric logits plus bootstrapping let the box-labelled images contribute without their errors:
#   inside a box the network may declare a pixel uncertain, and then follow its own belief there.
# * The trend of the poster's Tables 1 and 2 reproduces on the toy world, with choices the poster
#   leaves open made explicit: eq. (2) trains σ² only, y* is the network's hard belief, W is detached,
#   the uncertain loss applies inside boxes, after a short warm-up.
# * The literal readings fail in instructive ways: back to boxes (eq. 2 drags μ to the label) or
#   collapse (flipping labels that were right).
# * Simply ignoring box interiors is a strong baseline on the toy world (compare its row); the poster
#   does not report it.
#
# ## Exercises
#
# 1. Set `warmup_epochs=0`. Does "ours" still work? Look at its curve: when does bootstrapping start?
# 2. Sweep τ over {0.5, 1, 2, 4}. Plot the final IoU and the mean σ² inside boxes at the end of
#    training. What sets the useful range of τ?
# 3. Replace `target="hard_belief"` by `"soft_belief"` (Reed et al.'s soft bootstrapping). Which
#    pixels move differently, and why?
# 4. Make boxes noisy (`box_noise=0.1` in the toy world). Which row suffers most?
