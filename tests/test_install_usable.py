"""Usable from an install (issue 25): a non-editable ``pip install`` of the repository carries the
course (notebooks, students' versions, data scripts) and the commands to use it, and every command
an error message names exists for that user.

The first tests build a real wheel and sdist from a copy of this working tree, install the wheel
with ``pip install --target`` and run the commands from that folder only (the checkout not on the
path). Measured: the wheel builds in 5-9 s here, the module's tests take about 15 s on 2 shared cores;
they stay in the default run."""

from __future__ import annotations

import filecmp
import importlib
import importlib.util
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from wsss_edu import course, params, pipeline, runner
from wsss_edu.errors import ParameterError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "runs",
    "data",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".benchmarks",
    ".ipynb_checkpoints",
)


def _source_tree(dest: Path) -> Path:
    """A copy of the files a clone of this working tree has (tracked or not ignored by git;
    without git, the tree less the usual build and data folders): the build must not write into
    the checkout, nor depend on files only a developer's folder holds."""
    if shutil.which("git") and (REPO / ".git").exists():
        listed = (
            subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .split("\0")
        )
        for rel in (r for r in listed if r and not r.startswith(".venv")):
            if (REPO / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO / rel, dest / rel)
    else:
        shutil.copytree(REPO, dest, ignore=IGNORED, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{'wheel': the wheel built from a copy of the tree, 'sdist': the sdist, 'target': the
    wheel installed with pip install --no-deps --target}."""
    top = tmp_path_factory.mktemp("install")
    src = _source_tree(top / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(top / "whl"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((top / "whl").glob("wsss_edu-*.whl"))
    sdist = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import setuptools.build_meta as b; print(b.build_sdist({str(top / 'sdist')!r}))",
        ],
        cwd=src,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.split()[-1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(top / "target"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {"wheel": wheel, "sdist": top / "sdist" / sdist, "target": top / "target"}


def _installed(target: Path, *args, cwd: Path):
    """``python *args`` with only the installed package on the path (no checkout), in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "WSSS_"))}
    env["PYTHONPATH"] = str(target)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_wheel_and_the_sdist_carry_every_course_file(built):
    expected = {p.as_posix() for p in course.course_files(REPO)}
    assert (
        {f"notebooks/{n}" for n in NOTEBOOKS} <= expected
        and any(p.startswith("students/") for p in expected)
        and "data_scripts/download.py" in expected
    )
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        in_wheel = {
            n.removeprefix("wsss_edu/_course/") for n in names if n.startswith("wsss_edu/_course/")
        }
        entry_points = next(whl.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert in_wheel == expected
    assert not any(
        n.startswith(("notebooks/", "students/", "data_scripts/", "tests/")) for n in names
    )
    assert "wsss-course = wsss_edu.course:main" in entry_points
    with tarfile.open(built["sdist"]) as sd:  # a wheel built from the sdist (python -m build)
        in_sdist = {n.split("/", 1)[1] for n in sd.getnames() if "/" in n}
    assert expected <= in_sdist


def test_an_installed_package_copies_the_course_and_runs_the_data_commands(built, tmp_path):
    target, elsewhere = built["target"], tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "my course"
    result = _installed(target, "-m", "wsss_edu.course", "copy", str(dest), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert str(target / "wsss_edu" / "_course") in result.stdout  # not the checkout
    assert f"cd {dest}" in result.stdout and "jupyter lab" in result.stdout
    for rel in course.course_files(REPO):
        assert filecmp.cmp(REPO / rel, dest / rel, shallow=False), rel
    assert sorted(p.name for p in (dest / "notebooks").glob("*.ipynb")) == NOTEBOOKS
    assert json.loads((dest / course.COURSE_MARKER).read_text())["wsss_edu"] == course._version()

    help_ = _installed(target, "-m", "wsss_edu.download", "--help", cwd=elsewhere)
    assert help_.returncode == 0, help_.stderr
    assert "python -m wsss_edu.download" in help_.stdout and "msrc" in help_.stdout
    # the copied data script runs the installed package (no wsss_edu beside it)
    script = _installed(target, str(dest / "data_scripts" / "download.py"), "--help", cwd=elsewhere)
    assert script.returncode == 0 and script.stdout == help_.stdout


def test_copying_over_changed_files_is_refused_naming_them_unless_forced(tmp_path, capsys):
    dest = tmp_path / "c"
    first = course.copy_course(dest, source=REPO)
    assert len(first) == len(course.course_files(REPO))
    assert course.copy_course(dest, source=REPO) == []  # identical files: nothing to do
    mine = dest / "notebooks" / NOTEBOOKS[0]
    mine.write_text("my answers")
    (dest / "notes.txt").write_text("mine too")
    with pytest.raises(ParameterError, match=re.escape(str(mine))) as e:
        course.copy_course(dest, source=REPO)
    assert "--force" in str(e.value) and mine.read_text() == "my answers"
    assert course.main(["copy", str(dest)]) == 2
    assert str(mine) in capsys.readouterr().err and mine.read_text() == "my answers"
    assert course.copy_course(dest, force=True, source=REPO) == [mine]
    assert filecmp.cmp(mine, REPO / "notebooks" / NOTEBOOKS[0], shallow=False)
    assert (dest / "notes.txt").read_text() == "mine too"  # not a course file: untouched
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        course.copy_course(tmp_path / "a_file", source=REPO)


def _installed_without_checkout(tmp_path, monkeypatch, with_course: bool) -> Path:
    """Pretend the package is installed in ``tmp_path/site/wsss_edu`` (no checkout beside it),
    its wheel's course copy present or not."""
    package = tmp_path / "site" / "wsss_edu"
    package.mkdir(parents=True)
    if with_course:
        course.copy_course(package / course.INSTALLED_COPY, source=REPO)
    monkeypatch.setattr(course, "PACKAGE_DIR", package)
    return package


def test_a_package_without_the_course_files_fails_loudly(tmp_path, monkeypatch, capsys):
    _installed_without_checkout(tmp_path, monkeypatch, with_course=False)
    assert course.checkout_root() is None
    with pytest.raises(course.CourseNotFoundError, match="no course notebooks found"):
        course.course_source()
    assert course.main(["copy", str(tmp_path / "dest")]) == 2
    assert "installed without the course files" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_a_copied_course_is_the_root_of_its_notebooks_outputs(tmp_path, monkeypatch):
    """A notebook's kernel runs in DIR/notebooks (or DIR/students): its default OUTPUT_DIR is
    DIR/runs, its parameters are read from DIR/notebooks, and the runner started in DIR finds
    DIR/notebooks — as in a checkout, with the package installed elsewhere."""
    package = _installed_without_checkout(tmp_path, monkeypatch, with_course=True)
    monkeypatch.delenv("WSSS_OUTPUT_DIR", raising=False)
    dest = tmp_path / "course"
    assert course.main(["copy", str(dest)]) == 0
    assert json.loads((dest / course.COURSE_MARKER).read_text())["copied_from"] == str(
        package / course.INSTALLED_COPY
    )
    first = NOTEBOOKS[0].removesuffix(".ipynb")
    for kernel_dir in ("notebooks", "students", "."):
        monkeypatch.chdir(dest / kernel_dir)
        assert params.repo_root() == dest
        assert params.notebook_file(first) == dest / "notebooks" / NOTEBOOKS[0]
        assert params.setup(first, verbose=False).output_dir == (dest / "runs").resolve()
    assert [p.name for p in runner.notebook_paths()] == NOTEBOOKS
    monkeypatch.chdir(tmp_path)  # outside any course: the current folder
    assert params.repo_root() == tmp_path


def test_the_pipeline_names_the_extra_that_installs_papermill(tmp_path, monkeypatch, capsys):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_a.ipynb").write_text("{}")
    monkeypatch.setitem(sys.modules, "papermill", None)
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "wsss_edu[notebooks]"')):
        runner.import_papermill()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        pipeline.main(
            ["--dataset", "toy", "--output", str(out), "--notebooks", str(tmp_path / "nb")]
        )
    assert e.value.code == 2
    assert 'pip install "wsss_edu[notebooks]"' in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def _data_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"script_{name}", REPO / "data_scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["download", "prepare_voc_trainaug", "write_toy_voc"])
def test_each_data_script_runs_the_package_command(name, monkeypatch, capsys):
    """data_scripts/X.py and python -m wsss_edu.X are one command (one main, one set of options),
    and ``python -m wsss_edu.X --help`` answers under that name."""
    assert _data_script(name).main is importlib.import_module(f"wsss_edu.{name}").main
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as e:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
        runpy.run_module(f"wsss_edu.{name}", run_name="__main__")
    assert e.value.code == 0 and f"python -m wsss_edu.{name}" in capsys.readouterr().out


def test_write_toy_voc_with_nothing_to_write_fails(tmp_path, capsys):
    from wsss_edu import write_toy_voc

    assert write_toy_voc.main(["--root", str(tmp_path / "w"), "--train", "0", "--val", "0"]) == 2
    assert "nothing to write" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_no_message_of_the_package_names_a_script_an_installed_user_lacks():
    """Every command the package prints is ``python -m wsss_edu.<module>``, which an installed
    package has; ``python data_scripts/...`` only exists in a checkout."""
    found = [
        f"{p.relative_to(REPO)}:{i}"
        for p in sorted((REPO / "wsss_edu").rglob("*.py"))
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"python3? data_scripts/", line)
    ]
    assert found == []


def test_the_sdist_manifest_lists_the_course_files():
    """MANIFEST.in (the sdist, from which ``python -m build`` builds the wheel) and COURSE_FILES
    (the copy) name the same patterns."""
    lines = (REPO / "MANIFEST.in").read_text().splitlines()
    included = [line.split(None, 1)[1] for line in lines if line.startswith("include ")]
    assert sorted(included) == sorted(course.COURSE_FILES)
