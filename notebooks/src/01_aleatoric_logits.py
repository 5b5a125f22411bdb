# %% [markdown]
# # 01 · Aleatoric logits: a prediction that can say "this label looks wrong"
#
# Paper 000 (Neven et al., *Weakly-supervised semantic segmentation by learning label uncertainty*)
# trains a segmentation network on **bounding boxes** plus a few pixel-perfect masks. A box labels
# every pixel inside it as the object, including the background between a car's wheels. Its idea:
# let the network output, for every pixel, not one logit but a **distribution** over logits,
#
# $$ l \sim \mathcal{N}(\mu, \sigma^2), $$
#
# so that where the label is unlikely (background inside a box) it can lower its loss by growing
# $\sigma^2$, the **aleatoric** (label) uncertainty, instead of learning the wrong label. This
# notebook builds the pieces on single pixels; notebook 02 trains networks with them.
#
# | eq. | what | function in `wsss_edu.label_uncertainty` |
# | --- | --- | --- |
# | (1) | $E[\hat p] = \mathrm{sigmoid}\big(\mu / \sqrt{1 + \pi\sigma^2/8}\big)$ | `expected_probability` |
# | (2) | $\mathcal{L} = \mathrm{BCE}(E[\hat p], y)$ | `uncertain_bce` |
# | (3) | $W = \mathrm{sigmoid}\big((\tau - \sigma^2)/0.2\big)$ | `bootstrap_weight` |
# | (4) | $\mathcal{L} = W\,\mathrm{BCE}(\mu, y) + (1-W)\,\mathrm{BCE}(\mu, y^*)$ | `bootstrapped_bce` |
# | (5-6) | $E[\mathrm{softmax}(l)]$ by Monte-Carlo, $\mathcal{L} = -\log E[\hat p]_y$ | `mc_log_expected_softmax`, `mc_uncertain_ce` |

# %% tags=["parameters"]
DATASET = "toy"        # not used here: this notebook works on single pixels
DATA_ROOT = ""
OUTPUT_DIR = ""
PROFILE = "quick"
DEVICE = "auto"
SEED = 0
MC_SAMPLES = 400000    # Monte-Carlo samples per grid point for the checks

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
import matplotlib.pyplot as plt
import numpy as np
import torch

from wsss_edu import label_uncertainty as lu
from wsss_edu import params, viz

run = params.setup("01_aleatoric_logits", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE,
                   SEED, namespace=globals())
gen = torch.Generator().manual_seed(SEED)

# %% [markdown]
# ## 1 · From a logit distribution to an expected probability
#
# The probability of the class is $\hat p = \mathrm{sigmoid}(l)$. With $l$ random, what counts is its
# mean $E[\hat p]$, an integral with no closed form. The **probit approximation** replaces the sigmoid
# by a Gaussian CDF of matched slope, $\mathrm{sigmoid}(x) \approx \Phi(x\sqrt{\pi/8})$, whose
# Gaussian average *has* a closed form: eq. (1). A large $\sigma^2$ flattens the logit, pulling
# $E[\hat p]$ towards ½ whatever $\mu$ says.
#
# Below, eq. (1) (lines) against a Monte-Carlo average of sigmoid over samples of $l$ (dots):

# %%
mus = torch.linspace(-8, 8, 33, dtype=torch.float64)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
for s2 in (0.0, 1.0, 4.0, 16.0):
    s2_t = torch.full_like(mus, s2)
    ax[0].plot(mus, lu.expected_probability(mus, s2_t), label=f"σ² = {s2:g}")
    ax[0].plot(mus, lu.mc_expected_probability(mus, s2_t, 20000, gen), "k.", ms=3)
ax[0].set_xlabel("μ")
ax[0].set_ylabel("E[p]")
ax[0].legend(fontsize=8)
ax[0].set_title("eq. (1) vs Monte-Carlo")
grid_mu, grid_s2 = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(0, 16, 81))
err = lu.expected_probability(torch.tensor(grid_mu), torch.tensor(grid_s2)).numpy() - \
      lu.quadrature_expected_probability(grid_mu, grid_s2)
