"""The full-scale driver (wsss_edu.pipeline) and the side-by-side table (wsss_edu.compare):
parameters routed to the notebooks that define them, finished steps skipped, a failure naming its
log, the report; and, slow, the whole chain on a fabricated VOC folder at PROFILE=full."""

import json
import math
from pathlib import Path

import pytest

from wsss_edu import compare, pipeline
from wsss_edu.errors import ParameterError
from wsss_edu.results import load_all_metrics, record_metrics

try:
    from . import fixtures_notebooks as fx_nb
except ImportError:
    import fixtures_notebooks as fx_nb

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def course(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    fx_nb.write_notebook(d / "02b_boxes.ipynb", "DATASET = 'toy'\nOUTPUT_DIR = ''\nEPOCHS = 1", "")
    fx_nb.write_notebook(
        d / "03_cam.ipynb",
        "DATASET = 'toy'\nDATA_ROOT = ''\nOUTPUT_DIR = ''\nPROFILE = 'quick'\n"
        "EPOCHS = 1\nSEG_EPOCHS = 1",
        "",
    )
    fx_nb.write_notebook(
        d / "04_irn.ipynb", "DATASET = 'toy'\nOUTPUT_DIR = ''\nPROFILE = 'quick'", ""
    )
    return d


def fake_execute(calls, fail=None):
    def execute(src, dst, parameters, **kw):
        calls.append((Path(src).name, parameters))
        if fail and Path(src).name.startswith(fail):
            raise RuntimeError("boom")
        Path(dst).write_text("{}")

    return execute


def test_parameters_go_to_the_notebooks_that_define_them(course, tmp_path):
    calls = []
    out = tmp_path / "out"
    status = pipeline.run_pipeline(
        out,
        "voc",
        "/data/voc",
        "full",
        overrides=pipeline.split_overrides(["EPOCHS=3", "03:SEG_EPOCHS=7"]),
        notebooks_dir=course,
        execute=fake_execute(calls),
        log=lambda *a: None,
    )
    assert status == {"02b_boxes": "ran", "03_cam": "ran", "04_irn": "ran"}
    p = dict(calls)
    # paper 000's notebook gets the boxes dataset (VOC has no street scenes: the toy world)
    assert p["02b_boxes.ipynb"] == {"DATASET": "toy", "OUTPUT_DIR": str(out.resolve()), "EPOCHS": 3}
    assert p["03_cam.ipynb"] == {
        "DATASET": "voc",
        "DATA_ROOT": "/data/voc",
        "OUTPUT_DIR": str(out.resolve()),
        "PROFILE": "full",
        "EPOCHS": 3,
        "SEG_EPOCHS": 7,
    }
    assert p["04_irn.ipynb"] == {
        "DATASET": "voc",
        "OUTPUT_DIR": str(out.resolve()),
        "PROFILE": "full",
    }
    for nb in ("02b_boxes", "03_cam", "04_irn"):
        assert (out / "steps" / nb / "done.json").exists() and (
            out / "steps" / nb / "log.txt"
        ).exists()
    assert (out / "report.md").exists()


def test_bad_parameters_name_the_fix(course, tmp_path):
    run = dict(notebooks_dir=course, execute=fake_execute([]), log=lambda *a: None)
    with pytest.raises(ParameterError, match="no notebook has a parameter 'EPOHCS'"):
        pipeline.run_pipeline(
            tmp_path / "o", overrides=pipeline.split_overrides(["EPOHCS=1"]), **run
        )
    with pytest.raises(ParameterError, match=r"04_irn.ipynb has no parameter\(s\) \['EPOCHS'\]"):
        pipeline.run_pipeline(
            tmp_path / "o", overrides=pipeline.split_overrides(["04:EPOCHS=1"]), **run
        )
    with pytest.raises(ParameterError, match="'09:' matches no notebook"):
        pipeline.run_pipeline(tmp_path / "o", overrides=pipeline.split_overrides(["09:X=1"]), **run)
    with pytest.raises(ParameterError, match="boxes-dataset"):
        pipeline.run_pipeline(tmp_path / "o", boxes_dataset="voc", **run)


def test_finished_steps_are_skipped_and_a_failure_names_its_log(course, tmp_path):
    out, calls = tmp_path / "out", []
    quiet = dict(notebooks_dir=course, log=lambda *a: None)
    with pytest.raises(RuntimeError, match=r"step 03_cam failed.*log.txt.*rerun the same command"):
        pipeline.run_pipeline(out, "voc", execute=fake_execute(calls, fail="03"), **quiet)
    assert [c[0] for c in calls] == ["02b_boxes.ipynb", "03_cam.ipynb"]  # stopped at the failure
    assert not (out / "steps" / "03_cam" / "done.json").exists()
    calls.clear()
    status = pipeline.run_pipeline(out, "voc", execute=fake_execute(calls), **quiet)  # resume
    assert status == {"02b_boxes": "skipped", "03_cam": "ran", "04_irn": "ran"}
    calls.clear()
    status = pipeline.run_pipeline(
        out, "voc", overrides={"03": {"EPOCHS": 2}}, execute=fake_execute(calls), **quiet
    )
    assert status == {
        "02b_boxes": "skipped",
        "03_cam": "ran",
        "04_irn": "skipped",
    }  # changed parameters rerun
    status = pipeline.run_pipeline(
        out,
        "voc",
        overrides={"03": {"EPOCHS": 2}},
        force=True,
        execute=fake_execute(calls),
        **quiet,
    )
    assert set(status.values()) == {"ran"}


def test_side_by_side_percentages_and_missing_notebooks(tmp_path):
    record_metrics(
        tmp_path,
        "02b_bootstrapping_multiclass",
        {"miou_mc_ours": 0.6, "miou_mc_full": 0.8, "miou_mc_pp_only": 0.4},
    )
    record_metrics(
        tmp_path,
        "07_rrm_end_to_end",
        {"miou_rrm_joint": 0.3, "miou_rrm_pseudo_train": 0.45, "miou_rrm_joint_crf": 0.35},
    )
    metrics = pipeline.ensure_metrics(tmp_path, run_missing=False, log=lambda *a: None)
    # the three-step row reads its pseudo-labels' score from 05 (the labels step 3 trains on), so
    # 04 is not needed for the table (05 runs step 2 itself when its cache is empty)
    assert compare.missing_notebooks(metrics) == [
        "03_classification_and_cam",
        "05_deeplab_and_results",
        "06_urn_uncertainty_weights",
    ]
    rows = {r["method"]: r for r in compare.side_by_side(metrics, full_supervision=0.5)}
    boxes = rows["boxes + 10 % masks: bootstrapping"]
    assert boxes["final_pct"] == pytest.approx(75.0) and boxes["full_miou"] == 0.8  # its own world
    rrm = rows["RRM: one network, joint loss"]
    assert rrm["final_pct"] == pytest.approx(60.0) and rrm["pseudo_pct"] == pytest.approx(90.0)
    assert math.isnan(rows["URN: uncertainty weights"]["final_pct"])
    table = compare.markdown_table(list(rows.values()))
    assert "0.300 (60 %)" in table and "– (– %)" in table

    ran = []

    def run(only, params):  # "executes" the missing notebooks by recording their numbers
        ran.append((only, params))
        for nb in compare.missing_notebooks(load_all_metrics(tmp_path)):
            keys = {
                k
                for m in compare.METHODS
                for n, k in filter(None, (m.final, m.pseudo, m.reference))
                if n == nb
            }
            record_metrics(tmp_path, nb, {k: 0.5 for k in keys})

    metrics = pipeline.ensure_metrics(tmp_path, {"PROFILE": "full"}, run=run, log=lambda *a: None)
    assert ran == [(["03", "05", "06"], {"PROFILE": "full"})] and not compare.missing_notebooks(
        metrics
    )
    with pytest.raises(RuntimeError, match="did not record"):
        pipeline.ensure_metrics(tmp_path / "empty", run=lambda only, p: None, log=lambda *a: None)


def test_a_real_dataset_compares_the_tags_methods_only_and_runs_none_of_the_box_notebooks(tmp_path):
    """On MSRC the box world's rows (notebooks 01-02b, toy only) are left out: an empty folder asks
    for the tags notebooks alone, and the table has no paper-000 row."""
    methods = compare.methods_for("msrc")
    assert methods and {m.world for m in methods} == {"tags"}
    assert [m.name for m in methods] == [m.name for m in compare.METHODS if m.paper_id != "000"]
    notes = {m.name: m.note for m in methods}
    assert (
        "person" not in notes["CAM → IRNet → DeepLabv3+"] and "θ" not in notes["CAM (step 1)"]
    )  # no toy-only notes
    assert {m.name: m.note for m in compare.methods_for("toy")}[
        "CAM → IRNet → DeepLabv3+"
    ] == "'person' tags dropped, as the paper"
    assert compare.methods_for("toy") == compare.METHODS
    assert compare.missing_notebooks({}, methods) == [
        "03_classification_and_cam",
        "05_deeplab_and_results",
        "06_urn_uncertainty_weights",
        "07_rrm_end_to_end",
    ]
    ran = []
    with pytest.raises(RuntimeError, match="did not record"):
        pipeline.ensure_metrics(
            tmp_path,
            {"DATASET": "msrc"},
            run=lambda only, p: ran.append(only),
            methods=methods,
            log=lambda *a: None,
        )
    assert ran == [["03", "05", "06", "07"]]
    rows = compare.side_by_side({}, 0.5, methods=methods)
    assert not any(r["paper"] == "000" for r in rows)


def test_paper_comparison_names_every_metric_the_notebooks_record():
    """Each paper row points at a metric its notebook really records (its source assigns it)."""
    text = compare.paper_comparison({})
    for pid, (title, rows) in compare.PAPER_TABLES.items():
        assert title in text
        for _, nb, key, value in rows:
            src = (REPO / "notebooks" / "src" / f"{nb}.py").read_text()
            assert (
                f'"{key}"' in src or f"'{key}'" in src or key.startswith(("miou_rrm_", "miou_mc_"))
            ), (nb, key)
            assert 0 < value < 1


def test_training_time_comes_from_the_cache(tmp_path):
    from wsss_edu.cache import cached, compute_seconds

    cached(tmp_path, "segmenter", {"a": 1}, lambda: {"w": [1.0]})
    (s,) = compute_seconds(tmp_path, "segmenter")
    assert 0 <= s < 5
    med = compare.median_seconds(tmp_path, ["segmenter", "rrm"])
    assert med["segmenter"] == s and math.isnan(med["rrm"])


@pytest.mark.slow
def test_the_whole_chain_on_a_fabricated_voc_folder(tmp_path):
    """The driver end to end at PROFILE=full on a fabricated VOC folder (and Cityscapes for paper
    000), weights=None, one epoch per stage: every notebook's numbers recorded, every step's
    artifacts found by the next (nothing trained twice), the report written; a second run skips
    everything; a step whose marker is gone runs again alone. (Notebooks 00, 03-05 and 07 at the
    full profile on VOC are tested here only; tests/test_notebook_full_path.py has the other paths.)"""
    from wsss_edu.toy import write_voc_layout

    try:
        from . import fixtures_datasets as fx
    except ImportError:
        import fixtures_datasets as fx
    write_voc_layout(tmp_path / "voc", n_train=6, n_val=3, seed=0, size=64)
    city = fx.make_cityscapes(tmp_path)
    out = tmp_path / "out"
    over = pipeline.split_overrides(
        [
            "DEVICE=cpu",
            "WEIGHTS=null",
            "WORKERS=0",
            "EPOCHS=1",
            "CROP=64",
            "BATCH_SIZE=2",
            "IR_EPOCHS=1",
            "IR_CROP=64",
            "IR_BATCH=2",
            "CONFIDENCE=0.0",
            "SEG_EPOCHS=1",
            "SEG_CROP=64",
            "SEEDS=1",
            "SHOW=0",
            "03:SEEDS=1",
            "05:TABLE3=false",
            "06:STUDENT_EPOCHS=1",
            "06:T_GRID=[1.0, 0.05]",
            "07:RRM_EPOCHS=1",
            "07:RRM_CROP=64",
            "07:RRM_BATCH=2",
            "07:RATIOS=[0.4]",
            "07:N_CURVE=6",
            "02b:IMAGE_SIZE=16",
            "02b:N_TRAIN=3",
            "02b:N_PP=1",
            "02b:N_VAL=1",
            "02b:EPOCHS=2",
            "02b:WARMUP=1",
            "02b:WIDTH=4",
            "08:N_SHOW=2",
        ]
    )
    only = ["00", "02b", "03", "04", "05", "06", "07", "08"]
    status = pipeline.run_pipeline(
        out,
        "voc",
        tmp_path / "voc",
        "full",
        only=only,
        overrides=over,
        boxes_dataset="cityscapes",
        boxes_data_root=city,
        timeout=900,
    )
    assert set(status.values()) == {"ran"} and len(status) == 8
    m = {
        nb: json.loads(p.read_text())
        for nb, p in ((p.stem[:3].rstrip("_"), p) for p in (out / "metrics").glob("*.json"))
    }
    in_range = {
        "00": ["miou_full_supervision"],
        "03": ["miou_cam", "miou_cam_crf", "miou_cam_dropped_balanced"],
        "04": ["miou_irnet"],
        "05": ["miou_deeplab", "miou_deeplab_tta", "miou_deeplab_train"],
        "06": ["auroc_uncertainty", "miou_plain", "miou_urn", "miou_pseudo_masks_train"],
        "07": [
            "precision_cam_labels",
            "precision_reliable",
            "miou_rrm_ce",
            "miou_rrm_joint",
            "miou_cam_joint",
            "miou_rrm_joint_crf",
            "miou_rrm_pseudo_train",
            "miou_rrm_two_step",
        ],
        "08": ["miou_full_supervision_tags_world"],
    }
    bad = [
        (nb, k, m[nb].get(k))
        for nb, keys in in_range.items()
        for k in keys
        if not 0.0 <= m[nb].get(k, -1) <= 1.0
    ]
    assert not bad, bad
    assert m["00"]["toy_car_box_fill"] is None  # a toy-only statistic, not computed on VOC
    assert m["04"]["walk_radius"] == 5 and m["04"]["walk_exp_times"] == 8  # the full profile's walk
    cache = out / "cache"
    assert (
        list((cache / "reference_model").glob("*.pt"))
        and len(list((cache / "cams").glob("*/complete"))) >= 2
    )
    # 04 trains two IRNets (person dropped, every tag kept); 05 and 06 find them (06 takes the same
    # IR_* overrides), instead of training a third at the profile's values
    assert len(list((cache / "irnet").glob("*.pt"))) == 2
    assert (
        len(list((cache / "rrm").glob("*.pt"))) == 4
    )  # 07: ratio 0.4 and CAM labels, CE and joint
    pl = next((cache / "rrm_pseudo_labels").iterdir())
    assert len(list(pl.glob("*.png"))) == 6 and (pl / "complete").exists()
    report = (out / "report.md").read_text()
    assert "## The methods side by side" in report and "RRM: one network, joint loss" in report
    assert "Zhang et al." in report and "| 07_rrm_end_to_end |" in report
    for nb in status:
        assert (out / "steps" / nb / f"{nb}.ipynb").exists() and (
            out / "steps" / nb / "log.txt"
        ).stat().st_size > 0
    again = pipeline.run_pipeline(
        out,
        "voc",
        tmp_path / "voc",
        "full",
        only=only,
        overrides=over,
        boxes_dataset="cityscapes",
        boxes_data_root=city,
        log=lambda *a: None,
    )
    assert set(again.values()) == {"skipped"}
    (out / "steps" / "08_side_by_side" / "done.json").unlink()
    again = pipeline.run_pipeline(
        out,
        "voc",
        tmp_path / "voc",
        "full",
        only=only,
        overrides=over,
        boxes_dataset="cityscapes",
        boxes_data_root=city,
        log=lambda *a: None,
    )
    assert [k for k, v in again.items() if v == "ran"] == ["08_side_by_side"]
