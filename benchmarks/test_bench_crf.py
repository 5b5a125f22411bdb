"""Benchmark of the dense CRF (:mod:`wsss_edu.crf`; figures, not pass/fail): ``make bench``.
Images per second of both backends on toy scenes with noisy class probabilities (the true mask at
0.6, the rest spread), IRN's label-CRF parameters, 10 iterations — at 64 px (the quick profile:
the torch backend's exact sum) and at 320 x 213 (a VOC-like photo: the torch backend's coarse
grid) — the torch backend's time as a ratio of pydensecrf's; and :func:`wsss_edu.crf.crf_map`'s
speed-up on N processes against N (parallel efficiency), one thread per process (processes x
threads <= cores), and the part of it that is the pool's start (N spawned workers importing torch)
against the one-process map."""

import os
import time

import numpy as np
import pytest
import torch

from wsss_edu import crf
from wsss_edu.threads import spawn_pool
from wsss_edu.toy import ToyDataset

MAP_IMAGES = 24

pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf is the reference backend")


def _scenes(n, size, crop=None):
    ds = ToyDataset("val", n=n, seed=1, size=size, cache=False)
    rng = np.random.default_rng(0)
    imgs, probs = [], []
    for i in range(n):
        s = ds[i]
        img, mask = s["image"], np.where(s["mask"] == 255, 0, s["mask"])
        if crop:
            img, mask = img[: crop[0], : crop[1]], mask[: crop[0], : crop[1]]
        p = rng.random((ds.num_classes,) + mask.shape).astype(np.float32) * 0.2
        np.put_along_axis(p, mask[None].astype(np.int64), 0.6, axis=0)
        imgs.append(np.ascontiguousarray(img))
        probs.append(p / p.sum(0, keepdims=True))
    return imgs, probs


def _rate(imgs, probs, backend):
    crf.crf_on_scores(imgs[0], probs[0], "irn_labels", backend)  # warm-up
    t = time.perf_counter()
    for im, p in zip(imgs, probs):
        crf.crf_on_scores(im, p, "irn_labels", backend)
    return len(imgs) / (time.perf_counter() - t)


@pytest.mark.parametrize(
    "name, n, size, crop", [("64 px", 16, 64, None), ("320x213", 8, 320, (213, 320))]
)
def test_crf_images_per_second(figures, name, n, size, crop):
    imgs, probs = _scenes(n, size, crop)
    ref = _rate(imgs, probs, "pydensecrf")
    ours = _rate(imgs, probs, "torch")
    threads = torch.get_num_threads()
    figures.record(
        f"CRF {name}, torch backend ({threads} thread(s))",
        ours,
        "img/s",
        ref,
        "pydensecrf",
        ratio=ref / ours,
        note="ratio = torch's time / pydensecrf's",
    )


@pytest.mark.parametrize("processes", [2])
def test_crf_map_speed_up(figures, processes):
    if processes > (os.cpu_count() or 1):
        pytest.skip(f"{processes} processes on {os.cpu_count()} cores")
    imgs, probs = _scenes(MAP_IMAGES, 320)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per process: crf_map gives each worker its share
    try:
        times = {}
        for n in (1, processes):
            t = time.perf_counter()
            crf.crf_map(
                imgs, probs, "scores", processes=n, params="irn_labels", backend="pydensecrf"
            )
            times[n] = time.perf_counter() - t
    finally:
        torch.set_num_threads(before)
    speed_up = times[1] / times[processes]
    figures.record(
        f"CRF map, {MAP_IMAGES} images of 320 px, {processes} processes: speed-up",
        speed_up,
        "x",
        processes,
        f"N = {processes}",
        note=f"ratio = parallel efficiency; 1 process {times[1]:.1f} s, incl. the pool's start",
    )
    start = pool_start_seconds(processes)
    figures.record(
        f"CRF map, {processes} processes: the pool's start",
        start,
        "s",
        times[1],
        "the 1-process map",
        note=f"{processes} spawned workers, each importing torch; paid once per map",
    )


def pool_start_seconds(processes: int) -> float:
    """Seconds to start a :func:`spawn_pool` of ``processes`` workers and have each run a job."""
    t = time.perf_counter()
    with spawn_pool(processes) as pool:
        list(pool.map(abs, range(4 * processes)))
    return time.perf_counter() - t
