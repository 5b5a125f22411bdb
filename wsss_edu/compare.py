"""All four methods side by side (notebook 08 and the full-scale report): what each needs, where
its headline numbers live, and the table that puts them next to full supervision and next to the
papers' own tables.

A method's numbers are the ones its notebook recorded (``<output_dir>/metrics/<notebook>.json``,
:func:`wsss_edu.results.record_metrics`); :func:`missing_notebooks` names the notebooks whose
numbers are missing (:func:`wsss_edu.pipeline.ensure_metrics` runs them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cache import compute_seconds

# Annotation time per image on PASCAL VOC, the estimates notebook 00 quotes: a full mask ≈ 240 s
# (Bearman et al. 2016), image-level tags ≈ 20 s (ibid.), a box ≈ 7 s by extreme clicking
# (Papadopoulos et al. 2017).
SECONDS_MASK, SECONDS_TAGS, SECONDS_BOX = 240.0, 20.0, 7.0


@dataclass(frozen=True)
class Method:
    """One row of the side-by-side table.

    ``final``/``pseudo``: (notebook, metric name) of the final model's held-out (test split) mIoU and of the
    pseudo-labels' mIoU on the training images (None where the method has none). ``reference``:
    (notebook, metric) of the full-supervision mIoU in the same world, or None for notebook 08's
    own reference (same world as notebooks 03-07). ``networks``: networks trained, in order.
    ``cache``: artifact kinds (:mod:`wsss_edu.cache` names) whose compute time is training time."""

    name: str
    paper_id: str
    labels: str
    annotation_seconds: float
    networks: tuple
    final: tuple | None
    pseudo: tuple | None = None
    reference: tuple | None = None
    cache: tuple = ()
    note: str = ""
    world: str = "tags"
    dataset_notes: tuple = ()

    def on(self, dataset: str) -> "Method":
        """This row as it reads on ``dataset``: its note replaced by ``dataset_notes``' entry for
        that dataset ((dataset, note) pairs), where the toy world's note would be wrong there."""
        import dataclasses

        note = dict(self.dataset_notes).get(dataset)
        return self if note is None else dataclasses.replace(self, note=note)

    @property
    def notebooks(self) -> set:
        return {x[0] for x in (self.final, self.pseudo, self.reference) if x}


def box_annotation_seconds(objects_per_image: float, mask_fraction: float) -> float:
    """Boxes for every object plus full masks for a fraction of the images (paper 000's labels)."""
    return objects_per_image * SECONDS_BOX + mask_fraction * SECONDS_MASK


METHODS = (
    Method(
        "boxes + 10 % masks: bootstrapping",
        "000",
        "boxes + a few masks",
        box_annotation_seconds(2.0, 0.1),
        ("U-Net",),
        final=("02b_bootstrapping_multiclass", "miou_mc_ours"),
        reference=("02b_bootstrapping_multiclass", "miou_mc_full"),
        note="its own world (background / car / person, 48 px): % of the same U-Net on every mask",
        world="boxes",
    ),
    Method(
        "same, the few masks alone",
        "000",
        "a few masks",
        0.1 * SECONDS_MASK,
        ("U-Net",),
        final=("02b_bootstrapping_multiclass", "miou_mc_pp_only"),
        reference=("02b_bootstrapping_multiclass", "miou_mc_full"),
        world="boxes",
    ),
    Method(
        "CAM (step 1)",
        "001",
        "tags",
        SECONDS_TAGS,
        ("classifier",),
        final=None,
        pseudo=("03_classification_and_cam", "miou_cam"),
        cache=("classifier",),
        note="pseudo-labels only (θ chosen on val)",
        dataset_notes=(("msrc", "pseudo-labels only (no background: each pixel's tagged class)"),),
    ),
    Method(
        "CAM → IRNet → DeepLabv3+",
        "001",
        "tags",
        SECONDS_TAGS,
        ("classifier", "IRNet", "DeepLabv3+"),
        final=("05_deeplab_and_results", "miou_deeplab"),
        pseudo=("05_deeplab_and_results", "miou_irnet_step3_labels"),
        cache=("classifier", "irnet", "segmenter"),
        note="'person' tags dropped, as the paper",
        dataset_notes=(("msrc", "every tag kept (MSRC's tags are complete)"),),
    ),
    Method(
        "URN: uncertainty weights",
        "002",
        "tags",
        SECONDS_TAGS,
        ("classifier", "IRNet", "DeepLabv3+ (F_S)", "DeepLabv3+ (weighted)"),
        final=("06_urn_uncertainty_weights", "miou_urn"),
        pseudo=("06_urn_uncertainty_weights", "miou_cyclic_masks_train"),
        cache=("classifier", "irnet", "segmenter", "segmenter"),
        note="on notebook 05's pseudo-labels; t = 0.05",
    ),
    Method(
        "RRM: one network, joint loss",
        "003",
        "tags",
        SECONDS_TAGS,
        ("classifier", "RRM"),
        final=("07_rrm_end_to_end", "miou_rrm_joint"),
        pseudo=("07_rrm_end_to_end", "miou_rrm_pseudo_train"),
        cache=("classifier", "rrm"),
        note="every tag kept; starts from step 1's classifier",
    ),
    Method(
        "RRM + CRF at test",
        "003",
        "tags",
        SECONDS_TAGS,
        ("classifier", "RRM"),
        final=("07_rrm_end_to_end", "miou_rrm_joint_crf"),
        cache=("classifier", "rrm"),
        note="the paper's inference",
    ),
)


