"""The GPU check (wsss_edu.steps.gpu_check): its tiny run on the CPU, its JSON and table, its
deadline guard, and its full-size plan against the steps' profiles and the README."""

import json
import re
import time
from pathlib import Path

import pytest
import torch

from wsss_edu.steps import cam_step, gpu_check, irnet_step, rrm_step, segmenter_step

ROOT = Path(__file__).resolve().parent.parent
ROWS = gpu_check.TRAINING + gpu_check.PASSES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run on the CPU (every row), shared by the tests below."""
    out = tmp_path_factory.mktemp("gpu_check")
    return gpu_check.run_check(out, tiny=True, device="cpu"), out


def test_the_tiny_run_has_every_row_with_a_positive_rate(tiny):
    result, _ = tiny
    assert result["mode"] == "tiny" and result["skipped"] == [] and result["failed"] == []
    assert [r["name"] for r in result["rows"]] == list(ROWS)
    for r in result["rows"]:
        assert r["images"] > 0 and r["compute_s"] > 0, r["name"]
        busy = r.get("wait_s", 0.0) + r["compute_s"]
        assert r["images_per_s"] == pytest.approx(r["images"] / busy)


def test_training_rows_record_their_iterations_dtype_and_split(tiny):
    result, _ = tiny
    planned = {r.name: r for r in gpu_check.plan(tiny=True)}
    for r in result["rows"][: len(gpu_check.TRAINING)]:
        assert r["iterations"] == planned[r["name"]].iterations
        assert r["images"] == r["iterations"] * r["batch"]
        assert r["autocast"] == "off" and r["peak_gib"] is None  # a CPU: no autocast, no CUDA
        assert r["wait_s"] >= 0 and 0 <= r["wait_share"] < 1
        assert r["flops_per_iter"] > 0 and r["parameters"] > 0
        assert r["loss"] == r["loss"], f"{r['name']}: the loss is NaN"


def test_the_json_and_the_table_are_written(tiny):
    result, out = tiny
    on_disk = json.loads((out / "gpu_check.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(result["rows"]))
    assert {"schema", "mode", "device", "budget_s", "weights", "workers", "elapsed_s"} <= set(
        on_disk
    )
    assert on_disk["device"]["device"] == "cpu" and on_disk["device"]["torch"] == torch.__version__
    md = (out / "gpu_check.md").read_text()
    assert md == gpu_check.table(result)
    assert "on cpu" in md.splitlines()[0]
    header = next(line for line in md.splitlines() if line.startswith("| row"))
    assert [c.strip() for c in header.strip("|").split("|")] == [c for c, _ in gpu_check.COLUMNS]
    body = [line for line in md.splitlines() if line.startswith("| ") and line != header]
    assert [line.split("|")[1].strip() for line in body] == list(ROWS)


def test_the_tiny_run_estimates_the_full_run_within_its_caps(tiny):
    est = tiny[0]["estimate_full_s"]
    caps = {r.name: r.seconds for r in gpu_check.plan()}
    assert set(est) == set(gpu_check.TRAINING) | {"training", "bound"}
    assert all(0 < est[k] <= caps[k] for k in gpu_check.TRAINING)
    assert est["training"] == pytest.approx(sum(est[k] for k in gpu_check.TRAINING), abs=0.2)
    assert est["bound"] == pytest.approx(sum(caps.values()))


def test_the_estimate_scales_flops_by_pixels_and_batch():
    full = [gpu_check.Row("deeplab", "train", 320, 512, 16, 99, 1, 1e9)]
    ran = dict(name="deeplab", size=64, crop=32, batch=2, flops_per_iter=1e9, wait_s=0.0, images=2)
    est = gpu_check.estimate_seconds({"rows": [ran]}, full, tflops=1.0)
    assert est["deeplab"] == pytest.approx(1e9 * (512 / 32) ** 2 * 8 * 100 / 1e12, rel=1e-3)


def test_the_full_plan_takes_the_steps_full_profile():
    rows = {r.name: r for r in gpu_check.plan()}
    assert rows["classifier"].size == cam_step.STEP1_PROFILE["IMAGE_SIZE"][1]
    assert rows["classifier"].crop == cam_step.STEP1_PROFILE["CROP"][1]
    assert rows["irnet"].crop == irnet_step.STEP2_PROFILE["IR_CROP"][1]
    assert rows["irnet"].batch == irnet_step.STEP2_PROFILE["IR_BATCH"][1]
    assert rows["deeplab"].crop == segmenter_step.STEP3_PROFILE["SEG_CROP"][1]
    assert rows["deeplab"].batch == segmenter_step.SegmenterConfig.batch_size
    assert rows["rrm"].crop == rows["dense_energy"].crop == rrm_step.RRM_PROFILE["RRM_CROP"][1]
    assert rows["rrm"].batch == rrm_step.RRM_PROFILE["RRM_BATCH"][1]
    assert rows["random_walk"].size == (375, 500)
    assert all(r.iterations >= 8 and r.warmup >= 0 for r in rows.values())


def test_paper_000s_unet_is_notebook_02s_full_profile():
    src = next((ROOT / "notebooks" / "src").glob("02_*.py")).read_text()
    for name in ("IMAGE_SIZE", "WIDTH", "WARMUP"):
        quick_full = re.search(rf"\b{name}=\((\d+), (\d+)\)", src)
        assert quick_full, f"{name} not found in notebook 02's profile"
        assert int(quick_full.group(2)) == gpu_check.LU_FULL[name], name


def test_the_readme_states_the_full_plan():
    text = (ROOT / "README.md").read_text()
    documented = {
        m[0]: m[1:]
        for m in re.findall(
            r"^\| (\w+) \| ([\dx]+)(?: \((\d+)\))? \| (\d+) \| (\d+) \|$", text, re.M
        )
    }
    for r in gpu_check.plan():
        size = "x".join(map(str, r.size)) if isinstance(r.size, tuple) else str(r.size)
        crop = "" if r.crop is None else str(r.crop)
        assert documented.get(r.name) == (size, crop, str(r.batch), str(r.iterations)), r.name
    assert f"{gpu_check.BUDGET_SECONDS:.0f} s" in text and "make gpu-check" in text


def test_the_budget_fits_eight_minutes():
    """Every row's cap, summed, fits the budget, and the budget leaves a minute: to start, and
    for the last row's last iteration."""
    assert sum(r.seconds for r in gpu_check.plan()) < gpu_check.BUDGET_SECONDS <= 8 * 60 - 60


