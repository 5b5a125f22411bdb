"""Dense CRF (Krähenbühl & Koltun 2011) in the two flavours the reference codes use (see
reference/methods.md §0):

* :func:`crf_on_labels` — on hard labels (IRN, NoPeopleAllowed): unary from labels with a
  ground-truth probability;
* :func:`crf_on_scores` — on probabilities (RRM, URN): unary = -log(clip(p, 1e-5));
  :func:`crf_on_scores_rescaled` the same on a coarser grid (a speed option).

Both return the CRF's per-class marginals (C, H, W); take ``argmax(0)`` for a label map.
:func:`crf_map` runs either over many images in a process pool.

Two backends compute the same model (``backend=`` on every public function):

* ``'pydensecrf'`` — the ``pydensecrf2`` package (a C++ extension; its permutohedral lattice
  approximates the Gaussian sums; what the reference codes use, so the full-scale default). It is
  an optional extra: ``pip install "wsss_edu[crf]"`` (needs a C++ compiler where no wheel exists);
* ``'torch'`` — :mod:`wsss_edu.crf_torch`, the same mean-field updates in PyTorch, exact at the toy
  world's sizes (up to :data:`TORCH_EXACT_PIXELS` pixels) and on a coarser grid above that (see
  :func:`_inference_torch` for the approximation and its measured error);
* ``'auto'`` (default) — pydensecrf when it imports, else torch (with a one-time warning).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .crf_torch import dense_crf
from .errors import WsssError, check_choice
from .threads import spawn_pool

BACKENDS = ("auto", "pydensecrf", "torch")
INSTALL_PYDENSECRF = 'pip install "wsss_edu[crf]"'
# Largest image (H * W) the torch backend sums exactly; larger ones run on a coarser grid of at
# most this many pixels (:func:`_inference_torch`). 64 x 64, the toy world's image size.
TORCH_EXACT_PIXELS = 64 * 64


class CRFBackendMissing(WsssError, ImportError):
    """``backend='pydensecrf'`` was asked for but the package does not import; names the install
    command and the alternative."""


@dataclass(frozen=True)
class CRFParams:
    """Pairwise terms and iterations. Defaults: IRN's label CRF."""

    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    iterations: int = 10


# Parameter sets of the reference implementations (reference/methods.md §0).
PRESETS = {
    "irn_labels": CRFParams(3, 3, 50, 5, 10, 10),
    "rrm_train": CRFParams(3, 3, 80, 13, 10, 10),
    "rrm_test": CRFParams(3, 3, 83, 5, 4, 10),
    "urn": CRFParams(1, 3, 67, 3, 4, 10),
}


