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


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cityscapes", "camvid"])
@pytest.mark.parametrize("notebook, keys", [
    ("02_bootstrapping_on_boxes", ("iou_all_pp", "iou_pp_only", "iou_boxes_bce", "iou_ignore_box", "iou_ours")),
    ("02b_bootstrapping_multiclass", ("miou_mc_full", "miou_mc_pp_only", "miou_mc_ours"))])
def test_notebooks_02_full_profile_on_fabricated_folders(tmp_path, dataset, notebook, keys):
    """Notebooks 02 and 02b on the real-dataset path (car; car + person/pedestrian; images resized
    to IMAGE_SIZE x 2 IMAGE_SIZE) on a tiny fabricated folder: two epochs, one seed, width 4."""
    import papermill as pm

    try:
        from . import fixtures_datasets as fx
    except ImportError:
        import fixtures_datasets as fx
    root = fx.make_cityscapes(tmp_path) if dataset == "cityscapes" else fx.make_camvid(tmp_path)
    out = tmp_path / "out"
    small = dict(DATASET=dataset, DATA_ROOT=str(root), OUTPUT_DIR=str(out), PROFILE="full", DEVICE="cpu",
                 SEEDS=1, IMAGE_SIZE=16, N_TRAIN=3, N_PP=1 if dataset == "cityscapes" else None,  # None: 18 %
                 N_VAL=1, EPOCHS=2, WARMUP=1, WIDTH=4)
    if notebook.startswith("02_"):
        small["PP_SWEEP"] = [2]
    pm.execute_notebook(
        str(REPO / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / f"{notebook}.ipynb"),
        parameters=small, kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False,
        execution_timeout=600)
    metrics = json.loads((out / "metrics" / f"{notebook}.json").read_text())
    for key in keys:
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_notebook_03_full_profile_on_voc_layout(tmp_path, backbone):
    """Notebook 03 on the VOC path (train_aug for the classifier, train for the scores) with the
    full-scale classifiers from scratch: one epoch, crop 64, one seed per variant."""
    import papermill as pm

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    out = tmp_path / "out"
    pm.execute_notebook(
        str(REPO / "notebooks" / "03_classification_and_cam.ipynb"), str(tmp_path / "03.ipynb"),
        parameters=dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out),
                        PROFILE="full", DEVICE="cpu", WEIGHTS=None, BACKBONE=backbone, EPOCHS=1,
                        CROP=64, SEEDS=1),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False,
        execution_timeout=600)
    metrics = json.loads((out / "metrics" / "03_classification_and_cam.json").read_text())
    for key in ("miou_cam", "miou_cam_crf", "miou_cam_dropped_balanced"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert len(list((out / "cache" / "cams").glob("*/complete"))) >= 2   # train_aug and val CAMs


@pytest.mark.slow
def test_notebooks_04_05_full_profile_on_voc_layout(tmp_path):
    """Notebooks 04 and 05 on the VOC path with the full-scale networks from scratch (ResNet-50
    classifier and IRNet backbone, DeepLabv3+ ResNet-50), one epoch each, small crops; 05 finds
    04's IRNet, walk choice and pseudo-labels in the shared OUTPUT_DIR."""
    import papermill as pm

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    out = tmp_path / "out"
    common = dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out), PROFILE="full",
                  DEVICE="cpu", WEIGHTS=None, EPOCHS=1, CROP=64, IR_EPOCHS=1, IR_CROP=64, IR_BATCH=2,
                  CONFIDENCE=0.0)     # an untrained classifier is confident of nothing
    for nb, extra in (("04_irnet_random_walk", {}),
                      ("05_deeplab_and_results", dict(SEG_EPOCHS=1, SEG_CROP=64, TABLE3=False))):
        pm.execute_notebook(str(REPO / "notebooks" / f"{nb}.ipynb"), str(tmp_path / f"{nb}.ipynb"),
                            parameters=common | extra, kernel_name="python3",
                            cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=900)
    m4 = json.loads((out / "metrics" / "04_irnet_random_walk.json").read_text())
    m5 = json.loads((out / "metrics" / "05_deeplab_and_results.json").read_text())
    assert 0.0 <= m4["miou_irnet"] <= 1.0 and m4["walk_radius"] == 5 and m4["walk_exp_times"] == 8
    for key in ("miou_deeplab", "miou_deeplab_tta", "miou_deeplab_train"):
        assert 0.0 <= m5[key] <= 1.0, key
    # 04 trains two IRNets (person dropped, every tag kept); 05 finds both in the cache
    assert len(list((out / "cache" / "irnet").glob("*.pt"))) == 2


