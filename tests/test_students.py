"""Exercises and student versions: the convention every course notebook follows, the skeleton
that replaces answers, and the committed student versions kept in step with the notebooks."""

import ast
import json
from pathlib import Path

import pytest

from wsss_edu import nbtools
from wsss_edu.runner import notebook_paths

REPO = Path(__file__).resolve().parents[1]

CELL = """import math
def area(r):
    ### BEGIN SOLUTION
    return math.pi * r ** 2
    ### END SOLUTION
### BEGIN SOLUTION
a = area(2.0)
### END SOLUTION
assert abs(a - 4 * math.pi) < 1e-9"""


def test_skeleton_keeps_checks_and_replaces_answers():
    sk = nbtools.skeleton(CELL)
    assert "math.pi * r" not in sk and "a = area" not in sk and "SOLUTION" not in sk
    assert sk.splitlines()[-1] == "assert abs(a - 4 * math.pi) < 1e-9"
    assert "    raise NotImplementedError()" in sk.splitlines()  # inside the function body
    ns = {}
    with pytest.raises(NotImplementedError):  # the student cell runs and stops at the gap
        exec(compile(sk, "cell", "exec"), ns)
    exec(compile(CELL, "cell", "exec"), {})  # the solution passes its own check


@pytest.mark.parametrize(
    "bad",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_skeleton_rejects_unbalanced_markers(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        nbtools.skeleton(bad)


def test_student_version_drops_solutions_and_outputs():
    nb = {
        "metadata": {"widgets": {"x": 1}},
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [
            {
                "cell_type": "code",
                "id": "a",
                "metadata": {"tags": ["exercise"]},
                "source": CELL,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "hi"}],
                "execution_count": 3,
            },
            {
                "cell_type": "markdown",
                "id": "b",
                "metadata": {"tags": ["solution"]},
                "source": "The answer is pi r^2.",
            },
        ],
    }
    st = nbtools.student_version(nb, "x.ipynb")
    assert [c["id"] for c in st["cells"]] == ["student0", "a"]
    assert st["cells"][1]["outputs"] == [] and st["cells"][1]["execution_count"] is None
    assert "widgets" not in st["metadata"] and "pi * r" not in st["cells"][1]["source"]


def test_exercise_convention_is_checked():
    def md(s, tags=()):
        return {"cell_type": "markdown", "source": s, "metadata": {"tags": list(tags)}}

    def ex(s=CELL):
        return {"cell_type": "code", "source": s, "metadata": {"tags": ["exercise"]}}

    good = [md("## Summary\n..."), md("## Exercises")]
    for k in range(3):
        good += [md(f"### Exercise {k + 1} — t"), ex()]
    assert nbtools.exercise_problems(good) == []
    assert "2 exercises" in nbtools.exercise_problems(good[:-2])[0]
    no_answer = good[:-1] + [ex("x = 1")]
    assert "no '### BEGIN SOLUTION'" in nbtools.exercise_problems(no_answer)[0]
    assert "Summary" in nbtools.exercise_problems(good[1:])[0]


def test_every_exercise_cell_of_the_course_has_a_valid_skeleton():
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell  # magics and shell escapes → Python
    for path in notebook_paths():
        for c in json.loads(path.read_text())["cells"]:
            if c["cell_type"] == "code":
                src = "".join(c["source"])
                sk = nbtools.skeleton(src)
                ast.parse(python(sk), filename=path.name)
                if "exercise" in c.get("metadata", {}).get("tags", []):
                    assert "raise NotImplementedError()" in sk, path.name


def test_student_versions_in_step_with_the_notebooks():
    for path in notebook_paths():
        student = REPO / nbtools.STUDENTS_DIR / path.name
        assert student.exists() and student.read_text() == nbtools.student_text(path), (
            f"{student.relative_to(REPO)} is out of date: run `make students`"
        )
    names = {p.name for p in notebook_paths()}
    extra = [p.name for p in (REPO / nbtools.STUDENTS_DIR).glob("*.ipynb") if p.name not in names]
    assert not extra, f"student versions without a notebook: {extra} (delete them)"
