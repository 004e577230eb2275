"""``make soak`` (``scripts/soak.py``): the steps in order. What it does and why is in
``devtools/soak/__init__.py``."""

import argparse
import os
import random
import signal
import sys
import time
from collections.abc import Sequence

from devtools.bench.cli import bench_env, services_reset, settings_env
from devtools.bench.common import ensure_wrk
from devtools.bench.cpu import machine_busy
from devtools.bench.readers import idle_mark
from devtools.bench.run import Run
from devtools.bench.seeding import graph_seed, load_files_write
from devtools.processes import ROOT
from devtools.soak import report
from devtools.soak.traffic import EVENT_KINDS, KIND_NAMES, LATE_SECONDS, MIX, Traffic
from devtools.soak.verdict import (
    LAG_TOLERANCE_SECONDS,
    Check,
    broker_note,
    feeds_dry_run,
    growth_checks,
    latency_check,
    verdict,
)
from devtools.soak.watch import HEAD, LEGEND, Watch, backlog, dead_letters, quantile
from devtools.stack import COMMANDS, Stack, devstack_fanout_workers, manage, wait_http

# Django is set up by main() from the soak's own environment, so the modules that need it
# are imported inside the functions.

RUN_DIR = ROOT / ".run" / "soak"
# A run of at least this many seconds (not --smoke) writes its section of BENCHMARKS.md.
FULL_SECONDS = 1800
# Seconds between RSS and lag samples (the growth checks' series).
SAMPLE_SECONDS = 10
# How long the outbox and the fan-out have to drain once the traffic stops.
DRAIN_SECONDS = 300
# The load generator is CPU-bound near one core: its threads share one GIL.
LOAD_CPU_BOUND = 0.9
# At most this share of the requests may start late (LATE_SECONDS) for the traffic to
# count as on schedule.
LATE_SHARE = 0.01


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The whole stack under a steady mix of traffic.")
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("SOAK_SECONDS", "1800")),
        help="seconds of traffic (default SOAK_SECONDS or 1800); 1800 or more writes BENCHMARKS.md",
    )
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("SOAK_WORKERS", "1")), help="fan-out workers"
    )
    parser.add_argument("--users", type=int, default=5000, help="accounts of the power-law graph")
    parser.add_argument("--avg-follows", type=int, default=50)
    parser.add_argument(
        "--measure-seconds", type=int, default=15, help="seconds of the maximum post rate's measurement"
    )
    parser.add_argument("--interval", type=int, default=60, help="seconds between the printed rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny graph and 20 s of traffic; writes no BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.avg_follows, args.seconds, args.measure_seconds, args.interval = 300, 10, 20, 3, 5
    return args


def soak_settings(args: argparse.Namespace) -> dict[str, str]:
    """The bench's settings (production otherwise), and the soak's own."""
    return {
        **settings_env(),
        # The final check holds every feed to what a rebuild would make it: so no feed is
        # trimmed, and a follow's backfill copies every post of the account, as a rebuild
        # does (devtools/soak/__init__.py).
        "FEED_MAX_ENTRIES": "1000000",
        "FEED_BACKFILL_LIMIT": "1000000",
        "FANOUT_WORKERS": str(args.workers),
    }


def soak_env(run: Run, settings: dict[str, str]) -> dict[str, str]:
    return {
        **bench_env(run, settings),
        "DATABASE_URL": os.environ.get("SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feeds_soak"),
        "REDIS_URL": os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/14"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``make soak``: seed, start the stack, measure the maximum post rate, run the traffic
    at half of it, drain, check; 1 if a check failed."""
    args = arguments(argv)
    # SIGTERM unwinds like Ctrl-C, so that the stack is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_wrk()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    # This run's logs only: the stack appends to them.
    for old in RUN_DIR.glob("*.log"):
        old.unlink()
    bench_args = argparse.Namespace(
        users=args.users, avg_follows=args.avg_follows, seconds=args.measure_seconds, pin_load=None
    )
    run = Run(
        args=bench_args,
        chance=random.Random(args.seed),
        users_file=RUN_DIR / "users.txt",
        authors_file=RUN_DIR / "authors.txt",
    )
    settings = soak_settings(args)
    env = soak_env(run, settings)
    os.environ.update(env)
    services_reset(env)
    prepare(run, env)

    from devtools.broker import broker_start, broker_stop
    from eventbus.topics import topics_ensure

    run.broker = broker_start(run.bootstrap, log=RUN_DIR / "broker.log")
    run.stack = Stack(env, RUN_DIR)
    try:
        topics_ensure()
        workers = stack_start(run, env)
        maximum = measure_max(run)
        target = maximum["rps"] / 2
        log(f"target: {target:.0f} requests/s, half the maximum post rate; {args.seconds} s of traffic")
        watch, traffic, busy = soak(run, args, workers, target)
        drained = wait_drained(timeout=DRAIN_SECONDS)
        lag = lag_settled(watch)
        checks = final_checks(
            env, watch, traffic, seconds=args.seconds, drained=drained, lag=lag, target=target
        )
    finally:
        run.stack.stop_all()
        broker_stop(run.broker)
    traffic_lines = traffic_table(traffic, seconds=args.seconds)
    load_line, on_schedule = load_summary(traffic, seconds=args.seconds, busy=busy)
    checks.append(on_schedule)
    outcome = verdict(checks)
    print("\n".join(["", *traffic_lines, "", load_line, ""]))
    print("\n".join(["| check | value | limit | result |", "|---|---|---|---|"]))
    for check in checks:
        print(f"| {check.name} | {check.value} | {check.limit} | {check.result} |")
    log(f"soak {outcome}")
    if section_due(args):
        section = report.render(
            seconds=args.seconds,
            workers=args.workers,
            graph=graph_summary(run),
            settings=settings,
            maximum=maximum,
            target=target,
            mix=mix_summary(target),
            legend=LEGEND,
            head=HEAD,
            rows=watch.rows,
            traffic=traffic_lines,
            load=load_line,
            checks=checks,
            verdict=outcome,
        )
        report.section_write(section)
        log("written to BENCHMARKS.md")
    return 0 if outcome == "passed" else 1


def section_due(args: argparse.Namespace) -> bool:
    """Whether the run writes its section of BENCHMARKS.md: a full-length one only."""
    return not args.smoke and args.seconds >= FULL_SECONDS


def prepare(run: Run, env: dict[str, str]) -> None:
    """The bench's graph with its idle accounts; the big accounts take no part in the
    traffic (devtools/soak/__init__.py). Then every feed rebuilt: the seeded history in
    the active users' feeds, the state the final check starts from."""
    graph_seed(run)
    idle_mark(run)
    stars = set(run.graph["stars"])
    run.graph["active"] = [user for user in run.graph["active"] if user not in stars]
    load_files_write(run)
    manage("rebuild_feeds", "--all", env=env)


def stack_start(run: Run, env: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    """The API, FANOUT_WORKERS workers and the relay, as make run starts them; the workers'
    names and environments."""
    workers = devstack_fanout_workers(env)
    run.stack.start("api")
    for name, extra_env in workers:
        run.stack.start(name, command=COMMANDS["fanout"], **extra_env)
    run.stack.start("relay")
    wait_http(f"{run.base}/healthz")
    for _, extra_env in workers:
        wait_http(f"http://127.0.0.1:{extra_env['FANOUT_METRICS_PORT']}/metrics")
    return workers


def measure_max(run: Run) -> dict:
    """The maximum post rate: wrk's closed loop, as the bench's POST run, posting as the
    traffic's users; then the backlog it left drained."""
    log(f"maximum post rate: wrk, {run.connections} connections, {run.args.seconds} s, closed loop")
    result = run.wrk(run.base, "post.lua")
    log(
        f"maximum: {result['rps']:.0f} posts/s (p99 {result['p99']:.0f} ms, non-2xx {result['non_2xx']}, "
        f"wrk {result['load_cpu']:.2f} cores, machine {result['cpu']['machine']:.2f})"
    )
    if result["non_2xx"]:
        log("WARNING: the maximum's run had responses other than 201")
    if wait_drained(timeout=DRAIN_SECONDS) is None:
        raise RuntimeError("the maximum's backlog did not drain")
    return result


def soak(
    run: Run, args: argparse.Namespace, workers: list[tuple[str, dict[str, str]]], target: float
) -> tuple[Watch, Traffic, float]:
    """The traffic at ``target`` requests per second shared by the mix, for
    ``args.seconds``, with a row of the table every ``args.interval``; a process that exits
    is started again (counted). Returns the watch, the traffic and the machine's busy cores
    meanwhile."""
    traffic = traffic_build(run, {kind: share * target for kind, share in MIX.items()}, seed=args.seed)
    watch = Watch(
        stack=run.stack,
        broker_pid=run.broker.pid,
        workers=[(name, int(extra_env["FANOUT_METRICS_PORT"])) for name, extra_env in workers],
        traffic=traffic,
        interval=args.interval,
    )
    log(f"mix per second: {mix_summary(target)}")
    print(f"\n{LEGEND}\n\n{HEAD}", flush=True)
    sample_every = min(SAMPLE_SECONDS, args.interval)
    next_sample, next_row = sample_every, args.interval
    busy_before = machine_busy()
    watch.begin()
    traffic.start(args.seconds)
    while (elapsed := watch.elapsed()) < args.seconds:
        time.sleep(min(1.0, args.seconds - elapsed))
        restart_exited(run.stack, workers, watch.restarts)
        elapsed = watch.elapsed()
        if elapsed >= next_row:
            print(watch.row(), flush=True)
            next_row += args.interval
            next_sample = elapsed + sample_every
        elif elapsed >= next_sample:
            watch.sample()
            next_sample += sample_every
    if watch.elapsed() - watch.latency_marks[-1][0] >= args.interval / 4:
        print(watch.row(), flush=True)
    busy = (machine_busy() - busy_before) / watch.elapsed()
    log("traffic stopping")
    traffic.stop()
    return watch, traffic, busy


def traffic_build(run: Run, rates: dict[str, float], *, seed: int) -> Traffic:
    """The traffic as the active users (the big accounts aside), whom they follow now, and
    follows going to accounts in proportion to their followers."""
    from follows.models import Follow

    users = run.graph["active"]
    stars = set(run.graph["stars"])
    follows: dict[int, set[int]] = {}
    pairs = Follow.objects.filter(follower_id__in=users).exclude(followee_id__in=stars)
    for follower, followee in pairs.values_list("follower_id", "followee_id").iterator(chunk_size=10_000):
        follows.setdefault(follower, set()).add(followee)
    by_followers = run.graph["by_followers"]
    candidates = sorted(user for user in by_followers if user not in stars)
    return Traffic(
        port=run.port,
        rates=rates,
        users={user: run.tokens[user] for user in users},
        follows=follows,
        candidates=candidates,
        weights=[by_followers[user] for user in candidates],
        seed=seed,
    )


def restart_exited(stack: Stack, workers: list[tuple[str, dict[str, str]]], restarts: dict[str, int]) -> None:
    """Start again any process of the stack that exited, counting it."""
    launches = dict(workers)
    for name, process in list(stack.processes.items()):
        if process.poll() is None:
            continue
        log(f"{name} exited with status {process.returncode}; starting it again")
        restarts[name] = restarts.get(name, 0) + 1
        if name in launches:
            stack.start(name, command=COMMANDS["fanout"], **launches[name])
        else:
            stack.start(name)


def wait_drained(*, timeout: float) -> float | None:
    """Seconds until the outbox is empty and the fan-out group has applied every event
    published (``watch.backlog``); None if that took longer than ``timeout``."""
    started = time.monotonic()
    while True:
        unsent, unapplied = backlog()
        if unsent == unapplied == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            log(f"not drained after {timeout} s: {unsent} outbox rows unsent, {unapplied} events unapplied")
            return None
        time.sleep(0.5)


def lag_settled(watch: Watch, *, timeout: float = 30.0) -> float:
    """The workers' lag once it is 0, or after ``timeout`` seconds (it is observed between
    batches, a moment after the events it counts are applied)."""
    deadline = time.monotonic() + timeout
    while (lag := watch.lag_now()) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return lag


def final_checks(
    env: dict[str, str],
    watch: Watch,
    traffic: Traffic,
    *,
    seconds: float,
    drained: float | None,
    lag: float,
    target: float,
) -> list[Check]:
    """Every check but the schedule's (``load_summary``), in the order printed."""
    missing, extra, line = feeds_dry_run(env)
    log(f"rebuild_feeds --all --dry-run: {line}")
    totals = traffic.totals()
    errors = {cls: sum(counted.get(cls, 0) for counted in totals.values()) for cls in ("5xx", "4xx", "error")}
    events = sum(totals[kind]["ok"] for kind in EVENT_KINDS if kind in totals)
    letters = dead_letters()
    # The series of the traffic's time only, not the drain's.
    rss = {name: [(t, v) for t, v in samples if t <= seconds] for name, samples in watch.rss.items()}
    broker = rss.pop("broker", [])
    lag_series = {"fan-out lag": [(t, v) for t, v in watch.lag if t <= seconds]}
    return [
        Check(
            "feeds: a rebuild's dry run",
            f"{missing} missing, {extra} extra",
            "0 and 0",
            missing == extra == 0,
        ),
        Check("dead letters", str(letters), "0", letters == 0),
        Check("5xx responses", str(errors["5xx"]), "0", errors["5xx"] == 0),
        Check("unexpected 4xx responses", str(errors["4xx"]), "0", errors["4xx"] == 0),
        Check("requests without a response", str(errors["error"]), "0", errors["error"] == 0),
        Check(
            "restarts",
            ", ".join(f"{name} {n}" for name, n in watch.restarts.items()) or "0",
            "0",
            not any(watch.restarts.values()),
        ),
        Check(
            "outbox and fan-out drained after the traffic",
            "not drained" if drained is None else f"{drained:.1f} s",
            f"≤ {DRAIN_SECONDS} s",
            drained is not None,
        ),
        Check("fan-out lag at the end", f"{lag:.0f}", "0", lag == 0),
        latency_check(quantile(watch.latency_since(seconds / 2), 0.99), seconds=seconds),
        *growth_checks(rss, seconds=seconds, unit="MB"),
        broker_note(broker, events=events),
        *growth_checks(
            lag_series,
            seconds=seconds,
            unit="messages",
            tolerance=LAG_TOLERANCE_SECONDS * target * sum(MIX[kind] for kind in EVENT_KINDS),
        ),
    ]


def traffic_table(traffic: Traffic, *, seconds: float) -> list[str]:
    """Each kind's target and achieved rates, latency from the scheduled start, the share
    started late, and the statuses, as markdown."""
    lines = [
        "| request | target/s | achieved/s | p50 ms | p99 ms | started late | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, stats in traffic.stats.items():
        latencies = sorted(stats.latencies)

        def at(q: float, latencies: list[float] = latencies) -> str:
            return (
                f"{latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000:,.1f}"
                if latencies
                else "-"
            )

        statuses = dict(sorted(stats.statuses.items(), key=str))
        if stats.skipped:
            statuses["nothing to do"] = stats.skipped
        if stats.dropped:
            statuses["dropped"] = stats.dropped
        late = stats.late / stats.done if stats.done else 0.0
        lines.append(
            f"| {KIND_NAMES[kind]} | {traffic.rates[kind]:.1f} | {stats.done / seconds:.1f} | {at(0.5)} "
            f"| {at(0.99)} | {late:.1%} | {statuses} |"
        )
    return lines


def load_summary(traffic: Traffic, *, seconds: float, busy: float) -> tuple[str, Check]:
    """The load generator's CPU and whether it kept up, and the check that the traffic
    ran on schedule."""
    load = traffic.thread_cpu / seconds
    done = sum(stats.done for stats in traffic.stats.values())
    late = sum(stats.late for stats in traffic.stats.values()) / max(done, 1)
    dropped = sum(stats.dropped for stats in traffic.stats.values())
    share = load / busy if busy else 0.0
    line = (
        f"Load generator: {load:.2f} cores on average ({share:.0%} of the machine's busy CPU, "
        f"{busy:.2f} of {os.cpu_count()} cores); its threads share one GIL, so about 1 core is its limit."
    )
    on_time = late <= LATE_SHARE and dropped == 0
    if on_time:
        line += f" It kept up: {1 - late:.1%} of the requests started within {LATE_SECONDS * 1000:.0f} ms."
    else:
        blame = (
            "the load generator (CPU-bound)"
            if load >= LOAD_CPU_BOUND
            else "the server (its answers were slow)"
        )
        line += (
            f" WARNING: the traffic fell behind its schedule, by {blame}: {late:.1%} of the requests "
            f"started more than {LATE_SECONDS * 1000:.0f} ms late, {dropped} were dropped at the end."
        )
    check = Check(
        "requests started on schedule",
        f"{1 - late:.1%} within {LATE_SECONDS * 1000:.0f} ms, {dropped} dropped",
        f"≥ {1 - LATE_SHARE:.0%}, 0 dropped",
        on_time,
    )
    return line, check


def mix_summary(target: float) -> str:
    return ", ".join(f"{share * target:.1f} {KIND_NAMES[kind]}" for kind, share in MIX.items())


def graph_summary(run: Run) -> str:
    return (
        f"{run.args.users:,} users in a power-law graph (~{run.args.avg_follows} follows each) of "
        f"{run.results['graph']['accounts']:,} accounts and {run.results['graph']['follows']:,} follows, "
        f"70% of the accounts idle; the traffic acts as the {len(run.graph['active']):,} active users"
    )
