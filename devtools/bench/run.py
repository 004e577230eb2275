"""One benchmark run: its arguments, ports, seeded graph, processes and results."""

import argparse
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools.bench.common import RUN_DIR, log
from devtools.bench.cpu import CpuMeter, named, postgres_pids, with_descendants
from devtools.bench.load import openloop, wrk
from devtools.processes import free_port
from devtools.stack import Stack


@dataclass
class Run:
    """One benchmark run: its ports, its seeded graph, its processes and what it measured
    so far."""

    args: argparse.Namespace
    chance: random.Random
    bootstrap: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    port: int = field(default_factory=free_port)
    bare_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    graph: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    users_file: Path = RUN_DIR / "users.txt"
    # The authors of the POST runs: accounts with about AUTHOR_FOLLOWERS followers each.
    authors_file: Path = RUN_DIR / "authors.txt"
    connections: int = 32
    stack: Stack | None = None
    broker: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def tokens(self) -> dict[int, str]:
        return self.graph["tokens"]

    def _pids(self, *names: str) -> list[int]:
        processes = self.stack.processes if self.stack else {}
        return [pid for n in names if n in processes for pid in with_descendants(processes[n].pid)]

    @property
    def meter(self) -> CpuMeter:
        """The server's processes, by SERVER_GROUPS: the HTTP server is the API or the
        bare app of a ceiling, whichever runs."""
        return CpuMeter(
            {
                "api": lambda: self._pids("api", "bare", "bare_write"),
                "worker": lambda: self._pids("fanout"),
                "relay": lambda: self._pids("relay"),
                "broker": lambda: [self.broker.pid] if self.broker else [],
                "postgres": postgres_pids,
                "redis": lambda: named("redis-server"),
            }
        )

    def wrk(self, url: str, script: str, *, users_file: Path | None = None, **env: str) -> dict:
        return wrk(
            url,
            script,
            seconds=self.args.seconds,
            connections=self.connections,
            pin=self.args.pin_load,
            meter=self.meter,
            BENCH_USERS_FILE=str(users_file or self.users_file),
            **env,
        )

    def open_loop(self, key: str, kind: str, *, rate: float, users_file: Path | None = None) -> None:
        """Workload ``kind`` at a fixed ``rate`` (needs Node), stored under ``key``."""
        if not shutil.which("node"):
            log("node is missing: no open-loop run")
            return
        log(f"open loop: {rate:.0f} {kind} per second")
        result = openloop(
            self.base,
            users_file or self.users_file,
            kind,
            rate=rate,
            seconds=self.args.seconds,
            pin=self.args.pin_load,
            meter=self.meter,
        )
        self.results[key] = {**result, "rate": rate}
