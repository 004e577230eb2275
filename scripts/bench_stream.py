"""The live streams' benchmark: ``make bench-stream``; ``--smoke`` runs it at a tiny size.
See ``devtools/bench/streams.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.bench.streams import main

if __name__ == "__main__":
    sys.exit(main())
