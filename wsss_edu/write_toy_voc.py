"""Write the built-in toy world in PASCAL VOC 2012's folder layout, so the VOC loader
(`get_dataset('voc', root, split)`) reads it exactly like the real VOC.

    python -m wsss_edu.write_toy_voc --root DIR [--train 200 --val 50 --test 0 --seed 0
                                                 --size 96 --knob imbalance=4 ...]

(a checkout's ``data_scripts/write_toy_voc.py`` runs the same :func:`main`.)

A rerun into the same DIR leaves exactly the new world: the new world is written into a
temporary folder beside it first (an interrupted run leaves the previous world as it was), then
the files the previous run wrote (listed in `VOC2012/.write_toy_voc.txt`) are removed and the new
ones moved in, the split lists last. Files you put there yourself (say a SegmentationClassAug/
folder, or your own notes) are kept. A VOC2012 folder this command did not write (the real VOC,
for instance) is refused, never mixed with the toy world.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from .errors import ParameterError
from .io import user_path, write_text_atomic
from .toy import CLASSES, write_voc_layout

COMMAND = "python -m wsss_edu.write_toy_voc"
"""How a user runs :func:`main` (it works from an installed package)."""
MANIFEST = ".write_toy_voc.txt"
"""In the VOC2012 folder: every file (relative path, one a line) the last run wrote."""
TOY_FOLDERS = ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations")
TOY_LISTS = ("train", "val", "test", "train_aug")


def _files(folder: Path) -> set:
    """Relative POSIX paths of the files under ``folder``."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def owned_files(voc: Path):
    """The files of ``voc`` a previous run of this script wrote: its manifest's list; for a toy
    world written before the manifest existed (its ``classes.txt`` names the toy classes), the
    toy-named files of the folders it writes. None when ``voc`` holds files and is no toy world."""
    if (voc / MANIFEST).is_file():
        listed = (voc / MANIFEST).read_text().splitlines()
        return {p for p in listed if p.strip()} | {MANIFEST}
    if not voc.is_dir() or not _files(voc):
        return set()
    classes = voc / "classes.txt"
    if not classes.is_file() or classes.read_text().split() != list(CLASSES):
        return None
    owned = {"classes.txt"} | {f"ImageSets/Segmentation/{s}.txt" for s in TOY_LISTS}
    for folder in TOY_FOLDERS:
        owned |= {
            f"{folder}/{p.name}"
            for p in (voc / folder).glob("*")
            if p.is_file() and p.stem.split("_")[0] in ("train", "val", "test")
        }
    return owned & _files(voc)


def _is_list(rel: str) -> bool:
    return rel.startswith("ImageSets/") or rel in ("classes.txt", MANIFEST)


def check_ours(voc: Path) -> set:
    """:func:`owned_files` of ``voc``; a folder this script did not write is refused by name."""
    old = owned_files(voc)
    if old is None:
        raise ParameterError(
            f"{voc} holds files this script did not write (no {MANIFEST}, and its classes.txt is "
            "not the toy world's): it may be the real VOC. Choose another --root, or remove the "
            "folder yourself if it is a toy world of your own"
        )
    return old


def replace_world(new_voc: Path, voc: Path) -> None:
    """Make ``voc`` hold exactly the files of ``new_voc`` plus the files of ``voc`` no run of this
    script wrote. The manifest first lists old and new files together (an interrupted swap is
    cleaned up by the next run), the lists go last, the manifest is rewritten at the end."""
    old = check_ours(voc)
    new = _files(new_voc)
    clash = sorted((_files(voc) - old) & new) if voc.is_dir() else []
    if clash:
        raise ParameterError(
            f"{voc} holds files of yours where the toy world writes its own "
            f"({', '.join(clash[:5])}); move them away or choose another --root"
        )
    voc.mkdir(parents=True, exist_ok=True)
    write_text_atomic(voc / MANIFEST, "".join(f"{p}\n" for p in sorted((old | new) - {MANIFEST})))
    for rel in sorted(old - new - {MANIFEST}, key=lambda r: not _is_list(r)):  # stale lists first
        (voc / rel).unlink(missing_ok=True)
    for rel in sorted(new, key=_is_list):  # new lists last
        (voc / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(new_voc / rel, voc / rel)
    for folder in TOY_FOLDERS:  # a folder the new world left empty goes too
        if (voc / folder).is_dir() and not any((voc / folder).iterdir()):
            (voc / folder).rmdir()
    write_text_atomic(voc / MANIFEST, "".join(f"{p}\n" for p in sorted(new)))


def write_world(root, n_train: int, n_val: int, n_test: int, seed: int, **knobs) -> Path:
    """Write the toy world under ``root/VOCdevkit/VOC2012``, replacing a previous run's whole
    (see the module docstring); returns the VOC2012 folder."""
    root = user_path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    check_ours(voc)  # refuse before spending time on the new world
    tmp = root / f".write_toy_voc.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        new_voc = write_voc_layout(tmp, n_train, n_val, n_test, seed=seed, **knobs)
        replace_world(new_voc, voc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return voc


def main(argv=None) -> int:
    """Write the toy world under ``--root``; exit status 2 with the fix named when the folder is
    refused or there is nothing to write."""
    ap = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--root", required=True, help="output folder (VOCdevkit/VOC2012 is made in it)")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--test", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument(
        "--knob",
        action="append",
        default=[],
        help="toy-world knob NAME=VALUE (repeatable), e.g. --knob imbalance=4 (knobs that "
        "only change labels, like missing_label_rate, cannot be stored in VOC's layout)",
    )
    args = ap.parse_args(argv)
    knobs = {}
    for kv in args.knob:
        k, _, v = kv.partition("=")
        try:
            knobs[k] = json.loads(v)
        except json.JSONDecodeError:
            knobs[k] = v
    if args.train + args.val + args.test <= 0 or min(args.train, args.val, args.test) < 0:
        print(
            f"error: --train {args.train} --val {args.val} --test {args.test}: nothing to write; "
            "give each split a number of images >= 0, at least one of them > 0",
            file=sys.stderr,
        )
        return 2
    try:
        voc = write_world(
            args.root, args.train, args.val, args.test, seed=args.seed, size=args.size, **knobs
        )
    except ParameterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote the toy world in VOC layout to {voc}")
    print(f"read it with: get_dataset('voc', {str(Path(args.root))!r}, split='train')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
