"""URN (paper 002, Li et al., AAAI 2022): uncertainty from response scaling, used as loss weights
when a segmentation network is retrained on noisy pseudo-masks.

The pipeline (the paper's Fig. 3): a network trained on pseudo-masks predicts, over the training
images, the averaged softmax P (multi-scale + flip: :func:`wsss_edu.models.tta_probs`); then, per
image,

* :func:`present_classes` (eq. 5) keeps the channels of the classes in the pseudo-mask;
* :func:`scale_response` (eq. 6) raises one channel to a power, the others unchanged;
* :func:`scaled_masks` (eqs. 7-8) runs the dense CRF on every scaled map and takes the binary mask
  of the scaled class;
* :func:`scaling_variance` (eq. 9), :func:`uncertainty_map` (eq. 10): the variance over the factors,
  max over classes, min-max normalised per image → U;
* :func:`loss_weight` (eqs. 11-12): W = 1 - U, Y = 1 where W >= t else t;
* :func:`cyclic_pseudo_mask`: the new training target argmax(CRF(P)) (PMM's cyclic pseudo-mask);

and the retraining loss :func:`weighted_cross_entropy` (eq. 13), with the probability-weight baseline
of Table 5 (:func:`probability_weight`). :func:`write_label_and_weight` /
:func:`read_label_and_weight` store W next to the cyclic mask in one PNG, as the reference does.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .pseudo import PseudoLabeled

VOC_FACTORS = (0.15, 0.2, 0.25, 4.0, 5.0, 6.0)   # the paper's S for PASCAL VOC
COCO_FACTORS = (0.4, 0.5, 0.6, 2.0, 3.0, 4.0)    # and for MS COCO
T_DEFAULT = 0.05                                  # eq. (12)'s t, Table 3's best
FACTOR_SETS = {"voc": VOC_FACTORS, "coco": COCO_FACTORS}


def factors_named(factors) -> tuple:
    """The scale factors S of eq. (7): 'voc' or 'coco' (the paper's sets), or a list of positive
    numbers, as a tuple of floats."""
    from .errors import ParameterError, check_choice

    if isinstance(factors, str):
        check_choice("FACTORS", factors, FACTOR_SETS)
        return FACTOR_SETS[factors]
    out = tuple(float(f) for f in factors)
    if not out or min(out) <= 0:
        raise ParameterError(f"FACTORS={factors!r}: give 'voc', 'coco' or a list of positive numbers "
                             "(< 1 widens a class's response, > 1 narrows it)")
    return out


def check_pseudo_mask_folder(folder, dataset) -> Path:
    """``folder`` as a Path, after checking it holds a PNG pseudo-mask ``<name>.png`` for every
    image of ``dataset``; the error names the first missing file and how many are missing."""
    from .errors import DataFileError

    folder = Path(folder)
    missing = [n for n in dataset.names if not (folder / f"{n}.png").exists()]
    if missing:
        raise DataFileError(f"{folder} lacks the pseudo-mask of {len(missing)} of {len(dataset)} "
                            f"training images (first: {missing[0]}.png); point PSEUDO_LABELS at a "
                            "folder with one grey PNG per image (class index per pixel, 255 = "
                            "ignore), e.g. notebook 04's, or use PSEUDO_LABELS='irnet'")
    return folder


def present_classes(mask: np.ndarray, include_background: bool = True,
                    ignore_index: int = 255) -> np.ndarray:
    """Eq. (5): the classes that appear in the pseudo-mask ``mask`` (H, W), sorted; only their
    channels of the prediction are scaled (and only they enter the CRF). The paper's eq. (9) speaks
    of foreground categories; ``include_background=False`` drops class 0 from the list."""
    classes = np.unique(np.asarray(mask))
    classes = classes[classes != ignore_index]
    return classes if include_background else classes[classes != 0]


def scale_response(probs, channel: int, factor: float):
    """Eq. (6): ``probs`` (C, H, W) with channel ``channel`` raised to the power ``factor`` and the
    other channels unchanged (no renormalisation). A factor < 1 widens that class's response (fewer
    missed pixels), > 1 narrows it (fewer false positives). numpy or torch in, the same out."""
    out = probs.copy() if isinstance(probs, np.ndarray) else probs.clone()
    out[channel] = probs[channel] ** factor
    return out


def scaled_masks(image: np.ndarray, probs: np.ndarray, channels, factors=VOC_FACTORS,
                 crf_params="urn") -> np.ndarray:
    """Eqs. (7-8): for each channel c in ``channels`` (indices into ``probs``, (C', H, W)) and each
    factor n, the binary mask argmax(CRF(scale_response(probs, c, n))) == c, as a bool array
    (len(channels), len(factors), H, W). ``image``: (H, W, 3) uint8; ``crf_params``: a
    :data:`wsss_edu.crf.PRESETS` name or :class:`wsss_edu.crf.CRFParams`. ``crf_params=None``
    skips the CRF (argmax of the scaled map itself: for tests and the figure that shows why the
    CRF matters)."""
    from .crf import crf_on_scores

    probs = np.asarray(probs, np.float32)
    out = np.zeros((len(channels), len(factors)) + probs.shape[1:], bool)
    for i, c in enumerate(channels):
        for j, f in enumerate(factors):
            scaled = scale_response(probs, int(c), f)
            if crf_params is not None:
                scaled = crf_on_scores(image, scaled, crf_params)
            out[i, j] = scaled.argmax(0) == int(c)
    return out


def scaling_variance(masks, ddof: int = 0) -> np.ndarray:
    """Eq. (9): the variance of the binary masks over the scale factors (axis 1 of
    (classes, factors, H, W)) → (classes, H, W). The paper writes 1/(N-1) (``ddof=1``); the
    default is the plain variance (with N binary masks of which k are on: k(N-k)/N²). Either way
    eq. (10)'s min-max normalisation removes the constant factor, so U does not depend on it."""
    return np.asarray(masks, np.float64).var(axis=1, ddof=ddof)


def uncertainty_map(variance: np.ndarray) -> np.ndarray:
    """Eq. (10): U = Norm(max over classes of the variance), min-max normalised over the image
    to [0, 1] (float32, (H, W)). An image whose masks never change gets U = 0 everywhere."""
    u = np.asarray(variance, np.float64).max(axis=0)
    lo, hi = u.min(), u.max()
    return ((u - lo) / (hi - lo) if hi > lo else np.zeros_like(u)).astype(np.float32)


def loss_weight(uncertainty, t: float = T_DEFAULT, split: float | None = None):
    """Eqs. (11-12): W = 1 - U, and the final weight Y = 1 where W >= t, else t. With t = 1 every
    pixel weighs 1 (plain cross-entropy). Read literally, t = 0 gives Y = 1 everywhere too (every
    W >= 0), although the paper's Table 3 describes its t = 0 row as "dropping all the uncertain
    pixels". ``split`` separates the two roles of t: Y = 1 where W >= ``split``, else t (default
    ``split = t``, the equation); ``t=0, split=0.05`` drops exactly the pixels t = 0.05 down-weights,
    the reading of Table 3's last row. numpy or torch in, the same out."""
    w = 1 - uncertainty
    split = t if split is None else split
    if isinstance(w, torch.Tensor):
        return torch.where(w >= split, torch.ones_like(w), torch.full_like(w, t))
    return np.where(w >= split, 1.0, t).astype(np.float32)


def cyclic_pseudo_mask(image: np.ndarray, probs: np.ndarray, channels=None, crf_params="urn"):
    """The cyclic pseudo-mask M_c = argmax(CRF(P)) (PMM; the paper's retraining target), over the
    ``channels`` of P kept by eq. (5) (all when None), as class indices (H, W) uint8."""
    from .crf import crf_on_scores

    probs = np.asarray(probs, np.float32)
    channels = np.arange(len(probs)) if channels is None else np.asarray(channels)
    sub = probs[channels]
    if crf_params is not None:
        sub = crf_on_scores(image, sub, crf_params)
    return channels[sub.argmax(0)].astype(np.uint8)


def urn_uncertainty(image: np.ndarray, probs: np.ndarray, pseudo_mask: np.ndarray,
                    factors=VOC_FACTORS, crf_params="urn", include_background: bool = False):
    """Eqs. (5-10) for one image: the cyclic pseudo-mask and U, both (H, W). ``probs``: the
    averaged softmax P (C, H, W) of the network trained on ``pseudo_mask``. Every class of the
    pseudo-mask enters the CRFs; the scaled ones are its foreground classes (eq. 9: "for each
    foreground category"), or the background too with ``include_background``. Cost: 1 CRF for the
    cyclic mask + len(factors) per scaled class."""
    classes = present_classes(pseudo_mask)
    if len(classes) == 0:   # nothing labelled: nothing to learn from this image either way
        return np.full(np.shape(pseudo_mask), 255, np.uint8), np.zeros(np.shape(pseudo_mask), np.float32)
    cyclic = cyclic_pseudo_mask(image, probs, classes, crf_params)
    scaled = classes if include_background else classes[classes != 0]
    if len(scaled) == 0:
        return cyclic, np.zeros(cyclic.shape, np.float32)
    sub = np.asarray(probs, np.float32)[classes]
    idx = [int(np.flatnonzero(classes == c)[0]) for c in scaled]
    masks = scaled_masks(image, sub, idx, factors, crf_params)
    return cyclic, uncertainty_map(scaling_variance(masks))


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                           ignore_index: int = 255) -> torch.Tensor:
    """Eq. (13): per-pixel cross-entropy times the weight Y, averaged over **all** pixels, the
    ignored ones included (they add 0), as the reference code does: with many ignored pixels the
    loss is smaller than the mean over labelled pixels. ``logits`` (N, C, H, W), ``target`` (N, H, W),
    ``weight`` (N, H, W)."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return (ce * weight.to(ce.dtype)).mean()


def probability_weight(logits: torch.Tensor, target: torch.Tensor,
                       ignore_index: int = 255) -> torch.Tensor:
    """Table 5's baseline weight read as the softmax of the network being trained: its own
    probability of the target class, detached (no gradient flows through the weight); 0 on
    ignored pixels. (N, H, W). The other reading, F_S's probability of the label (the network
    that gives U), is :func:`label_probability`."""
    p = logits.detach().float().softmax(1)
    t = target.clone()
    t[t == ignore_index] = 0
    w = p.gather(1, t[:, None].long())[:, 0]
    return torch.where(target == ignore_index, torch.zeros_like(w), w)


def label_probability(probs: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """P's probability of each pixel's label, (H, W) float32 from ``probs`` (C, H, W) and ``label``
    (H, W); 0 where the label is ignored. Table 5's weight read as the softmax of F_S's
    prediction (the network whose P gives U), detached by construction."""
    probs = np.asarray(probs, np.float32)
    lab = np.where(label == ignore_index, 0, label).astype(np.int64)
    p = np.take_along_axis(probs, lab[None], 0)[0]
    return np.where(label == ignore_index, 0, p).astype(np.float32)


def weight_to_uint8(w: np.ndarray) -> np.ndarray:
    """W in [0, 1] as uint8 round(255·W), the form stored in the PNG (steps of 1/255)."""
    return np.round(np.clip(np.asarray(w, np.float64), 0, 1) * 255).astype(np.uint8)


def write_label_and_weight(path, label: np.ndarray, w: np.ndarray) -> None:
    """One PNG holding the cyclic pseudo-mask (grey channel) and W = 1 - U (alpha channel, as
    :func:`weight_to_uint8`), written atomically (a half-written file never looks done). The
    reference stores its weight mask as a channel next to the label the same way; W rather than
    Y is stored, so any t can be applied when reading."""
    from PIL import Image

    label = np.asarray(label)
    if label.shape != np.shape(w):
        raise ValueError(f"label {label.shape} and weight {np.shape(w)} differ in size")
    im = Image.fromarray(np.ascontiguousarray(np.stack([label.astype(np.uint8), weight_to_uint8(w)], -1)),
                         mode="LA")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")   # per process: shards may overlap
    im.save(tmp, format="PNG")
    tmp.replace(path)


def read_label_and_weight(path):
    """The (label uint8 (H, W), W float32 (H, W) in [0, 1]) written by
    :func:`write_label_and_weight`; exactly the stored bytes (PNG is lossless)."""
    from PIL import Image

    from .errors import DataFileError

    try:
        with Image.open(path) as im:
            if im.mode != "LA":
                raise DataFileError(f"{path} has mode {im.mode}; expected the label + weight PNG "
                                    "(mode 'LA') that wsss_edu.urn writes: run its uncertainty pass")
            arr = np.asarray(im)
    except OSError as e:
        raise DataFileError(f"cannot read {path}: {e}. Remove it and run the uncertainty pass again "
                            "(it resumes, rewriting only missing files).") from e
    return np.ascontiguousarray(arr[..., 0]), arr[..., 1].astype(np.float32) / 255


# ------------------------------------------------------------------------------------------------
# The uncertainty pass over a training set: P and the CRFs in worker processes
# ------------------------------------------------------------------------------------------------

URN_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)   # the reference's scales for P (each + flip)


def _urn_job(args) -> str:
    """One image's CRF work of :func:`uncertainty_pass` (in a worker or in the main process)."""
    name, image, probs, pseudo_mask, folder, factors, crf_params, include_background = args
    cyclic, u = urn_uncertainty(image, probs, pseudo_mask, factors, crf_params, include_background)
    write_label_and_weight(Path(folder) / f"{name}.png", cyclic, 1 - u)
    return name


