"""Benchmark of URN's uncertainty pass (figures, not pass/fail): ``make bench``. The issue's target:
with 2 processes at least 1.8x faster than with 1. 800 toy images of 64 px (notebook 06's training
set; starting the two workers costs ~4 s, which a smaller set would make look larger), the true
masks as the pseudo-masks, a small untrained DeepLabv3+ for P; each worker computes P for its own
images."""

import time
from functools import partial

import pytest
import torch

from wsss_edu.models import make_segmenter
from wsss_edu.steps import urn_step
from wsss_edu.toy import ToyDataset


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    ds = ToyDataset("train", n=800, seed=0, size=64)
    factory = partial(make_segmenter, "deeplabv3plus_small", ds.num_classes, None, width=16)
    return ds, factory().eval(), factory


@pytest.mark.parametrize("processes", [1, 2])
def test_uncertainty_pass(benchmark, setup, tmp_path_factory, processes):
    ds, net, factory = setup

    def run():
        folder = tmp_path_factory.mktemp(f"urn{processes}")
        start = time.perf_counter()
        urn_step.uncertainty_pass(
            net, ds, folder, processes=processes, model_factory=factory, progress=False
        )
        return time.perf_counter() - start

    benchmark.pedantic(run, rounds=1, iterations=1)
    print(
        f"\nURN uncertainty pass, {len(ds)} images of 64 px, {processes} process(es): "
        f"{benchmark.stats.stats.mean:.2f} s "
    )
