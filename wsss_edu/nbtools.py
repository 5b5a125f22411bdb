"""Notebook housekeeping: check the course's conventions and write the student versions.

    python -m wsss_edu.nbtools check NOTEBOOK...
    python -m wsss_edu.nbtools students [--out students] [NOTEBOOK...]

Stripping outputs is nbstripout's (``make strip``), keeping each notebook in step with its source
in notebooks/src/ is jupytext's (``make sync``, configured in notebooks/jupytext.toml).

Exercises follow one convention (nbgrader's markers): after the summary, a markdown cell
``## Exercises``, then per exercise a markdown cell ``### Exercise k — title`` and a code cell
tagged ``exercise`` whose answer lies between a line ``### BEGIN SOLUTION`` and a line
``### END SOLUTION``; the lines after the answer check it. The student version replaces each answer
with ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (the checks stay, so learners can test
their answer), drops cells tagged ``solution`` and every output."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .params import repo_root
from .runner import notebook_paths

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENTS_DIR = "students"


def convention_problems(path) -> list[str]:
    """What a course notebook gets wrong: the first code cell not tagged ``parameters``, a kernel
    other than python3, stored outputs, cells without ids, no summary/exercises at the end."""
    path = Path(path)
    nb = json.loads(path.read_text())
    out = []
    cells = nb.get("cells", [])
    code = [c for c in cells if c.get("cell_type") == "code"]
    if not code or "parameters" not in code[0].get("metadata", {}).get("tags", []):
        out.append("first code cell is not tagged `parameters`")
    if nb.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        out.append("kernelspec name is not python3")
    if any(c.get("outputs") for c in code):
        out.append("outputs are stored (run `make strip`)")
    if any("id" not in c for c in cells):
        out.append("cells without ids")
    out += exercise_problems(cells)
    return [f"{path.name}: {p}" for p in out]


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def exercise_problems(cells) -> list[str]:
    """The end of a course notebook: a summary, then ``## Exercises`` with 3-5 exercises, each
    a ``### Exercise`` heading followed by a code cell tagged ``exercise`` holding a solution
    between the markers (and nothing after the exercises but their cells)."""
    heads = [
        i
        for i, c in enumerate(cells)
        if c.get("cell_type") == "markdown" and re.search(r"^## Exercises", _source(c), re.M)
    ]
    if not heads:
        return ["no '## Exercises' section at the end"]
    start = heads[-1]
    before = "\n".join(_source(c) for c in cells[:start] if c.get("cell_type") == "markdown")
    if not re.search(r"^## Summary", before, re.M):
        return ["no '## Summary' before the exercises"]
    out, titles = (
        [],
        [
            i
            for i in range(start, len(cells))
            if cells[i].get("cell_type") == "markdown"
            and re.search(r"^### Exercise", _source(cells[i]), re.M)
        ],
    )
    if not 3 <= len(titles) <= 5:
        out.append(f"{len(titles)} exercises (3-5 expected)")
    for i in titles:
        code = next((c for c in cells[i + 1 :] if c.get("cell_type") == "code"), None)
        name = _source(cells[i]).splitlines()[0]
        if code is None or "exercise" not in _tags(code):
            out.append(f"{name!r} is not followed by a code cell tagged 'exercise'")
        elif BEGIN not in _source(code) or END not in _source(code):
            out.append(f"{name!r}: its cell has no {BEGIN!r} ... {END!r} answer")
    return out


def skeleton(source: str) -> str:
    """``source`` with every answer between the markers replaced by a placeholder at the
    answer's indentation (the lines after ``### END SOLUTION`` are kept)."""
    out, inside, indent = [], False, ""
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{source}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def student_version(nb: dict, name: str) -> dict:
    """The student notebook made from course notebook ``nb`` (a dict as read from JSON): a
    first cell saying where it comes from, no outputs, no widget state, no ``solution`` cells,
    answers replaced by :func:`skeleton`."""
    cells = [
        {
            "cell_type": "markdown",
            "id": "student0",
            "metadata": {},
            "source": f"*Student version of `notebooks/{name}`, generated by "
            f"`make students` (do not edit: edit `notebooks/src/` and regenerate). "
            f"Fill in every `# YOUR CODE HERE`; the lines after it check your "
            f"answer.*",
        }
    ]
    for c in nb["cells"]:
        if "solution" in _tags(c):
            continue
        c = json.loads(json.dumps(c))
        c.get("metadata", {}).pop("execution", None)
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
            c["source"] = skeleton(_source(c))
        cells.append(c)
    meta = {k: v for k, v in nb.get("metadata", {}).items() if k != "widgets"}
    return {
        "cells": cells,
        "metadata": meta,
        "nbformat": nb.get("nbformat", 4),
        "nbformat_minor": nb.get("nbformat_minor", 5),
    }


def student_text(path) -> str:
    """The student version of the notebook at ``path``, as the file's text: nbformat's own layout
    (sorted keys, sources as lists of lines; what Jupyter, jupytext and nbstripout write), so that
    opening and saving a student notebook changes nothing."""
    import nbformat  # the `notebooks` extra, needed only to write the student versions

    path = Path(path)
    nb = nbformat.from_dict(student_version(json.loads(path.read_text()), path.name))
    return nbformat.writes(nb) + "\n"


def write_students(notebooks, out) -> list[Path]:
    """Write the student version of each notebook into folder ``out``; returns the paths written
    (only those whose text changed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for p in notebooks:
        dst, text = out / Path(p).name, student_text(p)
        if not dst.exists() or dst.read_text() != text:
            dst.write_text(text)
            written.append(dst)
    return written


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("check", "students"):
        print(
            "usage: python -m wsss_edu.nbtools check NOTEBOOK... | students "
            "[--out FOLDER] [NOTEBOOK...]\n(strip outputs with `make strip` (nbstripout), "
            "sync the sources with `make sync` (jupytext))"
        )
        return 2
    if argv[0] == "students":
        args = argv[1:]
        out = repo_root() / STUDENTS_DIR
        if args[:1] == ["--out"]:
            out, args = args[1], args[2:]
        for p in write_students(args or notebook_paths(), out):
            print(f"wrote {p}")
        return 0
    problems = [q for p in argv[1:] for q in convention_problems(p)]
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
