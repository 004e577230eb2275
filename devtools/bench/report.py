"""The results as the markdown of BENCHMARKS.md, and where they are written."""

import argparse
import datetime
import json
import os
import platform

from devtools.bench.common import RUN_DIR, log
from devtools.bench.cpu import SERVER_GROUPS
from devtools.bench.seeding import AUTHOR_FOLLOWERS, CELEBRITY_FOLLOWERS
from devtools.processes import ROOT


def render(r: dict, *, args: argparse.Namespace, settings_env: dict, versions: dict) -> str:
    """The results as the markdown of BENCHMARKS.md."""
    lines = _render_header(r, args=args, settings_env=settings_env, versions=versions)
    lines += _render_closed(r)
    if "web_timeline" in r:
        lines += _render_web(r)
    if "feed_cached_open" in r:
        lines += _render_open(r)
    lines += _render_cpu(r, args=args)
    lines += _render_fanout(r)
    if "workers" in r:
        lines += _render_workers(r)
    if "partitioning" in r:
        lines += _render_partitioning(r)
    if "returning" in r:
        lines += _render_readers(r)
    if "hiding" in r:
        lines += _render_hiding(r)
    lines += _render_targets(r)
    lines += _render_commands(args)
    return "\n".join(lines)


def report_write(table: str, *, results: dict, smoke: bool) -> None:
    """The table on stdout and, unless ``smoke``, in BENCHMARKS.md, keeping the soak's
    section there (``make soak``); the raw results in the run directory."""
    print(table)
    if not smoke:
        from devtools.soak.report import soak_section_keep

        path = ROOT / "BENCHMARKS.md"
        path.write_text(soak_section_keep(table, old=path.read_text() if path.exists() else ""))
        log("written to BENCHMARKS.md")
    (RUN_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))


def _render_header(r: dict, *, args: argparse.Namespace, settings_env: dict, versions: dict) -> list[str]:
    cpu = platform.processor() or platform.machine()
    pinned = (
        f"pinned with `taskset -c {args.pin_load}`; the server is not pinned"
        if args.pin_load
        else "not pinned: they and the server share every CPU"
    )
    return [
        "# Benchmarks",
        "",
        f"Run on {datetime.date.today().isoformat()}: {os.cpu_count()} CPUs ({cpu}); "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        f"Graph: {args.users:,} active users (of {r['graph']['accounts']:,} accounts), "
        f"{r['graph']['follows']:,} follows (power law, ~{args.avg_follows} per user), big accounts "
        f"with {CELEBRITY_FOLLOWERS[0]:,} and {CELEBRITY_FOLLOWERS[1]:,} followers, 2 seeded posts per user.",
        "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings_env.items()) + "; production otherwise.",
        f"Load: wrk (2 threads, 32 connections) and the open-loop driver, {pinned}. "
        f"{args.seconds} s per run. The POST runs post as the {r['authors']['count']} active users "
        f"with follower counts nearest {AUTHOR_FOLLOWERS} ({r['authors']['mean_followers']:.0f} on average).",
        "",
    ]


# Each row of the closed-loop table: its key in the results, its name, its ceiling's key
# (None: it is a ceiling; "": it has none).
CLOSED_ROWS = [
    ("bare", "bare WSGI + 1 Redis GET (read ceiling)", None),
    ("feed_cached", "GET /feeds/{id}, cached", "bare"),
    ("feed_uncached", "GET /feeds/{id}?limit=19, uncached", ""),
    (
        "bare_write",
        "bare durable write: post row + outbox row, one committed transaction (write ceiling)",
        None,
    ),
    ("post_paused", "POST /posts, fan-out worker stopped (the API's own cost)", "bare_write"),
    ("post", f"POST /posts, fan-out worker running, ~{AUTHOR_FOLLOWERS} followers per author", "bare_write"),
]

OPEN_ROWS = [
    ("feed_cached_open", "GET /feeds/{id}, cached, open loop", "bare"),
    ("post_open", "POST /posts, worker running, open loop", "bare_write"),
]