def methods_for(dataset: str, methods=METHODS) -> tuple:
    """The rows of notebook 08's table on ``dataset``: every method on the toy world; on another
    dataset the tags methods alone (``world`` 'tags'): paper 000's notebooks 01-02b train in the
    toy world's box world against their own full-supervision reference, so their rows say nothing
    about another dataset's images (and those notebooks do not run on it). Each row's note as it
    reads there (:meth:`Method.on`)."""
    return tuple(m.on(dataset) for m in methods if dataset == "toy" or m.world == "tags")


def needed_notebooks(methods=METHODS) -> list:
    """The notebooks whose recorded numbers the table reads, in course order."""
    return sorted({nb for m in methods for nb in m.notebooks})


def missing_notebooks(metrics: dict, methods=METHODS) -> list:
    """The notebooks among :func:`needed_notebooks` whose JSON lacks a number the table reads."""
    need = {}
    for m in methods:
        for nb, key in (x for x in (m.final, m.pseudo, m.reference) if x):
            need.setdefault(nb, set()).add(key)
    return sorted(nb for nb, keys in need.items() if not keys <= set(metrics.get(nb, {})))


def _get(metrics: dict, where) -> float:
    if where is None:
        return math.nan
    v = metrics.get(where[0], {}).get(where[1])
    return math.nan if v is None else float(v)


