"""What every part of the benchmark shares: where it writes and where the load scripts
are, its log and progress bars, wrk (installed from Debian if missing), and the fan-out
worker's metrics."""

import os
import re
import shutil
import subprocess
import sys
import time

from devtools.processes import ROOT

RUN_DIR = ROOT / ".run" / "bench"
LUA_DIR = ROOT / "scripts" / "bench"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def progress(iterable=None, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, **kwargs)


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        log("wrk is missing; installing it from Debian")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    banner = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return re.search(r"wrk (?:debian/)?([\w.\-+]+)", banner).group(1)


def metric(url: str, name: str) -> float:
    import requests

    from devtools.processes import metric_sum

    return metric_sum(requests.get(url, timeout=5).text, name)


def wait_idle(metrics_url: str, *, quiet: float = 3.0, timeout: float = 600.0) -> None:
    """Wait until the worker has written no feed rows for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    rows, changed = metric(metrics_url, "feed_fanout_rows_total"), time.monotonic()
    while time.monotonic() - changed < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError("the fan-out worker did not go idle")
        time.sleep(0.2)
        if (now := metric(metrics_url, "feed_fanout_rows_total")) != rows:
            rows, changed = now, time.monotonic()
