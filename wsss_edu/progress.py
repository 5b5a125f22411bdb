"""Progress bars that also work with nobody watching: the package's one progress factory, :func:`bar`.

In a live notebook or a terminal, :func:`bar` is exactly ``tqdm.auto.tqdm`` (a widget, or a text
bar redrawn in place). Headless — a kernel started by papermill (``wsss_edu.runner``, the full-scale
``wsss_edu.pipeline`` whose step logs are ``steps/<notebook>/log.txt``), a run piped into a file —
such a bar is useless: the widget has no frontend to draw it and is logged once as "0%", a text bar's
``\\r`` redraws pile up in one unreadable line. There :func:`bar` returns a :class:`LogBar`, the same
tqdm object (``update``, ``set_postfix``, ``close``, iteration, ``with``) that writes plain,
newline-terminated lines to stderr — at most one every ``WSSS_PROGRESS_SECONDS`` seconds (default
30) and a last one when it closes — each with the time of day, the description, n/total, the
percentage, the elapsed time, the ETA, the rate and the postfix (a training's epoch and loss)::

    [14:02:31] CAMs: 412/1464 (28%), 00:30 elapsed, ETA 01:17, 13.7 it/s
    [14:03:48] CAMs: 1464/1464 (100%) in 01:47, 13.7 it/s

The rule that picks the kind (:func:`choose_mode`), in order:

1. ``WSSS_PROGRESS=log`` → log lines; ``WSSS_PROGRESS=bar`` → ``tqdm.auto`` (any other value but
   ``auto`` or empty is an error naming the valid ones). ``wsss_edu.runner`` and
   ``wsss_edu.pipeline`` set ``WSSS_PROGRESS=log`` for the kernels they start (:func:`headless_kernels`;
   a kernel's environment is a copy of its parent's, jupyter_client's provisioner), unless it is set
   already — ``WSSS_PROGRESS=bar python -m wsss_edu.runner`` keeps the widgets in the executed notebooks.
2. Inside a Jupyter kernel otherwise → ``tqdm.auto`` (a notebook opened by a person: the widget).
   A kernel cannot tell whether a frontend is attached, hence the variable of rule 1.
3. Elsewhere → ``tqdm.auto`` when stderr is a terminal, log lines when it is not (redirected to a
   file, a pipe, a batch system's log, ``torchrun``'s workers under a kernel).

A bar that closes with ``leave=False`` (tqdm removes it from the screen) writes its last line only if
it has written a line before, i.e. if it ran longer than the interval: a log keeps the long loops'
ends, not one line per short inner loop (an evaluation per epoch of a quick run).
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager

from tqdm.std import tqdm as _std_tqdm

from .errors import ParameterError

MODE_ENV = "WSSS_PROGRESS"  # 'log' | 'bar' | 'auto' (or unset): see the module docstring
SECONDS_ENV = "WSSS_PROGRESS_SECONDS"  # seconds between two log lines of a bar (default 30)
DEFAULT_SECONDS = 30.0
MODES = ("log", "bar", "auto")


def choose_mode(value: str | None, in_kernel: bool, stderr_is_tty: bool) -> str:
    """'log' or 'bar' from the ``WSSS_PROGRESS`` value and where the process runs (the module's rule)."""
    value = (value or "").strip().lower()
    if value in ("log", "bar"):
        return value
    if value not in ("", "auto"):
        raise ParameterError(
            f"{MODE_ENV}={value!r} is not valid: give one of {MODES} (log: plain lines "
            f"for logs; bar: tqdm's bars; auto or unset: bars in a notebook or a "
            f"terminal, lines elsewhere)"
        )
    return "bar" if in_kernel or stderr_is_tty else "log"


def interval_seconds(value: str | None) -> float:
    """The seconds between two log lines of one bar from the ``WSSS_PROGRESS_SECONDS`` value
    (unset or empty: 30; 0 writes a line at every update)."""
    if value is None or not value.strip():
        return DEFAULT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ParameterError(
            f"{SECONDS_ENV}={value!r} is not valid: give the seconds between two progress "
            f"lines, a number >= 0 (default {DEFAULT_SECONDS:g})"
        )
    return seconds


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel app; not a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    shell = (
        ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    )
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def mode() -> str:
    """'log' or 'bar' for this process now (:func:`choose_mode` of the environment)."""
    return choose_mode(os.environ.get(MODE_ENV), in_kernel(), _is_tty(sys.stderr))


def check_settings() -> None:
    """Raise :class:`ParameterError` naming the fix when ``WSSS_PROGRESS`` or
    ``WSSS_PROGRESS_SECONDS`` is malformed: before a run of hours, not at its first loop."""
    choose_mode(os.environ.get(MODE_ENV), False, False)
    interval_seconds(os.environ.get(SECONDS_ENV))


@contextmanager
def headless_kernels():
    """``WSSS_PROGRESS=log`` in this process's environment while the block runs, so that the
    kernels it starts (papermill's, which copy the environment) write log lines, not widgets. A
    value already set (``bar``, ``log``) is the user's choice and kept; the settings are checked."""
    check_settings()
    if os.environ.get(MODE_ENV, "").strip():
        yield
        return
    os.environ[MODE_ENV] = "log"
    try:
        yield
    finally:
        os.environ.pop(MODE_ENV, None)


def bar(
    iterable=None,
    total=None,
    desc=None,
    disable: bool = False,
    leave: bool = True,
    initial=0,
    **kwargs,
):
    """A progress bar over ``iterable`` (or updated by hand up to ``total``): ``tqdm.auto.tqdm``
    with these arguments in a live notebook or terminal, a :class:`LogBar` writing plain lines
    when headless (the module's rule). ``kwargs`` are tqdm's (``unit``, ``unit_scale``, ...)."""
    if mode() == "log":
        return LogBar(
            iterable,
            total=total,
            desc=desc,
            disable=bool(disable),
            leave=leave,
            initial=initial,
            seconds=interval_seconds(os.environ.get(SECONDS_ENV)),
            **kwargs,
        )
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc=desc, disable=disable, leave=leave, initial=initial, **kwargs
    )