@pytest.mark.slow
def test_notebook_06_full_profile_on_a_pseudo_mask_folder(tmp_path):
    """Notebook 06 on the VOC path with a folder of PNG pseudo-masks (the true masks with their
    objects' outer ring relabelled background), the full-scale DeepLabv3+ ResNet-50 from scratch,
    the reference's six scales for P, one epoch, one seed, two rows of Table 3."""
    import numpy as np
    import papermill as pm
    from scipy import ndimage

    from wsss_edu.datasets import get_dataset
    from wsss_edu.io import write_mask

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    train = get_dataset("voc", tmp_path / "data", split="train_aug")
    for i in range(len(train)):
        m = train[i]["mask"].copy()
        ring = (m > 0) & (m != 255) & ~ndimage.binary_erosion((m > 0) & (m != 255), iterations=2)
        m[ring] = 0
        write_mask(tmp_path / "pl" / f"{train.names[i]}.png", m)
    out = tmp_path / "out"
    pm.execute_notebook(
        str(REPO / "notebooks" / "06_urn_uncertainty_weights.ipynb"), str(tmp_path / "06.ipynb"),
        parameters=dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out),
                        PROFILE="full", DEVICE="cpu", WEIGHTS=None, WORKERS=2, PSEUDO_LABELS=str(tmp_path / "pl"),
                        SEG_EPOCHS=1, SEG_CROP=64, STUDENT_EPOCHS=1, SEEDS=1, T_GRID=[1.0, 0.05], SHOW=0),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=900)
    m = json.loads((out / "metrics" / "06_urn_uncertainty_weights.json").read_text())
    for key in ("auroc_uncertainty", "miou_plain", "miou_urn", "miou_probability", "miou_cyclic_masks_train"):
        assert 0.0 <= m[key] <= 1.0, key
    folder = next((out / "cache" / "urn").iterdir())
    assert len(list(folder.glob("*.png"))) == 6          # a label + weight PNG per training image
    with pytest.raises(Exception, match="PSEUDO_LABELS"):     # a folder missing masks names the fix
        pm.execute_notebook(
            str(REPO / "notebooks" / "06_urn_uncertainty_weights.ipynb"), str(tmp_path / "06b.ipynb"),
            parameters=dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out),
                            PROFILE="full", DEVICE="cpu", WEIGHTS=None, PSEUDO_LABELS=str(tmp_path / "data")),
            kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=300)


@pytest.mark.slow
def test_notebook_07_full_profile_on_voc_layout(tmp_path):
    """Notebook 07 on the VOC path with the full-scale networks from scratch (step 1's ResNet-50
    classifier as RRM's backbone, the paper's four CAM scales and sigma_xy 100, the DeepLabv3+
    ResNet-50 of the two-step variant), one epoch each, 64-px crops, one ratio of Table 1."""
    import papermill as pm

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    out = tmp_path / "out"
    pm.execute_notebook(
        str(REPO / "notebooks" / "07_rrm_end_to_end.ipynb"), str(tmp_path / "07.ipynb"),
        parameters=dict(DATASET="voc", DATA_ROOT=str(tmp_path / "data"), OUTPUT_DIR=str(out), PROFILE="full",
                        DEVICE="cpu", WEIGHTS=None, WORKERS=0, EPOCHS=1, CROP=64, RRM_EPOCHS=1, RRM_CROP=64,
                        RRM_BATCH=2, RATIOS=[0.4], SEG_EPOCHS=1, SEG_CROP=64, N_CURVE=6, SHOW=0),
        kernel_name="python3", cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=900)
    m = json.loads((out / "metrics" / "07_rrm_end_to_end.json").read_text())
    for key in ("precision_cam_labels", "precision_reliable", "miou_rrm_ce", "miou_rrm_joint", "miou_cam_joint",
                "miou_rrm_joint_crf", "miou_rrm_pseudo_train", "miou_rrm_two_step"):
        assert 0.0 <= m[key] <= 1.0, key
    assert len(list((out / "cache" / "rrm").glob("*.pt"))) == 4     # ratio 0.4 and CAM labels, CE and joint
    pl = next((out / "cache" / "rrm_pseudo_labels").iterdir())
    assert len(list(pl.glob("*.png"))) == 6 and (pl / "complete").exists()
