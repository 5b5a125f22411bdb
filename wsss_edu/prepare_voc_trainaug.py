"""Build PASCAL VOC 2012's "train_aug" split (10,582 images) from SBD, from a shell.

    python -m wsss_edu.prepare_voc_trainaug --root data

Needs ``<root>/VOCdevkit/VOC2012`` and ``<root>/SBD/benchmark_RELEASE`` (fetch them with
``python -m wsss_edu.download voc --root DIR`` and ``python -m wsss_edu.download sbd --root DIR``).
Writes ``VOC2012/SegmentationClassAug/<id>.png`` (grey PNGs of class ids) and
``VOC2012/ImageSets/Segmentation/train_aug.txt`` (:func:`wsss_edu.datasets.prepare_voc_trainaug`).
Safe to re-run: finished masks are skipped. A checkout's ``data_scripts/prepare_voc_trainaug.py``
runs the same :func:`main`.
"""

from __future__ import annotations

import argparse
import sys

from .datasets import prepare_voc_trainaug
from .errors import WsssError
from .io import user_path

COMMAND = "python -m wsss_edu.prepare_voc_trainaug"
"""How a user runs :func:`main` (it works from an installed package)."""


def main(argv=None) -> int:
    """Build train_aug under ``--root``; exit status 1 (the message names the fix) when the data
    is missing, or when it yields no image at all (nothing done is not success)."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", required=True, type=user_path, help="data folder holding VOCdevkit/ and SBD/"
    )
    args = parser.parse_args(argv)
    try:
        ids = prepare_voc_trainaug(args.root, verbose=True)
    except WsssError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not ids:
        print(
            f"error: no train_aug image found under {args.root}: check that VOCdevkit/VOC2012 and "
            "SBD/benchmark_RELEASE hold the images and masks (python -m wsss_edu.download voc / "
            "sbd --root DIR fetches them)",
            file=sys.stderr,
        )
        return 1
    print(f"done: {len(ids)} train_aug ids (10582 expected on the full VOC 2012 + SBD)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
