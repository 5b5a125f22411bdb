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

# %%
import numpy as np
import matplotlib.pyplot as plt
import torch
from wsss_edu import params, viz
from wsss_edu import label_uncertainty as lu

S = params.setup("01_aleatoric_logits", DATASET, DATA_ROOT, OUTPUT_DIR, PROFILE, DEVICE, SEED)
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
ax[0].set_xlabel("μ"); ax[0].set_ylabel("E[p]"); ax[0].legend(fontsize=8); ax[0].set_title("eq. (1) vs Monte-Carlo")
grid_mu, grid_s2 = np.meshgrid(np.linspace(-6, 6, 121), np.linspace(0, 16, 81))
err = lu.expected_probability(torch.tensor(grid_mu), torch.tensor(grid_s2)).numpy() - \
      lu.quadrature_expected_probability(grid_mu, grid_s2)
im = ax[1].pcolormesh(grid_mu, grid_s2, err, cmap="RdBu", vmin=-0.015, vmax=0.015)
plt.colorbar(im, ax=ax[1]); ax[1].set_xlabel("μ"); ax[1].set_ylabel("σ²"); ax[1].set_title("eq. (1) − exact (quadrature)")
plt.show(); plt.close()

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
bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(M), torch.ones(M.shape, dtype=torch.float64), reduction="none").numpy()
panels = [("plain BCE(μ, 1)", bce), ("uncertain BCE(E[p], 1)  eq. 2",
          lu.uncertain_bce(torch.tensor(M), torch.tensor(V), torch.ones(M.shape, dtype=torch.float64)).numpy()),
          ("combined: eq. 2 + eq. 4 (τ = 1)", lu.combined_loss_surface(M, V, y=1.0, tau=1.0))]
for a, (title, Z) in zip(ax, panels):
    cs = a.contourf(M, V, Z, levels=30, cmap="viridis"); plt.colorbar(cs, ax=a)
    a.set_xlabel("μ"); a.set_ylabel("σ²"); a.set_title(title, fontsize=9)
Z = panels[2][1]
for region in (M > 0, M < 0):  # the lowest point on each side of μ = 0
    k = np.argmin(np.where(region, Z, np.inf)); ax[2].plot(M.flat[k], V.flat[k], "r*", ms=12)
plt.show(); plt.close()

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
    ax.plot(s2_line, lu.combined_loss_surface(np.full_like(s2_line, m), s2_line, y=1.0, tau=1.0), label=f"μ = {m:+g}")
ax.axvline(1.0, color="gray", ls=":", label="τ"); ax.set_xlabel("σ²"); ax.set_ylabel("combined loss, y = 1"); ax.legend(fontsize=8)
plt.show(); plt.close()
line = {m: lu.combined_loss_surface(np.full_like(s2_line, m), s2_line, y=1.0, tau=1.0) for m in (-3.0, 3.0)}
print({m: (round(float(v[0]), 3), round(float(v[-1]), 3)) for m, v in line.items()}, "(loss at σ² = 0 and σ² = 10)")

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
ax.set_xlabel("σ²"); ax.set_ylabel("W"); ax.legend(fontsize=8); ax.set_title("eq. (3), slope 0.2")
plt.show(); plt.close()

# %% [markdown]
# ### One pixel, interactively
#
# `lu.plot_logit_distribution` shows a pixel's logit distribution, the distribution of its
# probability with the Monte-Carlo mean against eq. (1), and each loss term for label $y = 1$. Move
# the sliders and press **Run Interact**. Try $\mu = -3$: raise $\sigma^2$ past $\tau$ and watch the
# bootstrapped loss fall.

# %%
lu.plot_logit_distribution(mu=-3.0, sigma2=3.0, tau=1.0)
plt.show(); plt.close()

# %%
# NBVAL_IGNORE_OUTPUT
def one_pixel(mu=-3.0, sigma2=3.0, tau=1.0):
    lu.plot_logit_distribution(mu, sigma2, tau)
    plt.show(); plt.close()

viz.sliders(one_pixel, mu=(-6.0, 6.0, 0.25), sigma2=(0.0, 10.0, 0.25), tau=(0.25, 5.0, 0.25));

# %% [markdown]
# **What to detach.** Eq. (4) contains $W(\sigma^2)$. If its gradient reaches $\sigma^2$, then raising
# $\sigma^2$ trades an expensive label for the cheap flipped target. This holds wherever the network
# disagrees, so the network learns to disagree everywhere. The package detaches $W$ by default
# (`detach_weight=True`): $W$ only *selects* the target, and $\sigma^2$ is trained by eq. (2) alone.

# %%
mu = torch.tensor([-3.0], requires_grad=True); s2 = torch.tensor([3.0], requires_grad=True)
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
ax.loglog(Ts, errs, "o-", label="measured"); ax.loglog(Ts, errs[0] / np.sqrt(Ts), "k--", label="∝ 1/√T")
ax.set_xlabel("samples T"); ax.set_ylabel("mean |error| of E[softmax]"); ax.legend(fontsize=8)
plt.show(); plt.close()
y0 = torch.zeros(1, 1, 1, dtype=torch.long)
eps = torch.randn(4096, 1, 3, 1, 1, generator=gen, dtype=torch.float64)
mean_ce = -torch.log_softmax(mu3 + var3.sqrt() * eps, 2)[:, 0, 0].mean().item()
print(f"-log E[p_y] (eq. 6): {lu.mc_uncertain_ce(mu3, var3, y0, 4096, gen).item():.3f}   E[-log p_y]: {mean_ce:.3f}")

# %% [markdown]
# The headline numbers of this notebook, and the checks.

# %%
mc_err_16, mc_err_1024 = float(errs[Ts.index(16)]), float(errs[-1])
S.record({"probit_max_error": probit_err, "probit_max_error_mc": probit_err_mc, "probit_max_error_wide": probit_err_wide,
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
#
# ## Exercises
#
# 1. Find the $(\mu, \sigma^2)$ where eq. (1) is worst. Why does the probit approximation fail there?
#    (Compare the tails of sigmoid and of the Gaussian CDF.)
# 2. Redraw the combined-loss surface for $y = 0$ and for $\tau = 3$. Where do the valleys move?
# 3. Replace `target="flip"` with `"soft_belief"` in `combined_loss_surface`. Does the second valley
#    survive? What does that mean for training?
# 4. With `detach_weight=False`, follow gradient descent on $(\mu, \sigma^2)$ from $(\mu, \sigma^2) = (0.5, 0.1)$
#    for a pixel labelled 1. Where does it end? (This is the collapse notebook 02 shows at scale.)
