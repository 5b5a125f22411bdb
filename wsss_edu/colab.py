"""Colab: the install cell every course notebook carries, and the function that puts it there.

On Colab a notebook opened from GitHub runs in a machine that has torch but not ``wsss_edu``, so
the notebook's own first cells must install it — before its first ``import wsss_edu``, which is
why this module cannot do it (it is not importable there yet): :data:`INSTALL_CELL` is the cell's
text, copied into each notebook source by :func:`add_install_cell`,

    python -m wsss_edu.colab add notebooks/src/*.py

right after the papermill ``parameters`` cell (the course's rule: the first code cell) and before
the first import of the package. The cell is plain Python (no ``%pip``, so papermill and a plain
``python`` read it), does nothing outside Colab, and is tagged ``colab`` and hidden
(``jupyter.source_hidden``: JupyterLab and Colab show it collapsed). It stays in the student
versions (:mod:`wsss_edu.nbtools` drops only ``solution`` cells): learners on Colab need it most.

Where from: ``$WSSS_EDU_SOURCE`` if set, else ``wsss_edu[notebooks]`` from PyPI. A URL
(``git+https://github.com/<owner>/wsss_edu``) is installed with the notebooks extra
(``wsss_edu[notebooks] @ <url>``); any other value is given to pip as it is.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TAG = "colab"
SOURCE_ENV = "WSSS_EDU_SOURCE"
DEFAULT_SOURCE = "wsss_edu[notebooks]"
# The jupytext percent-format header of the cell: its tag and JupyterLab's "collapsed input".
CELL_HEADER = '# %% tags=["colab"] jupyter={"source_hidden": true}'

INSTALL_CELL = f'''\
# On Colab only (a no-op anywhere else): install the course's package into this runtime.
# From a repository: run `%env {SOURCE_ENV}=git+https://github.com/<owner>/wsss_edu` first.
import sys

if "google.colab" in sys.modules:
    import importlib
    import os
    import subprocess

    _source = os.environ.get("{SOURCE_ENV}", "{DEFAULT_SOURCE}")
    if "://" in _source and " @ " not in _source:  # a URL: with the notebooks' extra
        _source = f"{DEFAULT_SOURCE} @ {{_source}}"
    print(f"Colab: pip install {{_source}}")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", _source])
    importlib.invalidate_caches()
    print(
        f"Colab: installed {{_source}} (if pip upgraded a package already imported, "
        "Runtime > Restart session, then run the cells again)"
    )
'''


def is_colab() -> bool:
    """True inside a Colab runtime (its ``google.colab`` module is loaded by the kernel)."""
    return "google.colab" in sys.modules


_HEADER = re.compile(r"^# %%(.*)$")
_IMPORT = re.compile(r"^\s*(import\s+wsss_edu\b|from\s+wsss_edu\b)")


def _cells(lines: list[str]) -> list[int]:
    """Indices of the percent-format cell headers (``# %%...``) in ``lines``."""
    return [i for i, line in enumerate(lines) if _HEADER.match(line)]


def _is_code_header(line: str) -> bool:
    return "[markdown]" not in line and "[md]" not in line


def _has_tag(line: str, tag: str) -> bool:
    m = re.search(r"tags=(\[[^\]]*\])", line)
    return bool(m) and f'"{tag}"' in m.group(1)


def remove_install_cell(source: str) -> str:
    """``source`` (a percent-format notebook) without its ``colab``-tagged cells."""
    lines = source.splitlines()
    heads = _cells(lines) + [len(lines)]
    drop = set()
    for a, b in zip(heads, heads[1:]):
        if _has_tag(lines[a], TAG):
            drop.update(range(a, b))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop) + "\n"


def add_install_cell(source: str, name: str = "notebook") -> str:
    """``source`` (a percent-format notebook's text) with :data:`INSTALL_CELL` as the cell right
    after the first code cell, which must be tagged ``parameters``. A ``colab`` cell already there
    is replaced (running this twice changes nothing; a changed :data:`INSTALL_CELL` is updated).
    Raises ValueError naming ``name`` when the first code cell is not the parameters cell, or when
    ``wsss_edu`` is imported before the place the cell would go (it would run first on Colab)."""
    lines = remove_install_cell(source).splitlines()
    heads = _cells(lines)
    code = [i for i in heads if _is_code_header(lines[i])]
    if not code or not _has_tag(lines[code[0]], "parameters"):
        raise ValueError(
            f"{name}: the first code cell is not tagged 'parameters' (the course's "
            "rule); the Colab cell goes right after it"
        )
    after = [i for i in heads if i > code[0]]
    at = after[0] if after else len(lines)
    early = [i + 1 for i in range(at) if _IMPORT.match(lines[i])]
    if early:
        raise ValueError(
            f"{name}: line {early[0]} imports wsss_edu before the Colab install cell "
            "would run; move the import below the parameters cell"
        )
    cell = [CELL_HEADER, *INSTALL_CELL.splitlines()]
    if after:  # a blank line, then the next cell, as between the other cells
        new = lines[:at] + cell + [""] + lines[at:]
    else:
        new = lines + ([""] if lines and lines[-1].strip() else []) + cell
    return "\n".join(new) + "\n"


def add_to_files(paths) -> list[Path]:
    """Apply :func:`add_install_cell` to each percent-format file in place; returns those changed."""
    changed = []
    for p in map(Path, paths):
        text = p.read_text()
        new = add_install_cell(text, p.name)
        if new != text:
            p.write_text(new)
            changed.append(p)
    return changed


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "add":
        print(
            "usage: python -m wsss_edu.colab add NOTEBOOK_SOURCE.py...   (e.g. notebooks/src/*.py)"
        )
        return 2
    for p in add_to_files(argv[1:]):
        print(f"added the Colab install cell to {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