# ------------------------------------------------------------------------------------------------
# The headless bar
# ------------------------------------------------------------------------------------------------


class _Discard:
    """A file that keeps nothing: tqdm's own drawing (``\\r``, padding, cursor moves) goes here."""

    def write(self, s):
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


def _amount(n, unit: str, unit_scale, divisor) -> str:
    """``n`` things in words: '1464' / '12.3MB' (with tqdm's unit_scale)."""
    if unit_scale and unit_scale is not True:
        n = n * unit_scale
    if unit_scale:
        return _std_tqdm.format_sizeof(n, unit, divisor)
    return f"{n:g}" if isinstance(n, float) else str(n)


def _rate_text(rate, unit: str, unit_scale, divisor) -> str:
    """'13.7 it/s', '42.0 s/it' (slower than one a second), '1.20MB/s' or '? it/s'."""
    if not rate:
        return f"? {unit}/s"
    if unit_scale:
        return f"{_amount(rate, unit, unit_scale, divisor)}/s"
    if rate < 1:
        return f"{1 / rate:.1f} s/{unit}"
    return f"{rate:.1f} {unit}/s"


def log_line(info: dict, final: bool = False, clock=None) -> str:
    """One progress line (no newline) from a tqdm ``format_dict``: time of day, description,
    n/total and percentage, elapsed time, ETA (running) or total time (``final``), rate, postfix.
    The rate is the smoothed one while running and the overall one at the end."""
    n, total, elapsed = info["n"], info["total"], info["elapsed"] or 0.0
    unit, scale, divisor = (
        info.get("unit") or "it",
        info.get("unit_scale"),
        info.get("unit_divisor") or 1000,
    )
    overall = (n - (info.get("initial") or 0)) / elapsed if elapsed > 0 else None
    rate = overall if final or not info.get("rate") else info["rate"]
    head = f"{info['prefix']}: " if info.get("prefix") else ""
    done = _amount(n, unit, scale, divisor)
    if total:
        done += f"/{_amount(total, unit, scale, divisor)} ({100 * n / total:.0f}%)"
    elif not scale:
        done += f" {unit}"
    if final:
        when = f" in {_std_tqdm.format_interval(elapsed)}"
    else:
        eta = _std_tqdm.format_interval((total - n) / rate) if total and rate else "?"
        when = f", {_std_tqdm.format_interval(elapsed)} elapsed" + (f", ETA {eta}" if total else "")
    postfix = f", {info['postfix']}" if info.get("postfix") else ""
    stamp = time.strftime("%H:%M:%S", time.localtime(clock))
    return f"[{stamp}] {head}{done}{when}, {_rate_text(rate, unit, scale, divisor)}{postfix}"


class LogBar(_std_tqdm):
    """A tqdm bar that writes :func:`log_line` lines to stderr (the stream of the moment: a
    kernel's, pytest's capture) instead of redrawing itself: one at most every ``seconds`` while it
    runs, and one when it closes (see the module docstring for ``leave=False``). tqdm's
    ``mininterval`` / ``miniters`` / ``file`` are set by it."""

    def __init__(self, *args, seconds: float = DEFAULT_SECONDS, **kwargs):
        self._seconds, self._live, self._wrote = float(seconds), False, False
        kwargs.update(file=_Discard(), mininterval=self._seconds, miniters=1, dynamic_ncols=False)
        super().__init__(*args, **kwargs)
        self._last_line_t = getattr(self, "start_t", None)
        self._live = not self.disable

    def display(self, msg=None, pos=None):
        """Write a line when ``seconds`` have passed since the bar's start or its last line and
        the bar is not at its total (its closing writes that one); tqdm's clearing (``msg=''``)
        and its first draw at creation write nothing."""
        if msg == "" or not self._live:
            return True
        now = self._time()
        finished = self.total is not None and self.n >= self.total  # close() writes that line
        if not finished and now - self._last_line_t >= self._seconds:
            self._write(log_line(self.format_dict))
            self._last_line_t = now
        return True

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        """tqdm's, without a line of its own: the next line (an update's, the last) shows it."""
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        """tqdm's, without a line of its own (as :meth:`set_postfix`)."""
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        """tqdm's, without a line of its own (as :meth:`set_postfix`)."""
        super().set_description(desc, refresh=False)

    def set_description_str(self, desc=None, refresh=True):
        """tqdm's, without a line of its own (as :meth:`set_postfix`)."""
        super().set_description_str(desc, refresh=False)

    def close(self):
        """The last line (overall rate, total time), then tqdm's own closing."""
        if self._live:
            self._live = False
            leave = abs(getattr(self, "pos", 0)) == 0 if self.leave is None else self.leave
            if leave or self._wrote:
                self._ema_dt = lambda: None  # tqdm's switch to the overall rate
                self._write(log_line(self.format_dict, final=True))
        super().close()

    def _write(self, line: str) -> None:
        stream = sys.stderr
        stream.write(line + "\n")
        stream.flush()
        self._wrote = True
