"""Versioned caches (issue 25): a step's CODE_VERSION is in its cache keys and in the pipeline's
done.json, so that after an update what a changed step computes is computed again (and the
notebooks that use it rerun) while the rest is reused; the package version is recorded, not keyed."""

import ast
import hashlib
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import wsss_edu
from wsss_edu import cache, pipeline
from wsss_edu.steps import irnet_step, segmenter_step

try:
    from . import fixtures_notebooks as fx_nb
except ImportError:
    import fixtures_notebooks as fx_nb

STEPS = Path(wsss_edu.__file__).resolve().parent / "steps"


# ------------------------------------------------------------------------------------------------
# The artifact cache
# ------------------------------------------------------------------------------------------------


def test_the_version_keys_the_artifact_and_the_package_version_is_recorded(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3)}

    params = {"seed": 0}
    cache.cached(tmp_path, "cams", params, compute, version=1)
    cache.cached(tmp_path, "cams", params, compute, version=1)
    assert len(calls) == 1  # the same version reuses
    cache.cached(tmp_path, "cams", params, compute, version=2)
    assert len(calls) == 2  # another version computes
    cache.cached(tmp_path, "cams", params, compute, version=1)
    assert len(calls) == 2  # back to 1: its file is still there
    v1, v2 = (cache.artifact_path(tmp_path, "cams", params, v) for v in (1, 2))
    assert v1 != v2 and v1.exists() and v2.exists()
    assert cache.checkpoint_path(tmp_path, "cams", params, 1) != cache.checkpoint_path(
        tmp_path, "cams", params, 2
    )
    meta = json.loads(v2.with_suffix(".json").read_text())
    assert meta == {"parameters": params, "code_version": 2, "wsss_edu": wsss_edu.__version__}
    # unversioned (ad-hoc use): the parameters alone, as before versions
    assert cache.artifact_path(tmp_path, "cams", params).stem == cache.params_key(params)
    assert cache.artifact_path(tmp_path, "cams", params).stem not in (v1.stem, v2.stem)


def test_bumping_a_steps_version_recomputes_its_artifacts_and_not_anothers(tmp_path, monkeypatch):
    """Through the steps' own cached functions, their computations replaced by counting fakes."""
    calls = {"segmenter": 0, "confident": 0}
    cfg = segmenter_step.SegmenterConfig(model="unet", width=4, epochs=1)
    data = types.SimpleNamespace(num_classes=3)

    def fake_train(fn, dataset, cfg, **kw):
        calls["segmenter"] += 1
        return segmenter_step.make_model(dataset.num_classes, cfg).state_dict()

    def fake_confident(model, dataset, confidence, progress):
        calls["confident"] += 1
        return np.array([0, 2])

    monkeypatch.setattr(segmenter_step, "trained_state", fake_train)
    monkeypatch.setattr(irnet_step, "confident_images", fake_confident)

    def both():
        net = segmenter_step.cached_segmenter(
            tmp_path, data, {"pseudo_labels": "f"}, cfg, progress=False
        )
        idx = irnet_step.cached_confident_images(
            tmp_path, None, None, tmp_path / "cams_abc", 0.8, False
        )
        return dict(calls), net, idx

    first, net1, idx1 = both()
    assert first == {"segmenter": 1, "confident": 1}
    again, net2, idx2 = both()
    assert again == first  # same versions: all reused
    assert all(
        torch.equal(a, b) for a, b in zip(net1.state_dict().values(), net2.state_dict().values())
    )
    assert idx2.tolist() == idx1.tolist() == [0, 2]
    monkeypatch.setattr(segmenter_step, "CODE_VERSION", segmenter_step.CODE_VERSION + 1)
    assert both()[0] == {"segmenter": 2, "confident": 1}  # only the bumped step
    monkeypatch.setattr(irnet_step, "CODE_VERSION", irnet_step.CODE_VERSION + 1)
    assert both()[0] == {"segmenter": 2, "confident": 2}
    assert both()[0] == {"segmenter": 2, "confident": 2}  # and then reused at the new versions


