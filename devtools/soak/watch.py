"""What the soak watches while it runs: every process's RSS, the fan-out workers' lag and
post-to-feed latency (their Prometheus endpoints), the outbox and the events not applied
yet (the database), dead letters, the responses, restarts and CPU; one row a minute."""

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.bench.cpu import CpuMeter, named, postgres_pids, with_descendants
from devtools.processes import metric_sum
from devtools.soak.traffic import Traffic
from devtools.stack import Stack

# Django is set up by cli.main() from the soak's own environment, so the modules that need
# it are imported inside the functions.

LATENCY = "feed_post_to_feed_latency_seconds"
LAG = "feed_fanout_consumer_lag"

# The per-minute table's columns, and what they hold.
LEGEND = (
    "RSS in MB; lag: the workers' feed_fanout_consumer_lag; outbox: rows not yet published, "
    "unapplied: events not yet applied (from the database); post→feed p99 over the row's "
    "time, from the workers' histogram; errors, dead letters and restarts since the start; "
    "CPU in cores (load: the soak's own process)."
)
HEADER = (
    "| time | posts/s | req/s | API MB (master / workers) | fan-out MB | relay MB | broker MB "
    "| lag | outbox | unapplied | post→feed p99 ms | 5xx / 4xx / errors | dead letters | restarts "
    "| CPU load / server (PostgreSQL) / machine |"
)
# The table's heading: the columns and the markdown rule under them.
HEAD = HEADER + "\n|" + "---|" * (HEADER.count(" | ") + 1)


def rss_mb(pid: int) -> float | None:
    """A process's resident memory now, in MB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound, summed over its label values,
    from Prometheus text."""
    pattern = rf'^{re.escape(name)}_bucket\{{(?:[^}}]*,)?le="([^"]+)"[^}}]*\}} (\S+)$'
    buckets: dict[float, float] = {}
    for bound, value in re.findall(pattern, text, re.MULTILINE):
        buckets[float(bound)] = buckets.get(float(bound), 0.0) + float(value)
    return buckets


