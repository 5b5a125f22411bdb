"""Headless progress (issue 25, item 6): with no live frontend — a papermill kernel of the runner or
the full-scale pipeline, a run piped into a file — the package's progress bars write plain,
newline-terminated lines with n/total, rate and ETA, not a widget logged once as "0%"; in a
notebook or a terminal they stay ``tqdm.auto``'s."""

import json
import os
import re

import nbformat
import pytest
import torch
import tqdm.auto

from wsss_edu import pipeline, progress, train
from wsss_edu.errors import ParameterError
from wsss_edu.params import repo_root

LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\] (?P<desc>[^:]+): (?P<n>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\)"
    r"(?P<when>, [\d:]+ elapsed, ETA [\d:?]+| in [\d:]+), (?P<rate>[\d.]+ it/s|[\d.]+ s/it)"
)


@pytest.fixture
def log_mode(monkeypatch):
    """WSSS_PROGRESS=log with a line at every update."""
    monkeypatch.setenv(progress.MODE_ENV, "log")
    monkeypatch.setenv(progress.SECONDS_ENV, "0")


def _lines(err: str) -> list:
    assert "\r" not in err and "\x1b" not in err  # no redraws, no cursor moves
    assert err == "" or err.endswith("\n")
    return err.splitlines()


def test_log_mode_writes_a_plain_line_per_interval_and_a_final_one(log_mode, capsys):
    assert [i for i in progress.bar(range(3), desc="x")] == [0, 1, 2]
    lines = _lines(capsys.readouterr().err)
    found = [LINE.match(line) for line in lines]
    assert all(found), lines
    assert [(m["n"], m["total"], m["pct"]) for m in found] == [
        ("1", "3", "33"),
        ("2", "3", "67"),
        ("3", "3", "100"),
    ]
    assert all("ETA" in m["when"] for m in found[:-1]) and found[-1]["when"].startswith(" in ")


def test_the_interval_bounds_the_lines_of_a_fast_loop(monkeypatch, capsys):
    """At the default interval (30 s) a loop of a thousand quick steps writes one line, its last."""
    monkeypatch.setenv(progress.MODE_ENV, "log")
    monkeypatch.delenv(progress.SECONDS_ENV, raising=False)
    for _ in progress.bar(range(1000), desc="fast"):
        pass
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 1 and LINE.match(lines[0])["n"] == "1000", lines


def test_a_manual_bar_logs_the_postfix_and_its_start_offset(log_mode, capsys):
    """fit's way: update() per batch, set_postfix(epoch, loss), resumed at ``initial``."""
    with progress.bar(total=4, initial=2, desc="train", leave=False) as b:
        for k in range(2):
            b.update(1)
            b.set_postfix(epoch=k, loss="0.5000")
    lines = _lines(capsys.readouterr().err)
    assert lines and all(LINE.match(line) for line in lines), lines
    assert "3/4 (75%)" in lines[0] and lines[-1].endswith("epoch=1, loss=0.5000")
    assert len(lines) == 2  # one per update (set_postfix writes none of its own), the last
    assert "4/4 (100%) in " in lines[-1]


def test_a_short_inner_loop_leaves_no_line(monkeypatch, capsys):
    """leave=False (tqdm erases such a bar) and done within the interval: nothing in the log."""
    monkeypatch.setenv(progress.MODE_ENV, "log")
    monkeypatch.setenv(progress.SECONDS_ENV, "3600")
    list(progress.bar(range(5), desc="inner", leave=False))
    assert capsys.readouterr().err == ""


def test_disabled_bars_write_nothing(log_mode, capfd):
    list(progress.bar(range(3), desc="x", disable=True))
    b = progress.bar(total=3, desc="y", disable=True)
    b.update(3)
    b.close()
    assert capfd.readouterr() == ("", "")


def test_unknown_total_and_byte_counts_read_in_their_units(log_mode, capsys):
    list(progress.bar(iter(range(2)), desc="stream"))
    with progress.bar(total=3 << 20, unit="B", unit_scale=True, unit_divisor=1024, desc="dl") as b:
        b.update(3 << 20)
    lines = _lines(capsys.readouterr().err)
    assert re.search(r"stream: 2 it in [\d:]+, [\d.?]+ it/s$", lines[-2]), lines
    assert re.search(r"dl: 3\.00MB/3\.00MB \(100%\) in [\d:]+, .*B/s$", lines[-1]), lines


