"""Notebook parameters, the runner and the notebook conventions."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from wsss_edu import params, runner
from wsss_edu.errors import DatasetNotFoundError, ParameterError
from wsss_edu.nbtools import convention_problems
from wsss_edu.steps import cam_step, irnet_step, segmenter_step

REPO = Path(__file__).resolve().parent.parent


def test_setup_validates_and_resolves(tmp_path):
    s = params.setup("nb", OUTPUT_DIR=str(tmp_path / "out"), verbose=False)
    assert s.output_dir.is_dir() and s.device.type in ("cpu", "cuda", "mps") and s.quick
    with pytest.raises(ParameterError, match="'toy', 'voc'"):
        params.setup("nb", DATASET="pascal", OUTPUT_DIR=str(tmp_path))
    with pytest.raises(ParameterError, match="'quick', 'full'"):
        params.setup("nb", PROFILE="fast", OUTPUT_DIR=str(tmp_path))
    with pytest.raises(ParameterError, match="python -m wsss_edu.download voc"):
        params.setup("nb", DATASET="voc", OUTPUT_DIR=str(tmp_path))
    s = params.setup(
        "nb",
        DATASET="voc",
        DATA_ROOT=str(tmp_path / "none"),
        OUTPUT_DIR=str(tmp_path),
        verbose=False,
    )
    with pytest.raises(DatasetNotFoundError, match="python -m wsss_edu.download voc"):
        params.load_splits(s)


def test_output_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_OUTPUT_DIR", str(tmp_path / "env"))
    assert params.setup("nb", verbose=False).output_dir == (tmp_path / "env").resolve()


def make_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    p = nbformat.v4.new_code_cell('OUTPUT_DIR = ""\nVALUE = 1')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [
        p,
        nbformat.v4.new_code_cell(body),
        nbformat.v4.new_markdown_cell("## Summary\n\n## Exercises"),
    ]
    path.write_text(json.dumps(nb))


def test_runner_executes_in_order_and_writes_results(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    rec = (
        "from wsss_edu.results import record_metrics\n"
        "record_metrics(OUTPUT_DIR, '{name}', {{'{key}': VALUE * {k}}})"
    )
    make_notebook(nbdir / "00_a.ipynb", rec.format(name="00_a", key="a_value", k=1))
    make_notebook(nbdir / "01b_c.ipynb", rec.format(name="01b_c", key="c_value", k=3))
    make_notebook(nbdir / "01_b.ipynb", rec.format(name="01_b", key="b_value", k=2))
    out = tmp_path / "runs"
    times = runner.run_notebooks(out, params={"VALUE": 3}, notebooks_dir=nbdir, log=lambda *_: None)
    assert list(times) == ["00_a", "01_b", "01b_c"]  # a lettered notebook follows its number
    assert [p.name for p in runner.notebook_paths(nbdir, only=["01"])] == [
        "01_b.ipynb",
        "01b_c.ipynb",
    ]
    assert (out / "00_a.ipynb").exists() and (out / "01_b.ipynb").exists()
    assert json.loads((out / "metrics" / "01_b.json").read_text()) == {"b_value": 6}
    table = (out / "results.md").read_text()
    assert "`a_value` = 3" in table and "| 01_b |" in table
    with pytest.raises(ParameterError, match="available"):
        runner.notebook_paths(nbdir, only=["07"])
    with pytest.raises(ParameterError, match=r"no parameter\(s\) \['VALEU'\].*'VALUE'"):
        runner.run_notebooks(out, params={"VALEU": 3}, notebooks_dir=nbdir, log=lambda *_: None)
    assert runner.parse_params(["A=1", "B=x", "C=true"]) == {"A": 1, "B": "x", "C": True}
    with pytest.raises(ParameterError, match="KEY=VALUE"):
        runner.parse_params(["A"])


def test_course_notebooks_follow_conventions():
    nbs = sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    assert nbs, "no notebooks found"
    problems = [p for nb in nbs for p in convention_problems(nb)]
    assert not problems, problems


def _pairs():
    """Each course notebook and the source notebooks/jupytext.toml pairs it with, with that
    source's jupytext format (as jupytext itself derives them from the configuration)."""
    from jupytext.config import load_jupytext_config
    from jupytext.paired_paths import paired_paths

    out = []
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        config = load_jupytext_config(str(nb))
        assert config is not None, (
            f"no jupytext configuration for {nb.name}: notebooks/jupytext.toml"
        )
        paths = paired_paths(str(nb), "ipynb", config.default_formats(str(nb)))
        ((src, fmt),) = [(Path(p), f) for p, f in paths if f["extension"] == ".py"]
        out.append((nb, src, fmt))
    return out


