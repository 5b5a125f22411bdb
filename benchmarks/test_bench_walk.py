"""Benchmark of IRNet's random walk at a VOC-sized image (500 x 375: a 125 x 94 grid at stride 4,
11,750 cells; radius 5, beta 10, 2^8 steps; 3 maps: the background and two classes) against the
reference code's formulation (benchmarks/naive.py): the dense (HW/16)² transition matrix T,
squared 8 times, then applied once. Each side runs in a fresh process (peak memory:
benchmarks/measure.py).

The dense side is measured in parts: building T (whole), and ``WALK_ROWS`` rows of one squaring
(each row of T @ T costs the same, so the squaring takes rows-time x 11,750 / rows; the walk takes
that 8 times — ~16 min on one core, too long for ``make bench``); ``BENCH_WALK_ROWS=11750`` runs a
whole squaring. Its peak memory is measured with T and the whole product T @ T allocated and
written (as a squaring holds both). Denormal floats are flushed to zero on both sides (late
powers of T hold values below 1e-38, which CPUs process ~10x slower; a GPU does not care)."""

import os
import time

import torch

from benchmarks import naive
from benchmarks.measure import PeakMemory, fresh
from wsss_edu import irnet

GRID = (94, 125)  # ceil(375 / 4), ceil(500 / 4)
EXP_TIMES = 8
WALK_ROWS = int(os.environ.get("BENCH_WALK_ROWS", 256))


def _inputs():
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    b = torch.rand(*GRID) * 0.5
    return torch.rand(3, *GRID), b


def ours(dtype: str) -> dict:
    """The package's pair-route walk (in float64, its default, or float32)."""
    cams, b = _inputs()
    with PeakMemory() as mem:
        t = time.perf_counter()
        irnet.random_walk(cams, b, exp_times=EXP_TIMES, pair_dtype=getattr(torch, dtype))
        s = time.perf_counter() - t
    return {"s": s, "peak_mb": mem.mb}


def dense(rows: int) -> dict:
    """IRNet's formulation in float32 (the reference's dtype): T built, ``rows`` rows of one
    squaring timed, the whole product buffer held."""
    cams, b = _inputs()
    with PeakMemory() as mem:
        t = time.perf_counter()
        tm = naive.dense_transition(b)
        build = time.perf_counter() - t
        out = torch.zeros_like(tm)
        rows = min(rows, tm.shape[0])
        t = time.perf_counter()
        naive.squaring_rows(tm, rows, out)
        part = time.perf_counter() - t
        t = time.perf_counter()
        (cams * (1 - b)).reshape(3, -1) @ tm  # the final product, once
        final = time.perf_counter() - t
    squaring = part * tm.shape[0] / rows
    return {
        "build_s": build,
        "squaring_s": squaring,
        "s": build + EXP_TIMES * squaring + final,
        "rows": rows,
        "peak_mb": mem.mb,
        "matrix_mb": tm.numel() * tm.element_size() / 2**20,
    }


def test_random_walk_at_voc_size(figures):
    ref = fresh("test_bench_walk", "dense", WALK_ROWS)
    name = f"walk {GRID[1]}x{GRID[0]} grid (VOC 500x375)"
    note = (
        f"dense: build {ref['build_s']:.1f} s + {EXP_TIMES} squarings of "
        f"{ref['squaring_s']:.0f} s (from {ref['rows']} rows)"
    )
    for dtype in ("float64", "float32"):
        r = fresh("test_bench_walk", "ours", dtype)
        figures.record(
            f"{name}, pairs {dtype}: time", r["s"], "s", ref["s"], "dense T, f32", note=note
        )
        figures.record(
            f"{name}, pairs {dtype}: peak memory",
            r["peak_mb"],
            "MB",
            ref["peak_mb"],
            "dense T, f32",
            note=f"T alone {ref['matrix_mb']:.0f} MB; peak RSS growth",
        )
