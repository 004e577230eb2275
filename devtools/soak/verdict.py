"""The soak's final checks, and the judgement of whether a series kept rising.

A series keeps rising when, over the last half of the run, both

- the mean of its last third is above the mean of its middle third by more than the
  tolerance, and
- the least-squares line through its last half climbs by more than the tolerance across
  that half.

A leak moves both. Both must hold so that a one-off step (an allocator arena taken once,
a cache filled), which one of them can overstate, is not taken for a leak unless it is
large; noise around a level moves neither by more than a few MB. The first third is left
out: the processes warm up (imports, connection pools, caches, allocator arenas) in it.
"""

import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from devtools.processes import ROOT

# A process's RSS tolerance: this share of its level, but at least RSS_TOLERANCE_MB. 8 MB
# across the last half of a 30-minute run at 200 requests/s is 45 bytes a request: a leak
# of one small object per request exceeds it, while the noise around a level seen in
# short runs was 1-2 MB, and the steps an allocator makes a few MB.
RSS_TOLERANCE_SHARE = 0.05
RSS_TOLERANCE_MB = 8.0
# The lag's tolerance: this many seconds of the traffic's events (posts, follows,
# unfollows, deletes). A worker that keeps up is about a batch (FANOUT_BATCH_MS) behind;
# one whose backlog grows by more than 5 s of events across the last half fails.
LAG_TOLERANCE_SECONDS = 5.0
# Runs shorter than this are not judged for growth or latency: their last half is still
# warm-up (in 3-minute runs the API's and the worker's RSS settled within the first minute).
JUDGED_SECONDS = 300
# Post-to-feed p99 over the last half must stay within this, the PostToFeedLatencyHigh
# alert's threshold (deploy/alerts.yml).
POST_TO_FEED_P99_SECONDS = 1.0

# What `manage.py rebuild_feeds --dry-run` prints last.
DRY_RUN = re.compile(r"would change (\d+): (\d+) entries added, (\d+) removed")


@dataclass
class Growth:
    rise: float
    climb: float
    tolerance: float

    @property
    def rising(self) -> bool:
        return self.rise > self.tolerance and self.climb > self.tolerance

    def __str__(self) -> str:
        return f"last third {self.rise:+.1f} on the middle one, last half's fit {self.climb:+.1f}"


def growth(series: Sequence[tuple[float, float]], *, tolerance: float | None = None) -> Growth | None:
    """How much ``series`` ((time, value), in time order) rose over its last half (see the
    module's docstring); None with too few samples (fewer than 3 in each third). Without a
    ``tolerance``, RSS's: RSS_TOLERANCE_SHARE of the middle third's mean, at least
    RSS_TOLERANCE_MB."""
    if len(series) < 9:
        return None
    start, end = series[0][0], series[-1][0]
    span = end - start
    middle = [v for t, v in series if start + span / 3 <= t < start + 2 * span / 3]
    last = [v for t, v in series if t >= start + 2 * span / 3]
    half = [(t, v) for t, v in series if t >= start + span / 2]
    if min(len(middle), len(last)) < 3:
        return None
    level = statistics.fmean(middle)
    if tolerance is None:
        tolerance = max(RSS_TOLERANCE_MB, RSS_TOLERANCE_SHARE * level)
    slope = statistics.linear_regression([t for t, _ in half], [v for _, v in half]).slope
    return Growth(rise=statistics.fmean(last) - level, climb=slope * span / 2, tolerance=tolerance)


@dataclass
class Check:
    name: str
    value: str
    limit: str
    # None: not judged (a run too short for it).
    ok: bool | None

    @property
    def result(self) -> str:
        return {True: "ok", False: "FAILED", None: "not judged"}[self.ok]


def growth_checks(
    series: dict[str, list[tuple[float, float]]], *, seconds: float, unit: str, tolerance: float | None = None
) -> list[Check]:
    """A check per series that it did not keep rising; not judged in a run shorter than
    JUDGED_SECONDS, or for a series that covers less than half of the run (a process
    restarted late)."""
    checks = []
    for name, samples in series.items():
        judged = seconds >= JUDGED_SECONDS and samples and samples[-1][0] - samples[0][0] >= seconds / 2
        found = growth(samples, tolerance=tolerance) if judged else None
        if found is None:
            value = f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} {unit}" if samples else "no samples"
            checks.append(
                Check(f"{name} not rising", value, f"judged in runs of {JUDGED_SECONDS} s or more", None)
            )
        else:
            checks.append(
                Check(
                    f"{name} not rising",
                    f"{found} {unit}",
                    f"rise and fit each ≤ {found.tolerance:.1f} {unit}",
                    not found.rising,
                )
            )
    return checks


def broker_note(samples: list[tuple[float, float]], *, events: int) -> Check:
    """The dev broker's growth, not judged: it keeps every message in memory (Apache Kafka
    keeps them on disk, within the topic's retention), so it grows with the events by
    design. Its growth per event says whether that is all it does."""
    if len(samples) < 2 or not events:
        return Check(
            "broker RSS (dev broker, in memory)", "no samples", "not judged: grows with the events", None
        )
    grown = samples[-1][1] - samples[0][1]
    return Check(
        "broker RSS (dev broker, in memory)",
        f"{samples[0][1]:.0f} → {samples[-1][1]:.0f} MB, {grown * 1024 * 1024 / events:,.0f} bytes per event",
        "not judged: it keeps every message in memory",
        None,
    )


def latency_check(p99: float | None, *, seconds: float) -> Check:
    judged = seconds >= JUDGED_SECONDS
    return Check(
        "post→feed p99 over the last half",
        "no posts" if p99 is None else f"{p99 * 1000:,.0f} ms",
        f"≤ {POST_TO_FEED_P99_SECONDS * 1000:,.0f} ms"
        + ("" if judged else f", judged in runs of {JUDGED_SECONDS} s or more"),
        (p99 is not None and p99 <= POST_TO_FEED_P99_SECONDS) if judged else None,
    )


def feeds_dry_run(env: dict[str, str]) -> tuple[int, int, str]:
    """Entries a rebuild of every feed would add (missing) and remove (extra), from
    ``manage.py rebuild_feeds --all --dry-run``, and its report line."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "rebuild_feeds", "--all", "--dry-run"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip().splitlines()[-1]
    _, added, removed = DRY_RUN.search(line).groups()
    return int(added), int(removed), line


def verdict(checks: list[Check]) -> str:
    failed = [check.name for check in checks if check.ok is False]
    return "passed" if not failed else "FAILED: " + "; ".join(failed)