im = ax[1].pcolormesh(grid_mu, grid_s2, err, cmap="RdBu", vmin=-0.015, vmax=0.015)
plt.colorbar(im, ax=ax[1])
ax[1].set_xlabel("μ")
ax[1].set_ylabel("σ²")
ax[1].set_title("eq. (1) − exact (quadrature)")
plt.show()
plt.close()

# %% [markdown]
# The approximation is good where it matters (the error map is mostly white), and worst for large
# $|\mu|$ together with large $\sigma^2$. We measure it against Monte-Carlo on the grid the tests use:

# %%
mu_g, s2_g = np.meshgrid(np.linspace(-3, 3, 13), np.array([0, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4]))
approx = lu.expected_probability(torch.tensor(mu_g), torch.tensor(s2_g)).numpy()
mc = lu.mc_expected_probability(torch.tensor(mu_g), torch.tensor(s2_g), MC_SAMPLES, gen).numpy()
probit_err = float(np.abs(approx - lu.quadrature_expected_probability(mu_g, s2_g)).max())
probit_err_mc = float(np.abs(approx - mc).max())  # includes Monte-Carlo noise (~1e-3)
probit_err_wide = float(np.abs(err).max())
print(f"|μ| ≤ 3, σ² ≤ 4: max |eq.(1) − exact| = {probit_err:.4f}, max |eq.(1) − MC| = {probit_err_mc:.4f};  "
      f"|μ| ≤ 6, σ² ≤ 16: max |eq.(1) − exact| = {probit_err_wide:.4f}")

# %% [markdown]
# ## 2 · The uncertain loss, and why it has two ways down
#
# Take a pixel labelled $y = 1$ (inside a car's box) that the network believes is background
# ($\mu < 0$). The plain BCE can only fall by raising $\mu$, by learning the wrong label. The
# uncertain BCE of eq. (2) can also fall by raising $\sigma^2$: $E[\hat p] \to ½$ and the loss to
# $\log 2$. The network can now *contradict* the label at bounded cost, but the gradient on $\mu$
# still points at the label.
#
# **Bootstrapping** (eq. 3-4) turns that gradient round. Where $\sigma^2 > \tau$, the weight $W$
# drops to 0 and the target switches from $y$ to $y^*$, the flipped label, which is what the network
# believes. The **combined loss** (eq. 2 + eq. 4) then has two valleys for the same label: agree
# (large $\mu$, small $\sigma^2$), or disagree and be uncertain (small $\mu$, large $\sigma^2$).

# %%
M, V = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(0.0, 6, 121))
fig, ax = plt.subplots(1, 3, figsize=(14, 3.4))
bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(M),
                                                           torch.ones(M.shape, dtype=torch.float64),
                                                           reduction="none").numpy()
panels = [("plain BCE(μ, 1)", bce), ("uncertain BCE(E[p], 1)  eq. 2",
          lu.uncertain_bce(torch.tensor(M), torch.tensor(V), torch.ones(M.shape, dtype=torch.float64)).numpy()),
          ("combined: eq. 2 + eq. 4 (τ = 1)", lu.combined_loss_surface(M, V, y=1.0, tau=1.0))]
for a, (title, Z) in zip(ax, panels):
    cs = a.contourf(M, V, Z, levels=30, cmap="viridis")
    plt.colorbar(cs, ax=a)
    a.set_xlabel("μ")
    a.set_ylabel("σ²")
    a.set_title(title, fontsize=9)
Z = panels[2][1]
for region in (M > 0, M < 0):  # the lowest point on each side of μ = 0
    k = np.argmin(np.where(region, Z, np.inf))
    ax[2].plot(M.flat[k], V.flat[k], "r*", ms=12)
plt.show()
plt.close()

# %% [markdown]
# The red stars are the lowest points of the combined loss on each side of $\mu = 0$ within the
# plotted range: one where the network agrees with the box ($\mu > 0$, certain), one where it
# contradicts the box and is uncertain ($\mu < 0$, large $\sigma^2$). The second valley runs off to
# infinity: its loss tends to $\log 2$ as $\sigma^2$ grows like $\mu^2$. Which valley a pixel ends in is
# decided by what the network has learned elsewhere, from the few pixel-perfect masks.
#
# Along two vertical lines of the surface: a pixel that firmly disagrees ($\mu = -3$) is rewarded for
# raising $\sigma^2$; one that agrees ($\mu = +3$) is penalised for it.

