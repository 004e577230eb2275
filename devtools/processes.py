"""Child processes and local services, for development tooling, drills and tests: free ports,
stopping a process politely then firmly, reading metrics, restarting PostgreSQL and Redis."""

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0) -> int:
    """Stop one process politely then firmly (see ``stop_processes``); its exit status."""
    return stop_processes({"process": process}, timeout=timeout)["process"]


def stop_processes(
    processes: Mapping[str, subprocess.Popen],
    *,
    timeout: float = 20.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """SIGTERM every process still running, give them ``timeout`` seconds together to
    exit, then SIGKILL those that did not; return each one's exit status.

    All are signalled before any is waited for, so that they shut down side by side.
    """
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    statuses = {}
    for name, process in processes.items():
        try:
            statuses[name] = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if log is not None:
                log(f"{name} did not stop in {timeout:g}s; killing it")
            process.kill()
            statuses[name] = process.wait(timeout)
    return statuses


def metric_sum(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text, over every label value.

    ``name`` may carry labels itself (``name{a="b"}``) to pick one series.
    """
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def restart_postgres() -> None:
    """Restart the local PostgreSQL cluster (needs pg_ctlcluster and the rights to use it)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        timeout=60,
    )


def restart_redis() -> None:
    """Restart the local Redis the way .ci/run starts it."""
    for directory in ("/var/lib/redis", "/var/log/redis"):
        os.makedirs(directory, exist_ok=True)
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], timeout=10)
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
        check=True,
        timeout=10,
    )
