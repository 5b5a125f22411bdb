"""Benchmarks of the toy world (figures, not pass/fail): ``make bench``. The toy world must make
1,000 images of 96 px in under 10 s on one core (the issue's target: the reference of the first
figure); at 320 px (the full profile's size) the time per pixel is compared with the 96-px one
(1 = generation cost grows with the pixel count, no worse)."""

import time

from wsss_edu.toy import ToyDataset

TARGET_S = 10.0


def _generate(n, size):
    ds = ToyDataset("train", n=n, seed=0, size=size, cache=False)
    for i in range(n):
        ds[i]


def test_toy_world(benchmark, figures):
    benchmark.pedantic(_generate, args=(1000, 96), rounds=3, iterations=1)
    small = benchmark.stats.stats.mean
    figures.record(
        "toy world: 1000 images of 96 px (mean of 3)",
        small,
        "s",
        TARGET_S,
        "target, one core",
    )
    large = min(_timed(_generate, 100, 320) for _ in range(2))
    figures.record(
        "toy world, 320 px: time per megapixel (best of 2 x 100)",
        large / (100 * 320**2 / 1e6),
        "s",
        small / (1000 * 96**2 / 1e6),
        "the same at 96 px",
    )


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
