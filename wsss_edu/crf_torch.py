"""Dense CRF mean-field inference in PyTorch (Krähenbühl & Koltun, "Efficient Inference in Fully
Connected CRFs with Gaussian Edge Potentials", NIPS 2011), the model that ``pydensecrf``'s
``DenseCRF2D`` + ``addPairwiseGaussian`` + ``addPairwiseBilateral`` + ``inference(n)`` computes,
with the kernels summed exactly instead of through a permutohedral lattice. No compiler needed.

The model (paper eqs. 1-3): unary energies U (C, N); pairwise terms w_m * mu(l, l') * k_m(f_i, f_j)
with two Gaussian kernels k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2) on the features

* smoothness: f = (x, y) / theta_gamma                              (``gauss_sxy``, weight ``gauss_compat``)
* appearance: f = (x / theta_alpha, y / theta_alpha, rgb / theta_beta)  (``bilateral_sxy``, ``bilateral_srgb``,
  weight ``bilateral_compat``)

and the Potts compatibility mu(l, l') = [l != l'] (§4). Inference is the paper's Algorithm 1 (eq. 4),
with the choices pydensecrf's C++ code makes (``densecrf.cpp``, ``pairwise.cpp``,
``labelcompatibility.cpp``) — where it departs from the paper this module follows the code:

* Q starts as softmax(-U) (Algorithm 1, "Initialize");
* the message sum runs over *all* j, the pixel itself included (k(f_i, f_i) = 1), not j != i as in
  eq. 4 — the lattice filter includes it and the code does not subtract it;
* each kernel is normalised symmetrically (``NORMALIZE_SYMMETRIC``, pydensecrf's default):
  K~ = D^-1/2 K D^-1/2 with D = diag(K 1);
* Potts with weight w is applied as ``-w * message`` and the total is *subtracted* from -U, i.e.
  Q_i(l) ∝ exp(-U_i(l) + sum_m w_m (K~_m Q)_i(l)): the same as mu(l, l') = [l != l'] in eq. 4, as the
  two differ by sum_l' (K~ Q)_i(l'), which does not depend on l and cancels in the normalisation;
* ``inference(n)`` returns Q after n updates, (C, N) (n = 0: softmax(-U)).

Exactness and cost. The smoothness kernel is separable (exp(-(dx^2 + dy^2)/2s^2) = exp(-dx^2/2s^2)
exp(-dy^2/2s^2)), so it is applied exactly at any size as two small (H x H, W x W) matrix products.
The appearance (bilateral) kernel is summed over all pairs in row chunks of ``chunk`` pixels: no
N x N matrix is ever built, only (chunk x N) blocks (``chunk=1024`` on 64 x 64: 1024 x 4096 float32,
16 MiB), kept across iterations only while they total at most ``cache_mib`` (:func:`dense_crf`). Its cost grows as N^2, fine up to a few thousand pixels (the toy world's 64 x 64 = 4096);
larger images go through :func:`wsss_edu.crf._inference`'s coarse-grid approximation (see there).

pydensecrf's permutohedral lattice only approximates these Gaussian sums (its kernel is wider and
blockier), so the two backends agree closely but not exactly: see ``tests/test_crf_torch.py`` for
the measured agreement.
"""

from __future__ import annotations

import numpy as np
import torch


