"""The course's files — the notebooks, their students' versions, the data scripts — into a folder
of your choice, from an installed package as from a checkout:

    python -m wsss_edu.course copy DIR            # or: wsss-course copy DIR
    python -m wsss_edu.course copy DIR --force    # replace files of an earlier copy

``pip install wsss_edu`` (without the repository) installs the package only; the files a learner
opens live beside it in the repository. The wheel therefore carries a copy of them under
``wsss_edu/_course/`` (put there by the build, ``setup.py``: the git tree holds each file once, at
the top), and this module copies from there — or, when the package sits in a checkout (an
editable install, ``PYTHONPATH``), from the checkout itself. :data:`COURSE_FILES` is the one list
of what belongs to the course (``setup.py`` reads it without importing the package).

The copy holds a marker file (:data:`COURSE_MARKER`): a notebook run anywhere under that folder
takes it as the course's root (:func:`wsss_edu.params.repo_root`), so its default OUTPUT_DIR is
``DIR/runs`` and ``python -m wsss_edu.runner`` run in DIR finds ``DIR/notebooks``, as in a checkout.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import shutil
import sys
from pathlib import Path

from .errors import ParameterError, WsssError
from .io import atomic_path, user_path, write_text_atomic

COURSE_FILES = (
    "notebooks/[0-9][0-9]*_*.ipynb",  # the course notebooks, with their solutions
    "notebooks/conftest.py",  # nbval's settings (pytest --nbval-lax notebooks)
    "students/[0-9][0-9]*_*.ipynb",  # the same notebooks with exercises to fill in
    "data_scripts/*.py",  # the checkout's data commands (= python -m wsss_edu.download ...)
    "data_scripts/README.md",  # the datasets, their licences and layouts
)
"""Glob patterns, relative to the course's root (the repository's top folder), of the files that
make up the course. Read statically (``ast.literal_eval``) by ``setup.py``: keep it a literal."""

INSTALLED_COPY = "_course"
"""The folder inside the installed package that holds the course files (built by ``setup.py``)."""

COURSE_MARKER = ".wsss_course"
"""The file :func:`copy_course` writes into the folder it fills: the root of a copied course."""

PACKAGE_DIR = Path(__file__).resolve().parent
"""This package's folder (a module setting, so that a test can pretend to be installed)."""

COMMAND = "python -m wsss_edu.course"


def _version() -> str:
    """This package's version (``wsss_edu.__version__``, the one place it is written)."""
    return sys.modules[__package__].__version__


class CourseNotFoundError(WsssError, FileNotFoundError):
    """The package has no course files to copy (neither in a checkout nor in its wheel)."""


def checkout_root() -> Path | None:
    """The repository holding this package (its notebooks/ and pyproject.toml beside it: an
    editable install or ``PYTHONPATH``), None for an installed package."""
    top = PACKAGE_DIR.parent
    return top if (top / "notebooks").is_dir() and (top / "pyproject.toml").is_file() else None


def find_course_root(start) -> Path | None:
    """The folder a :func:`copy_course` filled that holds ``start`` (``start`` itself or a folder
    above it, found by its :data:`COURSE_MARKER`), None when there is none."""
    start = Path(start).absolute()
    return next((f for f in (start, *start.parents) if (f / COURSE_MARKER).is_file()), None)


def course_files(root) -> list[Path]:
    """The course files under ``root`` (paths relative to it, sorted), by :data:`COURSE_FILES`."""
    root = Path(root)
    return sorted(
        {p.relative_to(root) for pattern in COURSE_FILES for p in root.glob(pattern) if p.is_file()}
    )


def course_source() -> Path:
    """Where the course files are: the checkout, else the wheel's copy (:data:`INSTALLED_COPY`).
    Raises :class:`CourseNotFoundError` when neither holds a notebook (a package built without
    them): copying nothing must not pass for success."""
    candidates = [c for c in (checkout_root(), PACKAGE_DIR / INSTALLED_COPY) if c is not None]
    for root in candidates:
        if any(p.parts[0] == "notebooks" for p in course_files(root)):
            return root
    raise CourseNotFoundError(
        f"no course notebooks found in {' or '.join(str(c) for c in candidates)}: this wsss_edu "
        f"was installed without the course files. Reinstall it from a wheel built by its setup.py "
        f'(pip install "wsss_edu[notebooks]", or pip install <the repository>), or clone the '
        f"repository and open its notebooks/ folder."
    )


