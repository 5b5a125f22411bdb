"""Visualisation: colourised labels (in :func:`wsss_edu.labels.voc_palette`'s colours), overlays,
image/label grids, heat maps."""

from __future__ import annotations

import numpy as np

from .labels import voc_palette
from .toy import ToyDataset


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """A label map (H, W) as an RGB image (H, W, 3) uint8 through ``palette`` (default VOC's)."""
    pal = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    return pal[np.asarray(mask).astype(np.int64) % len(pal)]


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet"):
    """Blend a heat map (H, W) in [0, 1] (a CAM, an uncertainty map) over an RGB image."""
    import matplotlib

    colors = matplotlib.colormaps[cmap](np.clip(np.asarray(heat, np.float32), 0, 1))[..., :3] * 255
    return ((1 - alpha) * np.asarray(image, np.float32) + alpha * colors).astype(np.uint8)


def draw_boxes(ax, boxes, box_labels=None, classes=None, palette=None, linewidth=1.5):
    """Draw [x0, y0, x1, y1] boxes (x1/y1 exclusive) on a matplotlib axis."""
    import matplotlib.patches as patches

    pal = voc_palette() if palette is None else palette
    for k, b in enumerate(np.asarray(boxes).reshape(-1, 4)):
        c = int(box_labels[k]) if box_labels is not None else 1
        ax.add_patch(
            patches.Rectangle(
                (b[0] - 0.5, b[1] - 0.5),
                b[2] - b[0],
                b[3] - b[1],
                fill=False,
                linewidth=linewidth,
                edgecolor=pal[c] / 255,
            )
        )
        if classes is not None:
            ax.text(
                b[0],
                b[1],
                classes[c],
                fontsize=7,
                color="white",
                va="bottom",
                bbox=dict(facecolor=pal[c] / 255, pad=0.5, linewidth=0),
            )


def show_grid(rows, titles=None, row_titles=None, size: float = 1.8, cmap=None):
    """A grid of images: ``rows`` is a list of lists of arrays (RGB, label maps or 2-D heat maps;
    label maps of integer dtype are colourised). Returns the figure."""
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc, size * nr), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row) or row[j] is None:
                continue
            a = np.asarray(row[j])
            if a.ndim == 2 and np.issubdtype(a.dtype, np.integer):
                ax.imshow(colorize(a), interpolation="nearest")
            elif a.ndim == 2:
                ax.imshow(a, cmap=cmap or "viridis", interpolation="nearest")
            else:
                ax.imshow(a, interpolation="nearest")
            if titles is not None and i == 0 and j < len(titles):
                ax.set_title(titles[j], fontsize=9)
        if row_titles is not None and i < len(row_titles):
            axes[i][0].text(
                -0.1,
                0.5,
                row_titles[i],
                transform=axes[i][0].transAxes,
                rotation=90,
                ha="right",
                va="center",
                fontsize=9,
            )
    fig.tight_layout()
    return fig