# %%
s2_line = np.linspace(0, 10, 201)
fig, ax = plt.subplots(figsize=(5, 2.8))
for m in (-3.0, 3.0):
    ax.plot(s2_line, lu.combined_loss_surface(np.full_like(s2_line, m), s2_line, y=1.0, tau=1.0),
            label=f"μ = {m:+g}")
ax.axvline(1.0, color="gray", ls=":", label="τ")
ax.set_xlabel("σ²")
ax.set_ylabel("combined loss, y = 1")
ax.legend(fontsize=8)
plt.show()
plt.close()
line = {m: lu.combined_loss_surface(np.full_like(s2_line, m), s2_line, y=1.0, tau=1.0) for m in (-3.0, 3.0)}
print({m: (round(float(v[0]), 3), round(float(v[-1]), 3)) for m, v in line.items()},
      "(loss at σ² = 0 and σ² = 10)")

# %% [markdown]
# ## 3 · The bootstrap weight and the threshold τ
#
# $W(\sigma^2)$ is a soft step at $\tau$ of width set by the slope (0.2 in the poster). The poster
# does not give $\tau$: its right value depends on the scale of $\sigma^2$ the network learns, which
# notebook 02 measures.

# %%
s2 = torch.linspace(0, 6, 200)
fig, ax = plt.subplots(figsize=(5, 2.8))
for tau in (0.5, 1.0, 2.0, 4.0):
    ax.plot(s2, lu.bootstrap_weight(s2, tau), label=f"τ = {tau:g}")
ax.set_xlabel("σ²")
ax.set_ylabel("W")
ax.legend(fontsize=8)
ax.set_title("eq. (3), slope 0.2")
plt.show()
plt.close()

# %% [markdown]
# ### One pixel, interactively
#
# `lu.plot_logit_distribution` shows a pixel's logit distribution, the distribution of its
# probability with the Monte-Carlo mean against eq. (1), and each loss term for label $y = 1$. Move
# the sliders and press **Run Interact**. Try $\mu = -3$: raise $\sigma^2$ past $\tau$ and watch the
# bootstrapped loss fall.

# %%
lu.plot_logit_distribution(mu=-3.0, sigma2=3.0, tau=1.0)
plt.show()
plt.close()


# %%
# NBVAL_IGNORE_OUTPUT
def one_pixel(mu=-3.0, sigma2=3.0, tau=1.0):
    lu.plot_logit_distribution(mu, sigma2, tau)
    plt.show()
    plt.close()

viz.sliders(one_pixel, mu=(-6.0, 6.0, 0.25), sigma2=(0.0, 10.0, 0.25), tau=(0.25, 5.0, 0.25))

# %% [markdown]
# **What to detach.** Eq. (4) contains $W(\sigma^2)$. If its gradient reaches $\sigma^2$, then raising
# $\sigma^2$ trades an expensive label for the cheap flipped target. This holds wherever the network
# disagrees, so the network learns to disagree everywhere. The package detaches $W$ by default
# (`detach_weight=True`): $W$ only *selects* the target, and $\sigma^2$ is trained by eq. (2) alone.

# %%
mu = torch.tensor([-3.0], requires_grad=True)
s2 = torch.tensor([3.0], requires_grad=True)
for detach in (False, True):
    mu.grad = s2.grad = None
    lu.bootstrapped_bce(mu, s2, torch.ones(1), tau=1.0, target="flip", detach_weight=detach).backward()
    print(f"detach_weight={detach}: d loss / d σ² = {0.0 if s2.grad is None else s2.grad.item():+.4f}")

