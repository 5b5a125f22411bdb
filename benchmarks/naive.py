"""The reference formulations ``make bench`` measures the package against, written from their
descriptions (reference/methods.md; not copied from the reference code), and checked equal to the
package's own implementations on small inputs in tests/test_bench_helpers.py.

* :func:`dense_walk`: IRNet's random walk as the reference code builds it (methods.md §2): a dense
  (HW)² affinity matrix A over the feature grid (stride 4: (HW/16)² for an image of H × W), with
  self-loops, raised to ``beta`` and normalised per column, T = A^beta D^-1, then squared
  ``exp_times`` times (T^(2^exp_times)) and applied to the damped CAMs once. The package walks the
  same T in pair form (:func:`wsss_edu.irnet.random_walk`), never storing it.
* :func:`naive_energy`: RRM's dense energy (paper 003 eqs. 12-14) in its all-pairs form: the whole
  N × N Gaussian kernel G and the N × N matrix of class disagreements, N = H·W pixels. The package
  computes the same sum ``chunk`` rows of G at a time (:func:`wsss_edu.rrm.dense_energy_loss`).
"""

import numpy as np
import torch

from wsss_edu.irnet import pair_offsets, path_points
from wsss_edu.rrm import IGNORE


def dense_affinity(boundary: torch.Tensor, radius: int = 5, path: str = "thick") -> torch.Tensor:
    """IRNet eq. 4 as a dense matrix: ``A[i, j] = 1 - max_{k on the path from j to i} B(k)`` for
    every pixel pair within ``radius`` (both inside the image), 1 on the diagonal (self-loops), 0
    elsewhere. ``boundary`` (H, W) → (HW, HW) in its dtype. The path's points are
    :func:`wsss_edu.irnet.path_points` (the definition of the path, not of the walk)."""
    h, w = boundary.shape
    b = boundary
    a = torch.eye(h * w, dtype=b.dtype)
    idx = torch.arange(h * w).view(h, w)
    for dy, dx in pair_offsets(radius, half=False):
        # pixels j = (y, x) whose partner i = (y + dy, x + dx) is inside the image
        y0, y1 = max(0, -dy), min(h, h - dy)
        x0, x1 = max(0, -dx), min(w, w - dx)
        if y0 >= y1 or x0 >= x1:
            continue
        peak = torch.stack(
            [b[y0 + py : y1 + py, x0 + px : x1 + px] for py, px in path_points(dy, dx, path)]
        ).amax(0)
        j = idx[y0:y1, x0:x1].flatten()
        i = idx[y0 + dy : y1 + dy, x0 + dx : x1 + dx].flatten()
        a[i, j] = 1 - peak.flatten()
    return a


def dense_transition(
    boundary: torch.Tensor, radius: int = 5, beta: float = 10.0, path: str = "thick"
) -> torch.Tensor:
    """IRNet eq. 10 densely: T = A^beta (element-wise) with each column divided by its sum, so T is
    column-stochastic. (HW, HW)."""
    t = dense_affinity(boundary, radius, path).clamp_(min=0).pow_(beta)
    return t.div_(t.sum(0, keepdim=True).clamp_(min=1e-12))


def dense_walk(
    cams: torch.Tensor,
    boundary: torch.Tensor,
    radius: int = 5,
    beta: float = 10.0,
    exp_times: int = 8,
    path: str = "thick",
) -> torch.Tensor:
    """IRNet eq. 11 as the reference code computes it: T squared ``exp_times`` times (matrix
    power 2^exp_times by repeated squaring), then the CAMs (K, H, W) damped by (1 - B), flattened
    to (K, HW), times T once. Returns (K, H, W)."""
    t = dense_transition(boundary, radius, beta, path)
    for _ in range(exp_times):
        t = t @ t
    v = (cams * (1 - boundary)).reshape(cams.shape[0], -1)
    return (v @ t).view_as(cams)


def squaring_rows(t: torch.Tensor, rows: int, out: torch.Tensor) -> None:
    """The first ``rows`` rows of one squaring T @ T, written into ``out`` (HW, HW): the same work
    per row as the whole product (each row is an independent (1, HW) x (HW, HW) product), so its
    time times HW / rows is the whole squaring's time."""
    torch.mm(t[:rows], t, out=out[:rows])


def naive_energy(
    probs: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    sigma_xy: float = 100.0,
    sigma_rgb: float = 15.0,
    normalize: str = "pairs",
) -> torch.Tensor:
    """RRM's dense energy, all pairs at once: for each image,
    ``E = sum_i S_i sum_{j != i} G_ij sum_c P_ic (1 - P_jc)`` with
    ``G_ij = exp(-|p_i - p_j|² / 2 sigma_xy² - |I_i - I_j|² / 2 sigma_rgb²)`` (eq. 11 without 1/W)
    built whole (N × N) from the pairwise squared distances, ``S_i = 1 - max_c P_ic`` on labelled
    pixels (``labels`` != 255) and 1 elsewhere (eq. 14, held constant), the class disagreement
    ``P (1 - P)^T`` (N × N). ``normalize``: 'pairs' divides by N², 'pixels' by N, 'none' not at
    all. ``probs`` (B, C, H, W), ``images`` (B, 3, H, W) on 0-255. Mean over the batch."""
    bsz, c, h, w = probs.shape
    norm = {"pairs": float(h * w) ** 2, "pixels": float(h * w), "none": 1.0}[normalize]
    ys, xs = np.mgrid[0:h, 0:w]
    pos = torch.as_tensor(np.stack([xs, ys], -1).reshape(-1, 2), dtype=probs.dtype)
    total = probs.new_zeros(())
    for n in range(bsz):
        p = probs[n].reshape(c, -1).T  # (N, C)
        rgb = images[n].reshape(3, -1).T.to(probs.dtype)  # (N, 3)
        g = torch.exp(
            -torch.cdist(pos, pos).pow(2) / (2 * sigma_xy**2)
            - torch.cdist(rgb, rgb).pow(2) / (2 * sigma_rgb**2)
        )
        g.fill_diagonal_(0)
        s = (1 - p.detach().amax(1)) if labels is not None else p.new_ones(h * w)
        if labels is not None:
            s = torch.where(labels[n].reshape(-1) != IGNORE, s, torch.ones_like(s))
        total = total + (s[:, None] * g * (p @ (1 - p).T)).sum() / norm
    return total / bsz


def naive_energy_bytes(pixels: int, dtype_bytes: int = 4) -> int:
    """The all-pairs form's largest live set, estimated: about six N × N matrices (two distance
    matrices and G while G is built, the disagreement matrix, their product and the autograd's
    saved copies) of ``dtype_bytes`` each."""
    return 6 * pixels * pixels * dtype_bytes
