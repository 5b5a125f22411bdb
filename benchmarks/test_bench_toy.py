"""Benchmarks (figures, not pass/fail): ``make bench``. The toy world must make 1,000 images of
96 px in under 10 s on one core (the issue's target)."""

from wsss_edu.toy import ToyDataset


def _generate(n, size):
    ds = ToyDataset("train", n=n, seed=0, size=size, cache=False)
    for i in range(n):
        ds[i]


def test_toy_world_1000_images_96px(benchmark):
    benchmark.pedantic(_generate, args=(1000, 96), rounds=3, iterations=1)
    print(
        f"\ntoy world: 1000 images of 96 px in {benchmark.stats.stats.mean:.2f} s (mean of 3, one core)"
    )


def test_toy_world_100_images_320px(benchmark):
    benchmark.pedantic(_generate, args=(100, 320), rounds=2, iterations=1)
