#!/usr/bin/env python
"""Write the built-in toy world in PASCAL VOC 2012's folder layout, so the VOC loader
(`get_dataset('voc', root, split)`) reads it exactly like the real VOC.

    python data_scripts/write_toy_voc.py --root DIR [--train 200 --val 50 --test 0 --seed 0
                                                     --size 96 --knob imbalance=4 ...]
"""
import argparse
import json
import sys
from pathlib import Path

try:
    import wsss_edu  # noqa: F401
except ImportError:  # run from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsss_edu.toy import write_voc_layout  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", required=True, help="output folder (VOCdevkit/VOC2012 is made in it)")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--test", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--knob", action="append", default=[],
                    help="toy-world knob NAME=VALUE (repeatable), e.g. --knob imbalance=4 (knobs that "
                         "only change labels, like missing_label_rate, cannot be stored in VOC's layout)")
    args = ap.parse_args(argv)
    knobs = {}
    for kv in args.knob:
        k, _, v = kv.partition("=")
        try:
            knobs[k] = json.loads(v)
        except json.JSONDecodeError:
            knobs[k] = v
    voc = write_voc_layout(args.root, args.train, args.val, args.test, seed=args.seed,
                           size=args.size, **knobs)
    print(f"wrote the toy world in VOC layout to {voc}")
    print(f"read it with: get_dataset('voc', {str(Path(args.root))!r}, split='train')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
