#!/usr/bin/env python
"""Build PASCAL VOC 2012's "train_aug" split (10,582 images) from SBD.

    python data_scripts/prepare_voc_trainaug.py --root data

The same command as ``python -m wsss_edu.prepare_voc_trainaug --root data`` (which works without
this folder, from an installed package): this file only runs
:func:`wsss_edu.prepare_voc_trainaug.main`; see that module for what it writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "wsss_edu" / "__init__.py").is_file():
    sys.path.insert(0, str(_CHECKOUT))  # this checkout's package (no install needed)

from wsss_edu.prepare_voc_trainaug import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
