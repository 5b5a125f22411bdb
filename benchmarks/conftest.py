"""``make bench``'s session: one :class:`benchmarks.ratio.Recorder` for every benchmark (the
``figures`` fixture), its table printed at the end of the session and written as JSON to
``$WSSS_BENCH_JSON`` (default runs/bench/bench.json) with the machine it ran on."""

import os
from pathlib import Path

import pytest

from benchmarks.ratio import Recorder, machine

RECORDER = pytest.StashKey[Recorder]()
DEFAULT_JSON = Path(__file__).resolve().parent.parent / "runs" / "bench" / "bench.json"


def pytest_configure(config):
    config.stash[RECORDER] = Recorder()


@pytest.fixture(scope="session")
def figures(pytestconfig) -> Recorder:
    """The session's recorder: ``figures.record(name, value, unit, reference, reference_name,
    ratio=None, note='')``."""
    return pytestconfig.stash[RECORDER]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rec = config.stash.get(RECORDER, None)
    if rec is None or not rec.rows():
        return
    path = rec.write_json(os.environ.get("WSSS_BENCH_JSON", DEFAULT_JSON), meta=machine())
    terminalreporter.section("figures and their references (ratio = figure / reference)")
    terminalreporter.write_line(rec.table())
    terminalreporter.write_line(f"\nwritten to {path}")
