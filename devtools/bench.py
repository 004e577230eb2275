"""The benchmark: ``make bench`` (``scripts/bench.py``).

Seeds a power-law social graph in a fresh database, runs the whole stack under
production settings (DEBUG off, gunicorn, ``run_fanout``, the outbox relay, a broker of
its own), measures the reference ceilings and the workloads, and prints a markdown table
that it also writes to BENCHMARKS.md. ``--smoke`` runs every step at a tiny size.
"""
# Django is set up by main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import ROOT, free_port
from devtools.stack import Stack, database_recreate, wait_http

RUN_DIR = ROOT / ".run" / "bench"
LUA_DIR = ROOT / "scripts" / "bench"

# The two big accounts: one above FANOUT_FOLLOWER_LIMIT (merged at read time), one below.
CELEBRITY_FOLLOWERS = (20_000, 9_000)
FOLLOWER_LIMIT = 10_000
# wrk runs on this CPU; the server processes may use every CPU.
LOAD_CPU = "1"


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


# --- Seeding -----------------------------------------------------------------------------


def follow_graph(
    ids: list[int], *, users: int, avg_follows: int, chance: random.Random
) -> set[tuple[int, int]]:
    """A power-law follow graph among the first ``users`` accounts of ``ids``, plus the big
    accounts' followers drawn from all of them."""
    active = ids[:users]
    stars = ids[: len(CELEBRITY_FOLLOWERS)]
    # Power law: a few accounts draw most follows (Zipf weights by rank), and follow counts
    # per user are Pareto-distributed around the average.
    candidates = active[len(stars) :]
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(candidates))]
    pairs: set[tuple[int, int]] = set()
    for follower in progress(active, desc="follows", unit="user"):
        count = min(
            int(chance.paretovariate(1.6) * avg_follows * 0.375), len(candidates) - 1, avg_follows * 20
        )
        for followee in chance.choices(candidates, weights=weights, k=max(count, 1)):
            if followee != follower:
                pairs.add((follower, followee))
    for star, followers in zip(stars, CELEBRITY_FOLLOWERS, strict=True):
        for follower in chance.sample([i for i in ids if i != star], min(followers, len(ids) - 1)):
            pairs.add((follower, star))
    return pairs


def seed(*, users: int, avg_follows: int, posts_per_user: int, chance: random.Random) -> dict:
    """Users, tokens, a power-law follow graph with two big accounts, and a post history."""
    from django.db import connection

    from devtools.seed import follows_copy, posts_history, tokens_ensure, users_ensure

    accounts = max(users, max(CELEBRITY_FOLLOWERS) + 1)
    ids, _ = users_ensure([f"bench{n}" for n in range(1, accounts + 1)], password="bench-password")
    tokens, _ = tokens_ensure(ids)
    pairs = follow_graph(ids, users=users, avg_follows=avg_follows, chance=chance)
    follows_copy(pairs, progress=progress)
    # A history to read: posts_per_user posts by every active user, old enough to be
    # history, fanned out with one INSERT ... SELECT (the ceiling measured below).
    posts_history(ids[:users], per_author=posts_per_user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "accounts": accounts,
        "active": ids[:users],
        "stars": ids[: len(CELEBRITY_FOLLOWERS)],
        "follows": len(pairs),
        "by_followers": count_followers(),
        "tokens": tokens,
    }


def count_followers() -> dict[int, int]:
    from django.db.models import Count

    from follows.models import Follow

    return dict(Follow.objects.values("followee_id").annotate(n=Count("*")).values_list("followee_id", "n"))


def followers(user_id: int) -> list[int]:
    from follows.models import Follow

    return list(
        Follow.objects.filter(followee_id=user_id)
        .order_by("follower_id")
        .values_list("follower_id", flat=True)
    )


