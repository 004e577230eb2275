"""A chaos run of the whole stack: ``make chaos``. See ``devtools/chaos.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.chaos import main

if __name__ == "__main__":
    sys.exit(main())
