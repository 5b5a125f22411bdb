#!/usr/bin/env python
"""Download and unpack the course datasets into the layout the loaders expect.

    python data_scripts/download.py voc --root data
    python data_scripts/download.py sbd --root data
    python data_scripts/download.py all --root data --mirror http://my.mirror/datasets/

The same command as ``python -m wsss_edu.download ...`` (which works without this folder, from an
installed package): this file only runs :func:`wsss_edu.download.main`. Downloads are resumable
(run the same command again after an interruption) and verified by their checksum; a dataset
already in place (its completion marker written) is skipped. The arguments are checked before any
download starts. Works from any working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "wsss_edu" / "__init__.py").is_file():
    # the package of this checkout, so that the script and the package always match (even when
    # another copy is installed, or none is: no `pip install -e .` needed). In a copy of the course
    # (python -m wsss_edu.course copy DIR) there is none beside it: the installed package runs.
    sys.path.insert(0, str(_CHECKOUT))

from wsss_edu.download import main, next_steps, parse_args  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
