"""Full-profile paths of single notebooks on tiny fabricated folders (papermill, PROFILE=full,
WEIGHTS=None, one epoch, small crops) that the whole-chain test
(tests/test_pipeline.py::test_the_whole_chain_on_a_fabricated_voc_folder, which runs 00 and 02b-08 at
the full profile on VOC) does not take: notebooks 02/02b on Cityscapes and CamVid folders, 03 with
the VGG16 classifier, 06 on a folder of pseudo-masks."""

import json
from pathlib import Path

import pytest

from wsss_edu.toy import write_voc_layout

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cityscapes", "camvid"])
@pytest.mark.parametrize(
    "notebook, keys",
    [
        (
            "02_bootstrapping_on_boxes",
            ("iou_all_pp", "iou_pp_only", "iou_boxes_bce", "iou_ignore_box", "iou_ours"),
        ),
        ("02b_bootstrapping_multiclass", ("miou_mc_full", "miou_mc_pp_only", "miou_mc_ours")),
    ],
)
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
    small = dict(
        DATASET=dataset,
        DATA_ROOT=str(root),
        OUTPUT_DIR=str(out),
        PROFILE="full",
        DEVICE="cpu",
        SEEDS=1,
        IMAGE_SIZE=16,
        N_TRAIN=3,
        N_PP=1 if dataset == "cityscapes" else None,  # None: 18 %
        N_VAL=1,
        EPOCHS=2,
        WARMUP=1,
        WIDTH=4,
    )
    if notebook.startswith("02_"):
        small["PP_SWEEP"] = [2]
    pm.execute_notebook(
        str(REPO / "notebooks" / f"{notebook}.ipynb"),
        str(tmp_path / f"{notebook}.ipynb"),
        parameters=small,
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
        execution_timeout=600,
    )
    metrics = json.loads((out / "metrics" / f"{notebook}.json").read_text())
    for key in keys:
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vgg16"])  # resnet50 (the profile's): in the whole-chain test
def test_notebook_03_full_profile_on_voc_layout(tmp_path, backbone):
    """Notebook 03 on the VOC path (train_aug for the classifier, train for the scores) with the
    full-scale classifiers from scratch: one epoch, crop 64, one seed per variant."""
    import papermill as pm

    write_voc_layout(tmp_path / "data", n_train=6, n_val=3, seed=0, size=64)
    out = tmp_path / "out"
    pm.execute_notebook(
        str(REPO / "notebooks" / "03_classification_and_cam.ipynb"),
        str(tmp_path / "03.ipynb"),
        parameters=dict(
            DATASET="voc",
            DATA_ROOT=str(tmp_path / "data"),
            OUTPUT_DIR=str(out),
            PROFILE="full",
            DEVICE="cpu",
            WEIGHTS=None,
            BACKBONE=backbone,
            EPOCHS=1,
            CROP=64,
            SEEDS=1,
        ),
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
        execution_timeout=600,
    )
    metrics = json.loads((out / "metrics" / "03_classification_and_cam.json").read_text())
    for key in ("miou_cam", "miou_cam_crf", "miou_cam_dropped_balanced"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert len(list((out / "cache" / "cams").glob("*/complete"))) >= 2  # train_aug and val CAMs


@pytest.mark.slow
def test_notebook_06_full_profile_on_a_pseudo_mask_folder(tmp_path):
    """Notebook 06 on the VOC path with a folder of PNG pseudo-masks (the true masks with their
    objects' outer ring relabelled background), the full-scale DeepLabv3+ ResNet-50 from scratch,
    the reference's six scales for P, one epoch, one seed, two rows of Table 3."""
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
        str(REPO / "notebooks" / "06_urn_uncertainty_weights.ipynb"),
        str(tmp_path / "06.ipynb"),
        parameters=dict(
            DATASET="voc",
            DATA_ROOT=str(tmp_path / "data"),
            OUTPUT_DIR=str(out),
            PROFILE="full",
            DEVICE="cpu",
            WEIGHTS=None,
            WORKERS=2,
            PSEUDO_LABELS=str(tmp_path / "pl"),
            SEG_EPOCHS=1,
            SEG_CROP=64,
            STUDENT_EPOCHS=1,
            SEEDS=1,
            T_GRID=[1.0, 0.05],
            SHOW=0,
        ),
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),
        progress_bar=False,
        execution_timeout=900,
    )
    m = json.loads((out / "metrics" / "06_urn_uncertainty_weights.json").read_text())
    for key in (
        "auroc_uncertainty",
        "miou_plain",
        "miou_urn",
        "miou_probability",
        "miou_cyclic_masks_train",
    ):
        assert 0.0 <= m[key] <= 1.0, key
    folder = next((out / "cache" / "urn").iterdir())
    assert len(list(folder.glob("*.png"))) == 6  # a label + weight PNG per training image
    with pytest.raises(Exception, match="PSEUDO_LABELS"):  # a folder missing masks names the fix
        pm.execute_notebook(
            str(REPO / "notebooks" / "06_urn_uncertainty_weights.ipynb"),
            str(tmp_path / "06b.ipynb"),
            parameters=dict(
                DATASET="voc",
                DATA_ROOT=str(tmp_path / "data"),
                OUTPUT_DIR=str(out),
                PROFILE="full",
                DEVICE="cpu",
                WEIGHTS=None,
                PSEUDO_LABELS=str(tmp_path / "data"),
            ),
            kernel_name="python3",
            cwd=str(REPO / "notebooks"),
            progress_bar=False,
            execution_timeout=300,
        )
