"""Benchmark of RRM's dense energy loss (figures, not pass/fail): ``make bench``. Time and peak
memory of one forward + backward of the exact, chunked loss (:func:`wsss_edu.rrm.dense_energy_loss`)
against the naive all-pairs form on the same input (benchmarks/naive.py: the whole N x N kernel
matrix, N = H·W), and the agreement of their values. Sizes: the quick profile's (a batch of 16 toy
images of 64 px, the loss at half resolution: 32 x 32, 7 classes), a 96 x 96 map with 21 classes,
and the full-scale one (one 321-px crop at half resolution: 161 x 161, 21 classes), where the naive
form needs ~15 GB and runs only when ``BENCH_NAIVE_GB`` allows its estimated peak (default 3 GB);
otherwise its reference is the naive form measured at the largest side that fits (107² at 3 GB),
time and peak scaled by the ratio of pixel pairs — an estimate, and named so in the table. Checked
once against the real thing on a 2-core, 24 GB machine: peak 10.27 GB estimated vs 10.26 GB
measured; time 27.6 s estimated vs 48.1 s measured (paging in 10 GB: a lower bound).
Each case runs in a fresh process (peak memory: benchmarks/measure.py). Next to it, one training
step of the rest of the network at the quick size, without and with the energy."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import naive
from benchmarks.measure import PeakMemory, fresh
from wsss_edu import rrm

NAIVE_GB = float(os.environ.get("BENCH_NAIVE_GB", 3))
SIGMA_XY = 50.0


def _inputs(n, c, h):
    torch.manual_seed(0)
    logits = torch.randn(n, c, h, h, requires_grad=True)
    img, lab = torch.rand(n, 3, h, h) * 255, torch.randint(0, c, (n, h, h))
    return logits, img, lab


def energy(form: str, n: int, c: int, h: int, chunk: int = 1024) -> dict:
    """One forward + backward of the ``form`` ('chunked' or 'naive') energy: time, peak, value."""
    logits, img, lab = _inputs(n, c, h)
    small = (logits[:1, :, :8, :8].softmax(1), img[:1, :, :8, :8], lab[:1, :8, :8])
    rrm.dense_energy_loss(*small).backward()  # warm-up
    with PeakMemory() as mem:
        t = time.perf_counter()
        if form == "chunked":
            e = rrm.dense_energy_loss(logits.softmax(1), img, lab, sigma_xy=SIGMA_XY, chunk=chunk)
        else:
            e = naive.naive_energy(logits.softmax(1), img, lab, sigma_xy=SIGMA_XY)
        e.backward()
        s = time.perf_counter() - t
    return {"s": s, "peak_mb": mem.mb, "value": float(e.detach())}


@pytest.mark.parametrize(
    "name, n, c, h",
    [
        ("quick: 16 x 32², 7 classes", 16, 7, 32),
        ("96², 21 classes", 1, 21, 96),
        ("full: 1 x 161², 21 classes", 1, 21, 161),
    ],
)
def test_energy_loss(figures, name, n, c, h):
    ours = fresh("test_bench_rrm", "energy", "chunked", n, c, h)
    need = naive.naive_energy_bytes(h * h) / 2**30
    if need <= NAIVE_GB:
        ref = fresh("test_bench_rrm", "energy", "naive", n, c, h)
        diff = abs(ours["value"] - ref["value"]) / abs(ref["value"])
        ref_name, agree = "naive N x N", f"values agree to {diff:.1e} (relative)"
    else:
        # Too large to run here: the naive form measured at the largest side it may use, its time
        # and peak scaled by (N / N')² — both grow as the number of pairs.
        side = naive_side(NAIVE_GB)
        ref, scale = naive_scaled(n, c, side, h)
        ours_small = fresh("test_bench_rrm", "energy", "chunked", n, c, side)
        diff = abs(ours_small["value"] - ref["value"]) / abs(ref["value"])
        ref_name = f"naive at {side}² x {scale:.1f}, estimated (~{need:.0f} GB)"
        agree = (
            f"values agree at {side}² to {diff:.1e}; BENCH_NAIVE_GB={need + 1:.0f} measures "
            "the naive form at this size"
        )
    label = f"dense energy {name}, chunked f+b"
    figures.record(f"{label}: time", ours["s"], "s", ref["s"], ref_name, note=agree)
    figures.record(f"{label}: peak memory", ours["peak_mb"], "MB", ref["peak_mb"], ref_name)


def naive_side(gigabytes: float) -> int:
    """The largest square side whose naive energy fits ``gigabytes`` (its estimated peak)."""
    side = int((gigabytes * 2**30 / naive.naive_energy_bytes(1)) ** 0.25)
    while naive.naive_energy_bytes((side + 1) ** 2) <= gigabytes * 2**30:
        side += 1
    while side > 1 and naive.naive_energy_bytes(side**2) > gigabytes * 2**30:
        side -= 1
    return side


def naive_scaled(n: int, c: int, side: int, h: int) -> tuple[dict, float]:
    """The naive energy measured at ``side``², its time and peak memory scaled to ``h``² by the
    ratio of pixel pairs (h² / side²)²; returns (figures with the measured value, the scale)."""
    small = fresh("test_bench_rrm", "energy", "naive", n, c, side)
    scale = (h * h / (side * side)) ** 2
    scaled = {"s": small["s"] * scale, "peak_mb": small["peak_mb"] * scale}
    return dict(small, **scaled), scale


STEP = r"""
import json, time, numpy as np, torch
from wsss_edu import rrm
from wsss_edu.data import images_to_tensor
from wsss_edu.toy import ToyDataset
ds = ToyDataset("train", n=16, seed=0, size=64)
b = {"image": images_to_tensor(np.stack([ds[i]["image"] for i in range(16)])),
     "labels": torch.as_tensor(np.stack([ds[i]["labels"] for i in range(16)])).float()}
net = rrm.RRMNet(b["labels"].shape[1], "small", dilation=2, seg_channels=128)
out = {}
for joint in (False, True, False, True):
    t = time.perf_counter()
    rrm.rrm_loss(net, b, joint=joint, sigma_xy=20.0)["loss"].backward()
    out["joint" if joint else "ce"] = time.perf_counter() - t
print(json.dumps(out))
"""


def test_training_step_with_and_without_the_energy(figures):
    res = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    figures.record(
        "RRM step, 16 toy images of 64 px: joint loss",
        r["joint"],
        "s",
        r["ce"],
        "CE-only step",
        note="the energy's share of a step",
    )
