"""A soak of the whole stack: ``make soak``. See ``devtools/soak/``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.soak.cli import main

if __name__ == "__main__":
    sys.exit(main())
