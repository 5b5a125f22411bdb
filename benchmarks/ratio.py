"""Figures with their references: every benchmark of ``make bench`` records what it measured next to
a reference figure measured in the same run (the reference code's formulation, N processes against
one, the CPU's peak, ...) and their ratio. ``benchmarks/conftest.py`` hands one :class:`Recorder`
to every benchmark (the ``figures`` fixture) and, at the end of the session, prints the table and
writes it as JSON (runs/bench/bench.json, or ``$WSSS_BENCH_JSON``).

Use from a benchmark::

    def test_something(figures):
        figures.record("walk, VOC 500x375: time", ours_s, "s", dense_s, "IRNet's dense T")

Also usable outside pytest: ``Recorder()``, ``.record(...)``, ``.table()``, ``.write_json(path)``."""

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One row: ``value`` (in ``unit``) against ``reference`` (same unit unless ``note`` says
    otherwise; None: not measured in this run, ``reference_name`` says why), ``ratio`` = value /
    reference unless given, ``note``: how to read it."""

    name: str
    value: float
    unit: str
    reference: float | None
    reference_name: str
    ratio: float | None
    note: str = ""


class Recorder:
    """The figures of one ``make bench`` session, in the order recorded."""

    def __init__(self):
        self._figures: list[Figure] = []

    def record(
        self,
        name: str,
        value: float,
        unit: str,
        reference: float | None,
        reference_name: str,
        ratio: float | None = None,
        note: str = "",
    ) -> Figure:
        """Record ``value`` against ``reference`` (what it is: ``reference_name``, required). The
        ratio is ``value / reference`` unless ``ratio`` is given (e.g. speed-up / N); None when
        the reference is missing or zero. Prints the row at once and returns it."""
        if not reference_name:
            raise ValueError(
                f"figure {name!r}: give reference_name (what the reference figure is, or why "
                "there is none)"
            )
        if ratio is None and reference:
            ratio = float(value) / float(reference)
        fig = Figure(
            name,
            float(value),
            unit,
            None if reference is None else float(reference),
            reference_name,
            ratio,
            note,
        )
        self._figures.append(fig)
        print(f"\n{_line(fig)}")
        return fig

    def rows(self) -> list[dict]:
        """The figures as dicts (the JSON's ``figures``)."""
        return [asdict(f) for f in self._figures]

    def table(self) -> str:
        """A plain-text table: figure, value, reference, ratio, note."""
        head = f"{'figure':66} {'value':>14} {'reference':>28} {'ratio':>8}  note"
        return "\n".join([head, "-" * len(head)] + [_line(f) for f in self._figures])

    def write_json(self, path, meta: dict | None = None) -> Path:
        """Write {'meta': ..., 'figures': rows()} to ``path`` (folders made) and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta or {}, "figures": self.rows()}, indent=1))
        os.replace(tmp, path)
        return path


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    s = f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return f"{s} {unit}".strip()


def _line(f: Figure) -> str:
    ref = f"{_num(f.reference, f.unit)} ({f.reference_name})"
    return f"{f.name:66} {_num(f.value, f.unit):>14} {ref:>28} {_num(f.ratio):>8}  {f.note}"


def machine() -> dict:
    """What the figures were measured on (the JSON's ``meta``)."""
    import torch

    try:
        load = os.getloadavg()
    except OSError:  # not on every platform
        load = None
    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_at_end": load,
    }