CACHE_FUNCTIONS = ("cached", "artifact_path", "checkpoint_path", "save_artifact")


def _cache_calls_without_version(tree) -> list:
    """(line, function) of the calls of the cache's keyed functions that pass no code version."""
    where = {
        "cached": 5,
        "artifact_path": 3,
        "checkpoint_path": 3,
        "save_artifact": 3,
    }  # version's position
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", None)
            )
            if (
                f in where
                and len(node.args) <= where[f]
                and not any(k.arg == "version" for k in node.keywords)
            ):
                missing.append((node.lineno, f))
    return missing


def test_every_cache_call_of_the_steps_passes_their_code_version():
    """A step that forgot its version would key its artifacts by the parameters alone: never
    recomputed after an update (and, for artifact_path beside cached, never found either)."""
    assert _cache_calls_without_version(
        ast.parse(
            "cached(o, 'a', k, f)\nartifact_path(o, 'a', k, 1)\n"
            "checkpoint_path(o, 'a', k, version=V)\n"
        )
    ) == [(1, "cached")]
    found = {
        p.name: _cache_calls_without_version(ast.parse(p.read_text())) for p in STEPS.glob("*.py")
    }
    assert not {k: v for k, v in found.items() if v}
    versions = pipeline.step_code_versions()
    caching = {
        p.stem
        for p in STEPS.glob("*.py")
        if any(
            isinstance(n, ast.Call)
            and getattr(n.func, "attr", getattr(n.func, "id", None)) in CACHE_FUNCTIONS
            for n in ast.walk(ast.parse(p.read_text()))
        )
    }
    # every step that keys a cache entry has its version (gpu_check, which caches nothing, has none)
    assert caching and caching <= set(versions)
    assert {"cam_step", "irnet_step", "segmenter_step", "rrm_step", "lu_experiments"} <= caching
    assert all(isinstance(v, int) and v >= 1 for v, _ in versions.values())


# ------------------------------------------------------------------------------------------------
# The pipeline's done.json
# ------------------------------------------------------------------------------------------------


PARAMS = "DATASET = 'toy'\nOUTPUT_DIR = ''"
CODE = {
    "03_cam": "from wsss_edu.steps import cam_step",
    "04_irn": "from wsss_edu.steps import irnet_step",
    "05_seg": "from wsss_edu.steps import segmenter_step",
}


def write_steps(folder, cam: int = 1, irnet: int = 1, seg: int = 1):
    folder.mkdir(exist_ok=True)
    (folder / "cam_step.py").write_text(f"CODE_VERSION = {cam}\n")
    (folder / "irnet_step.py").write_text(
        f"from .cam_step import load_cams\n\nCODE_VERSION = {irnet}\n"
    )
    (folder / "segmenter_step.py").write_text(f"import numpy\nCODE_VERSION = {seg}\n")
    (folder / "__init__.py").write_text("")