def spatial_features(h: int, w: int, sxy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel positions divided by the kernel width, per axis: (x / sxy for x < W, y / sxy for y < H)
    — the smoothness kernel's features p / theta_gamma (paper eq. 3), also the position part of the
    appearance kernel's (p / theta_alpha). Pixel index n = y * W + x, as ``DenseCRF2D``'s."""
    return (torch.arange(w, dtype=torch.float64) / sxy, torch.arange(h, dtype=torch.float64) / sxy)


def bilateral_features(image: np.ndarray, sxy: float, srgb: float) -> torch.Tensor:
    """The appearance kernel's features (paper eq. 3): (x / theta_alpha, y / theta_alpha,
    R / theta_beta, G / theta_beta, B / theta_beta) per pixel, (N, 5) float64, n = y * W + x.
    ``image`` (H, W, 3) uint8 RGB."""
    h, w = image.shape[:2]
    xs, ys = spatial_features(h, w, sxy)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    rgb = torch.from_numpy(np.asarray(image, np.float64).reshape(h * w, 3)) / srgb
    return torch.cat([xx.reshape(-1, 1), yy.reshape(-1, 1), rgb], 1)


def gaussian_kernel(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """k(f_i, f_j) = exp(-|f_i - f_j|^2 / 2) for every row i of ``fa`` (A, d) and row j of ``fb``
    (B, d): the (A, B) block of a Gaussian kernel on features already divided by the widths
    (paper eq. 3, one of its two terms). Computed as exp(f_i . f_j - |f_i|^2/2 - |f_j|^2/2), one
    matrix product and one exp (centre the features first: float32 loses ~1e-7 (|f_i|^2 + |f_j|^2)
    in the exponent). Exponents below -80 are raised to -80 (a kernel value of 1.8e-35 instead of
    a smaller one, an error below N * 1.8e-35): float32 results under 1.2e-38 are denormal numbers,
    which x86 CPUs compute slowly (a 1024 x 4096 block: 53 ms without the floor, 10 ms with it)."""
    a = torch.cat([fa, -0.5 * fa.pow(2).sum(1, keepdim=True), torch.ones_like(fa[:, :1])], 1)
    b = torch.cat([fb, torch.ones_like(fb[:, :1]), -0.5 * fb.pow(2).sum(1, keepdim=True)], 1)
    return torch.exp_((a @ b.T).clamp_(-80.0, 0.0))


def spatial_filter(values: torch.Tensor, h: int, w: int, sxy: float) -> torch.Tensor:
    """(K v)_i = sum_j exp(-|p_i - p_j|^2 / 2 sxy^2) v_j over all pixels j (itself included), exact,
    for ``values`` (C, N): the smoothness kernel's message passing (Algorithm 1), computed as one
    1-D Gaussian along x then one along y, as the kernel factorises."""
    xs, ys = spatial_features(h, w, sxy)
    kx = gaussian_kernel(xs[:, None], xs[:, None]).to(values.dtype)
    ky = gaussian_kernel(ys[:, None], ys[:, None]).to(values.dtype)
    v = values.reshape(-1, h, w)
    return (ky @ v @ kx).reshape(values.shape)  # both kernels are symmetric


def bilateral_blocks(features: torch.Tensor, chunk: int, dtype):
    """The appearance kernel K (paper eq. 3) as (chunk, N) row blocks, one at a time, for
    ``features`` (N, d) (a generator: only one block exists unless the caller keeps them)."""
    f = (features - features.mean(0)).to(dtype)  # shift-invariant, smaller numbers
    for start in range(0, f.shape[0], chunk):
        yield gaussian_kernel(f[start : start + chunk], f)


def bilateral_filter(values: torch.Tensor, blocks) -> torch.Tensor:
    """(K v)_i = sum_j k(f_i, f_j) v_j over all pixels j (itself included), exact, for ``values``
    (C, N) and the kernel's row ``blocks`` (an iterable of (chunk, N) blocks, in order, e.g.
    :func:`bilateral_blocks`): the appearance kernel's message passing (Algorithm 1)."""
    parts, start = [], 0
    for block in blocks:
        parts.append(values @ block.T)
        start += block.shape[0]
    if start != values.shape[1]:
        raise ValueError(f"the kernel blocks cover {start} pixels, the values {values.shape[1]}")
    return torch.cat(parts, 1)


def symmetric_normaliser(row_sums: torch.Tensor) -> torch.Tensor:
    """D^-1/2 for D = diag(K 1): the factor applied before and after the kernel so that the message
    is D^-1/2 K D^-1/2 Q (pydensecrf's default ``NORMALIZE_SYMMETRIC``; a kernel scaled by a
    constant gives the same messages)."""
    return 1.0 / torch.sqrt(row_sums + 1e-20)