def fanout_ceiling(*, follower_limit: int) -> dict:
    """Write the seeded history into the feed table with INSERT ... SELECT ... ON CONFLICT
    DO NOTHING, straight in PostgreSQL: the rows/s no fan-out path can beat."""
    from django.db import connection

    from feeds.models import FeedEntry, PulledAuthor
    from follows.models import Follow
    from posts.models import Post

    feeds, pulled = FeedEntry._meta.db_table, PulledAuthor._meta.db_table
    follows, posts = Follow._meta.db_table, Post._meta.db_table
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {feeds} (user_id, post_id)"
            f" SELECT f.follower_id, p.id FROM {posts} p"
            f" JOIN {follows} f ON f.followee_id = p.author_id"
            " WHERE p.author_id NOT IN ("
            f"   SELECT followee_id FROM {follows} GROUP BY followee_id HAVING count(*) > %s)"
            f" UNION ALL SELECT author_id, id FROM {posts}"
            " ON CONFLICT DO NOTHING",
            [follower_limit],
        )
        rows = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {pulled} (user_id, marked_at)"
            f" SELECT followee_id, now() FROM {follows} GROUP BY followee_id HAVING count(*) > %s",
            [follower_limit],
        )
    elapsed = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {feeds}")
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def pg_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]


# --- Load --------------------------------------------------------------------------------


