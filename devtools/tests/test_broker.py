import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.drill

STARTER = """
import sys
from devtools.broker import broker_start
process = broker_start(sys.argv[1])
print(process.pid, flush=True)
sys.stdin.read()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; the init process reaps it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_the_dev_broker_dies_with_the_process_that_started_it():
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, f"127.0.0.1:{free_port()}"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    broker_pid = int(starter.stdout.readline())
    assert alive(broker_pid)

    starter.send_signal(signal.SIGKILL)  # no chance to stop the broker itself
    starter.wait(10)

    wait_for(lambda: not alive(broker_pid), timeout=15, what="the orphaned broker to exit")