def normalised_message(q: torch.Tensor, apply_kernel, norm: torch.Tensor) -> torch.Tensor:
    """Message passing of Algorithm 1 with symmetric normalisation: D^-1/2 K D^-1/2 Q for the
    marginals ``q`` (C, N); ``apply_kernel`` computes K v, ``norm`` is D^-1/2 (N,)."""
    return apply_kernel(q * norm) * norm


def potts_pairwise(messages, weights) -> torch.Tensor:
    """Compatibility transform (Algorithm 1) for Potts models: the pairwise energy of label l at i is
    -sum_m w_m message_m(l) — eq. 4's sum_l' [l != l'] w_m message_m(l') up to a term the same for
    every label (pydensecrf's ``PottsCompatibility``: ``-w * Q``)."""
    return -sum(w * m for w, m in zip(weights, messages))


def local_update(unary: torch.Tensor, pairwise: torch.Tensor) -> torch.Tensor:
    """Local update and normalisation of Algorithm 1 (eq. 4): Q_i(l) = exp(-U_i(l) - pairwise_i(l)) / Z_i,
    a softmax over the labels (dim 0) of (C, N) energies."""
    return torch.softmax(-unary - pairwise, dim=0)


def dense_crf(
    unary: np.ndarray,
    image: np.ndarray,
    gauss_sxy: float,
    gauss_compat: float,
    bilateral_sxy: float,
    bilateral_srgb: float,
    bilateral_compat: float,
    iterations: int,
    chunk: int = 1024,
    cache_mib: float = 64,
    dtype=torch.float32,
) -> np.ndarray:
    """Mean-field inference (paper Algorithm 1 / eq. 4) of the dense CRF with unary energies
    ``unary`` (C, H, W), a smoothness kernel (``gauss_sxy``, weight ``gauss_compat``) and an
    appearance kernel (``bilateral_sxy``, ``bilateral_srgb``, ``bilateral_compat``) on ``image``
    (H, W, 3) uint8, all pairs summed exactly. Returns the marginals Q (C, H, W) float32 after
    ``iterations`` updates, as pydensecrf's ``DenseCRF2D.inference``.

    Cost: O(N^2) per iteration for the appearance kernel (N = H * W); meant for N up to a few
    thousand. Memory: the appearance kernel is built in (``chunk``, N) blocks; they are kept for
    all iterations when the whole kernel fits in ``cache_mib`` MiB (64 x 64 pixels in float32: exactly
    64 MiB, about 4x faster), else rebuilt block by block at each iteration (then at most one
    block exists at a time). ``dtype`` float64 for checks against a float64 reference."""
    c, h, w = unary.shape
    n = h * w
    u = torch.as_tensor(np.asarray(unary).reshape(c, n), dtype=dtype)
    feats = bilateral_features(image, bilateral_sxy, bilateral_srgb)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if n * n * itemsize <= cache_mib * 2**20:
        cached = list(bilateral_blocks(feats, chunk, dtype))
        appearance = lambda v: bilateral_filter(v, cached)  # noqa: E731
    else:
        appearance = lambda v: bilateral_filter(v, bilateral_blocks(feats, chunk, dtype))  # noqa: E731
    kernels = [lambda v: spatial_filter(v, h, w, gauss_sxy), appearance]
    weights = [gauss_compat, bilateral_compat]
    ones = torch.ones(1, n, dtype=dtype)
    norms = [symmetric_normaliser(k(ones)[0]) for k in kernels]
    q = torch.softmax(-u, dim=0)  # Algorithm 1: initialise
    for _ in range(int(iterations)):
        messages = [normalised_message(q, k, nm) for k, nm in zip(kernels, norms)]
        q = local_update(u, potts_pairwise(messages, weights))
    return q.reshape(c, h, w).numpy().astype(np.float32)
