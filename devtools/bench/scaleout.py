"""The scale-out runs, each side by side on the same graph in one run:

- ``measure_workers``: one fan-out worker, then two in one group, each draining the same
  size of burst and then carrying the 50%-of-maximum post load of the post-to-feed probe:
  rows/s, post-to-feed p99 and the workers' CPU per row written;
- ``measure_partitioning``: the same feed rows as FEED_PARTITIONS hash partitions, as one
  plain table (``feed_table_convert``, what the migration does), and partitioned again:
  fan-out rows/s in-process, uncached reads through the API (wrk), and the trim of the
  active users' feeds; and how long each conversion locked the table.
"""

import time

from devtools.bench.common import log, metric, wait_idle
from devtools.bench.cpu import CpuMeter, postgres_pids, with_descendants
from devtools.bench.fanout import burst_post, fanout_insert_select, fanout_timed, latency_100
from devtools.bench.run import Run
from devtools.processes import free_port
from devtools.stack import COMMANDS, wait_http

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.

WORKER_COUNTS = (1, 2)
# Feeds per trim in the trim run, and the bound it trims them to: low enough that most
# active feeds are cut.
TRIM_USERS = 2000
TRIM_TO = 50


def measure_workers(run: Run) -> None:
    """Each of WORKER_COUNTS: a burst posted while no worker runs, drained by that many
    workers started at once, then the post-to-feed probe with them."""
    run.results["workers"] = {}
    burst = 200 if run.args.smoke else 4000
    for count in WORKER_COUNTS:
        log(f"fan-out with {count} worker(s) in the group: a burst drained, then post-to-feed latency")
        wait_idle(run.metrics_url)
        workers_stop(run)
        burst_post(run, burst)
        urls = workers_start(run, count)
        meter = CpuMeter({"worker": lambda: workers_pids(run), "postgres": postgres_pids})
        started = time.monotonic()
        meter.start()
        drained = drained_by(urls)
        cores = meter.stop()
        # CPU µs per row written: the workers', PostgreSQL's, and the whole machine's
        # (the drain runs alone: nothing else is posting or reading).
        per_row = (time.monotonic() - started) * 1e6 / max(drained["rows"], 1)
        run.results["workers"][count] = {
            **drained,
            "posts": burst,
            "worker_us_per_row": cores["worker"] * per_row,
            "postgres_us_per_row": cores["postgres"] * per_row,
            "machine_us_per_row": cores["machine"] * per_row,
        }
        # The probe with every worker in the group (a drain can end before the last joins).
        workers_owning(urls)
        run.results["workers"][count]["latency_100"] = latency_100(run)
    # Back to the first worker alone: the others leave and it takes their partitions (on
    # the dev broker, a worker that joins an emptied group at once may wait minutes).
    workers_stop(run, keep="fanout")
    workers_owning([run.metrics_url])


def workers_stop(run: Run, *, keep: str | None = None) -> None:
    for name in [n for n in run.stack.processes if n.startswith("fanout") and n != keep]:
        run.stack.stop(name)


def workers_owning(urls: list[str], *, timeout: float = 60.0) -> None:
    """Wait until the workers at ``urls`` own every partition of the events topic between
    them, each some: the runs measure the group at work, not its join."""
    from django.conf import settings

    deadline = time.monotonic() + timeout
    while True:
        owned = [metric(url, "feed_fanout_assigned_partitions") for url in urls]
        if sum(owned) == settings.FEED_EVENTS_PARTITIONS and min(owned) > 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers own {owned} partitions after {timeout:.0f} s")
        time.sleep(0.2)


def workers_start(run: Run, count: int) -> list[str]:
    """Start ``count`` workers at once, so that they join the group in one generation, the
    first on the run's metrics port; their metrics URLs, once each answers."""
    urls = []
    for n in range(count):
        port = run.metrics_port if n == 0 else free_port()
        run.stack.start(
            "fanout" if n == 0 else f"fanout-{n + 1}",
            command=COMMANDS["fanout"],
            FANOUT_METRICS_PORT=str(port),
        )
        urls.append(f"http://127.0.0.1:{port}/metrics")
    for url in urls:
        wait_http(url)
    return urls