def wrk(url: str, script: str, *, seconds: int, connections: int, threads: int = 2, **env: str) -> dict:
    """One wrk run pinned to LOAD_CPU; returns RPS, latency percentiles and wrk's own CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(LUA_DIR / script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = result.stdout
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

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
        "load_cpu": cpu / seconds,
    }


def openloop(base: str, users_file: Path, kind: str, *, rate: float, seconds: int) -> dict:
    result = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CPU,
            "node",
            str(LUA_DIR / "openloop.js"),
            base,
            str(users_file),
            kind,
            str(rate),
            str(seconds),
            "64",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 120,
    )
    return json.loads(result.stdout)


def open_loop(results: dict, key: str, kind: str, base: str, users_file: Path, seconds: int) -> None:
    """The closed-loop workload ``key`` again, at a fixed 70% of its maximum (needs Node)."""
    if not shutil.which("node"):
        log("node is missing: no open-loop run")
        return
    rate = 0.7 * results[key]["rps"]
    log(f"open loop at 70% of the maximum: {rate:.0f} {kind} per second")
    results[f"{key}_open"] = {**openloop(base, users_file, kind, rate=rate, seconds=seconds), "rate": rate}


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


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Api:
    def __init__(self, base: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()

    def post(self, token: str, content: str) -> dict:
        response = self.session.post(
            f"{self.base}/posts",
            json={"content": content},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def feed_ids(self, user_id: int, token: str, *, limit: int) -> list[int]:
        response = self.session.get(
            f"{self.base}/feeds/{user_id}?limit={limit}",
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return [post["id"] for post in response.json()["results"]]


def created_at(post: dict) -> float:
    return datetime.datetime.fromisoformat(post["created_at"].replace("Z", "+00:00")).timestamp()


def post_to_feed(
    base: str, tokens: dict[int, str], author: int, watchers: list[int], *, rate: float, seconds: float
) -> list[float]:
    """Post as ``author`` at ``rate`` per second (spread over 4 threads) and poll each
    watcher's feed; return, per post, the seconds from its creation until every watcher
    saw it through the API."""
    created: dict[int, float] = {}
    seen: dict[int, dict[int, float]] = {}
    stop = threading.Event()

    def poster(offset: int) -> None:
        api = Api(base)
        start = time.monotonic()
        n = 0
        while (due := start + (n * 4 + offset) / rate) < start + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            post = api.post(tokens[author], f"latency probe {offset}-{n}")
            created[post["id"]] = created_at(post)
            n += 1

    def watcher(user_id: int) -> None:
        api = Api(base)
        while not stop.is_set():
            now = time.time()
            # 100 posts, so that none scrolls past between two polls.
            for post_id in api.feed_ids(user_id, tokens[user_id], limit=100):
                seen.setdefault(post_id, {}).setdefault(user_id, now)
            # A poll every 20 ms at most, so that the watchers do not load the API themselves.
            stop.wait(max(0.0, 0.02 - (time.time() - now)))

    watchers_threads = [threading.Thread(target=watcher, args=(w,), daemon=True) for w in watchers]
    posters = [threading.Thread(target=poster, args=(i,)) for i in range(4)]
    for thread in watchers_threads + posters:
        thread.start()
    for thread in posters:
        thread.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(seen.get(p, {})) < len(watchers) for p in created):
        time.sleep(0.1)
    stop.set()
    for thread in watchers_threads:
        thread.join(10)
    return [max(seen[p].values()) - t for p, t in created.items() if len(seen.get(p, {})) == len(watchers)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


# --- The run -----------------------------------------------------------------------------


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=int(os.environ.get("BENCH_USERS", "10000")))
    parser.add_argument("--avg-follows", type=int, default=int(os.environ.get("BENCH_AVG_FOLLOWS", "100")))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "20")))
    parser.add_argument(
        "--smoke", action="store_true", help="every step at a tiny size; writes no BENCHMARKS.md"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.smoke:
        args.users, args.avg_follows, args.seconds = 300, 10, 2
    return args


@dataclass
class Run:
    """One benchmark run: its ports, its seeded graph and what it measured so far."""

    args: argparse.Namespace
    chance: random.Random
    bootstrap: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    port: int = field(default_factory=free_port)
    bare_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    graph: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    users_file: Path = RUN_DIR / "users.txt"
    connections: int = 32

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def tokens(self) -> dict[int, str]:
        return self.graph["tokens"]

    def wrk(self, url: str, script: str, **env: str) -> dict:
        return wrk(
            url,
            script,
            seconds=self.args.seconds,
            connections=self.connections,
            BENCH_USERS_FILE=str(self.users_file),
            **env,
        )


def settings_env() -> dict[str, str]:
    """The settings that differ from production, printed with the results."""
    return {
        "DJANGO_DEBUG": "false",
        "GUNICORN_WORKERS": os.environ.get("GUNICORN_WORKERS", "2"),
        "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "4"),
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
    args = arguments(argv)
    wrk_version = ensure_wrk()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    run = Run(args=args, chance=random.Random(args.seed))
    settings = settings_env()
    env = bench_env(run, settings)
    os.environ.update(env)

    import django
    import redis

    django.setup()
    database_recreate(env)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    prepare(run)

    from devtools.broker import broker_start, broker_stop
    from eventbus.topics import topics_ensure

    broker = broker_start(run.bootstrap, log=RUN_DIR / "broker.log")
    stack = Stack(env, RUN_DIR)
    try:
        topics_ensure()
        measure_ceiling(run, stack)
        measure_api(run, stack)
        measure_fanout(run, stack)
    finally:
        stack.stop_all()
        broker_stop(broker)

    versions = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg_version(),
        "redis": redis.Redis.from_url(env["REDIS_URL"]).info()["redis_version"],
        "wrk": wrk_version,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if shutil.which("node")
        else "absent",
    }
    table = render(run.results, args=args, settings_env=settings, versions=versions)
    print(table)
    if not args.smoke:
        (ROOT / "BENCHMARKS.md").write_text(table)
        log("written to BENCHMARKS.md")
    (RUN_DIR / "results.json").write_text(json.dumps(run.results, indent=2, default=str))
    return 0


def prepare(run: Run) -> None:
    """Seed the graph, measure the INSERT ... SELECT ceiling, write the users file wrk reads."""
    log(f"seeding {run.args.users} users, ~{run.args.avg_follows} follows each")
    run.graph = seed(
        users=run.args.users, avg_follows=run.args.avg_follows, posts_per_user=2, chance=run.chance
    )
    ceiling = fanout_ceiling(follower_limit=FOLLOWER_LIMIT)
    log(f"INSERT...SELECT ceiling: {ceiling['rows']} rows in {ceiling['seconds']:.1f}s")
    run.users_file.write_text("".join(f"{u} {run.tokens[u]}\n" for u in run.graph["active"]))
    run.results.update(
        ceiling_insert_select=ceiling, graph={k: run.graph[k] for k in ("accounts", "follows")}
    )


def measure_ceiling(run: Run, stack: Stack) -> None:
    """A bare WSGI app doing one Redis GET, under the API's gunicorn settings."""
    from django.conf import settings

    from feeds.pages import feed_page

    log("reference ceiling: bare WSGI app with one Redis GET, same gunicorn settings")
    # The bytes of a real first page (the busiest user's), so the ceiling serves as much.
    bare_body = RUN_DIR / "bare_page.json"
    bare_body.write_bytes(feed_page(user_id=run.graph["active"][0], limit=settings.FEED_PAGE_SIZE))
    run.results["bare_body_bytes"] = bare_body.stat().st_size
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")]
    stack.start(
        "bare",
        command=[*gunicorn, "--chdir", str(LUA_DIR), "bare_wsgi:application"],
        PORT=str(run.bare_port),
        BENCH_BARE_BODY=str(bare_body),
    )
    wait_http(f"http://127.0.0.1:{run.bare_port}/healthz")
    run.results["bare"] = run.wrk(f"http://127.0.0.1:{run.bare_port}", "feed.lua")
    stack.stop("bare")


