"""The same command gives the same networks: step 1's classifier (person dropped, class-balanced,
the path notebooks 04-06 start from) trained twice in separate processes is identical to the bit.

A CPU training also depends on its thread count (the reductions split differently), which is why
:func:`wsss_edu.threads.thread_shares` gives every job the same share (tests/test_parallel.py)."""

import subprocess
import sys

SCRIPT = r"""
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from wsss_edu import cam
from wsss_edu.steps import cam_step
from wsss_edu.toy import ToyDataset
ds = ToyDataset("train", n=96, seed=0, size=48, cache=False)
cfg = cam_step.ClassifierConfig(epochs=1, batch_size=8, drop_class=0, balance=True, crop=40, seed=3)
model = cam_step.train_step1(ds, cfg, progress=False)
h = hashlib.sha256()
for name, v in model.state_dict().items():
    h.update(name.encode()); h.update(v.detach().cpu().numpy().tobytes())
print(h.hexdigest())
"""


def _trained_hash(threads: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threads)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_step1_trained_twice_in_separate_processes_is_bit_identical():
    first, second = _trained_hash(1), _trained_hash(1)
    assert len(first) == 64 and first == second
