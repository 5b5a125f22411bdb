"""Build PASCAL VOC 2012's "train_aug" split (10,582 images) from SBD.

Needs ``<root>/VOCdevkit/VOC2012`` and ``<root>/SBD/benchmark_RELEASE`` (fetch them with
``python data_scripts/download.py voc --root DIR`` and
``python data_scripts/download.py sbd --root DIR``).
Writes ``VOC2012/SegmentationClassAug/<id>.png`` (grey PNGs of class ids) and
``VOC2012/ImageSets/Segmentation/train_aug.txt``. Safe to re-run: finished masks are skipped.

Usage: python data_scripts/prepare_voc_trainaug.py --root data
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from wsss_edu.datasets import prepare_voc_trainaug
from wsss_edu.errors import WsssError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path,
                        help="data folder holding VOCdevkit/ and SBD/")
    args = parser.parse_args(argv)
    try:
        ids = prepare_voc_trainaug(args.root, verbose=True)
    except WsssError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"done: {len(ids)} train_aug ids (10582 expected on the full VOC 2012 + SBD)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