def _clashes(source: Path, dest: Path, files: list[Path]) -> list[Path]:
    """The files of ``files`` that exist in ``dest`` with other contents than in ``source``
    (an identical file is no clash: copying it again changes nothing)."""
    return [
        rel
        for rel in files
        if (dest / rel).exists()
        and not ((dest / rel).is_file() and filecmp.cmp(source / rel, dest / rel, shallow=False))
    ]


def copy_course(dest, force: bool = False, source=None) -> list[Path]:
    """Copy the course files (:data:`COURSE_FILES`) from ``source`` (default :func:`course_source`)
    into folder ``dest`` (made if missing) with their folders; returns the paths written.

    Refuses, before writing anything, to replace a file of ``dest`` whose contents differ, naming
    each (``force``: replace them); files of ``dest`` that are not course files are never touched.
    Each file is written whole or not at all (:func:`wsss_edu.io.atomic_path`). Writes the
    :data:`COURSE_MARKER` last."""
    source = Path(source) if source is not None else course_source()
    dest = user_path(dest)
    if dest is None:
        raise ParameterError("give the folder to copy the course into, e.g. course-wsss")
    if dest.exists() and not dest.is_dir():
        raise ParameterError(f"{dest} is a file; give a folder (it is made if missing)")
    files = course_files(source)
    if not files:
        raise CourseNotFoundError(f"{source} holds no course file ({', '.join(COURSE_FILES)})")
    clashes = [] if force else _clashes(source, dest, files)
    if clashes:
        shown = "\n  ".join(str(dest / rel) for rel in clashes)
        raise ParameterError(
            f"{len(clashes)} file(s) in {dest} differ from the course's and would "
            f"be replaced:\n  {shown}\nMove them away (your work in them is kept "
            f"that way), choose another folder, or pass --force to replace them."
        )
    written = []
    for rel in files:
        target = dest / rel
        if target.is_file() and filecmp.cmp(source / rel, target, shallow=False):
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(source / rel, tmp)
        written.append(target)
    write_text_atomic(
        dest / COURSE_MARKER,
        json.dumps(
            {
                "wsss_edu": _version(),
                "copied_from": str(source),
                "note": "the root of a copy of the wsss_edu course (python -m wsss_edu.course copy)",
            },
            indent=2,
        )
        + "\n",
    )
    return written


def next_steps(dest: Path) -> list[str]:
    """What to run after a copy into ``dest``: open it in JupyterLab (installing the notebooks
    extra first when JupyterLab is missing), and where the data commands are."""
    steps = []
    if importlib.util.find_spec("jupyterlab") is None:
        steps.append(
            'pip install "wsss_edu[notebooks]"     # JupyterLab, papermill (not installed yet)'
        )
    steps += [
        f"cd {dest}",
        "jupyter lab                          # open notebooks/00_*.ipynb "
        "(students/: the same with exercises)",
        "python -m wsss_edu.download --help   # the real datasets (data_scripts/README.md)",
    ]
    return steps


def main(argv=None) -> int:
    """``copy DIR [--force]``: copy the course, list what was written and what to run next."""
    ap = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="copy")
    cp = sub.add_parser(
        "copy", help="copy the notebooks, students' versions and data scripts into DIR"
    )
    cp.add_argument("dir", metavar="DIR", help="the folder to copy into (made if missing)")
    cp.add_argument(
        "--force",
        action="store_true",
        help="replace files of DIR that differ from the course's (default: refuse)",
    )
    args = ap.parse_args(argv)
    try:
        source = course_source()
        written = copy_course(args.dir, force=args.force, source=source)
    except WsssError as e:  # the message names the fix; no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    dest = user_path(args.dir)
    files = course_files(source)
    counts = {}
    for rel in files:
        counts[rel.parts[0]] = counts.get(rel.parts[0], 0) + 1
    print(
        f"copied the wsss_edu {_version()} course from {source} into {dest}: {len(written)} file(s) "
        f"written, {len(files) - len(written)} already there "
        f"({', '.join(f'{k}/: {v}' for k, v in counts.items())})"
    )
    print("next:\n  " + "\n  ".join(next_steps(dest)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
