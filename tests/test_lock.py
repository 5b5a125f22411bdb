"""requirements.in, requirements.lock, pyproject.toml and the Makefile's install choices agree.

Fast and offline: the resolution for every platform x Python is tools/check_lock.py (`make
lock-check`, run by .ci/run); here its pure parts run on fake uv output, and the Makefile's
TORCH=auto choice runs with an injected GPU probe and CPU index.
"""

import http.server
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK_TEXT = (REPO / "requirements.lock").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def _load_check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", REPO / "tools" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_lock"] = module  # dataclasses look the module up while the class is made
    spec.loader.exec_module(module)
    return module


check_lock = _load_check_lock()
PINS = check_lock.lock_pins(LOCK_TEXT)


def _lock_entries(text: str) -> dict[str, set[str]]:
    """Each pinned package -> the packages (or ``-r requirements.in``) its ``# via`` names."""
    entries: dict[str, set[str]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            name = check_lock.normalize(m.group(1))
            entries.setdefault(name, set())
            continue
        via = re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)
        if name and via and via.group(1).strip() != "via":
            entries[name].add(via.group(1).strip())
    return entries


def _pinned_versions_satisfying(req: Requirement) -> list[str]:
    spec = SpecifierSet(str(req.specifier)) if req.specifier else SpecifierSet()
    return [
        v
        for v in PINS.get(check_lock.normalize(req.name), ())
        if spec.contains(v, prereleases=True)
    ]


@pytest.mark.parametrize("group", ["dependencies", *PYPROJECT["project"]["optional-dependencies"]])
def test_every_pyproject_requirement_is_pinned_in_the_lock_within_its_bounds(group):
    reqs = (
        PYPROJECT["project"]["dependencies"]
        if group == "dependencies"
        else PYPROJECT["project"]["optional-dependencies"][group]
    )
    for text in reqs:
        req = Requirement(text)
        pinned = PINS.get(check_lock.normalize(req.name))
        assert pinned, (
            f"pyproject's {group} needs {req.name}, requirements.lock has no pin: add it "
            "to requirements.in and run `make lock`"
        )
        assert set(_pinned_versions_satisfying(req)) == pinned, (
            f"requirements.lock pins {req.name} {sorted(pinned)}, outside pyproject's {text!r}"
        )


