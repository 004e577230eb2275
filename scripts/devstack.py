"""Run the whole feed system locally in the foreground: ``make run``.

Creates and migrates the database, starts the dev broker when nothing answers at
KAFKA_BOOTSTRAP_SERVERS, creates the topics, then runs gunicorn, the fan-out worker, the
outbox relay and the stream process until Ctrl-C or SIGTERM, which stops them all.
``migrate`` only creates and migrates the database (``make migrate``); ``api``, ``fanout``,
``relay`` and ``stream`` run one of the four as ``make run`` does (``make run-api``,
``run-fanout``, ``run-relay``, ``run-stream``);
``env-file`` creates the local settings file ``.env`` unless it exists. The work is done
by ``devtools.stack``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.stack import COMMANDS, devstack_database, devstack_env_file, devstack_exec, devstack_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["run", "migrate", "env-file", *COMMANDS], nargs="?", default="run")
    action = parser.parse_args().action
    if action == "env-file":
        devstack_env_file()
    elif action == "migrate":
        devstack_database()
    elif action in COMMANDS:
        devstack_exec(action)
    else:
        return devstack_run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