def _cells(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def test_notebooks_in_step_with_their_sources():
    """Each notebooks/NN_*.ipynb holds the cells (type, source, tags) jupytext reads from its
    source notebooks/src/NN_*.py, and every source has its notebook."""
    import jupytext

    pairs = _pairs()
    assert pairs, "no notebooks found"
    sources = {p.name for p in (REPO / "notebooks" / "src").glob("*.py")}
    unpaired = sources - {src.name for _, src, _ in pairs}
    assert not unpaired, f"sources without a notebook: {sorted(unpaired)}: run `make sync`"
    for nb, src, fmt in pairs:
        assert src.exists(), f"{nb.name} has no source {src.relative_to(REPO)}: run `make sync`"
        assert _cells(nbformat.read(nb, as_version=4)) == _cells(jupytext.read(src, fmt=fmt)), (
            f"{nb.name} and {src.relative_to(REPO)} differ: run `make sync` "
            f"(jupytext --sync {nb.relative_to(REPO)}; the newer file wins)"
        )


def test_sync_keeps_cell_ids_and_tags(tmp_path):
    """`make sync` after an edit of a source: the notebook keeps the ids of its unchanged cells
    (nbval, the browser test and diffs rely on them), its tags and its metadata; a second sync
    changes nothing."""
    nb, src, _ = min(_pairs(), key=lambda p: p[0].stat().st_size)
    (tmp_path / "src").mkdir()
    shutil.copy2(REPO / "notebooks" / "jupytext.toml", tmp_path)
    work_nb, work_src = tmp_path / nb.name, tmp_path / "src" / src.name
    shutil.copy2(nb, work_nb)
    text = src.read_text()
    marker = '# %% tags=["parameters"]\n'
    assert text.count(marker) == 1, src.name
    head, tail = text.split(marker)
    work_src.write_text(head + "# %% [markdown]\n# An inserted cell.\n\n" + marker + tail)
    later = nb.stat().st_mtime + 10  # the edited source is the newer file of the pair
    os.utime(work_src, (later, later))

    def sync():  # jupytext's command line, in this process (a fresh interpreter costs seconds)
        from jupytext.cli import jupytext

        assert jupytext(["--quiet", "--sync", str(work_src)]) in (0, None)

    sync()
    before, after = nbformat.read(nb, as_version=4), nbformat.read(work_nb, as_version=4)
    k = next(i for i, c in enumerate(before.cells) if "parameters" in c.metadata.get("tags", []))
    assert after.cells[k].source == "An inserted cell." and after.cells[k].id not in {
        c.id for c in before.cells
    }
    del after.cells[k]
    assert [(c.id, c.metadata) for c in after.cells] == [(c.id, c.metadata) for c in before.cells]
    assert _cells(after) == _cells(before) and after.metadata == before.metadata
    state = (work_nb.read_bytes(), work_src.read_bytes())
    sync()
    assert (work_nb.read_bytes(), work_src.read_bytes()) == state


def test_make_strip_keeps_ids_and_counts(tmp_path):
    """The strip command of the Makefile (nbstripout with the project's flags) removes outputs,
    widget state and execution metadata, and keeps cell ids, execution counts and tags."""
    (line,) = [
        x for x in (REPO / "Makefile").read_text().splitlines() if x.startswith("NBSTRIPOUT")
    ]
    flags = line.split("nbstripout", 1)[1].split()
    p = tmp_path / "x.ipynb"
    make_notebook(p, "print(1)")
    nb = nbformat.read(p, as_version=4)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    cell = nb.cells[1]
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    cell.execution_count, cell.metadata["execution"] = 4, {"iopub.status.busy": "2024"}
    ids = [c.id for c in nb.cells]
    nbformat.write(nb, p)
    # a subprocess: nbstripout's main() takes over sys.stdout, which pytest captures
    r = subprocess.run(
        [sys.executable, "-m", "nbstripout", *flags, str(p)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    out = nbformat.read(p, as_version=4)
    assert out.cells[1].outputs == [] and out.cells[1].execution_count == 4
    assert "execution" not in out.cells[1].metadata and "widgets" not in out.metadata
    assert [c.id for c in out.cells] == ids and out.cells[0].metadata["tags"] == ["parameters"]


def test_runner_cli_help():
    r = subprocess.run(
        [sys.executable, "-m", "wsss_edu.runner", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0 and "--param" in r.stdout


def _knobs_of_shared_steps() -> dict:
    """Every setting that decides what a shared cached step computes, by the call that runs it
    again in a later notebook (from the package's own tables, so a new knob is demanded too)."""

    return {
        "cam_step.step1(": set(cam_step.STEP1_PROFILE) | {"MISSING_RATE", "IMBALANCE", "WEIGHTS"},
        "irnet_step.step2(": (
            set(irnet_step.STEP2_PROFILE)
            | set(irnet_step.WALK_GRID)
            | {"CONFIDENCE", "IR_LR", "IR_PATH", "IR_SOURCES"}
        ),
        # notebook 05's DeepLabv3+ (F_S, full supervision); evaluation-only knobs left out.
        "segmenter_step.step3_config(": (
            set(segmenter_step.STEP3_PROFILE) - {"TTA_SCALES", "SEEDS"} | {"SEG_SCALE"}
        ),
    }


def test_notebooks_that_rerun_a_shared_step_take_all_its_settings():
    """A notebook that calls notebook 03's, 04's or 05's cached step itself (to find it in the cache)
    defines every parameter of that step and uses it: a global ``-p IR_EPOCHS=1`` given to the
    pipeline reaches each of them, instead of one quietly training the step again at the profile's
    value (as notebook 06 once did: the whole-chain test spent 95 s retraining IRNet there)."""
    import re

    from wsss_edu.pipeline import notebook_parameters

    own_network = {
        "07": "segmenter_step.step3_config("
    }  # 07's two-step network is its own, not 05's
    problems = []
    for nb in sorted((REPO / "notebooks").glob("0[3-8]_*.ipynb")):
        cells = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
        body = "\n".join(c.source for c in cells[1:])
        defined = notebook_parameters(nb)
        for call, knobs in _knobs_of_shared_steps().items():
            if call not in body or own_network.get(nb.name[:2]) == call:
                continue
            missing = sorted(k for k in knobs if k not in defined)
            unused = sorted(k for k in knobs & defined if not re.search(rf"\b{k}\b", body))
            if missing or unused:
                problems.append(f"{nb.name} {call}: not parameters {missing}, never used {unused}")
    assert not problems, problems


# What a notebook must take from the package instead of writing it out: each shared step's config
# class (built from the notebook's parameters by the step's own function) and the data keys the
# cache stores step 1's artifacts under.
STEP_CONFIG_BUILDERS = {
    "ClassifierConfig": "cam_step.classifier_config",
    "IRNetConfig": "irnet_step.step2_config",
    "WalkConfig": "irnet_step.step2",
    "SegmenterConfig": "segmenter_step.step3_config",
    "RRMConfig": "rrm_step.rrm_config",
}


def _hand_built_settings(source: str) -> list:
    """The places in notebook code ``source`` that build a shared step's config or a data cache key
    by hand: a call of a :data:`STEP_CONFIG_BUILDERS` class, or a dict with a 'dataset' entry
    (``dict(dataset=...)`` or ``{"dataset": ...}``) — unless it also has a 'notebook' entry: a
    notebook's key for a network of its own, which no other notebook reads."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in STEP_CONFIG_BUILDERS:
                found.append(f"line {node.lineno}: {name}(...); use {STEP_CONFIG_BUILDERS[name]}")
            keys = {k.arg for k in node.keywords} if name == "dict" else set()
        elif isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
        else:
            continue
        if "dataset" in keys and "notebook" not in keys:
            found.append(
                f"line {node.lineno}: a data key written out; use cam_step.step1_data / cam_step.step1"
            )
    return found


def test_hand_built_settings_are_found():
    assert _hand_built_settings('k = dict(dataset="toy", n=N_TRAIN, seed=run.seed)\n')
    assert _hand_built_settings('k = {"dataset": DATASET, "root": str(R)}\n')
    assert _hand_built_settings("IRCFG = irnet_step.IRNetConfig(radius=5)\n")
    assert _hand_built_settings("c = ClassifierConfig()\n")
    assert not _hand_built_settings('key = dict(notebook="00", dataset=DATASET, n=3)\n')
    assert not _hand_built_settings(
        "IRCFG, B, W = irnet_step.step2_config(PROFILE, 0)\nk = step1.data_key | {'n': 2}\n"
    )


def test_notebooks_take_configs_and_cache_keys_from_the_steps():
    """No notebook writes out a shared step's config or a data key the cache stores step 1 under:
    a copy that drifts from the package's would make the cache quietly train the step again (and
    a later notebook miss this one's artifacts). Notebook 03 once rebuilt ``cam_step.step1``'s keys line
    for line, notebook 04 IRNet's config."""
    problems = []
    for nb in sorted((REPO / "notebooks").glob("0*.ipynb")):
        cells = [c.source for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
        source = "\n".join(
            line
            for line in "\n".join(cells).splitlines()
            if not line.lstrip().startswith(("%", "!"))
        )  # IPython magics
        problems += [f"{nb.name} {p}" for p in _hand_built_settings(source)]
    assert not problems, problems


# Where a notebook's parameter deliberately differs from the default of the step it calls.
OWN_DEFAULTS = {
    ("07", "DROP_CLASS"): "RRM trains on every tag (paper 003); 03-06 drop paper 001's 'person'"
}
RUN_KNOBS = {"DATASET", "WORKERS"}  # where and how a notebook runs, not what the step computes


def test_notebook_defaults_equal_the_steps_own():
    """The literal defaults in the parameters cells of the notebooks that rerun a shared step
    (``MISSING_RATE``, ``CONFIDENCE``, ``IR_LR``, ``SEG_SCALE``, ...) equal the defaults of the
    step's function — the one home of each setting — except where :data:`OWN_DEFAULTS` says why.
    A notebook whose copy drifted would find no cached step and train it again with its own value."""
    import ast
    import inspect

    import papermill as pm

    steps = {
        "cam_step.step1(": cam_step.step1,
        "irnet_step.step2_config(": irnet_step.step2_config,
        "segmenter_step.step3_config(": segmenter_step.step3_config,
    }
    problems, compared = [], 0
    for nb in sorted((REPO / "notebooks").glob("0[3-8]_*.ipynb")):
        defined = pm.inspect_notebook(str(nb))
        body = nb.read_text()
        for call, fn in steps.items():
            if call not in body:
                continue
            for name, p in inspect.signature(fn).parameters.items():
                if not name.isupper() or name not in defined or name in RUN_KNOBS:
                    continue
                compared += 1
                value = ast.literal_eval(defined[name]["default"])
                if value != p.default and (nb.name[:2], name) not in OWN_DEFAULTS:
                    problems.append(
                        f"{nb.name}: {name} = {value!r}, {call[:-1]}'s default {p.default!r}"
                    )
    assert compared >= 20, compared  # the notebooks do call the steps with these names
    assert not problems, problems
