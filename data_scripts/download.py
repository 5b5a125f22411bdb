#!/usr/bin/env python
"""Download and unpack the course datasets into the layout the loaders expect.

    python data_scripts/download.py voc --root data
    python data_scripts/download.py sbd --root data
    python data_scripts/download.py all --root data --mirror http://my.mirror/datasets/

Downloads are resumable (run the same command again after an interruption) and verified by their
checksum; a dataset already in place (its completion marker written) is skipped. The arguments are
checked before any download starts. Works from any working directory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "wsss_edu" / "__init__.py").is_file():
    # the package of this checkout, so that the script and the package always match (even when
    # another copy is installed, or none is: no `pip install -e .` needed)
    sys.path.insert(0, str(_CHECKOUT))

from wsss_edu.download import (SOURCES, check_destination, check_url, fetch,  # noqa: E402
                               is_in_place)
from wsss_edu.errors import DownloadError, ParameterError  # noqa: E402
from wsss_edu.io import user_path  # noqa: E402

CHOICES = [*SOURCES, "all"]


def _mirror(text: str) -> str:
    """``--mirror``: a URL with a scheme the downloader accepts (else the error lists them)."""
    try:
        return check_url(text)
    except ParameterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _root(text: str) -> Path:
    """``--root``: a folder, or a path where one can be made (not an existing file)."""
    root = user_path(text)
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise argparse.ArgumentTypeError(
                    f"{root} cannot be the data folder: {folder} is a file, not a folder. Pass a "
                    "folder (it is created if missing).")
            break
    return root


def _positive(text: str) -> float:
    """``--timeout``: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _check_destinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop (before any network traffic) when an archive's destination under ``<root>/downloads``
    is a directory or lies under a file."""
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    for name in names:
        for archive in SOURCES[name].archives:
            try:
                check_destination(args.root / "downloads" / archive.filename)
            except DownloadError as e:
                parser.error(str(e))


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line arguments, checked at once (a mirror without a scheme, a root that is a file,
    a download destination that is a directory stop here, before any traffic); the epilog lists
    every dataset and its layout."""
    epilog = "datasets:\n" + "\n".join(
        f"  {s.name:<11} {s.description}\n  {'':<11} -> <root>/{s.dataset_dir}"
        for s in SOURCES.values())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=CHOICES, help="which dataset to fetch ('all': every one)")
    parser.add_argument("--root", required=True, type=_root,
                        help="data folder; archives go to <root>/downloads")
    parser.add_argument("--mirror", action="append", default=None, metavar="URL", type=_mirror,
                        help="use this URL instead of the built-in mirrors (repeatable). A URL "
                             "ending in '/' is a folder holding the archive files.")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each archive once it is extracted (saves disk space)")
    parser.add_argument("--timeout", type=_positive, default=60,
                        help="network timeout in seconds (default 60)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    args = parser.parse_args(argv)
    _check_destinations(parser, args)
    return args


def next_steps(done: list[str], root: Path) -> list[str]:
    """What to run after fetching the datasets in ``done``."""
    steps = []
    have = set(done) | {n for n in ("voc", "sbd") if is_in_place(n, root)}
    if "voc" in done or "sbd" in done:
        missing = [n for n in ("voc", "sbd") if n not in have]
        if missing:
            steps.append(f"fetch {' and '.join(missing)} too: python data_scripts/download.py "
                         f"{missing[0]} --root {root}")
        steps.append(f"then run python data_scripts/prepare_voc_trainaug.py --root {root}")
    if "msrc" in done and not (root / SOURCES["msrc"].dataset_dir / "newsegmentations_mats").is_dir():
        steps.append("optional, preferred by the loader: the cleaned-up MSRC annotations (Malisiewicz & "
                     "Efros, BMVC 2007) from the project page http://www.cs.cmu.edu/~tmalisie/projects/bmvc07/"
                     f": unpack its newsegmentations_mats/ into {root / SOURCES['msrc'].dataset_dir}")
    return steps


def main(argv=None) -> int:
    """Fetch the requested dataset(s); print a summary and the next step. Exit code 1 on failure."""
    args = parse_args(argv)
    root = args.root.expanduser().resolve()
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    done, failed, manual = [], [], []
    for name in names:
        try:
            path = fetch(name, root, mirrors=args.mirror, progress=not args.quiet,
                         keep_archives=not args.delete_archives, timeout=args.timeout)
        except DownloadError as e:
            if SOURCES[name].manual_steps is not None and args.dataset == "all":
                manual.append(name)
            else:
                failed.append(name)
            print(f"\n[{name}] {e}\n", file=sys.stderr)
            continue
        done.append(name)
        print(f"{name}: ready at {path}")
    for name in manual:
        print(f"{name}: needs a manual download (steps above)")
    for name in failed:
        print(f"{name}: FAILED (see the message above)")
    for step in next_steps(done, root):
        print(f"next: {step}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
