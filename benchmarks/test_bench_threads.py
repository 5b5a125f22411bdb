"""Benchmark of training on a busy machine (figures, not pass/fail): ``make bench``, or alone
``python -m pytest benchmarks/test_bench_threads.py -q -s -p no:cacheprovider`` (about 1-2 minutes).

Issue 26: on a machine shared with other work, notebook 00's training cell went from 110 s to
811 s — torch's OpenMP threads waiting for a descheduled team-mate at every operation, and
spinning while they wait. This runs that cell's work (the quick profile's fully-supervised U-Net:
64-px toy images, batches of 16, Adam, per-pixel cross-entropy, flips) for a fixed number of steps
in a fresh process with as many threads as usable cores, clean and loaded (a second, CPU-bound
process — a busy loop — on the same cores), with libgomp's default waiting (spinning) and with
``OMP_WAIT_POLICY=PASSIVE`` (what :func:`wsss_edu.threads.openmp_env` gives the processes the
package starts). It prints seconds per step and the ratios: loaded / clean for each policy, and
default / passive when loaded, passive / default when clean (its cost on an idle machine); and
one thread (no team-mate to wait for) for comparison.
``WSSS_BENCH_THREAD_STEPS`` (default 12) sets the steps timed.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = int(os.environ.get("WSSS_BENCH_THREAD_STEPS", "12"))

# The child: notebook 00's reference training (quick profile) for STEPS steps after 2 untimed ones.
CHILD = """
import sys, time, torch
from wsss_edu import data, models, toy, train
steps = int(sys.argv[1])
train.seed_everything(0)
ds = toy.ToyDataset("train", n=64, seed=0, size=64)
loader = torch.utils.data.DataLoader(data.ArrayDataset(ds.arrays(("image", "mask")), flip=True),
                                     batch_size=16, shuffle=True, drop_last=True)
batches = list(loader)
net = models.make_segmenter("unet", ds.num_classes)
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
def step(batch):
    loss = train.cross_entropy_loss(net, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for b in batches[:2]:
    step(b)
t = time.perf_counter()
for i in range(steps):
    step(batches[i % len(batches)])
print((time.perf_counter() - t) / steps, torch.get_num_threads())
"""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _seconds_per_step(passive: bool, loaded: bool, threads: int | None = None) -> tuple:
    """(seconds per step, torch threads) of the child in a fresh process with ``threads`` threads
    (default: one per usable core), with a busy-loop process on the same cores while it runs when
    ``loaded``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads or _cores()))
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    load = None
    if loaded:  # inherits this process's affinity: the same cores as the child
        load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(STEPS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.split()
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return float(out[0]), int(out[1])


def test_training_cell_clean_vs_loaded(figures):
    times = {}
    for passive in (False, True):
        for loaded in (False, True):
            times[passive, loaded], threads = _seconds_per_step(passive, loaded)
    one = {loaded: _seconds_per_step(False, loaded, threads=1)[0] for loaded in (False, True)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nthreads: notebook 00's training cell (U-Net, 64 px, batch 16), {STEPS} steps, "
        f"{threads} threads on {_cores()} cores (load average {load:.1f} at the end)"
    )
    for passive in (False, True):
        name = "OMP_WAIT_POLICY=PASSIVE" if passive else "default OpenMP waiting"
        clean, loaded = times[passive, False], times[passive, True]
        print(
            f"  {name:24s} clean {clean:.3f} s/step, loaded {loaded:.3f} s/step: "
            f"ratio loaded/clean {loaded / clean:.2f}x"
        )
    print(
        f"  {'1 thread':24s} clean {one[False]:.3f} s/step, loaded {one[True]:.3f} s/step: "
        f"ratio loaded/clean {one[True] / one[False]:.2f}x"
    )
    print(
        f"  ratio default/passive, loaded: {times[False, True] / times[True, True]:.2f}x; "
        f"clean: {times[False, False] / times[True, False]:.2f}x"
    )
    for passive in (False, True):
        name = "passive" if passive else "default waiting"
        figures.record(
            f"threads: nb00 training, loaded, {name}",
            times[passive, True],
            "s/step",
            times[passive, False],
            "the same, clean",
            note=f"{threads} threads, {_cores()} cores, busy-loop load",
        )
    figures.record(
        "threads: nb00 training loaded, default/passive",
        times[False, True],
        "s/step",
        times[True, True],
        "OMP_WAIT_POLICY=PASSIVE, loaded",
    )
    figures.record(
        "threads: nb00 training clean, passive/default",
        times[True, False],
        "s/step",
        times[False, False],
        "default waiting, clean",
        note="what passive waiting costs on an idle machine",
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.ratio import Recorder

    test_training_cell_clean_vs_loaded(Recorder())
