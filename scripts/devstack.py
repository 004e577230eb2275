"""Run the whole feed system locally in the foreground: ``make run``.

Creates and migrates the database, starts the dev broker when nothing answers at
KAFKA_BOOTSTRAP_SERVERS, creates the topics, then runs gunicorn, the fan-out worker and
the outbox relay until Ctrl-C or SIGTERM, which stops them all. ``migrate`` only creates
and migrates the database (``make migrate``). The work is done by ``devtools.stack``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.stack import devstack_database, devstack_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["run", "migrate"], nargs="?", default="run")
    if parser.parse_args().action == "migrate":
        devstack_database()
        return 0
    return devstack_run()


if __name__ == "__main__":
    sys.exit(main())