def test_interactive_sessions_keep_tqdm_auto(monkeypatch, capsys):
    """A terminal (stderr a TTY) or WSSS_PROGRESS=bar: tqdm.auto's own bar, redrawn with \\r."""
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setattr(progress, "_is_tty", lambda stream: True)
    b = progress.bar(range(3), desc="x")
    assert type(b) is tqdm.auto.tqdm and not isinstance(b, progress.LogBar)
    list(b)
    assert "\r" in capsys.readouterr().err
    monkeypatch.setattr(progress, "_is_tty", lambda stream: False)
    monkeypatch.setenv(progress.MODE_ENV, "bar")
    b = progress.bar(total=2, desc="y", leave=False)
    assert type(b) is tqdm.auto.tqdm
    b.close()


def test_the_rule_that_picks_lines_or_bars():
    assert progress.choose_mode("log", in_kernel=True, stderr_is_tty=True) == "log"
    assert progress.choose_mode("BAR", in_kernel=False, stderr_is_tty=False) == "bar"
    assert progress.choose_mode(None, in_kernel=True, stderr_is_tty=False) == "bar"  # a notebook
    assert progress.choose_mode("", in_kernel=False, stderr_is_tty=True) == "bar"  # a terminal
    assert progress.choose_mode("auto", in_kernel=False, stderr_is_tty=False) == "log"  # > file
    with pytest.raises(ParameterError, match=r"WSSS_PROGRESS='lines'.*'log', 'bar', 'auto'"):
        progress.choose_mode("lines", False, False)
    assert progress.interval_seconds(None) == 30 and progress.interval_seconds("2.5") == 2.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ParameterError, match=r"WSSS_PROGRESS_SECONDS=.*number >= 0"):
            progress.interval_seconds(bad)


def test_runner_and_pipeline_set_log_mode_for_their_kernels_and_keep_a_users_choice(monkeypatch):
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    with progress.headless_kernels():
        assert os.environ[progress.MODE_ENV] == "log"
    assert progress.MODE_ENV not in os.environ
    monkeypatch.setenv(progress.MODE_ENV, "bar")
    with progress.headless_kernels():
        assert os.environ[progress.MODE_ENV] == "bar"
    monkeypatch.setenv(progress.SECONDS_ENV, "often")
    with pytest.raises(ParameterError, match="WSSS_PROGRESS_SECONDS='often'"):
        with progress.headless_kernels():
            pass


def test_fit_logs_its_progress_with_the_loss(log_mode, capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    loader = [{"x": torch.randn(4, 2), "y": torch.randn(4, 1)} for _ in range(2)]
    train.fit(
        model,
        loader,
        lambda m, b: ((m(b["x"]) - b["y"]) ** 2).mean(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        device="cpu",
        desc="fit",
    )
    lines = _lines(capsys.readouterr().err)
    assert [LINE.match(line)["n"] for line in lines] == ["1", "2", "3", "4"], lines
    assert all(
        re.search(r"epoch=\d, loss=\d+\.\d{4}$", line) for line in lines[1:]
    )  # the last batch's
    assert "epoch=1, loss=" in lines[-1]


def test_a_pipeline_step_logs_plain_progress_lines_through_papermill(tmp_path, monkeypatch):
    """The real thing: a kernel started by papermill for a pipeline step (WSSS_PROGRESS unset in
    the caller) writes the lines into steps/<nb>/log.txt and the executed notebook's stderr, no widget."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from wsss_edu import progress\nfor i in progress.bar(range(3), desc='x'):\n    pass"
        )
    ]
    path = tmp_path / "probe.ipynb"
    path.write_text(json.dumps(nb))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    monkeypatch.setenv(progress.SECONDS_ENV, "0")
    step = tmp_path / "steps" / "probe"
    pipeline.run_step(path, {}, step, timeout=120)
    log_lines = [line for line in _lines((step / "log.txt").read_text()) if LINE.match(line)]
    assert [LINE.match(line)["n"] for line in log_lines] == ["1", "2", "3"], log_lines
    outputs = json.loads((step / "probe.ipynb").read_text())["cells"][0]["outputs"]
    assert all(o["output_type"] == "stream" and o["name"] == "stderr" for o in outputs), outputs
    text = "".join("".join(o["text"]) for o in outputs)
    assert [LINE.match(line)["n"] for line in _lines(text)] == ["1", "2", "3"]
    assert progress.MODE_ENV not in os.environ  # the caller's environment is as it was
