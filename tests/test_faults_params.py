"""Issue 24, bad parameters and paths: every notebook parameter has a rule (type and range) that
``params.setup`` / ``profile_values``, the runner and the pipeline check before anything is
computed; a parameter a notebook does not have is refused by the notebook itself (papermill's own
CLI only logs it); an OUTPUT_DIR that cannot be written is refused in the setup cell, not in the
last one; malformed shard and process options are refused at once."""

import json
import os
import tempfile

import nbformat
import pytest

from wsss_edu import params, pipeline, runner
from wsss_edu.errors import ParameterError
from wsss_edu.results import record_metrics
from wsss_edu.steps import cam_step, irnet_step, rrm_step, segmenter_step, urn_step

NOTEBOOKS = sorted((params.repo_root() / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def _defaults(path):
    """A notebook's parameters cell run on its own: {name: default}."""
    ns = {}
    exec(params._code_cells(path)[0], ns)
    return {k: ns[k] for k in params.parameter_names(path)}


def test_every_notebook_parameter_has_a_rule_that_its_default_keeps():
    assert len(NOTEBOOKS) >= 10
    for path in NOTEBOOKS:
        values = _defaults(path)
        missing = sorted(set(values) - set(params.PARAMETER_RULES))
        assert not missing, f"{path.name}: no rule in params.PARAMETER_RULES for {missing}"
        params.check_parameter_values(values, path.stem)  # raises on a default that breaks its rule


TABLES = [
    (cam_step.STEP1_PROFILE, cam_step.STEP1_DATASETS),
    (irnet_step.STEP2_PROFILE, irnet_step.STEP2_DATASETS),
    (irnet_step.WALK_GRID, irnet_step.WALK_GRID_DATASETS),
    (segmenter_step.STEP3_PROFILE, segmenter_step.STEP3_DATASETS),
    (urn_step.URN_PROFILE, urn_step.URN_DATASETS),
    (rrm_step.RRM_PROFILE, rrm_step.RRM_DATASETS),
]


@pytest.mark.parametrize("table,overrides", TABLES)
def test_every_profile_value_keeps_its_rule(table, overrides):
    for dataset in ("toy", *overrides):
        merged = params.for_dataset(table, overrides, dataset)
        for profile in params.PROFILES:
            values = params.profile_values(profile, merged)  # the defaults themselves
            params.check_parameter_values(values, f"{profile}/{dataset}")
            assert set(values) <= set(params.PARAMETER_RULES)


@pytest.mark.parametrize(
    "name,value,said",
    [
        ("EPOCHS", 0, "whole number >= 1"),
        ("N_TRAIN", 0, "whole number >= 1"),
        ("EPOCHS", 2.5, "not a whole number"),
        ("EPOCHS", "5", "not a whole number"),
        ("CAM_SCALES", (1.0, -0.5), "item -0.5 is not above 0"),
        ("CAM_SCALES", [], "non-empty list"),
        ("LR_NEW", float("nan"), "not finite"),
        ("BALANCE", 1, "True or False"),
    ],
)
def test_a_profile_knob_out_of_range_is_refused_by_name(name, value, said):
    with pytest.raises(ParameterError, match=said) as e:
        cam_step.step1_values("quick", "toy", **{name: value})
    assert f"{name}={value!r}" in str(e.value)


def _namespace(path, **given):
    """A notebook's globals after its parameters cell and papermill's injected cell."""
    return {**_defaults(path), **given, "np": object(), "In": [], "_": None}


def test_setup_checks_every_parameter_of_the_notebook(tmp_path):
    nb01 = next(p for p in NOTEBOOKS if p.name.startswith("01_"))
    with pytest.raises(
        ParameterError, match=r"MC_SAMPLES=-5: -5 is below 1; MC_SAMPLES must be a whole number"
    ):
        params.setup(
            nb01.stem,
            OUTPUT_DIR=str(tmp_path),
            verbose=False,
            namespace=_namespace(nb01, MC_SAMPLES=-5),
        )
    with pytest.raises(ParameterError, match="SEED='x'"):
        params.setup(nb01.stem, OUTPUT_DIR=str(tmp_path), SEED="x", verbose=False)
    s = params.setup(nb01.stem, OUTPUT_DIR=str(tmp_path), verbose=False, namespace=_namespace(nb01))
    assert s.output_dir == tmp_path.resolve()


def test_a_parameter_the_notebook_does_not_have_is_refused_with_a_hint(tmp_path):
    nb00 = next(p for p in NOTEBOOKS if p.name.startswith("00_"))
    with pytest.raises(ParameterError, match=r"EPOCH \(did you mean EPOCHS\?\)") as e:
        params.setup(
            nb00.stem, OUTPUT_DIR=str(tmp_path), verbose=False, namespace=_namespace(nb00, EPOCH=5)
        )
    assert "'N_TRAIN'" in str(e.value)  # the notebook's parameters are listed
    # a name the notebook binds in a later cell (a learner re-running the setup cell) is not unknown
    params.setup(
        nb00.stem, OUTPUT_DIR=str(tmp_path), verbose=False, namespace=_namespace(nb00, MODEL="unet")
    )


def test_papermill_runs_refuse_an_unknown_name_in_the_notebook_itself(tmp_path, monkeypatch):
    """papermill's CLI/API only logs a name the parameters cell lacks; the setup cell refuses it."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(f"OUTPUT_DIR = {str(tmp_path / 'out')!r}\nEPOCHS = None")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [
        cell,
        nbformat.v4.new_code_cell(
            "from wsss_edu import params\n"
            "run = params.setup('probe', OUTPUT_DIR=OUTPUT_DIR, verbose=False, namespace=globals())"
        ),
    ]
    (tmp_path / "probe.ipynb").write_text(json.dumps(nb))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(params.repo_root()), os.environ.get("PYTHONPATH", "")])
    )
    pm.execute_notebook(
        str(tmp_path / "probe.ipynb"),
        str(tmp_path / "ok.ipynb"),
        parameters={"EPOCHS": 3},
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    with pytest.raises(pm.PapermillExecutionError, match=r"EPOCH \(did you mean EPOCHS\?\)"):
        pm.execute_notebook(
            str(tmp_path / "probe.ipynb"),
            str(tmp_path / "bad.ipynb"),
            parameters={"EPOCH": 3},
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
        )


def test_an_output_dir_that_cannot_be_written_is_refused_before_any_compute(tmp_path, monkeypatch):
    real = tempfile.NamedTemporaryFile

    def read_only(*a, dir=None, **k):
        if dir is not None and str(dir).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(
        ParameterError, match=r"OUTPUT_DIR=.*ro' is not writable \(Permission denied\)"
    ):
        params.setup("nb", OUTPUT_DIR=str(tmp_path / "ro"), verbose=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        ParameterError, match=r"OUTPUT_DIR=.*file/sub' cannot be made \(Not a directory\)"
    ):
        params.setup("nb", OUTPUT_DIR=str(tmp_path / "file" / "sub"), verbose=False)


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders"
)
def test_a_read_only_output_dir_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(ParameterError, match="is not writable"):
        params.setup("nb", OUTPUT_DIR=str(tmp_path / "ro"), verbose=False)


def test_malformed_shard_or_process_settings_are_refused_at_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("WSSS_SHARD", "3/2")
    with pytest.raises(ParameterError, match="shard '3/2' is not valid"):
        params.setup("nb", OUTPUT_DIR=str(tmp_path), verbose=False)
    monkeypatch.delenv("WSSS_SHARD")
    monkeypatch.setenv("WSSS_TRAIN_PROCESSES", "two")
    with pytest.raises(ParameterError, match="WSSS_TRAIN_PROCESSES='two'"):
        params.setup("nb", OUTPUT_DIR=str(tmp_path), verbose=False)


def test_the_runner_refuses_a_bad_value_before_running_any_notebook(tmp_path):
    with pytest.raises(ParameterError, match="EPOCHS=0: 0 is below 1"):
        runner.run_notebooks(
            tmp_path / "out", only=["00"], params={"EPOCHS": 0}, log=lambda *_: None
        )
    assert not list((tmp_path / "out").glob("*.ipynb"))


@pytest.mark.parametrize(
    "argv,said",
    [
        (["--shard", "3/2"], "shard '3/2' is not valid"),
        (["--shard", "1-2"], "shard '1-2' is not valid"),
        (["--train-processes", "0"], "--train-processes 0"),
        (["--shard-wait", "-1"], "--shard-wait -1"),
    ],
)
def test_the_pipeline_refuses_malformed_options_at_once(tmp_path, argv, said):
    with pytest.raises(ParameterError, match=said):
        pipeline.main(["--dataset", "toy", "--output", str(tmp_path), *argv])
    assert not (tmp_path / "steps").exists()


def test_the_pipeline_refuses_a_bad_value_before_the_first_step(tmp_path):
    ran = []
    with pytest.raises(ParameterError, match="IR_EPOCHS=-1"):
        pipeline.run_pipeline(
            tmp_path,
            "toy",
            profile="quick",
            overrides={"*": {"IR_EPOCHS": -1}},
            execute=lambda *a, **k: ran.append(a),
            log=lambda *_: None,
        )
    assert ran == []


def test_the_metrics_lock_file_is_hidden(tmp_path):
    record_metrics(tmp_path, "nb", {"x": 1.0})
    names = sorted(p.name for p in (tmp_path / "metrics").iterdir())
    assert names == [".nb.json.lock", "nb.json"], names