# %% [markdown]
# ## 4 · More than two classes: the Monte-Carlo loss
#
# With a logit *vector* $l \sim \mathcal{N}(\boldsymbol\mu, \mathrm{diag}\,\boldsymbol\sigma^2)$ there is
# no probit trick for $E[\mathrm{softmax}(l)]$: the poster samples it (eq. 5) with $T$ draws and uses
# $-\log E[\hat p]_y$ (eq. 6). Computed stably, that is a **log-mean-exp** of log-softmax samples.
# Averaging the cross-entropy over samples instead gives $E[-\log \hat p_y] \ge -\log E[\hat p_y]$
# (Jensen): a different, larger loss that penalises uncertainty rather than allowing it.

# %%
mu3 = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64).view(1, 3, 1, 1)
var3 = torch.tensor([[2.0, 2.0, 2.0]], dtype=torch.float64).view(1, 3, 1, 1)
ref = lu.mc_expected_softmax(mu3, var3, 400000, gen).flatten()
Ts = [1, 4, 16, 64, 256, 1024]
errs = [np.mean([(lu.mc_expected_softmax(mu3, var3, t, gen).flatten() - ref).abs().max().item()
                 for _ in range(50)]) for t in Ts]
fig, ax = plt.subplots(figsize=(4.5, 2.8))
ax.loglog(Ts, errs, "o-", label="measured")
ax.loglog(Ts, errs[0] / np.sqrt(Ts), "k--", label="∝ 1/√T")
ax.set_xlabel("samples T")
ax.set_ylabel("mean |error| of E[softmax]")
ax.legend(fontsize=8)
plt.show()
plt.close()
y0 = torch.zeros(1, 1, 1, dtype=torch.long)
eps = torch.randn(4096, 1, 3, 1, 1, generator=gen, dtype=torch.float64)
mean_ce = -torch.log_softmax(mu3 + var3.sqrt() * eps, 2)[:, 0, 0].mean().item()
print(f"-log E[p_y] (eq. 6): {lu.mc_uncertain_ce(mu3, var3, y0, 4096, gen).item():.3f}   E[-log p_y]: {mean_ce:.3f}")

# %% [markdown]
# The headline numbers of this notebook, and the checks.

# %%
mc_err_16, mc_err_1024 = float(errs[Ts.index(16)]), float(errs[-1])
run.record({"probit_max_error": probit_err, "probit_max_error_mc": probit_err_mc, "probit_max_error_wide": probit_err_wide,
          "mc_softmax_error_t16": mc_err_16, "mc_softmax_error_t1024": mc_err_1024})
assert probit_err < 5e-3, probit_err                 # eq. (1) is accurate where pixels live
assert mc_err_1024 < mc_err_16 / 4                    # Monte-Carlo converges (~1/√T: 8× expected)
assert line[-3.0][-1] < line[-3.0][0] / 2   # disagreeing: uncertainty halves the loss (or better)
assert line[3.0][-1] > line[3.0][0]         # agreeing: uncertainty only costs

# %% [markdown]
# ## Summary
#
# * An aleatoric logit $\mathcal{N}(\mu, \sigma^2)$ lets a pixel say "my label looks wrong" by raising
#   $\sigma^2$; eq. (1) gives its expected probability in closed form, accurate to about 4·10⁻³ where
#   logits live (about 10⁻² in the far corners).
# * The uncertain BCE (eq. 2) bounds the cost of contradicting a label at about $\log 2$; bootstrapping
#   (eq. 3-4) also turns the gradient towards the network's belief, so the combined loss has two valleys.
# * Detach $W$: otherwise $\sigma^2$ learns to buy cheap targets everywhere.
# * With more classes, $E[\mathrm{softmax}]$ is sampled; use log-mean-exp, not the mean of the logs.

# %% [markdown]
# ## Exercises
#
# Each exercise is one code cell: write your answer between the markers and run it; the `assert`
# lines below the answer check it. Everything here is single pixels: each cell runs in seconds.

# %% [markdown]
# ### Exercise 1 — Where the probit approximation is worst
#
# For each σ² in `SIGMA2S`, find the μ ≥ 0 on `mu_line` where eq. (1) is furthest from the exact
# $E[\hat p]$ (`lu.quadrature_expected_probability`): define the dicts `worst_mu` {σ²: that μ} and
# `worst_err` {σ²: the largest \|eq. (1) − exact\|}. Then compare the two functions the
# approximation swaps: define `tail_ratio`, the array $(1 - \mathrm{sigmoid}(x)) / (1 - \Phi(x\sqrt{\pi/8}))$
# for `x = np.arange(1, 9)` ($\Phi$: `scipy.special.ndtr`). How do the worst μ and the worst error
# move with σ², and why there?

