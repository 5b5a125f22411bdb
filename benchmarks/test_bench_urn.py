"""Benchmark of URN's uncertainty pass (figures, not pass/fail): ``make bench``. The issue's target:
with 2 processes at least 1.8x faster than with 1; the figure is the speed-up, its reference N
(the ratio: parallel efficiency). ``BENCH_URN_IMAGES`` (default 300) toy images of 64 px (notebook
06's training set has 800, the figure the issue quotes, 1.88x; 300 keep ``make bench`` within its
10 minutes: ~2 min here; starting the two workers costs ~4 s, which lowers the ratio the smaller
the set), the true masks as the
pseudo-masks, a small untrained DeepLabv3+ for P; each worker computes P for its own images with
one thread, and the one-process run uses one thread too (processes x threads <= cores)."""

import os
import time
from functools import partial

import pytest
import torch

from wsss_edu.models import make_segmenter
from wsss_edu.steps import urn_step
from wsss_edu.toy import ToyDataset

PROCESSES = 2
IMAGES = int(os.environ.get("BENCH_URN_IMAGES", 300))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    ds = ToyDataset("train", n=IMAGES, seed=0, size=64)
    factory = partial(make_segmenter, "deeplabv3plus_small", ds.num_classes, None, width=16)
    return ds, factory().eval(), factory


def test_uncertainty_pass_speed_up(figures, setup, tmp_path_factory):
    if PROCESSES > (os.cpu_count() or 1):
        pytest.skip(f"{PROCESSES} processes on {os.cpu_count()} cores")
    ds, net, factory = setup
    times = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers take one thread each (urn_step's worker setup)
    try:
        for processes in (1, PROCESSES):
            folder = tmp_path_factory.mktemp(f"urn{processes}")
            start = time.perf_counter()
            urn_step.uncertainty_pass(
                net, ds, folder, processes=processes, model_factory=factory, progress=False
            )
            times[processes] = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    figures.record(
        f"URN uncertainty pass, {len(ds)} images of 64 px, {PROCESSES} processes: speed-up",
        times[1] / times[PROCESSES],
        "x",
        PROCESSES,
        f"N = {PROCESSES}",
        note=f"ratio = parallel efficiency; 1 process {times[1]:.1f} s, {PROCESSES}: "
        f"{times[PROCESSES]:.1f} s",
    )