def measure_api(run: Run, stack: Stack) -> None:
    """Cached and uncached feed reads and post creation, closed loop and open loop."""
    from django.conf import settings

    from feeds.pages import feed_page
    from follows.authentication import CachedTokenAuthentication

    for name in ("api", "fanout", "relay"):
        stack.start(name)
    wait_http(f"{run.base}/healthz")
    wait_http(run.metrics_url)

    log("cached GET /feeds/{id}")
    # The steady state of active users: their token lookups and first pages are cached.
    auth = CachedTokenAuthentication()
    for user_id in progress(run.graph["active"], desc="warm tokens and pages", unit="user"):
        auth.authenticate_credentials(run.tokens[user_id])
        feed_page(user_id=user_id, limit=settings.FEED_PAGE_SIZE)
    run.results["feed_cached"] = run.wrk(run.base, "feed.lua")
    open_loop(run.results, "feed_cached", "GET /feeds", run.base, run.users_file, run.args.seconds)
    log("uncached GET /feeds/{id}?limit=19 (the cache holds only default pages)")
    run.results["feed_uncached"] = run.wrk(run.base, "feed.lua", BENCH_FEED_QUERY="?limit=19")
    log("POST /posts")
    run.results["post"] = run.wrk(run.base, "post.lua")
    open_loop(run.results, "post", "POST /posts", run.base, run.users_file, run.args.seconds)


