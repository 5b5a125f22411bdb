"""The results recorder: each notebook writes its headline numbers to
``<OUTPUT_DIR>/metrics/<notebook name>.json`` — a flat JSON object of named numbers whose names are
unique across notebooks — and the runner gathers them into ``results.md``."""

from __future__ import annotations

import json
import math
import numbers
import time
import warnings
from pathlib import Path

from .errors import DataFileError, ParameterError
from .io import (
    atomic_path_with_digest,
    digest_problem,
    file_lock,
    write_text_atomic,
)


def record_metrics(output_dir, notebook: str, metrics: dict, merge: bool = True) -> Path:
    """Write (or merge into) ``<output_dir>/metrics/<notebook>.json``. Values must be finite
    numbers (or None for 'not computed'); names must be strings. Returns the path.

    Two runs recording into one folder at once (two notebooks, the same notebook twice) merge one
    after the other under a lock (:func:`wsss_edu.io.file_lock`): neither loses the other's numbers
    and the file is never half written. A file that is not a metrics JSON (cut short by a crash of
    an older version, edited by hand) is kept beside it as ``<notebook>.json.corrupt-<time>``, named
    in a warning, and the metrics start afresh."""
    path = Path(output_dir) / "metrics" / f"{notebook}.json"
    clean = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise ParameterError(f"metric name {k!r} must be a string")
        if v is None:
            clean[k] = None
            continue
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ParameterError(f"metric {k}={v!r} must be a finite number (or None)")
        clean[k] = float(v) if not isinstance(v, numbers.Integral) else int(v)
    with file_lock(path):
        old = _metrics_or_set_aside(path) if (merge and path.exists()) else {}
        old.update(clean)
        write_text_atomic(path, json.dumps(old, indent=2, sort_keys=True) + "\n")
    return path


def _metrics_or_set_aside(path: Path) -> dict:
    """The metrics in ``path``; a file that is not a metrics JSON is renamed aside (warned) and {}
    returned, so the notebook that records next starts the file afresh."""
    try:
        return load_metrics(path)
    except DataFileError as e:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        warnings.warn(f"{e}; kept as {aside.name}, recording afresh", stacklevel=3)
        return {}


def load_metrics(path) -> dict:
    """One notebook's metrics dict; a file that is not one (not JSON, not an object) raises an
    error naming the file and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        data = e
    if not isinstance(data, dict):
        raise DataFileError(
            f"{path} is not a metrics file (a JSON object of named numbers): "
            f"{data if isinstance(data, Exception) else type(data).__name__}. Delete it "
            f"and rerun notebook {path.stem} to record its numbers again"
        )
    return data


def load_all_metrics(output_dir) -> dict:
    """{notebook name: metrics} for every JSON under ``<output_dir>/metrics``."""
    d = Path(output_dir) / "metrics"
    return {p.stem: load_metrics(p) for p in sorted(d.glob("*.json"))} if d.exists() else {}


def duplicate_metric_names(all_metrics: dict) -> dict:
    """{metric name: [notebooks]} for names recorded by more than one notebook (must be empty)."""
    seen = {}
    for nb, m in all_metrics.items():
        for k in m:
            seen.setdefault(k, []).append(nb)
    return {k: v for k, v in seen.items() if len(v) > 1}


def results_table(all_metrics: dict, times: dict | None = None) -> str:
    """A Markdown table: one row per notebook with its execution time and headline numbers."""
    times = times or {}
    lines = ["| notebook | time (s) | headline numbers |", "| --- | ---: | --- |"]
    for nb in sorted(set(all_metrics) | set(times)):
        m = all_metrics.get(nb, {})
        nums = ", ".join(f"`{k}` = {_fmt(v)}" for k, v in sorted(m.items())) or "(none recorded)"
        t = times.get(nb)
        lines.append(f"| {nb} | {'' if t is None else f'{t:.1f}'} | {nums} |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    if v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_path(output_dir, notebook: str, name: str) -> Path:
    """Where notebook ``notebook`` keeps its final network ``name``."""
    return Path(output_dir) / "models" / notebook / f"{name}.pt"


def save_model(output_dir, notebook: str, name: str, model) -> Path:
    """Save the whole module (its class and weights, on the CPU, in eval mode) atomically, then its
    digest beside it (``<name>.pt.sha256``), so a later notebook can run it without knowing how it
    was configured and :func:`load_model` can tell a damaged file."""
    import copy

    import torch

    path = model_path(output_dir, notebook, name)
    with atomic_path_with_digest(path) as tmp:
        torch.save(copy.deepcopy(model).cpu().eval(), tmp)
    return path


def load_model(output_dir, notebook: str, name: str, device="cpu"):
    """The network :func:`save_model` kept; a missing file names the notebook to run, and so does
    a file whose digest is missing or does not match (damaged, or saved by a version before
    digests: if you trust it, ``wsss_edu.io.write_digest(path)`` vouches for it). The file holds a
    pickled module (``weights_only=False``): load only folders you wrote yourself."""
    import torch

    path = model_path(output_dir, notebook, name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run notebooks/{notebook}.ipynb with OUTPUT_DIR={output_dir} first"
        )
    problem = digest_problem(path)
    if problem is not None:
        raise DataFileError(
            f"saved network {path} cannot be trusted: {problem}. Run "
            f"notebooks/{notebook}.ipynb with OUTPUT_DIR={output_dir} again to save it anew"
        )
    return torch.load(path, map_location=device, weights_only=False).eval()
