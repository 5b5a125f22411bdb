"""nbval settings: only errors and assert cells decide (``--nbval-lax``); stderr and HTML are never
compared, so a new library warning cannot fail the suite."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += (
            "stderr",
            "text/html",
            "application/javascript",
            "application/vnd.jupyter.widget-view+json",
        )


# Each notebook's execution time under nbval (the sum of its cells), written to
# $WSSS_OUTPUT_DIR/notebook_times.json at the end of the session: the CPU times docs/instructor.md
# quotes come from this file of a `make test` run.
_TIMES = {}


def pytest_runtest_logreport(report):
    if report.when == "call" and ".ipynb::" in report.nodeid:
        nb = report.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".ipynb")
        _TIMES[nb] = _TIMES.get(nb, 0.0) + report.duration


def pytest_sessionfinish(session):
    import json
    import os
    from pathlib import Path

    out = os.environ.get("WSSS_OUTPUT_DIR")
    if _TIMES and out:
        path = Path(out) / "notebook_times.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(
            json.dumps(old | {k: round(v, 1) for k, v in _TIMES.items()}, indent=2, sort_keys=True)
            + "\n"
        )
