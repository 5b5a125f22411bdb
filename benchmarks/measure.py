"""Measuring helpers for ``make bench``: a case run in a fresh Python process, so that its peak
memory is its own, and the peak itself.

Peak memory here is the process's peak resident set size during the measured computation minus
its resident size at the start, in a fresh process (Linux: the peak, VmHWM, is reset at the start
through /proc/self/clear_refs; elsewhere the growth of ``ru_maxrss``, which undercounts when the
imports peaked higher). That counts every byte the
computation touches — torch's CPU tensors included, which ``tracemalloc`` cannot see (torch
allocates outside Python's allocator) and which the torch profiler reports per operator, not as
a peak — so it is what decides whether the computation fits a machine's memory."""

import importlib
import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def _ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS: bytes, Linux: KB


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.mb``: the peak resident set size inside the block
    minus the resident size at its start, MB."""

    def __enter__(self):
        self.reset = False
        try:  # "5" resets the peak resident set size (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = _status_mb("VmHWM") is not None
        except OSError:
            pass
        self.start = _status_mb("VmRSS") if self.reset else _ru_maxrss_mb()
        return self

    def __exit__(self, *exc):
        self.mb = (_status_mb("VmHWM") if self.reset else _ru_maxrss_mb()) - self.start
        return False


def fresh(module: str, func: str, *args) -> dict:
    """``benchmarks.<module>.<func>(*args)`` (JSON-able arguments) in a fresh Python process with
    this process's environment; returns the dict it returns."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", module, func, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if res.returncode:
        raise RuntimeError(f"benchmarks.{module}.{func}{tuple(args)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    mod = importlib.import_module(f"benchmarks.{sys.argv[1]}")
    print(json.dumps(getattr(mod, sys.argv[2])(*json.loads(sys.argv[3]))))