def workers_pids(run: Run) -> list[int]:
    """The running workers' processes."""
    return [
        pid
        for name, process in run.stack.processes.items()
        if name.startswith("fanout")
        for pid in with_descendants(process.pid)
    ]


def drained_by(urls: list[str], *, quiet: float = 3.0, timeout: float = 300.0) -> dict:
    """Feed rows the workers at ``urls`` write until their sum stops growing for ``quiet``
    seconds once it started (after the group join), the seconds from the first row to the
    last, and each worker's share of the rows."""

    def written() -> list[float]:
        return [metric(url, "feed_fanout_rows_total") for url in urls]

    start = written()
    deadline, rows, first, last = time.monotonic() + timeout, start, None, None
    while time.monotonic() < deadline and (last is None or time.monotonic() - last < quiet):
        if (now := written()) != rows:
            moment = time.monotonic()
            first, last, rows = first or moment, moment, now
        time.sleep(0.05)
    if last is None:
        raise RuntimeError("the workers wrote no feed rows")
    per_worker = [after - before for before, after in zip(start, rows, strict=True)]
    total = sum(per_worker)
    # The first change is seen up to one poll after the first batch: at least one poll long.
    seconds = max(last - first, 0.05)
    return {
        "rows": total,
        "seconds": seconds,
        "rows_per_s": total / seconds,
        "shares": [n / max(total, 1) for n in per_worker],
    }


def measure_partitioning(run: Run) -> None:
    """The feed table partitioned, as one plain table, and partitioned again, with the
    stack running: each layout's fan-out, uncached reads and trim, and the conversions."""
    from django.conf import settings

    partitions = settings.FEED_PARTITIONS
    run.results["partitioning"] = layouts = []
    for layout in (partitions, 0, partitions):
        conversion = feed_layout(layout)
        log(f"feed table as {layout or 'one plain table'}: fan-out, uncached reads and trim")
        wait_idle(run.metrics_url)
        layouts.append(
            {
                "partitions": layout,
                "conversion": conversion,
                "fanout": fanout_timed(fanout_insert_select, run.results["fanout_burst"]["post_ids"]),
                "read": run.wrk(run.base, "feed.lua", BENCH_FEED_QUERY="?limit=19"),
                "trim": trim_timed(run),
            }
        )


def feed_layout(partitions: int) -> dict | None:
    """The feed table converted to ``partitions`` (0: one plain table) as the migration
    does, while the stack runs; what the conversion did, None if it had that layout."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from feeds.partitioning import feed_partitions, feed_table_convert

    if feed_partitions() == partitions:
        return None
    log(f"converting the feed table to {partitions or 'one plain table'}")
    started = time.monotonic()
    with transaction.atomic():
        conversion = feed_table_convert(partitions, user_table=get_user_model()._meta.db_table)
    log(str(conversion))
    return {
        "rows": conversion.rows,
        "copy_seconds": conversion.copy_seconds,
        "swap_seconds": conversion.swap_seconds,
        "seconds": time.monotonic() - started,
    }


def trim_timed(run: Run) -> dict:
    """``feeds_trim`` of TRIM_USERS active users' feeds to TRIM_TO entries, rolled back:
    the wall seconds and the rows it deleted."""
    from django.db import transaction
    from django.test import override_settings

    from feeds.services import feeds_trim

    users = run.graph["active"][:TRIM_USERS]
    with transaction.atomic(), override_settings(FEED_MAX_ENTRIES=TRIM_TO):
        started = time.monotonic()
        deleted = feeds_trim(user_ids=users)
        seconds = time.monotonic() - started
        transaction.set_rollback(True)
    return {"users": len(users), "deleted": deleted, "seconds": seconds, "to": TRIM_TO}
