"""The load generators, each run while a ``CpuMeter`` watches the server: wrk (closed
loop) and the open-loop Node driver (``scripts/bench/openloop.js``)."""

import json
import os
import re
import resource
import subprocess
import time
from pathlib import Path

from devtools.bench.common import LUA_DIR
from devtools.bench.cpu import CpuMeter


def loaded(command: list[str], *, pin: str | None, meter: CpuMeter, **kwargs) -> tuple[str, dict]:
    """Run a load generator (pinned to CPUs ``pin`` with taskset, if given) while ``meter``
    watches the server; its stdout, and the CPU figures in cores: ``load_cpu`` the
    generator's own (from its rusage), ``cpu`` the server's groups and the machine."""
    if pin is not None:
        command = ["taskset", "-c", pin, *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter.start()
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=True, **kwargs)
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result.stdout, {"load_cpu": load / elapsed, "cpu": cpu, "elapsed": elapsed}


def wrk(
    url: str,
    script: str,
    *,
    seconds: int,
    connections: int,
    threads: int = 2,
    pin: str | None,
    meter: CpuMeter,
    **env: str,
) -> dict:
    """One wrk run; returns RPS, latency percentiles and the CPU figures of ``loaded``."""
    out, cpu = loaded(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(LUA_DIR / script),
            url,
        ],
        pin=pin,
        meter=meter,
        env={**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env},
    )
    return {**wrk_figures(out), "load_threads": threads, **cpu}


def wrk_figures(out: str) -> dict:
    """RPS, requests, latency percentiles in ms and non-2xx responses from wrk's output."""

    def latency(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": latency("50"),
        "p90": latency("90"),
        "p99": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def openloop(
    base: str, users_file: Path, kind: str, *, rate: float, seconds: int, pin: str | None, meter: CpuMeter
) -> dict:
    out, cpu = loaded(
        ["node", str(LUA_DIR / "openloop.js"), base, str(users_file), kind, str(rate), str(seconds), "64"],
        pin=pin,
        meter=meter,
        timeout=seconds + 120,
    )
    # Node runs one thread of JavaScript: it is the bottleneck near one core.
    return {**json.loads(out), **cpu, "requests": json.loads(out)["sent"], "load_threads": 1}
