#!/usr/bin/env python
"""Write the built-in toy world in PASCAL VOC 2012's folder layout, so the VOC loader
(`get_dataset('voc', root, split)`) reads it exactly like the real VOC.

    python data_scripts/write_toy_voc.py --root DIR [--train 200 --val 50 --test 0 --seed 0
                                                     --size 96 --knob imbalance=4 ...]

The same command as ``python -m wsss_edu.write_toy_voc ...`` (which works without this folder,
from an installed package): this file only runs :func:`wsss_edu.write_toy_voc.main`; that module
says how a rerun replaces the previous world and what it refuses.
"""

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "wsss_edu" / "__init__.py").is_file():
    sys.path.insert(0, str(_CHECKOUT))  # this checkout's package (no install needed)

from wsss_edu.write_toy_voc import main, write_world  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