def buckets_since(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    """The observations between two scrapes of one process; all of ``after`` if the
    process restarted in between (its counters went back)."""
    if any(count < before.get(bound, 0.0) for bound, count in after.items()):
        return dict(after)
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def buckets_add(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    return {bound: a.get(bound, 0.0) + b.get(bound, 0.0) for bound in a.keys() | b.keys()}


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative buckets, interpolated within its bucket as
    Prometheus's ``histogram_quantile`` does; None without observations, ``inf`` when it
    falls in the ``+Inf`` bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return math.inf
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return math.inf


def backlog() -> tuple[int, int]:
    """Outbox rows the relay has not published, and events published but not applied by
    the fan-out group: per partition, the newest outbox row's offset against the group's
    next offset to apply (both in the database, exact whatever the broker reports)."""
    from django.conf import settings
    from django.db.models import Max

    from consumers.models import AppliedOffset
    from eventbus.models import OutboxMessage
    from eventbus.topics import Topic

    topic = Topic.FEED_EVENTS.topic_name
    unsent = OutboxMessage.objects.filter(sent_at__isnull=True).count()
    newest = (
        OutboxMessage.objects.filter(topic=topic, sent_offset__isnull=False)
        .values_list("sent_partition")
        .annotate(newest=Max("sent_offset"))
    )
    applied = dict(
        AppliedOffset.objects.filter(consumer_group=settings.FANOUT_GROUP_ID, topic=topic).values_list(
            "partition", "next_offset"
        )
    )
    return unsent, sum(max(0, offset + 1 - applied.get(partition, 0)) for partition, offset in newest)


def dead_letters() -> int:
    from consumers.models import DeadLetter

    return DeadLetter.objects.count()


def _mb(value: float | None) -> str:
    return "gone" if value is None else f"{value:.0f}"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return "> 60,000" if math.isinf(seconds) else f"{seconds * 1000:,.0f}"


@dataclass
class Watch:
    """The stack's processes sampled every few seconds, and a row of the table each
    ``interval``. ``workers`` are the fan-out workers' names and metrics ports."""

    stack: Stack
    broker_pid: int
    workers: list[tuple[str, int]]
    traffic: Traffic
    interval: float
    started: float = field(default_factory=time.monotonic)
    # RSS samples per process, (seconds since the start, MB); gunicorn's workers named in
    # the order they were first seen, so that a replaced one gets a new series.
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    # The post-to-feed buckets summed over the workers at each row, with its time.
    latency_marks: list[tuple[float, dict[float, float]]] = field(default_factory=list)
    _api_workers: dict[int, str] = field(default_factory=dict)
    _api_seen: int = 0
    _worker_buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    _latency_seen: dict[float, float] = field(default_factory=dict)
    _latest: dict[str, float | None] = field(default_factory=dict)
    _totals: dict = field(default_factory=dict)
    _meter: CpuMeter | None = None
    _row_at: float = 0.0

    def begin(self) -> None:
        """The first sample, at the traffic's start."""
        self.started = time.monotonic()
        self._meter = CpuMeter(
            {
                # This process: the traffic's threads, and the sampling, which is light.
                "load": lambda: [os.getpid()],
                "api": lambda: with_descendants(self.stack.processes["api"].pid),
                "fanout": lambda: [self.stack.processes[n].pid for n, _ in self.workers],
                "relay": lambda: [self.stack.processes["relay"].pid],
                "broker": lambda: [self.broker_pid],
                "postgres": postgres_pids,
                "redis": lambda: named("redis-server"),
            }
        )
        self._meter.start()
        self.sample()
        self.latency_marks.append((0.0, dict(self._latency_seen)))
        self._totals = self.traffic.totals()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def processes(self) -> dict[str, int]:
        """The pid of every process of the stack by name: ``api`` (gunicorn's master),
        ``api-w1``, ``api-w2``, ... (its workers), each fan-out worker, ``relay``,
        ``broker``. A gunicorn worker that is gone and replaced counts as a restart."""
        master = self.stack.processes["api"].pid
        current = sorted(pid for pid in with_descendants(master) if pid != master)
        gone = [pid for pid in self._api_workers if pid not in current]
        if gone:
            self.restarts["api worker"] = self.restarts.get("api worker", 0) + len(gone)
            for pid in gone:
                del self._api_workers[pid]
        for pid in current:
            if pid not in self._api_workers:
                self._api_seen += 1
                self._api_workers[pid] = f"api-w{self._api_seen}"
        pids = {"api": master, **{name: pid for pid, name in sorted(self._api_workers.items())}}
        pids.update((name, process.pid) for name, process in self.stack.processes.items() if name != "api")
        pids["broker"] = self.broker_pid
        return pids

    def sample(self) -> None:
        """Every process's RSS, and the workers' lag and latency buckets."""
        now = self.elapsed()
        for name, pid in self.processes().items():
            mb = rss_mb(pid)
            self._latest[name] = mb
            if mb is not None:
                self.rss.setdefault(name, []).append((now, mb))
        lag = 0.0
        for name, port in self.workers:
            text = self._scrape(port)
            if text is None:
                continue
            lag += metric_sum(text, LAG)
            after = histogram_buckets(text, LATENCY)
            self._latency_seen = buckets_add(
                self._latency_seen, buckets_since(after, self._worker_buckets.get(name, {}))
            )
            self._worker_buckets[name] = after
        self.lag.append((now, lag))

    def lag_now(self) -> float:
        """The workers' lag, summed, scraped now (not recorded)."""
        return sum(metric_sum(text, LAG) for _, port in self.workers if (text := self._scrape(port)))

    def _scrape(self, port: int) -> str | None:
        import requests

        try:
            return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            return None

    def latency_since(self, since: float) -> dict[float, float]:
        """The post-to-feed buckets observed since the row nearest ``since`` seconds."""
        _, mark = min(self.latency_marks, key=lambda m: abs(m[0] - since))
        return {bound: count - mark.get(bound, 0.0) for bound, count in self._latency_seen.items()}

    def row(self) -> str:
        """The table's row for the time since the last one, as markdown; sampled afresh."""
        self.sample()
        now = self.elapsed()
        seconds = max(now - self._row_at, 1e-9)
        totals = self.traffic.totals()
        done = {k: sum(c.values()) - sum(self._totals.get(k, {}).values()) for k, c in totals.items()}
        errors = {cls: sum(c.get(cls, 0) for c in totals.values()) for cls in ("5xx", "4xx", "error")}
        minute = self.latency_since(self._row_at)
        self.latency_marks.append((now, dict(self._latency_seen)))
        self._totals, self._row_at = totals, now
        cpu = self._meter.stop()
        self._meter.start()
        server = sum(v for k, v in cpu.items() if k not in ("load", "machine"))
        unsent, unapplied = backlog()
        api = [self._latest.get("api")] + [self._latest.get(n) for n in sorted(self._api_workers.values())]
        cells = [
            f"{int(now // 60)}:{int(now % 60):02d}",
            f"{done.get('post', 0) / seconds:.0f}",
            f"{sum(done.values()) / seconds:.0f}",
            " / ".join(_mb(v) for v in api),
            " / ".join(_mb(self._latest.get(n)) for n, _ in self.workers),
            _mb(self._latest.get("relay")),
            _mb(self._latest.get("broker")),
            f"{self.lag[-1][1]:.0f}",
            str(unsent),
            str(unapplied),
            _ms(quantile(minute, 0.99)),
            " / ".join(str(errors[cls]) for cls in ("5xx", "4xx", "error")),
            str(dead_letters()),
            str(sum(self.restarts.values())),
            f"{cpu['load']:.2f} / {server:.2f} ({cpu['postgres']:.2f}) / {cpu['machine']:.2f}",
        ]
        line = "| " + " | ".join(cells) + " |"
        self.rows.append(line)
        return line