def averaged_probs(model, dataset, indices, scales=URN_TTA_SCALES, batch_size: int = 16, device=None):
    """Yields (sample, P) for the ``indices`` of ``dataset``: P (C, H, W) numpy, the network's
    softmax averaged over ``scales`` × h-flip (:func:`wsss_edu.models.tta_probs`), computed in
    batches of same-size images (real datasets mix sizes)."""
    from .cam import _same_size_batches
    from .data import images_to_tensor
    from .models import tta_probs

    device = torch.device(device) if device is not None else next(model.parameters()).device
    for _, group in _same_size_batches(dataset, batch_size, indices):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        with torch.no_grad():
            probs = tta_probs(model, x, scales).float().cpu().numpy()
        yield from zip(group, probs)


def _job_args(sample, probs, job):
    return (sample["name"], sample["image"], probs, sample["mask"], job["folder"], job["factors"],
            job["crf_params"], job["include_background"])


def _rebuild_model(job: dict) -> None:
    """A worker's setup (:func:`wsss_edu.parallel.set_worker_state`): one thread, the network."""
    torch.set_num_threads(1)   # the workers share the cores: one thread each
    model = job["model_factory"]()
    model.load_state_dict(job.pop("state"))
    job["model"] = model.eval()


def _urn_chunk(indices) -> int:
    """A worker's share: P and the CRFs of the images ``indices`` (CPU pass)."""
    from .parallel import worker_state

    job = worker_state()
    for s, p in averaged_probs(job["model"], job["dataset"], indices, job["scales"], len(indices), "cpu"):
        _urn_job(_job_args(s, p, job))
    return len(indices)


