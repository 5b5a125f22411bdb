"""The full-scale path of notebook 00, on a tiny fabricated VOC folder: papermill with
DATASET=voc, PROFILE=full (DeepLabv3-ResNet50), WEIGHTS=None, one epoch, small crops."""
import json
from pathlib import Path

import pytest

from wsss_edu.toy import write_voc_layout

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_00_full_profile_on_voc_layout(tmp_path):
    import papermill as pm

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    out = tmp_path / "out"
    pm.execute_notebook(
        str(REPO / "notebooks" / "00_wsss_and_the_toy_world.ipynb"), str(tmp_path / "00.ipynb"),
        parameters=dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out),
                        PROFILE="full", DEVICE="cpu", WEIGHTS=None, EPOCHS=1, BATCH_SIZE=2,
                        CROP=64),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False,
        execution_timeout=600)
    metrics = json.loads((out / "metrics" / "00_wsss_and_the_toy_world.json").read_text())
    assert 0.0 <= metrics["miou_full_supervision"] <= 1.0
    assert metrics["toy_car_box_fill"] is None  # toy-only statistic, not computed on VOC
    assert list((out / "cache" / "reference_model").glob("*.pt"))
