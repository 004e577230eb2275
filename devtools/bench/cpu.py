"""The CPU used by the processes of the server under test, from ``/proc``."""

import os
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return text[text.rindex(")") + 2 :].split()


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, None if it is gone."""
    fields = _proc_stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def with_descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (gunicorn's workers, for one)."""
    parents = {}
    for other in _all_pids():
        if (fields := _proc_stat(other)) is not None:
            parents.setdefault(int(fields[1]), []).append(other)
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo.extend(parents.get(current, []))
    return found


def named(*names: str) -> list[int]:
    """Every process whose command name is one of ``names`` (the shared services)."""
    pids = []
    for pid in _all_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in names:
                pids.append(pid)
        except OSError:
            pass
    return pids


def machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat, idle and iowait excluded)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """The PostgreSQL processes that work for the benchmark: the backends connected to its
    database and the server's own background processes (WAL writer, checkpointer, ...),
    not the backends of other databases on the same server."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() OR backend_type <> 'client backend'"
        )
        return [pid for (pid,) in cursor.fetchall()]


# The server's side of a run, as the CPU table's columns: API, worker, relay, broker,
# PostgreSQL, Redis. Redis is counted whole: its databases share one process.
SERVER_GROUPS = ("api", "worker", "relay", "broker", "postgres", "redis")


class CpuMeter:
    """CPU used by groups of processes over an interval, from /proc/<pid>/stat deltas.

    A process that appears during the interval counts with all its CPU; one that exits
    before the end is lost (PostgreSQL backends live as long as their connection, which
    the API keeps, so few are).
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups

    def _sample(self) -> dict[str, dict[int, float]]:
        sample = {}
        for name, pids in self.groups.items():
            sample[name] = {pid: cpu for pid in pids() if (cpu := proc_cpu(pid)) is not None}
        return sample

    def start(self) -> None:
        self.before, self.busy_before, self.started = self._sample(), machine_busy(), time.monotonic()

    def stop(self) -> dict[str, float]:
        """Cores each group used on average (CPU seconds per second), plus ``machine``."""
        after, busy, elapsed = self._sample(), machine_busy(), time.monotonic() - self.started
        cores = {
            name: sum(cpu - self.before[name].get(pid, 0.0) for pid, cpu in after[name].items()) / elapsed
            for name in self.groups
        }
        cores["machine"] = (busy - self.busy_before) / elapsed
        return cores