def uncertainty_pass(model, dataset, folder, factors=VOC_FACTORS, scales=URN_TTA_SCALES,
                     crf_params="urn", include_background: bool = False, processes: int = 1,
                     batch_size: int = 16, device=None, model_factory=None, progress: bool = True,
                     shard=None) -> int:
    """URN over a training set: for every sample of ``dataset`` ('image' uint8, 'mask' = the
    pseudo-mask the network was trained on, 'name'), the network's averaged softmax P over
    ``scales`` × flip (:func:`wsss_edu.models.tta_probs`), then :func:`urn_uncertainty`; the cyclic
    pseudo-mask and W = 1 - U are written to ``folder/<name>.png`` (:func:`write_label_and_weight`).

    Resumable: images whose PNG exists are skipped (files are written atomically). ``processes`` > 1
    spreads the work over that many spawned processes: on the CPU each worker computes P for its
    own chunk of images too (``model_factory()`` must rebuild the network's architecture; the
    weights travel once per worker), on a GPU the main process computes P and the workers run the
    CRFs (1 + len(factors) per scaled class, per image: the cost). ``shard`` ((i, n) or 'i/n';
    default: the ``WSSS_SHARD`` environment variable, else the whole set): this machine's share
    of the images when several machines share ``folder`` (:func:`wsss_edu.parallel.shard`). The
    folder's 'complete' marker is written once every image is there
    (:func:`wsss_edu.parallel.finish_folder`). Returns the number of images written."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from .parallel import finish_folder, pending, set_worker_state, shard_spec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = shard_spec(shard)
    names = dataset.names
    todo = pending(range(len(names)), lambda i: folder / f"{names[i]}.png", spec)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    job = dict(folder=str(folder), factors=tuple(factors), crf_params=crf_params,
               include_background=include_background, scales=tuple(scales))
    bar = tqdm(total=len(todo), desc="URN uncertainty", disable=not progress, leave=False)
    ctx = mp.get_context("spawn")   # not fork: a forked child of a process that ran torch can hang
    try:
        if processes <= 1 or len(todo) <= 1:
            for s, p in averaged_probs(model, dataset, todo, scales, batch_size, device):
                _urn_job(_job_args(s, p, job))
                bar.update(1)
        elif device.type == "cpu":
            if model_factory is None:
                raise ValueError("uncertainty_pass on the CPU with processes > 1 needs model_factory, a "
                                 "function (picklable: e.g. functools.partial(make_segmenter, ...)) that "
                                 "rebuilds the network; or pass processes=1")
            # chunks of at most batch_size images, as many per worker (at least 4, for the pool to
            # balance the uneven CRF counts): unequal last chunks would leave one worker idle
            n_chunks = processes * max(4, -(-len(todo) // (processes * batch_size)))
            chunks = [[int(i) for i in c] for c in np.array_split(np.asarray(todo), min(n_chunks, len(todo)))]
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            work = dict(job, dataset=dataset, model_factory=model_factory, state=state)
            with ProcessPoolExecutor(processes, mp_context=ctx, initializer=set_worker_state,
                                     initargs=(work, _rebuild_model)) as pool:
                for n in pool.map(_urn_chunk, chunks):
                    bar.update(n)
        else:
            with ProcessPoolExecutor(processes, mp_context=ctx) as pool:
                pending = []
                for s, p in averaged_probs(model, dataset, todo, scales, batch_size, device):
                    pending.append(pool.submit(_urn_job, _job_args(s, p, job)))
                    while len(pending) > 4 * processes * batch_size:   # bound the maps in memory
                        pending.pop(0).result()
                        bar.update(1)
                for f in pending:
                    f.result()
                    bar.update(1)
    finally:
        bar.close()
    finish_folder(folder, names, ".png", spec)
    return len(todo)


class URNLabeled(PseudoLabeled):
    """``dataset`` with each sample's 'mask' replaced by the cyclic pseudo-mask of
    ``folder/<name>.png`` (:func:`uncertainty_pass`) and a 'weight' added: Y of eqs. (11-12) with
    threshold ``t`` (t = 1: every pixel 1, plain cross-entropy on the cyclic masks; ``split``: see
    :func:`loss_weight`); ``t=None``: the stored weight itself (a folder whose weight channel holds
    some other weight, e.g. F_S's probability of the label). 'true_mask' is the wrapped sample's own
    'true_mask', or its 'mask' (for scoring only)."""

    missing_hint = "run urn.uncertainty_pass on this dataset first"

    def __init__(self, dataset, folder, t: float = T_DEFAULT, split: float | None = None):
        super().__init__(dataset, folder)
        self.t, self.split = t, split

    def __getitem__(self, i):
        from .io import check_same_size

        s = dict(self.dataset[i])
        path = self.folder / f"{s['name']}.png"
        label, w = read_label_and_weight(path)
        check_same_size(s["image"], label, s["name"], path)
        s["true_mask"], s["mask"] = s.get("true_mask", s["mask"]), label
        s["weight"] = w if self.t is None else loss_weight(1 - w, self.t, self.split)
        return s
