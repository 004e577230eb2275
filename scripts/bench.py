"""The benchmark: ``make bench``; ``--smoke`` runs every step at a tiny size. See
``devtools/bench/``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