def _image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    if img.dtype != np.uint8:
        if img.max() <= 1.0:
            raise ValueError(
                "image must be uint8 0-255 RGB (got floats in 0-1: multiply by 255 and "
                "cast to uint8, after undoing any mean/std normalisation)"
            )
        img = np.clip(img, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    return (
        img if img.flags.writeable else img.copy()
    )  # pydensecrf refuses read-only buffers (PIL's)


def _params(params) -> CRFParams:
    if isinstance(params, str):
        check_choice("crf preset", params, PRESETS)
        return PRESETS[params]
    return params if params is not None else CRFParams()


def _pydensecrf_imports() -> bool:
    """True when ``pydensecrf.densecrf`` (the ``pydensecrf2`` package) can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _warn_torch_fallback() -> None:
    """Say once per process that the torch backend stands in for a missing pydensecrf."""
    warnings.warn(
        "pydensecrf is not installed: the dense CRF runs on wsss_edu's PyTorch backend "
        "(wsss_edu.crf_torch; exact up to 64x64 pixels, a coarser grid above). For the "
        f"reference codes' backend: {INSTALL_PYDENSECRF}",
        stacklevel=3,
    )


def resolve_backend(backend: str = "auto") -> str:
    """The backend that ``backend`` ('auto' | 'pydensecrf' | 'torch') means here: 'auto' is
    'pydensecrf' when it imports, else 'torch' (warning once). 'pydensecrf' when it does not import:
    :class:`CRFBackendMissing` naming the install command."""
    check_choice("backend", backend, BACKENDS)
    if backend == "torch":
        return "torch"
    if _pydensecrf_imports():
        return "pydensecrf"
    if backend == "pydensecrf":
        raise CRFBackendMissing(
            f"backend='pydensecrf' but pydensecrf does not import; install it with "
            f"{INSTALL_PYDENSECRF} (it builds from source: needs a C++ compiler), "
            "or pass backend='torch' (or 'auto') to use wsss_edu's PyTorch CRF"
        )
    _warn_torch_fallback()
    return "torch"


def _inference(
    unary: np.ndarray, image: np.ndarray, p: CRFParams, backend: str = "auto"
) -> np.ndarray:
    """The single dispatch point: marginals (C, H, W) float32 of the dense CRF with unary energies
    ``unary`` (C, H, W) on ``image`` (H, W, 3) uint8, by the backend ``backend`` resolves to."""
    if resolve_backend(backend) == "pydensecrf":
        return _inference_pydensecrf(unary, image, p)
    return _inference_torch(unary, image, p)


def _inference_pydensecrf(unary: np.ndarray, image: np.ndarray, p: CRFParams) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    c, h, w = unary.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(c, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=p.gauss_sxy, compat=p.gauss_compat)
    d.addPairwiseBilateral(
        sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=image, compat=p.bilateral_compat
    )
    q = d.inference(int(p.iterations))
    return np.asarray(q, np.float32).reshape(c, h, w)


def _inference_torch(
    unary: np.ndarray, image: np.ndarray, p: CRFParams, max_pixels: int = TORCH_EXACT_PIXELS
) -> np.ndarray:
    """:func:`wsss_edu.crf_torch.dense_crf`, exact when H * W <= ``max_pixels``. Larger images: the
    approximation is a coarser grid of at most ``max_pixels`` pixels (side factor
    s = sqrt(max_pixels / (H * W))), as :func:`crf_on_scores_rescaled`: the image resized, the
    probabilities softmax(-U) averaged per coarse pixel, both spatial widths times s, the marginals
    resized back bilinearly. Measured against pydensecrf at full size on a 213 x 320 image with 5
    classes (``tests/test_crf_torch.py``, the comment above ``test_large_images_use_the_coarse_grid``),
    over the four presets: 98.9-99.3 % of the labels agree, mean |marginal difference| 0.005-0.007;
    the labels that differ lie along class edges (83-99 % of them within 3 px of one, a band of 9 %
    of the image: detail finer than a coarse pixel is lost). Time: 0.10-0.16 s per image on one CPU
    thread, like pydensecrf's 0.11-0.29 s; the exact sum would cost about (H * W / max_pixels)^2
    times the 64 x 64 one (~280x here, an estimate)."""
    c, h, w = unary.shape
    if h * w <= max_pixels:
        return dense_crf(
            unary,
            image,
            p.gauss_sxy,
            p.gauss_compat,
            p.bilateral_sxy,
            p.bilateral_srgb,
            p.bilateral_compat,
            p.iterations,
        )
    scale = math.sqrt(max_pixels / (h * w))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    e = np.exp(-(unary - unary.min(0, keepdims=True)))
    small_img, small_probs = _coarse_grid(image, e / e.sum(0, keepdims=True), size)
    small_unary = -np.log(np.clip(small_probs, np.float32(1e-5), np.float32(1.0)))
    q = _inference_torch(small_unary, small_img, _scaled_widths(p, scale), max_pixels)
    return _resize_marginals(q, (h, w))


def _coarse_grid(image: np.ndarray, probs: np.ndarray, size) -> tuple:
    """``image`` (H, W, 3) uint8 resized to ``size`` (bilinear, antialiased, rounded back to uint8)
    and ``probs`` (C, H, W) averaged over each coarse pixel: the inputs of a CRF on a coarser grid."""
    import torch
    import torch.nn.functional as F

    small = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float(),
        size=size,
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0]
    small = np.ascontiguousarray(small.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    p = F.adaptive_avg_pool2d(torch.as_tensor(np.asarray(probs, np.float32))[None], size)[0].numpy()
    return small, p


def _scaled_widths(p: CRFParams, scale: float) -> CRFParams:
    """``p`` with both spatial widths times ``scale``: kernels that cover the same part of an image
    resized by ``scale``."""
    return dataclasses.replace(
        p, gauss_sxy=p.gauss_sxy * scale, bilateral_sxy=p.bilateral_sxy * scale
    )


def _resize_marginals(q: np.ndarray, size) -> np.ndarray:
    """Marginals (C, h, w) resized bilinearly to ``size`` (H, W); still a distribution per pixel."""
    import torch
    import torch.nn.functional as F

    return F.interpolate(
        torch.from_numpy(q)[None], size=size, mode="bilinear", align_corners=False
    )[0].numpy()


def crf_on_scores(
    image: np.ndarray, probs: np.ndarray, params="rrm_train", backend: str = "auto"
) -> np.ndarray:
    """Dense CRF on class probabilities ``probs`` (C, H, W) for ``image`` (H, W, 3) uint8 RGB.
    Unary = -log(clip(p, 1e-5, 1)) — pydensecrf's ``unary_from_softmax``, which the RRM and URN
    reference codes call —, probabilities used as given (not renormalised). ``backend``: 'auto',
    'pydensecrf' or 'torch' (module docstring)."""
    probs = np.asarray(probs, np.float32)
    img = _image(image)
    if probs.shape[1:] != img.shape[:2]:
        raise ValueError(f"probs are {probs.shape[1:]} but the image is {img.shape[:2]}")
    unary = -np.log(np.clip(probs, np.float32(1e-5), np.float32(1.0)))
    return _inference(unary, img, _params(params), backend)


def crf_on_scores_rescaled(
    image: np.ndarray,
    probs: np.ndarray,
    params="rrm_train",
    scale: float = 1.0,
    backend: str = "auto",
) -> np.ndarray:
    """:func:`crf_on_scores` run on a grid ``scale`` times the image's side, a speed option: the
    CRF's cost grows with the pixel count (a 320x213 photo with four classes takes ~0.2 s at 10
    iterations; 0.5 costs a quarter). The image is resized (bilinear), ``probs`` averaged over
    each coarse pixel, the spatial widths (``gauss_sxy``, ``bilateral_sxy``) multiplied by
    ``scale`` so that the kernels cover the same part of the image, and the marginals resized back
    bilinearly to (C, H, W). ``scale=1``: :func:`crf_on_scores` itself, unchanged. What is lost:
    detail finer than one coarse pixel (thin structures, the exact edge)."""
    if scale == 1:
        return crf_on_scores(image, probs, params, backend)
    if not 0 < scale < 1:
        raise ValueError(f"scale={scale!r}: give a factor in (0, 1] (1 = the image's own grid)")
    img = _image(image)
    h, w = img.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small, p = _coarse_grid(img, probs, size)
    q = crf_on_scores(small, p, _scaled_widths(_params(params), scale), backend)
    return _resize_marginals(q, (h, w))


def crf_on_labels(
    image: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    gt_prob: float = 0.7,
    params="irn_labels",
    backend: str = "auto",
) -> np.ndarray:
    """Dense CRF on a hard label map ``labels`` (H, W) with values 0..num_classes-1: each pixel's
    given label has probability ``gt_prob``, the others share the rest (``unary_from_labels``
    without its 'zero = unsure' convention: every label counts). ``backend`` as in
    :func:`crf_on_scores`."""
    labels = np.asarray(labels).astype(np.int64)
    img = _image(image)
    if labels.shape != img.shape[:2]:
        raise ValueError(f"labels are {labels.shape} but the image is {img.shape[:2]}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1}; got {labels.min()}..{labels.max()}"
        )
    other = (1.0 - gt_prob) / max(num_classes - 1, 1)
    probs = np.full((num_classes,) + labels.shape, other, np.float32)
    np.put_along_axis(probs, labels[None], gt_prob, axis=0)
    return _inference(-np.log(probs), img, _params(params), backend)


def _crf_job(args):
    kind, image, x, kwargs = args
    if kind == "scores":
        return crf_on_scores(image, x, **kwargs)
    return crf_on_labels(image, x, **kwargs)


def crf_map(images, inputs, kind: str = "scores", processes: int = 1, **kwargs) -> list:
    """Run the CRF over many images: ``kind`` 'scores' (inputs are (C, H, W) probabilities) or
    'labels' (inputs are (H, W) label maps; pass ``num_classes``). ``processes`` > 1 uses a pool of
    spawned processes (not forked: a forked child of a process that has run torch can hang, which
    the torch backend would), each with its share of the threads
    (:func:`wsss_edu.threads.spawn_pool`). Other
    keyword arguments (``params``, ``backend``, ...) go to :func:`crf_on_scores` /
    :func:`crf_on_labels`; ``backend`` is resolved here (:func:`resolve_backend`), so that every
    worker runs the backend this process would. Returns the list of marginals (C, H, W), in order."""
    check_choice("kind", kind, ("scores", "labels"))
    # resolved here, once: the workers then run the same backend as this process, and warn no more
    kwargs = dict(kwargs, backend=resolve_backend(kwargs.get("backend", "auto")))
    jobs = [(kind, im, x, kwargs) for im, x in zip(images, inputs)]
    if processes <= 1 or len(jobs) <= 1:
        return [_crf_job(j) for j in jobs]
    with spawn_pool(processes) as pool:
        return list(pool.map(_crf_job, jobs, chunksize=max(1, len(jobs) // (4 * processes))))