def test_no_row_starts_once_the_budget_is_spent(tmp_path):
    result = gpu_check.run_check(tmp_path, tiny=True, device="cpu", budget=0)
    assert result["rows"] == [] and [s["name"] for s in result["skipped"]] == list(ROWS)
    assert all("budget spent" in s["reason"] for s in result["skipped"])
    assert "skipped: classifier" in (tmp_path / "gpu_check.md").read_text()


class _Clock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _tiny_training(batches, clock, iterations=5, warmup=1, deadline=1e9):
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return gpu_check.time_training(
        model,
        batches,
        lambda m, b: (m(b["image"]) ** 2).mean(),
        opt,
        torch.device("cpu"),
        None,
        iterations,
        warmup,
        deadline,
        clock=clock,
    )


def test_the_wait_for_data_is_counted_apart_from_the_compute():
    clock = _Clock()

    def batches():
        while True:
            clock.t += 2.0  # the loader takes 2 s for every batch
            yield {"image": torch.ones(4, 3)}

    out = _tiny_training(batches(), clock)
    assert out["iterations"] == 5 and out["wait_s"] == pytest.approx(10.0)
    assert out["compute_s"] == 0.0 and not out["stopped_early"]


def test_a_training_row_stops_at_its_deadline():
    clock = _Clock()

    def batches():
        while True:
            clock.t += 1.0
            yield {"image": torch.ones(4, 3)}

    out = _tiny_training(batches(), clock, iterations=100, warmup=1, deadline=3.5)
    assert out["stopped_early"] and out["iterations"] == 3  # the warm-up at 1 s, then 2, 3, 4 s


def test_the_cli_runs_one_row(tmp_path, capsys):
    start = time.perf_counter()
    assert gpu_check.main(["--output", str(tmp_path), "--tiny", "--only", "lu_unet"]) == 0
    assert "| lu_unet |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["lu_unet"] and time.perf_counter() - start < 120


def test_a_failing_row_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    real = gpu_check.pass_row

    def fail_the_cams(world, row, deadline):
        if row.name == "cams":
            raise RuntimeError("CUDA out of memory (injected)")
        return real(world, row, deadline)

    monkeypatch.setattr(gpu_check, "pass_row", fail_the_cams)
    argv = ["--output", str(tmp_path), "--tiny", "--only", "cams", "dense_energy"]
    assert gpu_check.main(argv) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["dense_energy"]
    assert result["failed"] == [
        {"name": "cams", "error": "RuntimeError: CUDA out of memory (injected)"}
    ]
    assert "failed: cams (RuntimeError" in (tmp_path / "gpu_check.md").read_text()


def test_a_wrong_device_is_named_with_the_valid_ones(tmp_path, capsys):
    assert gpu_check.main(["--output", str(tmp_path), "--device", "gpu0", "--only", "cams"]) == 2
    assert "'cuda:N'" in capsys.readouterr().err
