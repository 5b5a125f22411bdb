"""URN (paper 002) over a training set, as a cached pipeline step: the averaged prediction P of a
network trained on pseudo-masks, then, per image in worker processes, the CRFs, the uncertainty U
and the weight W written next to the cyclic pseudo-mask — what notebook 06 runs. The method (eqs.
5-13, one image at a time) is :mod:`wsss_edu.urn`.

* :func:`averaged_probs` (P: softmax averaged over :data:`URN_TTA_SCALES`, each with its flip);
* :func:`uncertainty_pass`: a folder of label + weight PNGs, resumable, sharded, refusing a folder
  computed with other settings (:func:`pass_settings`, ``urn_settings.json``);
* :class:`URNLabeled`: a dataset whose masks and loss weights come from that folder;
* notebook 06's sizes, defined once: :data:`URN_PROFILE`, :data:`URN_DATASETS`, :func:`urn_values`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .. import params
from ..data import images_to_tensor, same_size_batches
from ..datasets import PseudoLabeled
from ..errors import ParameterError, check_choice
from ..io import check_same_size, write_text_atomic
from ..models import tta_probs
from ..parallel import (
    finish_folder,
    pending,
    run_streamed,
    set_worker_state,
    shard_spec,
    worker_state,
)
from ..progress import bar as progress_bar
from ..threads import spawn_pool
from ..urn import (
    LAYOUTS,
    NORM_EPS,
    PRESENT_FROM,
    ROUNDINGS,
    T_DEFAULT,
    VOC_FACTORS,
    loss_weight,
    read_label_and_weight,
    urn_uncertainty,
    write_label_and_weight,
)

# This step's code version, in the pipeline's done.json: bump it when a change alters what the step
# computes, so that the notebooks that use it rerun. (Its output folder's cache key is built by the
# notebook that calls uncertainty_pass, notebook 06: this version belongs in that key too.)
CODE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# The uncertainty pass over a training set: P and the CRFs in worker processes
# ------------------------------------------------------------------------------------------------

URN_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # the reference's scales for P (each + flip)

# Notebook 06's sizes, {name: (quick, full)}, and where a real dataset's differ
# (params.for_dataset). MSRC's quick profile, for 8 minutes on 2 cores (measured in notebook 06's
# text, 2 cores): the retrained networks use notebook 05's recipe (an ImageNet MobileNetV2,
# 160-px crops) for 2 epochs instead of 4 (four networks and five test evaluations took 338 s at
# 4 epochs, 283 s at 3, 251 s at 2), Table 3's grid keeps plain and the paper's t = 0.05, two
# seeds each, without Table 5's probability row; the CRFs run on a grid 0.3 times the photo's
# side (the pass took 552 s on the photos' own grid, 180 s at 0.5 — no number moved by more than
# 0.003 —, 108-133 s at 0.3). The notebook took 443 s. The full profile runs everything.
URN_PROFILE = dict(
    STUDENT_EPOCHS=(10, 30),
    P_SCALES=((1.0,), URN_TTA_SCALES),
    T_GRID=((1.0, 0.5, 0.1, 0.05, 0.0), (1.0, 0.5, 0.1, 0.05, 0.0)),
    SEEDS=(2, 2),
    CRF_SCALE=(1.0, 1.0),
    N_CURVE=(60, 60),
    PROBABILITY_ROW=(True, True),
)
URN_DATASETS = {
    "msrc": dict(
        STUDENT_EPOCHS=(2, 30),
        T_GRID=((1.0, 0.05), (1.0, 0.5, 0.1, 0.05, 0.0)),
        CRF_SCALE=(0.3, 1.0),
        N_CURVE=(12, 60),
        PROBABILITY_ROW=(False, True),
    )
}


def urn_values(profile: str, dataset: str, **knobs) -> dict:
    """Notebook 06's knobs resolved: each given value that is not None, else the profile's on
    ``dataset`` (:data:`URN_PROFILE` with :data:`URN_DATASETS`'s values)."""
    return params.profile_values(
        profile, params.for_dataset(URN_PROFILE, URN_DATASETS, dataset), **knobs
    )


SETTINGS_FILE = "urn_settings.json"  # what uncertainty_pass computed a folder with


def pass_settings(
    factors=VOC_FACTORS,
    scales=URN_TTA_SCALES,
    crf_params="urn",
    include_background: bool = False,
    present_from: str = "pseudo_mask",
    eps: float = NORM_EPS,
    rounding: str = "truncate",
    layout: str = "LA",
    crf_scale: float = 1.0,
) -> dict:
    """Every setting of :func:`uncertainty_pass` that changes the files it writes, as a JSON-able
    dict (the pass's defaults by default): put it in the cache key of the pass's output folder,
    so that a change of any of them gets a folder of its own. The pass stores it in the folder
    (``urn_settings.json``) and refuses a folder computed with other settings."""
    check_choice("present_from", present_from, PRESENT_FROM)
    check_choice("rounding", rounding, ROUNDINGS)
    check_choice("layout", layout, LAYOUTS)
    crf = (
        crf_params
        if crf_params is None or isinstance(crf_params, str)
        else dataclasses.asdict(crf_params)
    )
    return {
        "factors": [float(f) for f in factors],
        "scales": [float(s) for s in scales],
        "crf": crf,
        "include_background": bool(include_background),
        "present_from": present_from,
        "eps": float(eps),
        "rounding": rounding,
        "layout": layout,
        "crf_scale": float(crf_scale),
    }


def _check_folder_settings(folder: Path, settings: dict) -> None:
    """Refuse to resume in ``folder`` if it was computed with other settings; record ``settings``
    in a new folder. A folder of PNGs without the record (written before the package recorded
    them, with plain min-max and rounded weights) gets a warning and stays unrecorded."""
    import json
    import warnings

    record = folder / SETTINGS_FILE
    if record.exists():
        old = json.loads(record.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise ParameterError(
                f"{folder} was computed with other URN settings ({shown}); give each "
                "setting a folder of its own (put urn.pass_settings(...) in the "
                "folder's cache key) or delete the folder"
            )
        return
    if any(folder.glob("*.png")):
        warnings.warn(
            f"{folder} holds URN files but no {SETTINGS_FILE}: they were written by an "
            "earlier wsss_edu (plain min-max, eps = 0, weights rounded to the nearest "
            "byte, present classes from the pseudo-mask), and may differ from these "
            f"settings ({settings}) by one byte of weight. Delete the folder to "
            "recompute it; new files are added with the current settings",
            stacklevel=3,
        )
        return
    write_text_atomic(record, json.dumps(settings, indent=1, sort_keys=True))


def _urn_job(args) -> str:
    """One image's CRF work of :func:`uncertainty_pass` (in a worker or in the main process)."""
    name, image, probs, pseudo_mask, folder, job = args
    cyclic, u = urn_uncertainty(
        image,
        probs,
        pseudo_mask,
        job["factors"],
        job["crf_params"],
        job["include_background"],
        job["present_from"],
        job["eps"],
        job["crf_scale"],
    )
    write_label_and_weight(
        Path(folder) / f"{name}.png", cyclic, 1 - u, job["rounding"], job["layout"]
    )
    return name


def averaged_probs(
    model, dataset, indices, scales=URN_TTA_SCALES, batch_size: int = 16, device=None
):
    """Yields (sample, P) for the ``indices`` of ``dataset``: P (C, H, W) numpy, the network's
    softmax averaged over ``scales`` × h-flip (:func:`wsss_edu.models.tta_probs`), computed in
    batches of same-size images (real datasets mix sizes)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    for _, group in same_size_batches(dataset, batch_size, indices):
        x = images_to_tensor(np.stack([s["image"] for s in group])).to(device)
        with torch.no_grad():
            probs = tta_probs(model, x, scales).float().cpu().numpy()
        yield from zip(group, probs)


_JOB_KEYS = (
    "factors",
    "crf_params",
    "include_background",
    "present_from",
    "eps",
    "rounding",
    "layout",
    "crf_scale",
)


def _job_args(sample, probs, job):
    return (
        sample["name"],
        sample["image"],
        probs,
        sample["mask"],
        job["folder"],
        {k: job[k] for k in _JOB_KEYS},
    )


def _rebuild_model(job: dict) -> None:
    """A worker's setup (:func:`wsss_edu.parallel.set_worker_state`): the network (its threads:
    the pool's share, :func:`wsss_edu.threads.spawn_pool`)."""
    model = job["model_factory"]()
    model.load_state_dict(job.pop("state"))
    job["model"] = model.eval()


def _urn_chunk(indices) -> int:
    """A worker's share: P and the CRFs of the images ``indices`` (CPU pass)."""
    job = worker_state()
    for s, p in averaged_probs(
        job["model"], job["dataset"], indices, job["scales"], len(indices), "cpu"
    ):
        _urn_job(_job_args(s, p, job))
    return len(indices)


def uncertainty_pass(
    model,
    dataset,
    folder,
    factors=VOC_FACTORS,
    scales=URN_TTA_SCALES,
    crf_params="urn",
    include_background: bool = False,
    processes: int = 1,
    batch_size: int = 16,
    device=None,
    model_factory=None,
    progress: bool = True,
    shard=None,
    present_from: str = "pseudo_mask",
    eps: float = NORM_EPS,
    rounding: str = "truncate",
    layout: str = "LA",
    crf_scale: float = 1.0,
) -> int:
    """URN over a training set: for every sample of ``dataset`` ('image' uint8, 'mask' = the
    pseudo-mask the network was trained on, 'name'), the network's averaged softmax P over
    ``scales`` × flip (:func:`wsss_edu.models.tta_probs`), then :func:`urn_uncertainty`; the cyclic
    pseudo-mask and W = 1 - U are written to ``folder/<name>.png`` (:func:`write_label_and_weight`).
    ``scales`` defaults to the reference's six (:data:`URN_TTA_SCALES`), right for a network
    trained on rescaled crops; one trained at a single scale (the quick profile) gets a poor P
    there (``tools/urn_noise_check.py``: P over six scales shrinks the objects, and the network
    retrained on its masks scores 0.355 instead of 0.708): pass ``scales=(1.0,)`` (notebook 06's
    ``P_SCALES``).

    ``include_background``, ``present_from``, ``eps`` (eq. 10) and ``rounding`` / ``layout`` (the
    stored file) and ``crf_scale`` (the CRFs' grid, 1 = the image's, the reference's; 0.5 quarters
    the pass's cost on real photos) as in :func:`urn_steps` / :func:`write_label_and_weight`. Unlike
    :func:`urn_uncertainty`, the pass keeps ``include_background=False`` and
    ``present_from='pseudo_mask'`` by default (what notebook 06's folders were computed with); the
    reference's choices are ``include_background=True, present_from='crf'`` (and ``layout='RGB'``
    for its file). :func:`pass_settings` of the same arguments is what to put in ``folder``'s cache
    key: the pass records it in the folder and refuses a folder computed with other settings.

    Resumable: images whose PNG exists are skipped (files are written atomically). ``processes`` > 1
    spreads the work over that many spawned processes: on the CPU each worker computes P for its
    own chunk of images too (``model_factory()`` must rebuild the network's architecture; the
    weights travel once per worker), on a GPU the main process computes P and the workers run the
    CRFs (1 + len(factors) per scaled class, per image: the cost). ``shard`` ((i, n) or 'i/n';
    default: the ``WSSS_SHARD`` environment variable, else the whole set): this machine's share
    of the images when several machines share ``folder`` (:func:`wsss_edu.parallel.shard`). The
    folder's 'complete' marker is written once every image is there
    (:func:`wsss_edu.parallel.finish_folder`). Returns the number of images written."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = shard_spec(shard)
    names = dataset.names
    todo = pending(range(len(names)), lambda i: folder / f"{names[i]}.png", spec)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    job = dict(
        folder=str(folder),
        factors=tuple(factors),
        crf_params=crf_params,
        include_background=include_background,
        scales=tuple(scales),
        present_from=present_from,
        eps=eps,
        rounding=rounding,
        layout=layout,
        crf_scale=crf_scale,
    )
    _check_folder_settings(
        folder,
        pass_settings(
            factors,
            scales,
            crf_params,
            include_background,
            present_from,
            eps,
            rounding,
            layout,
            crf_scale,
        ),
    )
    bar = progress_bar(total=len(todo), desc="URN uncertainty", disable=not progress, leave=False)
    try:
        if processes <= 1 or len(todo) <= 1:
            for s, p in averaged_probs(model, dataset, todo, scales, batch_size, device):
                _urn_job(_job_args(s, p, job))
                bar.update(1)
        elif device.type == "cpu":
            if model_factory is None:
                raise ValueError(
                    "uncertainty_pass on the CPU with processes > 1 needs model_factory, a "
                    "function (picklable: e.g. functools.partial(make_segmenter, ...)) that "
                    "rebuilds the network; or pass processes=1"
                )
            # chunks of at most batch_size images, as many per worker (at least 4, for the pool to
            # balance the uneven CRF counts): unequal last chunks would leave one worker idle
            n_chunks = processes * max(4, -(-len(todo) // (processes * batch_size)))
            chunks = [
                [int(i) for i in c]
                for c in np.array_split(np.asarray(todo), min(n_chunks, len(todo)))
            ]
            state = {k: v.cpu() for k, v in model.state_dict().items()}
            work = dict(job, dataset=dataset, model_factory=model_factory, state=state)
            with spawn_pool(
                processes, initializer=set_worker_state, initargs=(work, _rebuild_model)
            ) as pool:
                for n in pool.map(_urn_chunk, chunks):
                    bar.update(n)
        else:  # the probabilities here, the CRFs in the workers; at most 4 batches per worker wait
            run_streamed(
                _urn_job,
                (
                    _job_args(s, p, job)
                    for s, p in averaged_probs(model, dataset, todo, scales, batch_size, device)
                ),
                processes,
                4 * processes * batch_size,
                lambda: bar.update(1),
            )
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

    missing_hint = "run wsss_edu.steps.urn_step.uncertainty_pass on this dataset first"

    def __init__(self, dataset, folder, t: float = T_DEFAULT, split: float | None = None):
        super().__init__(dataset, folder)
        self.t, self.split = t, split

    def __getitem__(self, i):
        s = dict(self.dataset[i])
        path = self.folder / f"{s['name']}.png"
        label, w = read_label_and_weight(path)
        self.check_label(label, path)
        check_same_size(s["image"], label, s["name"], path)
        s["true_mask"], s["mask"] = s.get("true_mask", s["mask"]), label
        s["weight"] = w if self.t is None else loss_weight(1 - w, self.t, self.split)
        return s