# %% tags=["exercise"]
mu_line = np.linspace(0, 30, 3001)
SIGMA2S = (1.0, 4.0, 16.0)
### BEGIN SOLUTION
from scipy.special import ndtr


def probit_error(mu_, s2_):
    mu_ = np.asarray(mu_, np.float64)
    s2_ = np.full_like(mu_, s2_)
    return (lu.expected_probability(torch.tensor(mu_), torch.tensor(s2_)).numpy()
            - lu.quadrature_expected_probability(mu_, s2_))

worst_mu, worst_err = {}, {}
for v in SIGMA2S:
    e = np.abs(probit_error(mu_line, v))
    worst_mu[v], worst_err[v] = float(mu_line[e.argmax()]), float(e.max())
x = np.arange(1, 9)
tail_ratio = (1 - 1 / (1 + np.exp(-x))) / ndtr(-x * np.sqrt(np.pi / 8))   # 1 - Φ(z) = Φ(-z)
print({v: (worst_mu[v], round(worst_err[v], 4), round(worst_mu[v] / np.sqrt(1 + np.pi * v / 8), 2)) for v in SIGMA2S})
print(np.round(tail_ratio, 1))
### END SOLUTION
rng = np.random.default_rng(SEED)
for v in SIGMA2S:   # brute force: no μ in [0, 30] may be worse than the one found
    probe = np.append(rng.uniform(0, 30, 400), worst_mu[v])
    gap = np.abs(lu.expected_probability(torch.tensor(probe), torch.full((len(probe),), v, dtype=torch.float64)).numpy()
                 - lu.quadrature_expected_probability(probe, np.full_like(probe, v)))
    assert gap[:-1].max() <= worst_err[v] + 1e-5 and abs(gap[-1] - worst_err[v]) < 1e-9, v
assert worst_err[1.0] < worst_err[4.0] < worst_err[16.0] and worst_mu[1.0] < worst_mu[4.0] < worst_mu[16.0]
assert np.shape(tail_ratio) == (8,) and (np.diff(tail_ratio) > 0).all() and tail_ratio[-1] > 100

# %% [markdown] tags=["solution"]
# The error is worst at μ ≈ 3 √(1 + πσ²/8), where eq. (1) gives $E[\hat p] \approx$ sigmoid(3) ≈ 0.95,
# and it grows with σ² (about 0.005, 0.010 and 0.015 for σ² = 1, 4, 16). The probit trick replaces
# the sigmoid by a Gaussian CDF with the same slope at 0. The two agree at 0 and at ±∞, but their
# tails differ: the sigmoid's tail falls like $e^{-x}$, the CDF's like $e^{-\pi x^2/16}$, so the
# ratio of the tails grows without bound (about 1,000 at x = 8). A wide logit distribution (large
# σ²) sends much of its mass into those tails, and a mean μ a few slopes from 0 places the
# distribution where they matter most. Near μ = 0 the symmetric errors cancel, and at very large
# μ both probabilities are 1. In practice pixels live at |μ| ≲ 3 and σ² ≲ 4, where the error stays
# below 5·10⁻³ (§1).

# %% [markdown]
# ### Exercise 2 — Moving the valleys: the label and τ
#
# Define `Z0`, the combined-loss surface (eq. 2 + eq. 4, τ = 1, `lu.combined_loss_surface`) for a
# pixel labelled **y = 0**, on the grid `M, V` of §2. Then, for each τ in `TAUS`, take the pixel of
# §2 that firmly disagrees with its label (μ = −3, y = 1) and find where along `s2_line` its
# combined loss falls fastest: define `steepest`, a dict {τ: that σ²} (the midpoint of the two
# neighbouring points of `s2_line` with the largest drop). Where do the valleys go?