def test_every_line_of_requirements_in_is_pinned_in_the_lock():
    for line in (REPO / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        assert _pinned_versions_satisfying(req), (
            f"requirements.in asks {line!r}; requirements.lock pins {sorted(PINS.get(req.name, []))}: run `make lock`"
        )


def test_the_pydensecrf2_is_optional_and_ruff_exact():
    core = [Requirement(r).name for r in PYPROJECT["project"]["dependencies"]]
    assert "pydensecrf2" not in core
    assert any(
        Requirement(r).name == "pydensecrf2"
        for r in PYPROJECT["project"]["optional-dependencies"]["crf"]
    )
    # the lock installs it only where it builds
    line = next(ln for ln in LOCK_TEXT.splitlines() if ln.startswith("pydensecrf2=="))
    assert "python_full_version < '3.13'" in line
    assert len(PINS["ruff"]) == 1, (
        "ruff must be one exact version everywhere (formatting is reproducible)"
    )


def test_requires_python_admits_exactly_the_pythons_the_lock_check_covers():
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    pythons = check_lock.PYTHONS
    assert all(spec.contains(p) for p in pythons), (spec, pythons)
    lowest = min(pythons, key=lambda v: tuple(map(int, v.split("."))))
    major, minor = map(int, lowest.split("."))
    assert not spec.contains(f"{major}.{minor - 1}"), (
        f"requires-python {spec} admits {major}.{minor - 1}, which tools/check_lock.py never resolves"
    )
    for platform in check_lock.PLATFORMS:
        assert set(platform.pythons) <= set(pythons), platform
    # `make lock` compiles for the same lowest Python, as one universal file
    lock_recipe = re.search(r"^lock:.*\n((?:\t.*\n)+)", MAKEFILE, re.M).group(1)
    assert "--universal" in lock_recipe
    assert re.search(rf"--python-version {re.escape(lowest)}\b", lock_recipe), lock_recipe


def test_the_lock_forks_where_platforms_need_different_pins():
    # a universal lock: markers, and torch for Intel Macs apart from the pair CI installs
    assert PINS["torch"] == {"2.15.0", "2.2.2"}
    assert any(
        "sys_platform == 'darwin'" in ln
        for ln in LOCK_TEXT.splitlines()
        if ln.startswith("torch==")
    )


def test_the_cpu_install_leaves_out_only_what_nothing_else_needs():
    """TORCH=cpu installs the lock minus CUDA_ONLY: every dropped entry must be needed only by torch
    or by other dropped entries, and torch/torchvision must stay."""
    pattern = re.search(r"^CUDA_ONLY := (.+)$", MAKEFILE, re.M).group(1).strip()
    pin_lines = [ln for ln in LOCK_TEXT.splitlines() if re.match(r"^[A-Za-z0-9]", ln)]
    dropped = {
        check_lock.normalize(re.match(r"^([^=]+)==", ln).group(1))
        for ln in pin_lines
        if re.search(pattern, ln)
    }
    kept = {
        check_lock.normalize(re.match(r"^([^=]+)==", ln).group(1))
        for ln in pin_lines
        if not re.search(pattern, ln)
    }
    assert {"torch", "torchvision", "numpy"} <= kept
    assert dropped and all(n.startswith(("nvidia-", "cuda-")) or n == "triton" for n in dropped), (
        f"CUDA_ONLY drops {sorted(dropped)}: only nvidia-*, cuda-* and triton may go"
    )
    entries = _lock_entries(LOCK_TEXT)
    for name in dropped:
        needers = {check_lock.normalize(v) for v in entries[name]}
        assert needers <= dropped | {"torch"}, (
            f"{name} is needed by {needers - dropped - {'torch'}}"
        )


def test_unpinned_names_what_the_lock_lacks():
    lock = check_lock.lock_pins("a==1.0 ; sys_platform == 'linux'\n    # via b\nA_==2\nb==3\n")
    assert lock == {"a": {"1.0"}, "a-": {"2"}, "b": {"3"}}
    resolved = check_lock.lock_pins("a==1.0\nb==4\nc==5\n")
    assert check_lock.unpinned(resolved, lock) == ["b==4", "c==5"]
    assert check_lock.unpinned(check_lock.lock_pins("a==1.0\nb==3"), lock) == []


def _fake_uv(tmp_path, stdout="", stderr="", rc=0):
    """A stand-in for `python -m uv`: prints the given output, exits with rc."""
    script = tmp_path / "fake_uv.py"
    script.write_text(
        f"import sys\nsys.stdout.write({stdout!r})\nsys.stderr.write({stderr!r})\n"
        f"sys.exit({rc} if sys.argv[1:2] != ['--version'] else 0)\n"
    )
    return [sys.executable, str(script)]


def test_check_target_reports_uv_failures_and_missing_pins(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.15.0\nnumpy==2.4.6\n")
    pins = check_lock.lock_pins(lock.read_text())
    plat = check_lock.PLATFORMS[0]
    ok = _fake_uv(tmp_path, stdout="torch==2.15.0\nnumpy==2.4.6\n")
    assert check_lock.check_target(ok, lock, plat, "3.11", pins) is None
    extra = _fake_uv(tmp_path, stdout="torch==2.15.0\nnumpy==2.4.6\nsympy==1.14.0\n")
    assert "sympy==1.14.0" in check_lock.check_target(extra, lock, plat, "3.11", pins)
    silent = _fake_uv(tmp_path, stdout="")
    assert "no resolution" in check_lock.check_target(silent, lock, plat, "3.11", pins)
    bad = _fake_uv(tmp_path, stderr="error: torch==2.15.0 has no wheels for cp310\n", rc=1)
    assert "no wheels for cp310" in check_lock.check_target(bad, lock, plat, "3.11", pins)
    # every pinned package but the compiler-built CRF must come as a wheel
    cmd = check_lock.compile_command(["uv"], lock, plat, "3.12", ["numpy", "torch"])
    assert cmd[cmd.index("--python-platform") + 1] == plat.uv_platform
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--only-binary"] == ["numpy", "torch"]


def test_main_fails_naming_the_target(tmp_path, capsys):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.15.0\n")
    bad = _fake_uv(tmp_path, stderr="error: no matching platform tag\n", rc=1)
    assert check_lock.main(["--lock", str(lock), "--only", "windows-x86_64"], uv=bad) == 1
    err = capsys.readouterr().err
    assert "windows-x86_64 Python 3.11: error: no matching platform tag" in err
    assert "linux" not in err
    ok = _fake_uv(tmp_path, stdout="torch==2.15.0\n")
    assert check_lock.main(["--lock", str(lock), "--only", "macos-arm64"], uv=ok) == 0


def _torch_choice(**variables):
    args = ["make", "-s", "-C", str(REPO), "torch-choice", f"PYTHON={sys.executable}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout.strip(), proc.stderr.strip()


@pytest.fixture
def cpu_index(tmp_path):
    """A local stand-in for PyTorch's CPU index (answers for /torch/)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a>torch-2.15.0+cpu</a>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(
    shutil.which("make") is None or sys.platform != "linux", reason="needs make on Linux"
)
def test_torch_auto_picks_cpu_only_when_there_is_no_gpu_and_the_cpu_index_answers(
    tmp_path, cpu_index
):
    no_gpu = {"NVIDIA_SMI": str(tmp_path / "no-nvidia-smi")}
    rc, out, err = _torch_choice(TORCH="auto", TORCH_CPU_INDEX=cpu_index, **no_gpu)
    assert (rc, out) == (0, "cpu"), err
    # the index unreachable (a closed port): the registry's pair, and one line saying why
    rc, out, err = _torch_choice(TORCH="auto", TORCH_CPU_INDEX="http://127.0.0.1:9", **no_gpu)
    assert (rc, out) == (0, "registry")
    assert "http://127.0.0.1:9 is not reachable" in err and "TORCH=cpu" in err
    # an NVIDIA driver: the registry's CUDA build, even where the CPU index answers
    rc, out, err = _torch_choice(TORCH="auto", TORCH_CPU_INDEX=cpu_index, NVIDIA_SMI="true")
    assert (rc, out) == (0, "registry") and "nvidia-smi" in err
    # explicit choices need no probe; anything else names the valid values
    assert _torch_choice(TORCH="cpu", TORCH_CPU_INDEX="http://127.0.0.1:9")[:2] == (0, "cpu")
    assert _torch_choice(TORCH="cuda", TORCH_CPU_INDEX=cpu_index)[:2] == (0, "registry")
    rc, out, err = _torch_choice(TORCH="gpu")
    assert rc != 0 and "TORCH=auto, TORCH=cpu or TORCH=cuda" in err


def test_ci_installs_the_registrys_pair_and_checks_the_lock():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^export TORCH=cuda$", ci, re.M)
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip().startswith("make ")]
    assert commands.index("make lock-check") < commands.index("make test"), commands