def side_by_side(
    metrics: dict, full_supervision: float, training_seconds: dict | None = None, methods=METHODS
) -> list[dict]:
    """One dict per method: its numbers, and each as a share of full supervision in its world
    (``full_supervision``: notebook 08's reference for the tags world; a method's own
    ``reference`` otherwise). ``training_seconds``: {cache kind: seconds of one artifact}."""
    rows = []
    for m in methods:
        full = _get(metrics, m.reference) if m.reference else full_supervision
        final, pl = _get(metrics, m.final), _get(metrics, m.pseudo)
        secs = [training_seconds.get(k, math.nan) for k in m.cache] if training_seconds else []
        rows.append(
            {
                "method": m.name,
                "paper": m.paper_id,
                "labels": m.labels,
                "annotation_s": m.annotation_seconds,
                "networks": len(m.networks),
                "train_s": sum(secs) if secs else math.nan,
                "pseudo_miou": pl,
                "final_miou": final,
                "full_miou": full,
                "pseudo_pct": 100 * pl / full,
                "final_pct": 100 * final / full,
                "note": m.note,
                "world": m.world,
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The side-by-side table as markdown (NaN shown as '–')."""

    def f(v, fmt):
        return "–" if isinstance(v, float) and math.isnan(v) else format(v, fmt)

    out = [
        "| method | paper | labels | annotation s/image | networks | training s | "
        "pseudo-labels mIoU (% full) | final mIoU (% full) | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        out.append(
            f"| {r['method']} | {r['paper']} | {r['labels']} | {f(r['annotation_s'], '.0f')} "
            f"| {r['networks']} | {f(r['train_s'], '.0f')} | {f(r['pseudo_miou'], '.3f')} "
            f"({f(r['pseudo_pct'], '.0f')} %) | {f(r['final_miou'], '.3f')} "
            f"({f(r['final_pct'], '.0f')} %) | {r['note']} |"
        )
    return "\n".join(out)


def median_seconds(output_dir, kinds) -> dict:
    """{cache kind: median compute time of one artifact of that kind under ``output_dir``}
    (NaN where none was timed)."""
    import statistics

    out = {}
    for k in kinds:
        s = compute_seconds(output_dir, k)
        out[k] = statistics.median(s) if s else math.nan
    return out


# The papers' own rows next to the notebook metric that measures the same thing here: (row,
# notebook, metric, the paper's value as a fraction). Datasets: paper 000 Cityscapes (car,
# person), 001 the LID challenge 2020 val (ImageNet, 200 classes), 002 and 003 PASCAL VOC 2012 val.
PAPER_TABLES = {
    "000": (
        "Neven et al., Table 2 (Cityscapes, mean IoU)",
        [
            ("CE on every mask (2780 PP)", "02b_bootstrapping_multiclass", "miou_mc_full", 0.7980),
            (
                "CE on the few masks (500 PP)",
                "02b_bootstrapping_multiclass",
                "miou_mc_pp_only",
                0.7336,
            ),
            ("ours: 500 PP + 2280 boxes", "02b_bootstrapping_multiclass", "miou_mc_ours", 0.7775),
        ],
    ),
    "001": (
        "Dobko et al., Table 2 (LID 2020 val)",
        [
            ("step 1: classification + CRF", "03_classification_and_cam", "miou_cam_crf", 0.3106),
            ("step 2: IRNet", "04_irnet_random_walk", "miou_irnet", 0.3187),
            ("step 3: segmentation + TTA", "05_deeplab_and_results", "miou_deeplab_tta", 0.3964),
        ],
    ),
    "002": (
        "Li et al., Tables 3 and 5 (VOC 2012 val, Res2Net-101)",
        [
            ("baseline (PMM), t = 1", "06_urn_uncertainty_weights", "miou_plain", 0.700),
            ("probability as the weight", "06_urn_uncertainty_weights", "miou_probability", 0.705),
            ("URN, t = 0.05", "06_urn_uncertainty_weights", "miou_urn", 0.712),
        ],
    ),
    "003": (
        "Zhang et al., Table 2 and text (VOC 2012 val; CRF at test)",
        [
            ("CAM labels, CE", "07_rrm_end_to_end", "miou_cam_ce", 0.461),
            ("CAM labels, joint loss", "07_rrm_end_to_end", "miou_cam_joint", 0.557),
            ("RRM labels, CE", "07_rrm_end_to_end", "miou_rrm_ce_crf", 0.485),
            ("RRM labels, joint loss (one step)", "07_rrm_end_to_end", "miou_rrm_joint_crf", 0.626),
            ("two steps", "07_rrm_end_to_end", "miou_rrm_two_step", 0.663),
        ],
    ),
}


def paper_comparison(metrics: dict) -> str:
    """Markdown: for each paper, its rows next to the numbers measured here (– where the notebook
    has not recorded them). Only the trend between rows can be compared: the datasets differ."""
    out = []
    for pid, (title, rows) in PAPER_TABLES.items():
        out += [
            f"### Paper {pid}: {title}",
            "",
            "| row | paper | measured | metric |",
            "| --- | ---: | ---: | --- |",
        ]
        for name, nb, key, value in rows:
            v = _get(metrics, (nb, key))
            shown = "–" if math.isnan(v) else f"{v:.3f}"
            out.append(f"| {name} | {value:.3f} | {shown} | `{nb}` · `{key}` |")
        out.append("")
    return "\n".join(out)
