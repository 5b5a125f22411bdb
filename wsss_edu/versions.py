"""What a bug report needs: the versions of the package, Python, the platform and every library the
course uses, and what torch can run on (CUDA, cuDNN, MPS, threads).

    python -m wsss_edu.versions          (or, in a notebook: import wsss_edu; wsss_edu.show_versions())

Paste its output into the issue. A library that is missing reads "not installed"; one that is
installed but fails to import reads "<version> (import fails: <error>)" — a compiled library built
against another numpy or torch shows here instead of in the middle of a notebook. Nothing here
raises: a report is the thing to have when something is broken.
"""

from __future__ import annotations

import platform
import sys
from importlib import import_module, metadata

NOT_INSTALLED = "not installed"

# (name shown, distributions that provide it (the first one installed is reported), the module to
# import or None). Compiled libraries are imported, so that a broken build shows; the pure-Python
# ones are only looked up (importing jupyterlab and papermill takes seconds and tells nothing more).
LIBRARIES = (
    ("torch", ("torch",), "torch"),
    ("torchvision", ("torchvision",), "torchvision"),
    ("numpy", ("numpy",), "numpy"),
    ("scipy", ("scipy",), "scipy"),
    ("pillow", ("pillow", "Pillow"), "PIL.Image"),
    ("pydensecrf", ("pydensecrf2", "pydensecrf"), "pydensecrf.densecrf"),
    ("matplotlib", ("matplotlib",), None),
    ("tqdm", ("tqdm",), None),
    ("ipywidgets", ("ipywidgets",), None),
    ("jupyterlab", ("jupyterlab",), None),
    ("papermill", ("papermill",), None),
    ("nbformat", ("nbformat",), None),
)


def _failure(e: BaseException) -> str:
    """One line naming an exception: 'RuntimeError: what it said'."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def distribution_version(names) -> str | None:
    """The version of the first of the distributions ``names`` that is installed, else None."""
    for name in names:
        try:
            return metadata.version(name)
        except Exception:  # PackageNotFoundError, or metadata too damaged to read
            continue
    return None


def library_version(distributions, module: str | None) -> str:
    """'<version>', 'not installed', or '<version> (import fails: <error>)' when ``module`` is given
    and importing it raises."""
    version = distribution_version(distributions)
    if module is None:
        return version or NOT_INSTALLED
    try:
        imported = import_module(module)
    except ModuleNotFoundError as e:
        if version is None and e.name and module.startswith(e.name):
            return NOT_INSTALLED
        return f"{version or '?'} (import fails: {_failure(e)})"
    except (Exception, SystemExit) as e:  # a compiled library may raise anything, even exit
        return f"{version or '?'} (import fails: {_failure(e)})"
    return version or str(getattr(imported, "__version__", "installed (version unknown)"))


def torch_details() -> dict:
    """What the installed torch can run on: the CUDA version it was built with ('none': a CPU-only
    build), whether a GPU is usable now (and which), cuDNN, Apple's MPS, the CPU threads it uses."""
    keys = ("torch CUDA build", "CUDA available", "GPU", "cuDNN", "MPS available", "torch threads")
    try:
        torch = import_module("torch")
    except (Exception, SystemExit):
        return dict.fromkeys(keys, "unknown (torch does not import)")

    def ask(question):
        try:
            return str(question())
        except Exception as e:  # an old driver, a broken CUDA install: say so, go on
            return f"unknown ({_failure(e)})"

    cuda = ask(torch.cuda.is_available)
    return {
        "torch CUDA build": ask(lambda: torch.version.cuda or "none (CPU-only build)"),
        "CUDA available": cuda,
        "GPU": ask(
            lambda: (
                ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                if cuda == "True"
                else "none"
            )
        ),
        "cuDNN": ask(
            lambda: (
                torch.backends.cudnn.version()
                if torch.backends.cudnn.is_available()
                else "not available"
            )
        ),
        "MPS available": ask(lambda: torch.backends.mps.is_available()),
        "torch threads": ask(torch.get_num_threads),
    }


def versions() -> dict:
    """{name: version or state} for a bug report (see the module docstring); never raises."""
    package = sys.modules[__package__]
    info = {
        "wsss_edu": f"{package.__version__} ({package.__path__[0]})",
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
    }
    for name, distributions, module in LIBRARIES:
        info[name] = library_version(distributions, module)
        if name == "torch":
            info |= torch_details()
    return info


def show_versions(file=None) -> dict:
    """Print :func:`versions` one per line (to paste into a bug report) and return it."""
    info = versions()
    width = max(map(len, info))
    for name, value in info.items():
        print(f"{name + ':':<{width + 1}} {value}", file=file or sys.stdout)
    return info


if __name__ == "__main__":
    show_versions()