def measure_fanout(run: Run, stack: Stack) -> None:
    """A burst drained by one worker, post-to-feed latencies, peak memory."""
    log("fan-out burst: posts queue up while the worker is stopped, then one worker drains them")
    wait_idle(run.metrics_url)
    stack.stop("fanout")
    burst_api = Api(run.base)
    active = run.graph["active"]
    # Authors drawn at random, so their audiences follow the graph's distribution.
    burst_authors = run.chance.sample(active[len(run.graph["stars"]) :], min(200, len(active) - 2))
    burst = 200 if run.args.smoke else 4000
    for i in progress(range(burst), desc="burst posts", unit="post"):
        burst_api.post(run.tokens[burst_authors[i % len(burst_authors)]], f"burst {i}")
    stack.start("fanout")
    wait_http(run.metrics_url)
    rows, seconds = burst_drained(run.metrics_url)
    # Seconds the worker spent in batches: its start-up and group join are not counted.
    run.results["fanout_burst"] = {"posts": burst, "rows": rows, "seconds": seconds}

    wait_idle(run.metrics_url)
    log("post-to-feed latency: a ~100-follower author at 200 posts/s")
    by_followers = run.graph["by_followers"]
    hundred = min(active[2:], key=lambda u: abs(by_followers.get(u, 0) - 100))
    lat = post_to_feed(
        run.base, run.tokens, hundred, followers(hundred)[:3], rate=200, seconds=run.args.seconds / 2
    )
    run.results["latency_100"] = {
        "author_followers": by_followers.get(hundred, 0),
        "posts": len(lat),
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
    }
    wait_idle(run.metrics_url)
    log("post-to-feed latency: the 9,000-follower account, 2 posts/s")
    star9k = run.graph["stars"][1]
    sample = run.chance.sample(followers(star9k), 8)
    lat9k = post_to_feed(run.base, run.tokens, star9k, sample, rate=2, seconds=max(3, run.args.seconds / 2))
    run.results["latency_9k"] = {
        "author_followers": by_followers.get(star9k, 0),
        "posts": len(lat9k),
        "watchers": len(sample),
        "p50": percentile(lat9k, 0.5),
        "p99": percentile(lat9k, 0.99),
    }
    run.results["rss_worker_mb"] = peak_rss_mb(stack.processes["fanout"].pid)
    run.results["rss_api_mb"] = max(peak_rss_mb(p) for p in children(stack.processes["api"].pid))


def burst_drained(metrics_url: str) -> tuple[float, float]:
    """Feed rows the worker wrote and seconds it spent in batches, until the rows stop
    growing for 3 s once they started (after the group join)."""
    rows0 = metric(metrics_url, "feed_fanout_rows_total")
    busy0 = metric(metrics_url, "feed_fanout_batch_duration_seconds_sum")
    deadline, rows, last_change = time.monotonic() + 300, rows0, None
    while time.monotonic() < deadline and (last_change is None or time.monotonic() - last_change < 3):
        if (now_rows := metric(metrics_url, "feed_fanout_rows_total")) != rows:
            rows, last_change = now_rows, time.monotonic()
        time.sleep(0.1)
    return rows - rows0, metric(metrics_url, "feed_fanout_batch_duration_seconds_sum") - busy0


def render(r: dict, *, args: argparse.Namespace, settings_env: dict, versions: dict) -> str:
    """The results as the markdown of BENCHMARKS.md."""
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Benchmarks",
        "",
        f"Run on {datetime.date.today().isoformat()}: {os.cpu_count()} CPUs ({cpu}); "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        f"Graph: {args.users:,} active users (of {r['graph']['accounts']:,} accounts), "
        f"{r['graph']['follows']:,} follows (power law, ~{args.avg_follows} per user), big accounts "
        f"with {CELEBRITY_FOLLOWERS[0]:,} and {CELEBRITY_FOLLOWERS[1]:,} followers, 2 seeded posts per user.",
        "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings_env.items()) + "; production otherwise.",
        f"Load: wrk pinned with `taskset -c {LOAD_CPU}`; the server is not pinned, so they share that CPU. "
        f"{args.seconds} s per run, 32 connections, 2 threads. `load CPU` is wrk's own CPU use, in cores.",
        "",
    ]
    lines += _render_closed(r)
    if "feed_cached_open" in r:
        lines += _render_open(r)
    lines += _render_fanout(r)
    lines += _render_commands(args)
    return "\n".join(lines)


def _render_closed(r: dict) -> list[str]:
    def closed(name: str, w: dict, note: str = "") -> str:
        cells = [name, f"{w['rps']:,.0f}", *(f"{w[p]:.1f}" for p in ("p50", "p90", "p99"))]
        return "| " + " | ".join([*cells, f"{w['load_cpu']:.2f}", str(w["non_2xx"]), note]) + " |"

    bare = r["bare"]["rps"]
    return [
        "## Closed loop (wrk)",
        "",
        "| workload | req/s | p50 ms | p90 ms | p99 ms | load CPU | non-2xx | note |",
        "|---|---|---|---|---|---|---|---|",
        closed(
            "bare WSGI + 1 Redis GET (ceiling)",
            r["bare"],
            f"returns a real {r['bare_body_bytes']:,}-byte feed page",
        ),
        closed(
            "GET /feeds/{id}, cached",
            r["feed_cached"],
            f"{r['feed_cached']['rps'] / bare:.0%} of the ceiling",
        ),
        closed("GET /feeds/{id}?limit=19, uncached", r["feed_uncached"]),
        closed("POST /posts (outbox on)", r["post"]),
        "",
    ]


