"""The benchmark: ``make bench`` (``scripts/bench.py``).

Seeds a power-law social graph in a fresh database, runs the whole stack under
production settings (DEBUG off, gunicorn, ``run_fanout``, the outbox relay, a broker of
its own), measures the reference ceilings and the workloads, and prints a markdown table
that it also writes to BENCHMARKS.md. ``--smoke`` runs every step at a tiny size.
"""

import argparse
import os
import platform
import random
import secrets
import shutil
import subprocess
from collections.abc import Sequence

from devtools.bench.api_runs import measure_api
from devtools.bench.ceilings import measure_ceilings, measure_insert_select
from devtools.bench.common import RUN_DIR, ensure_wrk
from devtools.bench.fanout import fanout_compare, measure_fanout
from devtools.bench.hiding import measure_hiding, relations_seed
from devtools.bench.readers import idle_mark, measure_gating, measure_returning
from devtools.bench.report import render, report_write
from devtools.bench.run import Run
from devtools.bench.scaleout import measure_partitioning, measure_workers
from devtools.bench.seeding import FOLLOWER_LIMIT, graph_seed, load_files_write
from devtools.stack import Stack, database_recreate

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", "10000")))
    parser.add_argument("--avg-follows", type=int, default=int(os.environ.get("BENCH_AVG_FOLLOWS", "100")))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "20")))
    parser.add_argument(
        "--pin-load",
        metavar="CPUS",
        default=os.environ.get("BENCH_PIN_LOAD") or None,
        help="pin the load generators to these CPUs with taskset (default: not pinned)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="every step at a tiny size; writes no BENCHMARKS.md"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.avg_follows, args.seconds = 300, 10, 2
    return args


def settings_env() -> dict[str, str]:
    """The settings that differ from production, printed with the results."""
    return {
        "DJANGO_DEBUG": "false",
        "GUNICORN_WORKERS": os.environ.get("GUNICORN_WORKERS", "2"),
        "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "4"),
        "GUNICORN_QUEUE_THREADS": os.environ.get("GUNICORN_QUEUE_THREADS", "28"),
        "FANOUT_BATCH_SIZE": os.environ.get("FANOUT_BATCH_SIZE", "500"),
        "FANOUT_FOLLOWER_LIMIT": str(FOLLOWER_LIMIT),
        "THROTTLE_POSTS_RATE": "",
        # The uncached-read run sends every user's reads through Django as fast as it can.
        "THROTTLE_FEEDS_RATE": "",
    }


def bench_env(run: Run, settings: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **settings,
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
        # Production settings as the environment gives them, not a developer's .env.
        "DJANGO_ENV_FILE": "",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feeds_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "KAFKA_BOOTSTRAP_SERVERS": run.bootstrap,
        "PORT": str(run.port),
        "FANOUT_METRICS_PORT": str(run.metrics_port),
        "OUTBOX_RELAY_METRICS_PORT": "0",
        "FANOUT_SESSION_TIMEOUT_MS": "6000",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``make bench``: seed, start the stack, measure, and report."""
    args = arguments(argv)
    wrk_version = ensure_wrk()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    run = Run(args=args, chance=random.Random(args.seed))
    settings = settings_env()
    env = bench_env(run, settings)
    os.environ.update(env)
    services_reset(env)
    prepare(run)
    measure(run, env)
    fanout_compare(run)
    table = render(run.results, args=args, settings_env=settings, versions=versions(env, wrk=wrk_version))
    report_write(table, results=run.results, smoke=args.smoke)
    return 0


def services_reset(env: dict[str, str]) -> None:
    """Django set up from the benchmark's environment, its database recreated and its
    Redis database emptied."""
    import django
    import redis

    django.setup()
    database_recreate(env)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


def prepare(run: Run) -> None:
    """Seed the graph with a few blocks and mutes, measure the INSERT ... SELECT ceiling,
    write the users file wrk reads and the authors file of the POST runs."""
    graph_seed(run)
    relations_seed(run)
    idle_mark(run)
    measure_insert_select(run)
    load_files_write(run)


def measure(run: Run, env: dict[str, str]) -> None:
    """The runs that need the stack: a broker of the benchmark's own, then the API, the
    fan-out worker and the relay, started and stopped as each run needs them."""
    from devtools.broker import broker_start, broker_stop
    from eventbus.topics import topics_ensure

    run.broker = broker_start(run.bootstrap, log=RUN_DIR / "broker.log")
    run.stack = Stack(env, RUN_DIR)
    try:
        topics_ensure()
        measure_ceilings(run)
        measure_api(run)
        measure_fanout(run)
        measure_workers(run)
        measure_partitioning(run)
        measure_gating(run)
        measure_returning(run)
        measure_hiding(run)
    finally:
        run.stack.stop_all()
        broker_stop(run.broker)


def versions(env: dict[str, str], *, wrk: str) -> dict[str, str]:
    """The versions of what ran, printed with the results."""
    import django
    import redis

    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg_version(),
        "redis": redis.Redis.from_url(env["REDIS_URL"]).info()["redis_version"],
        "wrk": wrk,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "absent",
    }


def pg_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]