def _render_closed(r: dict) -> list[str]:
    def closed(key: str, name: str, ceiling: str | None) -> str:
        w = r[key]
        ratio = "100%" if ceiling is None else f"{w['rps'] / r[ceiling]['rps']:.0%}" if ceiling else ""
        cells = [name, f"{w['rps']:,.0f}", ratio, *(f"{w[p]:.1f}" for p in ("p50", "p90", "p99"))]
        note = ""
        if key == "bare":
            note = f"returns a real {r['bare_body_bytes']:,}-byte feed page"
        elif key == "post_paused":
            note = f"backlog drained {w['drain']:.1f} s after the worker's restart (group join included)"
        elif key == "post":
            note = f"backlog drained {w['drain']:.2f} s after the run"
        return "| " + " | ".join([*cells, str(w["non_2xx"]), note]) + " |"

    return [
        "## Closed loop (wrk)",
        "",
        "Each ratio is to the ceiling of its kind measured in this run: the read ceiling for",
        "reads, the durable-write ceiling for posts.",
        "",
        "| workload | req/s | of its ceiling | p50 ms | p90 ms | p99 ms | non-2xx | note |",
        "|---|---|---|---|---|---|---|---|",
        *(closed(*row) for row in CLOSED_ROWS),
        "",
    ]


# The web timeline is to be served within this many times the uncached API read's p50.
WEB_TIMELINE_GOAL = 2.0


def _render_web(r: dict) -> list[str]:
    w, api = r["web_timeline"], r["feed_uncached"]
    times = w["p50"] / api["p50"]
    verdict = "met" if times <= WEB_TIMELINE_GOAL else "not met"
    return [
        "## Web timeline",
        "",
        "`GET /` signed in (a session per active user): the first page of the reader's feed from",
        "PostgreSQL, as the uncached API read, plus the session, the reader's own newest posts,",
        f"who to follow and the template. Goal: a p50 within {WEB_TIMELINE_GOAL:g}x the uncached API read's.",
        "",
        "| workload | req/s | p50 ms | p90 ms | p99 ms | non-2xx | p50 of the uncached API read | goal |",
        "|---|---|---|---|---|---|---|---|",
        f"| GET / (web timeline), signed in | {w['rps']:,.0f} | "
        + " | ".join(f"{w[p]:.1f}" for p in ("p50", "p90", "p99"))
        + f" | {w['non_2xx']} | {times:.2f}x | ≤ {WEB_TIMELINE_GOAL:g}x: {verdict} |",
        "",
    ]


def _render_open(r: dict) -> list[str]:
    def opened(name: str, o: dict) -> str:
        cells = [
            name,
            f"{o['rate']:,.0f}",
            f"{o['rps']:,.0f}",
            *(f"{o[p]:.1f}" for p in ("p50", "p90", "p99")),
        ]
        return "| " + " | ".join([*cells, str(o["statuses"])]) + " |"

    return [
        "## Open loop at 70% of the closed-loop maximum",
        "",
        "Latency counted from each request's scheduled start (`scripts/bench/openloop.js`, Node),",
        "so stalls are not hidden by coordinated omission. POST /posts runs at 70% of the",
        "worker-running maximum, with the worker running.",
        "",
        "| workload | target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | statuses |",
        "|---|---|---|---|---|---|---|",
        opened("GET /feeds/{id}, cached", r["feed_cached_open"]),
        opened("POST /posts, worker running", r["post_open"]),
        "",
    ]


def cpu_figures(w: dict, ceiling: dict | None) -> dict:
    """The CPU table's derived figures of one run: server cores, CPU per request, the ratio
    to its ceiling when both are CPU-bound, and what bounded it."""
    server = sum(w["cpu"][g] for g in SERVER_GROUPS)
    requests = max(w["requests"], 1)
    seconds = w["elapsed"]
    server_us = server * seconds / requests * 1e6
    total_us = (server + w["load_cpu"]) * seconds / requests * 1e6
    figures = {"server": server, "server_us": server_us, "total_us": total_us, "bound_ratio": None}
    if ceiling is not None:
        figures["bound_ratio"] = cpu_figures(ceiling, None)["total_us"] / total_us
    cpus = os.cpu_count() or 1
    if w["load_cpu"] >= 0.9 * min(w["load_threads"], cpus):
        figures["bound"] = "load generator"
    elif w["cpu"]["machine"] >= 0.9 * cpus:
        figures["bound"] = "CPU (all cores busy)"
    else:
        figures["bound"] = "neither: waits"
    return figures


def _cpu_row(r: dict, key: str, name: str, ceiling: str | None) -> str:
    w = r[key]
    f = cpu_figures(w, r[ceiling] if ceiling else None)
    other = max(0.0, w["cpu"]["machine"] - f["server"] - w["load_cpu"])
    ratio = "100%" if ceiling is None else f"{f['bound_ratio']:.0%}" if ceiling else ""
    cells = [
        name,
        *(f"{w['cpu'][g]:.2f}" for g in SERVER_GROUPS),
        f"{f['server']:.2f}",
        f"{w['load_cpu']:.2f}",
        f"{other:.2f}",
        f"{f['server_us']:,.0f}",
        f"{1e6 / f['server_us']:,.0f}" if f["server_us"] else "",
        ratio,
        f["bound"],
    ]
    return "| " + " | ".join(cells) + " |"


