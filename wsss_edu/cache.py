"""An artifact cache under OUTPUT_DIR keyed by parameters, so a notebook reuses what an earlier one
computed (CAMs, pseudo-labels, trained weights) and computes it itself when absent.

``cached(output_dir, "cams", params, compute)`` returns ``compute()``'s dict of arrays/tensors,
stored as ``<output_dir>/cache/cams/<key>.pt`` where ``key`` hashes ``params``. Files hold plain
tensors / arrays only and load with ``torch.load(weights_only=True)``.

Every artifact has its SHA-256 beside it (``<key>.pt.sha256``, :func:`wsss_edu.io.write_digest`),
checked on every load: a flipped bit, a truncated or a foreign file is named in a warning and
computed again, never taken for the result. Artifacts written before digests existed have none and
are computed again once (the safe choice: nothing vouches for their bytes); to keep such files
that you trust, run :func:`trust_unverified` on the output folder once.

Code versions: a cache key holds the parameters *and* the code version of the step that computes
the artifact (``version=``: each ``wsss_edu/steps/*.py`` passes its ``CODE_VERSION``), so that after
an update (``git pull``, a new release) what a changed step computes is computed again and the rest
is reused. A maintainer who changes what a step computes bumps that module's ``CODE_VERSION``: its
artifacts get new keys, and so does everything downstream, whose keys name the upstream artifact
(a CAM folder's name is in IRNet's key, a pseudo-label folder's in the segmenter's). The package
version (``wsss_edu.__version__``) is *not* in the key, deliberately: a release changes a few steps,
and putting it there would throw away hours of valid training at every release; it is *recorded*,
with the parameters and the code version, in the artifact's ``<key>.json`` beside it (provenance:
which release wrote this file). Artifacts written before code versions were keyed (wsss_edu
<= 0.1) have other keys and are computed again once: nothing says which code wrote them.
``version=None`` (ad-hoc use, tests) keys by the parameters alone.

One computation per entry at a time: :func:`cached` holds the entry's lock
(:func:`wsss_edu.io.run_lock`) while it computes, so a second process (another notebook, another
``--shard`` machine on a shared folder) waits for it and loads its result instead of computing it
again beside it; a killed computation's lock is released by the OS.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import wsss_edu

from .errors import DataFileError
from .io import (
    atomic_path_with_digest,
    digest_path,
    digest_problem,
    run_lock,
    write_digest,
    write_text_atomic,
)


def params_key(params: dict) -> str:
    """A short, stable hash of a JSON-able parameter dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(params: dict, version=None) -> str:
    """The key of an artifact: :func:`params_key` of ``params`` and of the code ``version`` that
    computes it (a step's ``CODE_VERSION``; None: the parameters alone)."""
    return params_key(params if version is None else {"params": params, "code_version": version})


def artifact_path(output_dir, name: str, params: dict, version=None) -> Path:
    """Where the artifact ``name`` for ``params``, computed by code ``version``, lives."""
    return Path(output_dir) / "cache" / name / f"{cache_key(params, version)}.pt"


