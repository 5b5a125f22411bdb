"""An artifact cache under OUTPUT_DIR keyed by parameters, so a notebook reuses what an earlier one
computed (CAMs, pseudo-labels, trained weights) and computes it itself when absent.

``cached(output_dir, "cams", params, compute)`` returns ``compute()``'s dict of arrays/tensors,
stored as ``<output_dir>/cache/cams/<key>.pt`` where ``key`` hashes ``params``. Files hold plain
tensors / arrays only and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from .io import atomic_path, write_text_atomic


def params_key(params: dict) -> str:
    """A short, stable hash of a JSON-able parameter dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_path(output_dir, name: str, params: dict) -> Path:
    """Where the artifact ``name`` for ``params`` lives."""
    return Path(output_dir) / "cache" / name / f"{params_key(params)}.pt"


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
    raise TypeError(f"{where} is a {type(obj).__name__}; an artifact holds only tensors, arrays, "
                    "numbers, strings and dicts/lists of them (weights_only=True must load it)")


def save_artifact(path, obj, params: dict | None = None) -> Path:
    """Save a dict of tensors/arrays/numbers atomically (write then rename); numpy arrays become
    tensors. The parameters are saved beside it as JSON for people to read."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(_to_storable(obj), tmp)
    if params is not None:
        write_text_atomic(path.with_suffix(".json"), json.dumps(params, indent=2, sort_keys=True,
                                                                default=str))
    return path


def load_artifact(path):
    """Load what :func:`save_artifact` wrote (``weights_only=True``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def checkpoint_path(output_dir, name: str, params: dict) -> Path:
    """Where a long computation of the artifact ``name`` for ``params`` keeps its resume checkpoint
    (beside the artifact, so other parameters never resume from it); :func:`cached` deletes it once
    the artifact is saved."""
    return artifact_path(output_dir, name, params).with_suffix(".ckpt")


def cached(output_dir, name: str, params: dict, compute, refresh: bool = False):
    """Return the artifact ``name`` for ``params`` from the cache, or ``compute()`` it, store it and
    return it. ``refresh=True`` recomputes. A corrupt file is recomputed. A resume checkpoint at
    :func:`checkpoint_path` is removed once the artifact is stored."""
    path = artifact_path(output_dir, name, params)
    if path.exists() and not refresh:
        try:
            return load_artifact(path)
        except Exception:  # an interrupted or foreign file: compute again
            path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    obj = compute()
    save_artifact(path, obj, params)
    write_text_atomic(path.with_suffix(".seconds"), f"{time.perf_counter() - t0:.2f}\n")
    checkpoint_path(output_dir, name, params).unlink(missing_ok=True)
    return load_artifact(path)


def compute_seconds(output_dir, name: str) -> list[float]:
    """How long each artifact ``name`` under ``output_dir`` took to compute (seconds, as
    :func:`cached` measured it; artifacts stored before it measured are left out). A resumed
    computation counts only its last part."""
    folder = Path(output_dir) / "cache" / name
    return [float(p.read_text()) for p in sorted(folder.glob("*.seconds"))] if folder.exists() else []