def _render_cpu(r: dict, *, args: argparse.Namespace) -> list[str]:
    rows = [_cpu_row(r, *row) for row in CLOSED_ROWS + OPEN_ROWS if row[0] in r]
    return [
        "## CPU per run",
        "",
        "Cores used on average during each run, from `/proc/<pid>/stat` deltas: the HTTP server",
        "(the API, or the bare app of a ceiling, all its workers), the fan-out worker, the outbox",
        "relay, the broker, PostgreSQL (the backends of the benchmark's database and the server's",
        "background processes), Redis (the whole server), their sum (`server`), the load",
        "generator (`load`, from its rusage) and whatever else the",
        "machine ran (`other`, from `/proc/stat`). `µs/req` is the server's CPU per request;",
        "`req/core-s` its inverse, the requests one core serves (the seed quotes 1,200 posts/s",
        "on 10 cores, 120 per core). `CPU-bound ratio` is the ratio to the ceiling that holds",
        "when both are bound by CPU: the ceiling's CPU per request, server and load generator",
        "together, over the row's. `bound by`: the load generator when it used 90% of the cores",
        "its threads can use; CPU when the machine's cores were 90% busy; otherwise the run",
        "waited (latency, locks, I/O).",
        "",
        "| run | API | worker | relay | broker | PostgreSQL | Redis | server | load | other "
        "| µs/req | req/core-s | CPU-bound ratio | bound by |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _render_fanout(r: dict) -> list[str]:
    return [
        "## Fan-out",
        "",
        "| measure | value |",
        "|---|---|",
        *_fanout_rate_rows(r),
        *_fanout_latency_rows(r),
        f"| peak RSS | worker {r['rss_worker_mb']:.0f} MB, largest API worker {r['rss_api_mb']:.0f} MB |",
        "",
    ]


def _render_workers(r: dict) -> list[str]:
    def row(count: int, w: dict) -> str:
        lat = w["latency_100"]
        shares = " / ".join(f"{share:.0%}" for share in w["shares"])
        return (
            f"| {count} | {w['posts']:,} | {w['rows']:,.0f} | {w['seconds']:.2f} | {w['rows_per_s']:,.0f} "
            f"| {shares} | {w['worker_us_per_row']:.1f} | {w['postgres_us_per_row']:.1f} "
            f"| {w['machine_us_per_row']:.1f} | {lat['p50'] * 1000:.0f} / {lat['p99'] * 1000:.0f} |"
        )

    return [
        "## Fan-out workers side by side",
        "",
        "Each count in turn on the same graph: a burst posted while no worker runs, drained by that",
        "many `run_fanout` processes started at once in one group (from the first row written to",
        "the last; the join is not counted), then the post-to-feed probe of the fan-out table with",
        "them. CPU per row is measured from the workers' start to 3 s after the last row, with",
        "nothing else posting or reading: the join and the idle tail are in it, so it is an upper bound.",
        "",
        "| workers | burst posts | rows | drain s | rows/s | rows per worker | worker CPU µs/row "
        "| PostgreSQL CPU µs/row | machine CPU µs/row | post to feed p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(row(count, w) for count, w in r["workers"].items()),
        "",
    ]


def _render_partitioning(r: dict) -> list[str]:
    def row(layout: dict) -> str:
        name = f"{layout['partitions']} hash partitions" if layout["partitions"] else "one plain table"
        c, f, read, trim = layout["conversion"], layout["fanout"], layout["read"], layout["trim"]
        converted = (
            f"{c['rows']:,} rows: writes waited {c['copy_seconds']:.1f} s, reads {c['swap_seconds']:.2f} s"
            if c
            else "(as migrated)"
        )
        return (
            f"| {name} | {converted} | {f['rows_per_s']:,.0f} | {read['rps']:,.0f} | {read['p50']:.1f} "
            f"| {read['p99']:.1f} | {read['non_2xx']} "
            f"| {trim['seconds'] * 1000:,.0f} ({trim['deleted']:,} rows) |"
        )

    trim = r["partitioning"][0]["trim"]
    return [
        "## The feed table partitioned or not",
        "",
        "The same rows in each layout in turn, converted by `feed_table_convert` (what the",
        "migration runs) while the stack runs: the burst's fan-out written again in one process",
        "(`feed_fanout_posts`, one transaction), uncached `GET /feeds/{id}?limit=19` through the",
        f"API (wrk), and `feeds_trim` of {trim['users']:,} active users' feeds to {trim['to']} entries"
        " (rolled back).",
        "",
        "| layout | conversion into it | fan-out rows/s | uncached read req/s | p50 ms | p99 ms "
        "| non-2xx | trim ms |",
        "|---|---|---|---|---|---|---|---|",
        *(row(layout) for layout in r["partitioning"]),
        "",
    ]


def _fanout_rate_rows(r: dict) -> list[str]:
    """The rows/s of the INSERT ... SELECT ceiling, of the worker's burst, and of the burst
    written again in one process both ways."""
    c, b = r["ceiling_insert_select"], r["fanout_burst"]
    burst_rate = b["rows"] / b["seconds"] if b["seconds"] else float("nan")
    sql, bulk = r["fanout_insert_select"], r["fanout_bulk_create"]
    return [
        f"| INSERT ... SELECT ... ON CONFLICT DO NOTHING (ceiling) | {c['rows_per_s']:,.0f} rows/s "
        f"({c['rows']:,} rows in {c['seconds']:.1f} s) |",
        f"| one run_fanout process, burst of {b['posts']:,} posts | {burst_rate:,.0f} rows/s "
        f"({b['rows']:,.0f} rows in {b['seconds']:.1f} s of batches), "
        f"{burst_rate / c['rows_per_s']:.0%} of the ceiling |",
        f"| the same burst in one process, INSERT ... SELECT (`feed_fanout_posts`), best of 2 "
        f"| {sql['rows_per_s']:,.0f} rows/s ({sql['rows']:,} rows in {sql['seconds']:.2f} s, "
        f"{sql['cpu']:.2f} s of Python CPU), {sql['rows_per_s'] / c['rows_per_s']:.0%} of the ceiling |",
        f"| the same burst in one process, bulk_create(ignore_conflicts=True), best of 2 "
        f"| {bulk['rows_per_s']:,.0f} rows/s ({bulk['rows']:,} rows in {bulk['seconds']:.2f} s, "
        f"{bulk['cpu']:.2f} s of Python CPU, {bulk['cpu'] / bulk['rows'] * 1e6:.1f} µs per row), "
        f"{bulk['rows_per_s'] / c['rows_per_s']:.0%} of the ceiling, "
        f"{bulk['rows_per_s'] / sql['rows_per_s']:.0%} of INSERT ... SELECT |",
    ]


def _fanout_latency_rows(r: dict) -> list[str]:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    l100, l9k = r["latency_100"], r["latency_9k"]
    return [
        f"| post to feed via the API, {l100['author_followers']}-follower author posting "
        f"{l100['probe_rate']:.0f}/s in {l100['rate']:,.0f} posts/s in all (50% of the "
        f"worker-running maximum) | p50 {ms(l100['p50'])}, p99 {ms(l100['p99'])} "
        f"({l100['posts']} posts; 3 followers' first pages polled every 20 ms) |",
        f"| post to feed via the API, {l9k['author_followers']:,}-follower author "
        f"| p50 {ms(l9k['p50'])}, p99 {ms(l9k['p99'])} ({l9k['posts']} posts at 2/s, no other "
        f"load; until all {l9k['watchers']} sampled followers, their first pages polled "
        "every 20 ms, saw each) |",
    ]


def _render_readers(r: dict) -> list[str]:
    g, back, readers = r["gating"], r["returning"], r["readers"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    rebuilt = (
        f"{back['rebuild_seconds']:.2f} s" if back["rebuild_seconds"] is not None else "not within 120 s"
    )
    return [
        "",
        "## Fan-out to readers",
        "",
        f"{readers['idle']:,} of {readers['accounts']:,} accounts are idle (not seen for 60 days, past "
        "`FEED_ACTIVE_SECONDS`); the load runs read and post as active users only.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| feed rows per post of the burst, fan-out to active followers | {g['rows_per_post']:.1f} |",
        f"| the same posts, fan-out to every follower | {g['rows_per_post_ungated']:.1f} |",
        f"| first read of a returning user ({back['readers']}, uncached), p50 / p99 "
        f"| {ms(back['first_read']['p50'])} / {ms(back['first_read']['p99'])} |",
        f"| uncached read of an active user, p50 / p99 "
        f"| {ms(back['active_read']['p50'])} / {ms(back['active_read']['p99'])} |",
        f"| from the first return to all {back['readers']} feeds rebuilt by the worker | {rebuilt} |",
    ]


def _render_hiding(r: dict) -> list[str]:
    h, seeded = r["hiding"], r.get("relations", {})

    def ms(p: dict) -> str:
        return f"{p['p50'] * 1000:.1f} / {p['p99'] * 1000:.1f} ms"

    def row(name: str, phase: dict) -> str:
        return f"| {name} | {ms(phase['first'])} | {ms(phase['history'])} |"

    return [
        "",
        "## Reads at the limit of blocks and mutes",
        "",
        f"The graph holds {seeded.get('mutes', 0):,} mutes and {seeded.get('blocks', 0):,} blocks. "
        f"{h['readers']} active users' uncached reads through the API, {h['none']['reads']:,} of each "
        "page kind per phase: with none of "
        f"their own, then with {h['each']['blocks']:,} blocks and {h['each']['mutes']:,} mutes each "
        f"({h['rows']['blocks']:,} blocks and {h['rows']['mutes']:,} mutes in the tables; of accounts "
        "made for it, with no follows, so the pages hold the same posts), then with none again. One "
        "request at a time: the client waits on each answer, so it is not what limits them.",
        "",
        "| blocks and mutes of the reader | first page, p50 / p99 | page below the stored entries "
        "(history), p50 / p99 |",
        "|---|---|---|",
        row("none", h["none"]),
        row(f"{h['each']['blocks']:,} + {h['each']['mutes']:,}", h["max"]),
        row("none, again", h["none_again"]),
    ]


def targets(r: dict) -> list[tuple[str, str, str, bool]]:
    """The write pipeline's targets: each one's name, goal, this run's figure and whether
    it was met."""
    out = []
    for name, goal, value, unit in _target_figures(r):
        if unit == "ratio":
            out.append((name, f"≥ {goal:.0%}", f"{value:.0%}", value >= goal))
        elif unit == "s":
            out.append((name, f"≤ {goal:g} s", f"{value:.2f} s", value <= goal))
        else:
            out.append((name, f"≤ {goal:g} ms", f"{value:.1f} ms", value <= goal))
    return out


def _target_figures(r: dict) -> list[tuple[str, float, float, str]]:
    """Each target's name, goal, this run's figure and its unit (a ratio, s or ms)."""

    def share(key: str, ceiling: str) -> float:
        return r[key]["rps"] / r[ceiling]["rps"]

    burst = r["fanout_burst"]
    fanout = burst["rows"] / burst["seconds"] / r["ceiling_insert_select"]["rows_per_s"]
    rows = [
        ("GET /feeds/{id} cached, of the read ceiling", 0.85, share("feed_cached", "bare"), "ratio"),
        (
            "POST /posts, worker stopped, of the write ceiling",
            0.70,
            share("post_paused", "bare_write"),
            "ratio",
        ),
        ("POST /posts, worker running, of the write ceiling", 0.45, share("post", "bare_write"), "ratio"),
        ("POST /posts, worker running: its backlog drained after the run", 2.0, r["post"]["drain"], "s"),
        ("POST /posts open loop at 70% of the worker-running maximum, p99", 25.0, r["post_open"]["p99"], "ms")
        if "post_open" in r
        else None,
        ("post to feed, 100-follower author at 50% of the maximum, p99", 0.1, r["latency_100"]["p99"], "s"),
        ("post to feed, 9,000-follower author, p99", 1.0, r["latency_9k"]["p99"], "s"),
        ("fan-out by one worker, of the INSERT ... SELECT ceiling", 0.85, fanout, "ratio"),
    ]
    return list(filter(None, rows))


def _render_targets(r: dict) -> list[str]:
    return [
        "## Targets",
        "",
        "The write pipeline's targets, each against the figure of this run.",
        "",
        "| target | goal | this run | verdict |",
        "|---|---|---|---|",
        *(
            f"| {name} | {goal} | {value} | {'met' if met else 'not met'} |"
            for name, goal, value, met in targets(r)
        ),
        "",
    ]


def _render_commands(args: argparse.Namespace) -> list[str]:
    pin = f"taskset -c {args.pin_load} " if args.pin_load else ""
    return [
        "## Commands",
        "",
        "```",
        "make bench  # or:",
        f"scripts/bench.py --users {args.users} --avg-follows {args.avg_follows} --seconds {args.seconds}"
        + (f" --pin-load {args.pin_load}" if args.pin_load else ""),
        f"{pin}wrk -t2 -c32 -d{args.seconds}s --latency -s scripts/bench/feed.lua <api>",
        f"{pin}wrk -t2 -c32 -d{args.seconds}s --latency -s scripts/bench/post.lua <api>",
        f"{pin}node scripts/bench/openloop.js <api> <users> 'GET /feeds' <rate> {args.seconds} 64",
        "```",
        "",
    ]
