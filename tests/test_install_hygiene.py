"""What an installed package owes its users besides the code: one version, written once and the
same in the build, the citation and the changelog; the licence in the form build tools read;
``show_versions()`` for bug reports, which works when a library is broken; commands that fail,
naming the fix, where they find nothing to do."""

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from setuptools.config.expand import read_attr

import wsss_edu
from wsss_edu import pipeline, runner, versions
from wsss_edu.errors import ParameterError

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_read_without_importing_the_package(monkeypatch):
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "wsss_edu.__version__"}
    # setuptools reads the literal from the source (a build environment has no torch, numpy, ...):
    # with the package made unimportable it must still find the version
    monkeypatch.setitem(sys.modules, "wsss_edu", None)
    assert read_attr("wsss_edu.__version__", root_dir=REPO) == wsss_edu.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", wsss_edu.__version__)


def test_changelog_and_citation_carry_the_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    versions_listed = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, flags=re.M)
    assert versions_listed[0] == wsss_edu.__version__, (
        "CHANGELOG.md: the newest entry is not this version"
    )
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["version"] == wsss_edu.__version__


def test_the_licence_is_an_spdx_expression_with_its_file():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    # PEP 639's fields need setuptools >= 77 in the build environment
    assert any(
        re.fullmatch(r"setuptools>=(7[7-9]|[89]\d|\d{3,})(\.\d+)*", r)
        for r in PYPROJECT["build-system"]["requires"]
    )
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the wsss_edu authors" in licence


def test_the_citation_names_the_package_and_the_four_papers():
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["authors"] == [{"name": "the wsss_edu authors"}]
    refs = citation["references"]
    assert len(refs) == 4
    assert all(r["title"] and r["authors"] and isinstance(r["year"], int) for r in refs)
    firsts = [r["authors"][0]["family-names"] for r in refs]
    assert firsts == ["Neven", "Dobko", "Li", "Zhang"]  # papers 000-003, in the course's order


def test_show_versions_prints_and_returns_every_library(capsys):
    info = wsss_edu.show_versions()
    printed = capsys.readouterr().out
    expected = {
        "wsss_edu",
        "python",
        "platform",
        "torch",
        "torch CUDA build",
        "CUDA available",
        "GPU",
        "cuDNN",
        "MPS available",
        "torch threads",
        "torchvision",
        "numpy",
        "scipy",
        "pillow",
        "pydensecrf",
        "matplotlib",
        "tqdm",
        "ipywidgets",
        "jupyterlab",
        "papermill",
        "nbformat",
    }
    assert set(info) == expected
    assert info["wsss_edu"].startswith(wsss_edu.__version__ + " (")
    assert info["numpy"] == np.__version__
    assert info["torch"] == importlib.metadata.version("torch")
    assert all(f"{k}:" in printed and v in printed for k, v in info.items())


def test_show_versions_survives_a_library_that_fails_to_import(tmp_path, monkeypatch, capsys):
    """A compiled library built against another numpy raises on import; torch may be broken too.
    The report says so for each and goes on — it is what the user will paste into the issue."""
    (tmp_path / "brokenlib.py").write_text("raise RuntimeError('compiled against numpy 1.x')\n")
    (tmp_path / "exitlib.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        versions,
        "LIBRARIES",
        versions.LIBRARIES
        + (
            ("brokenlib", ("brokenlib",), "brokenlib"),
            ("exitlib", ("exitlib",), "exitlib"),
            ("nosuchlib", ("nosuchlib-dist",), "nosuchlib"),
            ("nosuchtool", ("nosuchtool",), None),
        ),
    )
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    info = wsss_edu.show_versions()
    assert info["brokenlib"] == "? (import fails: RuntimeError: compiled against numpy 1.x)"
    assert info["exitlib"] == "? (import fails: SystemExit: 3)"
    assert info["nosuchlib"] == info["nosuchtool"] == "not installed"
    assert info["torch"].startswith(importlib.metadata.version("torch") + " (import fails: ")
    assert info["CUDA available"] == info["torch threads"] == "unknown (torch does not import)"
    assert info["numpy"] == np.__version__
    assert "brokenlib:" in capsys.readouterr().out


def test_an_installed_library_missing_a_dependency_is_not_called_missing(monkeypatch):
    real = versions.import_module

    def import_module(name):
        if name == "pydensecrf.densecrf":
            raise ModuleNotFoundError(
                "No module named 'numpy.core.multiarray'", name="numpy.core.multiarray"
            )
        return real(name)

    monkeypatch.setattr(versions, "import_module", import_module)
    assert versions.library_version(("pydensecrf2",), "pydensecrf.densecrf") == (
        f"{importlib.metadata.version('pydensecrf2')} (import fails: ModuleNotFoundError: "
        "No module named 'numpy.core.multiarray')"
    )


def _outside_a_checkout(tmp_path, monkeypatch):
    """The current folder is an empty temp folder, and the package is not in a checkout (its
    default notebooks folder is then ./notebooks: :func:`wsss_edu.params.repo_root`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "repo_root", Path.cwd)


def test_the_runner_outside_a_checkout_fails_naming_the_folder(tmp_path, monkeypatch, capsys):
    """Before: "0 notebook(s) executed", exit status 0, and an empty runs/ folder."""
    _outside_a_checkout(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as e:
        runner.main([])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"{tmp_path / 'notebooks'} does not exist" in err and "--notebooks DIR" in err
    assert list(tmp_path.iterdir()) == []  # nothing written

    (tmp_path / "empty").mkdir()
    for folder, state in (("nowhere", "does not exist"), ("empty", "holds no notebook")):
        with pytest.raises(SystemExit) as e:
            runner.main(["--notebooks", folder])
        assert e.value.code == 2
        assert f"{tmp_path / folder} {state}" in capsys.readouterr().err
    with pytest.raises(ParameterError, match="--notebooks DIR"):
        runner.run_notebooks(tmp_path / "out", notebooks_dir=tmp_path / "empty")
    assert not (tmp_path / "out").exists()


def test_the_runner_names_the_extra_that_installs_papermill(tmp_path, monkeypatch, capsys):
    (tmp_path / "00_a.ipynb").write_text("{}")
    monkeypatch.setitem(sys.modules, "papermill", None)
    with pytest.raises(SystemExit) as e:
        runner.main(["--notebooks", str(tmp_path), "--output", str(tmp_path / "out")])
    assert e.value.code == 2 and 'pip install "wsss_edu[notebooks]"' in capsys.readouterr().err


def test_the_pipeline_finding_no_notebooks_fails_before_writing(tmp_path, monkeypatch):
    _outside_a_checkout(tmp_path, monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=re.escape(f"{tmp_path / 'nowhere'} does not exist")):
        pipeline.main(["--dataset", "toy", "--output", str(out), "--notebooks", "nowhere"])
    with pytest.raises(ParameterError, match=re.escape(f"{tmp_path / 'notebooks'} does not exist")):
        pipeline.main(["--dataset", "toy", "--output", str(out)])
    assert not out.exists()
