"""Resolve requirements.lock for every platform and Python the course supports (resolution only).

``requirements.lock`` is one universal file (``uv pip compile --universal``: pins with environment
markers). CI installs it on Linux x86-64 with Python 3.11 only, so this script is what says it
installs anywhere else: for each target below it runs

    uv pip compile requirements.lock --python-platform PLATFORM --python-version PYTHON

which fetches each pinned release's metadata and wheel list and fails when a pin has no wheel for
that target or a dependency conflicts there. It also fails when the resolution needs a package or
a version the lock does not pin (the lock is incomplete for that target), and it resolves with
every package except ``BUILD_ALLOWED`` limited to wheels (``--only-binary``): the course must
install without a compiler, only the optional dense CRF (pydensecrf2) is an sdist.

Nothing is installed. Uses the registry (uv's cache makes a second run fast). Exit status 1 names
every target that does not resolve, with uv's reason; run ``make lock-check`` (or this file with
``--only linux-x86_64``) to repeat it, ``make lock`` to recompile the lock.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"

# The Pythons the course supports; pyproject's requires-python must admit exactly these
# (tests/test_lock.py checks it). torch 2.15.0 has no wheel for 3.10.
PYTHONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Platform:
    """A platform to resolve for: uv's ``--python-platform`` value and the environment it needs."""

    name: str
    uv_platform: str
    pythons: tuple[str, ...] = PYTHONS
    env: dict[str, str] = field(default_factory=dict)


PLATFORMS = (
    Platform("linux-x86_64", "x86_64-unknown-linux-gnu"),
    Platform("linux-aarch64", "aarch64-unknown-linux-gnu"),
    Platform("windows-x86_64", "x86_64-pc-windows-msvc"),
    # torch 2.15.0's macOS wheels are built for macOS 14 (Sonoma) and later on Apple silicon.
    Platform("macos-arm64", "aarch64-apple-darwin", env={"MACOSX_DEPLOYMENT_TARGET": "14.0"}),
    # Intel Macs: PyTorch's last build for them is 2.2.2 (cp38-cp312), so no Python 3.13 there.
    Platform("macos-x86_64", "x86_64-apple-darwin", pythons=("3.11", "3.12")),
)

# Packages that may be built from an sdist (need a compiler); every other pin must be a wheel.
BUILD_ALLOWED = frozenset({"pydensecrf2"})

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def normalize(name: str) -> str:
    """PEP 503 normal form of a distribution name (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, set[str]]:
    """The pins of a requirements file: normalized name -> versions (a universal lock may pin a
    package twice, under exclusive markers)."""
    pins: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins.setdefault(normalize(m.group(1)), set()).add(m.group(2))
    return pins


def unpinned(resolved: dict[str, set[str]], lock: dict[str, set[str]]) -> list[str]:
    """``name==version`` of every resolved pin the lock does not hold (empty: the lock is complete
    for the target)."""
    return sorted(f"{n}=={v}" for n, vs in resolved.items() for v in vs if v not in lock.get(n, ()))


def compile_command(
    uv: list[str], lock: Path, platform: Platform, python: str, wheels_only: list[str]
) -> list[str]:
    """The ``uv pip compile`` command line that resolves ``lock`` for one target. ``--python`` names
    this interpreter (used only to read an sdist's metadata): without it uv searches PATH for one of
    the target's version, which can take seconds per target, for nothing."""
    cmd = [
        *uv,
        "pip",
        "compile",
        str(lock),
        "--python",
        sys.executable,
        "--python-platform",
        platform.uv_platform,
        "--python-version",
        python,
        "--no-header",
        "--no-annotate",
        "--quiet",
    ]  # the resolution on stdout
    for name in wheels_only:
        cmd += ["--only-binary", name]
    return cmd


def check_target(
    uv: list[str], lock: Path, platform: Platform, python: str, pins: dict[str, set[str]]
) -> str | None:
    """Resolve the lock for one target; None when it resolves to the lock's own pins, otherwise
    the reason (uv's message, or the pins the lock lacks)."""
    wheels_only = sorted(n for n in pins if n not in BUILD_ALLOWED)
    env = {**os.environ, **platform.env}
    proc = subprocess.run(
        compile_command(uv, lock, platform, python, wheels_only),
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return "\n      ".join(lines[-6:]) or f"uv exited with status {proc.returncode}"
    resolved = lock_pins(proc.stdout)
    if not resolved:
        return "uv printed no resolution (expected the pins on stdout)"
    missing = unpinned(resolved, pins)
    if missing:
        return (
            "resolves, but needs pins the lock does not hold: "
            + ", ".join(missing)
            + " (run `make lock`)"
        )
    return None


def main(argv: list[str] | None = None, uv: list[str] | None = None) -> int:
    """Resolve every target (or ``--only`` some); 0 when all resolve, 1 naming those that do not.
    ``uv`` is the command that runs uv (default: this interpreter's ``-m uv``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lock", type=Path, default=LOCK, help="the lock file (default: %(default)s)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="PLATFORM",
        choices=[p.name for p in PLATFORMS],
        help="resolve only these platforms",
    )
    args = parser.parse_args(argv)
    uv = uv or [sys.executable, "-m", "uv"]
    if subprocess.run([*uv, "--version"], capture_output=True).returncode != 0:
        print(
            f"uv is not installed in {sys.executable}'s environment: run `make env`",
            file=sys.stderr,
        )
        return 2
    pins = lock_pins(args.lock.read_text())
    failed = []
    start = time.monotonic()
    for platform in PLATFORMS:
        if args.only and platform.name not in args.only:
            continue
        for python in platform.pythons:
            t0 = time.monotonic()
            reason = check_target(uv, args.lock, platform, python, pins)
            target = f"{platform.name} Python {python}"
            status = "ok" if reason is None else "FAILS"
            print(f"  {target:<28} {status}  ({time.monotonic() - t0:.1f} s)", flush=True)
            if reason is not None:
                failed.append(f"{target}: {reason}")
    print(f"lock check: {time.monotonic() - start:.1f} s")
    if failed:
        print(
            f"{args.lock.name} does not resolve for:\n  "
            + "\n  ".join(failed)
            + "\nFix requirements.in (markers, pins) and run `make lock`, then `make lock-check`.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