def _to_storable(obj, where="artifact"):
    """Tensors, numbers, strings, None and (nested) dicts/lists of them; NumPy arrays become
    tensors and NumPy scalars Python numbers. Anything else raises, naming where it is."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_storable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_storable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str)):
        return obj
    raise TypeError(
        f"{where} is a {type(obj).__name__}; an artifact holds only tensors, arrays, "
        "numbers, strings and dicts/lists of them (weights_only=True must load it)"
    )


def provenance(params: dict, version=None) -> dict:
    """What ``<key>.json`` records beside an artifact, for people to read: its parameters, the
    code version that computed it and the package version that wrote it."""
    return {"parameters": params, "code_version": version, "wsss_edu": wsss_edu.__version__}


def save_artifact(path, obj, params: dict | None = None, version=None) -> Path:
    """Save a dict of tensors/arrays/numbers atomically (write then rename), then its digest
    (``<path>.sha256``); numpy arrays become tensors. The parameters, the code ``version`` and the
    package version are saved beside it as JSON (:func:`provenance`)."""
    path = Path(path)
    with atomic_path_with_digest(path) as tmp:
        torch.save(_to_storable(obj), tmp)
    if params is not None:
        write_text_atomic(
            path.with_suffix(".json"),
            json.dumps(provenance(params, version), indent=2, sort_keys=True, default=str),
        )
    return path


def load_artifact(path):
    """Load what :func:`save_artifact` wrote (``weights_only=True``), after checking its digest. A
    file without digest, whose bytes do not match it, or that does not load raises
    :class:`~wsss_edu.errors.DataFileError` naming the file and why."""
    path = Path(path)
    problem = digest_problem(path)
    if problem is not None:
        raise DataFileError(f"cached artifact {path} cannot be trusted: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a digest of a file that never loaded (written by hand, a bug)
        raise DataFileError(f"cached artifact {path} does not load: {type(e).__name__}: {e}") from e


def trust_unverified(output_dir) -> list[Path]:
    """Write digests for the artifacts and checkpoints under ``<output_dir>/cache`` that have none
    but load (files written by a version of wsss_edu before digests), so they are reused instead
    of computed again. Only for folders whose files you trust: a file damaged before this call
    is vouched for by it. Returns the files adopted."""
    adopted = []
    root = Path(output_dir) / "cache"
    for path in sorted(list(root.glob("*/*.pt")) + list(root.glob("*/*.ckpt"))):
        if digest_path(path).exists():
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            continue
        write_digest(path)
        adopted.append(path)
    return adopted


def checkpoint_path(output_dir, name: str, params: dict, version=None) -> Path:
    """Where a long computation of the artifact ``name`` for ``params`` keeps its resume checkpoint
    (beside the artifact, so other parameters and other code versions never resume from it);
    :func:`cached` deletes it once the artifact is saved."""
    return artifact_path(output_dir, name, params, version).with_suffix(".ckpt")


_ABSENT = object()


def _load_if_trusted(path: Path, warn: bool):
    """The artifact at ``path``, or ``_ABSENT`` when there is none or it cannot be trusted (named
    in a warning when ``warn``)."""
    if not path.exists():
        return _ABSENT
    try:
        return load_artifact(path)
    except DataFileError as e:
        if warn:
            warnings.warn(f"{e}; computing it again", stacklevel=3)
        return _ABSENT


def cached(output_dir, name: str, params: dict, compute, refresh: bool = False, version=None):
    """Return the artifact ``name`` for ``params`` and code ``version`` (the computing step's
    ``CODE_VERSION``; see the module docstring) from the cache, or ``compute()`` it, store it and
    return it. ``refresh=True`` recomputes. A file that cannot be trusted (no digest, a digest that
    does not match: damaged, truncated, or written by a version before digests) is named in a
    warning and recomputed. A resume checkpoint at :func:`checkpoint_path` is removed once the
    artifact is stored.

    The computation runs under the entry's lock (:func:`wsss_edu.io.run_lock`): when another live
    process computes the same entry, this one says so, waits for it and returns what it stored
    (computing only if it stored nothing). A lock of a killed process is released by the OS."""
    path = artifact_path(output_dir, name, params, version)
    if not refresh:
        found = _load_if_trusted(path, warn=False)  # without the lock: the common, fast case
        if found is not _ABSENT:
            return found
    with run_lock(path, math.inf, f"the computation of cache entry {name}/{path.name}"):
        if not refresh:  # under the lock: another process may have just stored it
            found = _load_if_trusted(path, warn=True)
            if found is not _ABSENT:
                return found
        t0 = time.perf_counter()
        obj = compute()
        save_artifact(path, obj, params, version)
        write_text_atomic(path.with_suffix(".seconds"), f"{time.perf_counter() - t0:.2f}\n")
        ckpt = checkpoint_path(output_dir, name, params, version)
        ckpt.unlink(missing_ok=True)
        digest_path(ckpt).unlink(missing_ok=True)
        return load_artifact(path)


def compute_seconds(output_dir, name: str) -> list[float]:
    """How long each artifact ``name`` under ``output_dir`` took to compute (seconds, as
    :func:`cached` measured it; artifacts stored before it measured are left out). A resumed
    computation counts only its last part."""
    folder = Path(output_dir) / "cache" / name
    return (
        [float(p.read_text()) for p in sorted(folder.glob("*.seconds"))] if folder.exists() else []
    )