@pytest.fixture
def course(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name, code in CODE.items():
        fx_nb.write_notebook(nbs / f"{name}.ipynb", PARAMS, code)
    write_steps(tmp_path / "steps")
    monkeypatch.setattr(pipeline, "STEPS_DIR", tmp_path / "steps")
    return nbs


def run(course, out, logs=None):
    calls = []

    def execute(src, dst, parameters, **kw):
        calls.append(Path(src).stem)
        Path(dst).write_text("{}")

    status = pipeline.run_pipeline(
        out,
        "voc",
        notebooks_dir=course,
        execute=execute,
        log=(logs if logs is not None else []).append,
    )
    assert sorted(calls) == sorted(k for k, v in status.items() if v == "ran")
    return status


def test_done_json_records_the_package_and_step_versions(course, tmp_path):
    out = tmp_path / "out"
    assert set(run(course, out).values()) == {"ran"}
    for name, code in CODE.items():
        done = json.loads((out / "steps" / name / "done.json").read_text())
        assert done["wsss_edu"] == wsss_edu.__version__
        expected_code = "DATASET = 'toy'\nOUTPUT_DIR = ''\n" + code  # the code cells, in order
        assert done["notebook_code_sha256"] == hashlib.sha256(expected_code.encode()).hexdigest()
        assert done["parameters"]["DATASET"] == "voc"
    steps = {
        n: json.loads((out / "steps" / n / "done.json").read_text())["step_versions"] for n in CODE
    }
    # 04 names irnet_step, which imports cam_step: both are its steps
    assert steps == {
        "03_cam": {"cam_step": 1},
        "04_irn": {"cam_step": 1, "irnet_step": 1},
        "05_seg": {"segmenter_step": 1},
    }


def test_a_changed_step_version_or_notebook_reruns_the_step_and_the_rest_is_skipped(
    course, tmp_path, monkeypatch
):
    out, logs = tmp_path / "out", []
    run(course, out)
    assert run(course, out) == {"03_cam": "skipped", "04_irn": "skipped", "05_seg": "skipped"}
    write_steps(tmp_path / "steps", cam=2)
    assert run(course, out, logs) == {"03_cam": "ran", "04_irn": "ran", "05_seg": "skipped"}
    assert any(
        line.startswith("04_irn: running (step code changed") and "cam_step 1 -> 2" in line
        for line in logs
    )
    assert (
        json.loads((out / "steps" / "04_irn" / "done.json").read_text())["step_versions"][
            "cam_step"
        ]
        == 2
    )
    assert set(run(course, out).values()) == {"skipped"}
    write_steps(tmp_path / "steps", cam=2, seg=3)
    assert run(course, out) == {"03_cam": "skipped", "04_irn": "skipped", "05_seg": "ran"}
    # the notebook's code changed: it reruns; only its markdown (or metadata, outputs): it does not
    logs.clear()
    fx_nb.write_notebook(course / "05_seg.ipynb", PARAMS, CODE["05_seg"] + "\nprint(1)")
    fx_nb.write_notebook(
        course / "03_cam.ipynb", PARAMS, CODE["03_cam"], markdown="# a new explanation"
    )
    assert run(course, out, logs) == {"03_cam": "skipped", "04_irn": "skipped", "05_seg": "ran"}
    assert "05_seg: running (the notebook's code changed since it finished;" in "\n".join(logs)
    # a new release alone reruns nothing (the step versions say what changed), and is recorded when
    # a step runs
    monkeypatch.setattr(wsss_edu, "__version__", "99.0.0")
    assert set(run(course, out).values()) == {"skipped"}
    write_steps(tmp_path / "steps", cam=2, seg=4)
    run(course, out)
    assert json.loads((out / "steps" / "05_seg" / "done.json").read_text())["wsss_edu"] == "99.0.0"
    assert json.loads((out / "steps" / "03_cam" / "done.json").read_text())["wsss_edu"] != "99.0.0"


def test_an_old_done_json_without_versions_reruns(course, tmp_path):
    out, logs = tmp_path / "out", []
    run(course, out)
    marker = out / "steps" / "04_irn" / "done.json"
    done = json.loads(marker.read_text())
    marker.write_text(
        json.dumps(
            {"parameters": done["parameters"], "seconds": 1.0, "finished": "2026-01-01 00:00:00"}
        )
    )  # as wsss_edu 0.1 wrote it
    assert run(course, out, logs) == {"03_cam": "skipped", "04_irn": "ran", "05_seg": "skipped"}
    assert any("04_irn: running (its done.json records no code versions" in line for line in logs)
    assert "step_versions" in json.loads(marker.read_text())
    marker.write_text("{not json")
    assert run(course, out)["04_irn"] == "ran"