# %% tags=["exercise"]
TAUS = (0.5, 1.0, 2.0, 3.0)
### BEGIN SOLUTION
Z0 = lu.combined_loss_surface(M, V, y=0.0, tau=1.0)
steepest = {}
for tau in TAUS:
    L = lu.combined_loss_surface(np.full_like(s2_line, -3.0), s2_line, y=1.0, tau=tau)
    k = int(np.diff(L).argmin())
    steepest[tau] = float(s2_line[k:k + 2].mean())
print(steepest)
### END SOLUTION
assert Z0.shape == M.shape
# y = 0 is §2's y = 1 surface mirrored in μ (M's grid is symmetric)
assert np.allclose(Z0, Z[:, ::-1])
assert all(abs(steepest[t] - t) <= 0.1 for t in TAUS), steepest

# %% [markdown] tags=["solution"]
# For y = 0 the surface is the y = 1 surface mirrored in μ: the certain valley is now at μ < 0 and
# the uncertain one at μ > 0 (the network says "object" inside a region labelled background). τ
# does not move the valleys' floors, it moves the *door* between them: the disagreeing pixel's loss
# drops by about BCE(−3, 1) ≈ 3 as σ² crosses τ, where W (eq. 3) switches from the label to the
# flipped target, within the slope 0.2 of eq. (3). A larger τ demands more uncertainty before a
# label may be contradicted: more box labels are followed, fewer corrected.

# %% [markdown]
# ### Exercise 3 — Which way does eq. (4) push μ?
#
# A loss surface shows the loss's *value*; gradient descent follows the *gradient* the loss gives
# the network, and the target $y^*$ is detached. Take a pixel labelled y = 1 with σ² = `S2_HIGH`
# (W ≈ 2·10⁻⁹: eq. 4 follows $y^*$). For each target in `TARGETS`, define `grads[target]`, the
# autograd derivative of `lu.bootstrapped_bce` with respect to μ at every μ of `mu_grid`, and
# `fd[target]`, the slope of the same loss *value* by central differences (step 1e-4). Which way
# does each target push μ, and which one's surface lies about its gradient?

# %% tags=["exercise"]
mu_grid = torch.linspace(-4, 4, 81, dtype=torch.float64)
S2_HIGH, TAU_3 = 5.0, 1.0
TARGETS = ("flip", "hard_belief", "soft_belief")
### BEGIN SOLUTION
def eq4(m, target):
    return lu.bootstrapped_bce(m, torch.full_like(m, S2_HIGH), torch.ones_like(m), TAU_3,
                               target=target)

grads, fd = {}, {}
for t in TARGETS:
    m = mu_grid.clone().requires_grad_(True)
    grads[t] = torch.autograd.grad(eq4(m, t).sum(), m)[0]
    fd[t] = (eq4(mu_grid + 1e-4, t) - eq4(mu_grid - 1e-4, t)) / 2e-4
print({t: [round(grads[t][k].item(), 3) for k in (10, 40, 70)] for t in TARGETS},
      "(at μ = -3, 0, 3)")
### END SOLUTION
away = mu_grid.abs() > 0.05   # the hard belief jumps at μ = 0
assert all(grads[t].shape == fd[t].shape == mu_grid.shape for t in TARGETS)
# descent lowers every μ, even where the network agrees with y = 1
assert (grads["flip"] > 0.01).all()
assert (grads["hard_belief"][mu_grid > 0.05] < 0).all() and (grads["hard_belief"][mu_grid < -0.05] > 0).all()
assert grads["soft_belief"].abs().max() < 1e-6
for t in ("flip", "hard_belief"):          # a target that does not move with μ: the surface is honest
    assert torch.allclose(fd[t][away], grads[t][away], atol=1e-5)
assert (fd["soft_belief"] - grads["soft_belief"]).abs().max() > 0.1   # one that moves: it is not