def _render_open(r: dict) -> list[str]:
    def opened(name: str, o: dict) -> str:
        cells = [
            name,
            f"{o['rate']:,.0f}",
            f"{o['rps']:,.0f}",
            *(f"{o[p]:.1f}" for p in ("p50", "p90", "p99")),
            f"{o.get('load_cpu', float('nan')):.2f}",
        ]
        return "| " + " | ".join([*cells, str(o["statuses"])]) + " |"

    return [
        "## Open loop at 70% of the closed-loop maximum",
        "",
        "Latency counted from each request's scheduled start (`scripts/bench/openloop.js`, Node,",
        "pinned like wrk), so stalls are not hidden by coordinated omission.",
        "",
        "| workload | target req/s | achieved req/s | p50 ms | p90 ms | p99 ms | load CPU | statuses |",
        "|---|---|---|---|---|---|---|---|",
        opened("GET /feeds/{id}, cached", r["feed_cached_open"]),
        opened("POST /posts", r["post_open"]),
        "",
    ]


def _render_fanout(r: dict) -> list[str]:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    c, b = r["ceiling_insert_select"], r["fanout_burst"]
    burst_rate = b["rows"] / b["seconds"] if b["seconds"] else float("nan")
    l100, l9k = r["latency_100"], r["latency_9k"]
    return [
        "## Fan-out",
        "",
        "| measure | value |",
        "|---|---|",
        f"| INSERT ... SELECT ... ON CONFLICT DO NOTHING (ceiling) | {c['rows_per_s']:,.0f} rows/s "
        f"({c['rows']:,} rows in {c['seconds']:.1f} s) |",
        f"| one run_fanout process, burst of {b['posts']:,} posts | {burst_rate:,.0f} rows/s "
        f"({b['rows']:,.0f} rows in {b['seconds']:.1f} s of batches), "
        f"{burst_rate / c['rows_per_s']:.0%} of the ceiling |",
        f"| post to feed via the API, {l100['author_followers']}-follower author at 200 posts/s "
        f"| p50 {ms(l100['p50'])}, p99 {ms(l100['p99'])} "
        f"({l100['posts']} posts, 3 followers polled every 20 ms) |",
        f"| post to feed via the API, {l9k['author_followers']:,}-follower author "
        f"| p50 {ms(l9k['p50'])}, p99 {ms(l9k['p99'])} ({l9k['posts']} posts; until all "
        f"{l9k['watchers']} sampled followers, polled every 20 ms, saw each) |",
        f"| peak RSS | worker {r['rss_worker_mb']:.0f} MB, largest API worker {r['rss_api_mb']:.0f} MB |",
        "",
    ]


def _render_commands(args: argparse.Namespace) -> list[str]:
    return [
        "## Commands",
        "",
        "```",
        "make bench  # or:",
        f"scripts/bench.py --users {args.users} --avg-follows {args.avg_follows} --seconds {args.seconds}",
        f"taskset -c {LOAD_CPU} wrk -t2 -c32 -d{args.seconds}s --latency -s scripts/bench/feed.lua <api>",
        f"taskset -c {LOAD_CPU} wrk -t2 -c32 -d{args.seconds}s --latency -s scripts/bench/post.lua <api>",
        f"taskset -c {LOAD_CPU} node scripts/bench/openloop.js <api> <users> 'GET /feeds' <rate>"
        f" {args.seconds} 64",
        "```",
        "",
    ]
