"""Benchmark of RRM's dense energy loss (figures, not pass/fail): ``make bench``. Time and peak
memory of one forward + backward of the exact, chunked loss at the quick profile's size (a batch
of 16 toy images of 64 px, the loss at half resolution: 32 x 32) and at the full-scale size (one
321-px crop at half resolution: 161 x 161, 21 classes), next to one training step of the rest of
the network at the quick size. Peak memory: the process's maximum resident size, measured in a
fresh subprocess per case."""

import json
import subprocess
import sys

import pytest

CASE = r"""
import json, resource, sys, time, torch
from wsss_edu import rrm
n, c, h, chunk = (int(v) for v in sys.argv[1:5])
torch.manual_seed(0)
logits = torch.randn(n, c, h, h, requires_grad=True)
img, lab = torch.rand(n, 3, h, h) * 255, torch.randint(0, c, (n, h, h))
rrm.dense_energy_loss(logits[:1, :, :8, :8].softmax(1), img[:1, :, :8, :8], lab[:1, :8, :8]).backward()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rrm.dense_energy_loss(logits.softmax(1), img, lab, sigma_xy=50.0, chunk=chunk).backward()
print(json.dumps({"s": time.perf_counter() - t,
                  "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""

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


def _run(code, *args):
    res = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name, n, c, h, chunk",
    [
        ("quick: 16 x 32², 7 classes", 16, 7, 32, 1024),
        ("full: 1 x 161², 21 classes", 1, 21, 161, 1024),
    ],
)
def test_energy_loss(benchmark, name, n, c, h, chunk):
    r = benchmark.pedantic(lambda: _run(CASE, n, c, h, chunk), rounds=1, iterations=1)
    print(
        f"\ndense energy loss, {name}: forward + backward {r['s']:.2f} s, peak +{r['peak_mb']:.0f} MB"
    )


def test_training_step_with_and_without_the_energy(benchmark):
    r = benchmark.pedantic(lambda: _run(STEP), rounds=1, iterations=1)
    print(f"\nRRM step, 16 toy images of 64 px: CE only {r['ce']:.2f} s, joint {r['joint']:.2f} s")