# %% [markdown] tags=["solution"]
# * `flip`: y* = 0 everywhere, so every uncertain pixel is pushed towards background, including the
#   ones that agree with a correct label: the collapse of notebook 02 §6.
# * `hard_belief`: y* = 1[μ > 0], so the gradient pushes μ further the way it already points. An
#   uncertain pixel keeps, and sharpens, its own belief (self-training).
# * `soft_belief`: y* = sigmoid(μ) detached, and BCE(μ, sigmoid(μ)) has gradient sigmoid(μ) −
#   sigmoid(μ) = 0. Where W ≈ 0 the bootstrapped term gives μ nothing at all: it neither corrects
#   nor confirms. Its loss *value* is the entropy of sigmoid(μ), which does fall away from μ = 0 —
#   so the surface (exercise 2's picture with `target="soft_belief"`) shows a second valley that
#   training never descends into. With a detached target, read gradients, not surfaces.

# %% [markdown]
# ### Exercise 4 — Where gradient descent ends: W detached or not
#
# Follow plain gradient descent on one pixel labelled y = 1, on the combined loss eq. (2) + eq. (4)
# (`lu.uncertain_bce` + `lu.bootstrapped_bce`, hard belief, τ = `TAU_4`), with σ² = softplus(raw)
# as in the network's head, from every start point of the grid `mu0, s20` (μ₀ across, σ²₀ down;
# 400 steps of size 0.25 on (μ, raw); all start points at once, as one tensor). Define `end_mu`, a
# dict {detach_weight: the final μ, shaped like `mu0`} for `detach_weight` True and False. Which
# start points end up contradicting their label (μ < 0)? Where does the start (0.5, 0.1) end?

# %% tags=["exercise"]
TAU_4 = 1.0
mu0, s20 = np.meshgrid(np.linspace(-4, 4, 17), np.linspace(0.1, 3.0, 30))
### BEGIN SOLUTION
def descend(detach, steps=400, lr=0.25):
    m = torch.tensor(mu0.ravel(), requires_grad=True)
    raw = torch.tensor(np.log(np.expm1(s20.ravel())), requires_grad=True)   # softplus(raw) = σ²₀
    y = torch.ones_like(m)
    for _ in range(steps):
        v = torch.nn.functional.softplus(raw)
        loss = lu.uncertain_bce(m, v, y) + lu.bootstrapped_bce(m, v, y, TAU_4, detach_weight=detach)
        g_m, g_raw = torch.autograd.grad(loss.sum(), (m, raw))
        with torch.no_grad():
            m -= lr * g_m
            raw -= lr * g_raw
    return m.detach().numpy().reshape(mu0.shape)

end_mu = {d: descend(d) for d in (True, False)}
for d in (True, False):   # D: ends contradicting its label; one row per σ²₀, μ₀ from -4 to 4
    print(f"detach_weight={d}\n" + "\n".join(f"  σ²₀ = {s20[i, 0]:.1f}  " + "".join("D" if e < 0 else "."
                                                for e in end_mu[d][i]) for i in range(0, len(s20), 3)))
### END SOLUTION
below = s20 < 0.9 * TAU_4
assert end_mu[True].shape == end_mu[False].shape == mu0.shape
for d in (True, False):
    assert not (end_mu[d][mu0 > 0] < 0).any()     # the hard belief never turns a pixel that agrees
assert not (end_mu[True][below] < 0).any()   # detached: below τ, every pixel returns to its label
assert (end_mu[False][below] < 0).any()            # not detached: some climb past τ through W
assert (end_mu[False] < 0).sum() > (end_mu[True] < 0).sum()

# %% [markdown] tags=["solution"]
# The start (0.5, 0.1) agrees with its label and ends there, detached or not: a single pixel with a
# right label cannot collapse. With W detached, only pixels that *start* at τ or above and disagree
# end disagreeing: σ² is trained by eq. (2) alone, and below τ eq. (4) pulls μ to the label. Not
# detached, W hands σ² a second gradient: raising σ² swaps the expensive label for the cheap target,
# so disagreeing pixels well below τ (σ²₀ = 0.4, μ₀ = −4) climb over it. In a network the pixels
# share weights: a σ² head that learns "raise σ² where I disagree" on the wrong box labels raises it
# on right labels as well, and with `target="flip"` (exercise 3) those are then pushed to background
# — the collapse notebook 02 §6 shows at scale.