def show_samples(dataset, indices, classes=None, size: float = 1.8):
    """Image (with boxes and tags), mask, and instances of some samples of a dataset."""
    import matplotlib.pyplot as plt

    classes = classes or getattr(dataset, "classes", None)
    fig, axes = plt.subplots(
        3, len(indices), figsize=(size * len(indices), size * 3), squeeze=False
    )
    for j, i in enumerate(indices):
        s = dataset[i]
        axes[0][j].imshow(s["image"])
        draw_boxes(axes[0][j], s["boxes"], s["box_labels"])
        tags = [classes[k + 1] for k in np.flatnonzero(s["labels"])] if classes else []
        axes[0][j].set_title(", ".join(tags), fontsize=8)
        axes[1][j].imshow(colorize(s["mask"]), interpolation="nearest")
        inst = s.get("instances")
        if inst is not None:
            axes[2][j].imshow(inst, cmap="tab20", interpolation="nearest")
        for r in range(3):
            axes[r][j].axis("off")
    for r, t in enumerate(("image, boxes, tags", "mask (white = ignore)", "instances")):
        axes[r][0].text(
            -0.08,
            0.5,
            t,
            transform=axes[r][0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.tight_layout()
    return fig


def show_toy_world(seed: int = 0, n: int = 6, size: int = 64, split: str = "train", **knobs):
    """Draw ``n`` toy-world samples (image with boxes and tags, mask, instances) for the given
    seed and knobs: the plain function behind notebook 00's explorer slider."""
    return show_samples(ToyDataset(split, n=n, seed=seed, size=size, **knobs), range(n))


def sliders(fn, **ranges):
    """The course's slider pattern: ipywidgets controls for ``fn``'s arguments (``interact``-style
    ranges such as ``seed=(0, 50)``) with a "Run Interact" button.

    Why a button and not live updates: when a notebook runs headless (papermill, nbval), a callback
    that draws a figure inside ``interact``'s Output widget can leave nbclient waiting until its
    cell timeout (papermill issue #723, nbclient #312; measured here: a 1.5 s figure held a cell for
    the whole 30 s timeout). With the button nothing runs until a person clicks, so headless runs
    never call ``fn``. Call ``fn`` once directly in the cell before, so the figure is in the
    executed notebook, and mark the slider cell ``# NBVAL_IGNORE_OUTPUT``.
    """
    from ipywidgets import interact_manual

    return interact_manual(fn, **ranges)


def bar_table(
    results: dict,
    xlabel: str,
    names: dict | None = None,
    colors: dict | None = None,
    xlim=(0, 1),
    row_header: str = "training data",
):
    """A result table and its figure: one horizontal bar per row (mean, with the standard
    deviation as error bar) and the same numbers as a markdown table with every seed's value.
    ``results``: {row: array of per-seed scores}; ``names``/``colors``: {row: label / colour};
    ``row_header``: the first column's title."""
    import matplotlib.pyplot as plt

    names, colors = names or {}, colors or {}
    labels = [names.get(k, k) for k in results]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(results)))
    ax.barh(
        labels,
        [np.mean(v) for v in results.values()],
        xerr=[np.std(v) for v in results.values()],
        color=[colors.get(k, f"C{i}") for i, k in enumerate(results)],
    )  # default colour cycle
    ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.invert_yaxis()
    plt.show()
    plt.close(fig)
    print(f"| {row_header} | score (mean ± std) | per seed |\n| --- | --- | --- |")
    for label, v in zip(labels, results.values()):
        v = np.asarray(v, float)
        print(f"| {label} | {v.mean():.3f} ± {v.std():.3f} | {np.round(v, 3).tolist()} |")


def show_cams(samples, cams, classes, pseudo=None, size: float = 1.6, name: str = "CAM"):
    """One row per image: the image, its true mask, the CAM of each of its classes over the image
    (titled with the class), and optionally its pseudo-label map. ``samples``: dicts with 'image',
    'mask', 'labels'; ``cams``: (K, H, W) maps in [0, 1] per sample (K foreground classes);
    ``classes``: names with the background first; ``pseudo``: label maps per sample or None;
    ``name``: what the maps are, in the titles ("CAM", "Grad-CAM", ...)."""
    import matplotlib.pyplot as plt

    rows = [np.flatnonzero(np.asarray(s["labels"]) > 0) for s in samples]
    nc = 2 + max((len(r) for r in rows), default=0) + (pseudo is not None)
    fig, axes = plt.subplots(
        len(samples), nc, figsize=(size * nc, size * len(samples)), squeeze=False
    )
    for i, (s, cam, keys) in enumerate(zip(samples, cams, rows)):
        panels = [(s["image"], "image"), (colorize(s["mask"]), "true mask")]
        panels += [
            (heatmap_overlay(s["image"], np.asarray(cam[k])), f"{name} {classes[k + 1]}")
            for k in keys
        ]
        if pseudo is not None:
            panels.append((colorize(np.asarray(pseudo[i])), "pseudo-label"))
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(panels):
                ax.imshow(panels[j][0], interpolation="nearest")
                ax.set_title(panels[j][1], fontsize=8)
    fig.tight_layout()
    return fig
