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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import ROOT, free_port
from devtools.stack import Stack, database_recreate, wait_http

RUN_DIR = ROOT / ".run" / "bench"
LUA_DIR = ROOT / "scripts" / "bench"

# The two big accounts: one above FANOUT_FOLLOWER_LIMIT (merged at read time), one below.
CELEBRITY_FOLLOWERS = (20_000, 9_000)
FOLLOWER_LIMIT = 10_000


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


# --- CPU ---------------------------------------------------------------------------------

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


# --- Load --------------------------------------------------------------------------------


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
        "load_threads": threads,
        **cpu,
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

    def feed_ids(self, user_id: int, token: str) -> list[int]:
        """The posts of the first page, as clients read it (the cached page)."""
        response = self.session.get(
            f"{self.base}/feeds/{user_id}",
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        response.raise_for_status()
        return [post["id"] for post in response.json()["results"]]


def created_at(post: dict) -> float:
    return datetime.datetime.fromisoformat(post["created_at"].replace("Z", "+00:00")).timestamp()


def post_to_feed(
    base: str,
    tokens: dict[int, str],
    author: int,
    watchers: list[int],
    *,
    rate: float,
    seconds: float,
    load: float = 0.0,
    load_authors: Sequence[int] = (),
) -> list[float]:
    """Post as ``author`` at ``rate`` per second while other authors (``load_authors``,
    taken in turn) post ``load`` per second, each spread over 4 threads, and poll each
    watcher's feed; return, per post of ``author``, the seconds from its creation until
    every watcher saw it through the API."""
    created: dict[int, float] = {}
    seen: dict[int, dict[int, float]] = {}
    stop = threading.Event()

    def poster(offset: int, per_second: float, authors: Sequence[int], probe: bool) -> None:
        api = Api(base)
        start = time.monotonic()
        n = 0
        while (due := start + (n * 4 + offset) / per_second) < start + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            post = api.post(tokens[authors[(n * 4 + offset) % len(authors)]], f"latency probe {offset}-{n}")
            if probe:
                created[post["id"]] = created_at(post)
            n += 1

    def watcher(user_id: int) -> None:
        api = Api(base)
        while not stop.is_set():
            now = time.time()
            # The first page, as clients read it: served from the page cache until the
            # worker invalidates it. (Reading 100 posts uncached every 20 ms, three
            # watchers alone kept the machine busy.) A page holds more than the posts
            # that arrive between two polls.
            for post_id in api.feed_ids(user_id, tokens[user_id]):
                seen.setdefault(post_id, {}).setdefault(user_id, now)
            # A poll every 20 ms at most, so that the watchers do not load the API themselves.
            stop.wait(max(0.0, 0.02 - (time.time() - now)))

    watchers_threads = [threading.Thread(target=watcher, args=(w,), daemon=True) for w in watchers]
    posters = [threading.Thread(target=poster, args=(i, rate, [author], True)) for i in range(4)]
    if load and load_authors:
        posters += [threading.Thread(target=poster, args=(i, load, load_authors, False)) for i in range(4)]
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


# The POST runs' authors have about this many followers each.
AUTHOR_FOLLOWERS = 50
# Posts per second of the author whose post-to-feed latency is measured; the other authors
# bring the total to the rate under test. One author posting the whole rate would fill a
# follower's first page faster than it can be read.
PROBE_RATE = 10.0


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

    run.broker = broker_start(run.bootstrap, log=RUN_DIR / "broker.log")
    run.stack = Stack(env, RUN_DIR)
    try:
        topics_ensure()
        measure_ceilings(run)
        measure_api(run)
        measure_fanout(run)
    finally:
        run.stack.stop_all()
        broker_stop(run.broker)
    fanout_compare(run)

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
    """Seed the graph, measure the INSERT ... SELECT ceiling, write the users file wrk reads
    and the authors file of the POST runs."""
    log(f"seeding {run.args.users} users, ~{run.args.avg_follows} follows each")
    run.graph = seed(
        users=run.args.users, avg_follows=run.args.avg_follows, posts_per_user=2, chance=run.chance
    )
    ceiling = fanout_ceiling(follower_limit=FOLLOWER_LIMIT)
    log(f"INSERT...SELECT ceiling: {ceiling['rows']} rows in {ceiling['seconds']:.1f}s")
    active = run.graph["active"]
    run.users_file.write_text("".join(f"{u} {run.tokens[u]}\n" for u in active))
    # The active users whose follower counts are nearest AUTHOR_FOLLOWERS (the big accounts
    # are not among them), up to 500 of them, so that posts spread over many partitions.
    by_followers = run.graph["by_followers"]
    authors = sorted(active[2:], key=lambda u: (abs(by_followers.get(u, 0) - AUTHOR_FOLLOWERS), u))
    authors = authors[: max(20, min(500, len(active) // 10))]
    run.authors_file.write_text("".join(f"{u} {run.tokens[u]}\n" for u in authors))
    run.results.update(
        ceiling_insert_select=ceiling,
        graph={k: run.graph[k] for k in ("accounts", "follows")},
        authors={
            "count": len(authors),
            "mean_followers": sum(by_followers.get(u, 0) for u in authors) / len(authors),
        },
    )


def measure_ceilings(run: Run) -> None:
    """The bare apps under the API's gunicorn settings: one Redis GET for reads, one
    committed transaction of a post row and an outbox row for writes."""
    from django.conf import settings
    from django.db import connection

    from eventbus.models import OutboxMessage
    from eventbus.topics import Topic
    from feeds.pages import feed_page
    from posts.models import Post

    log("read ceiling: bare WSGI app with one Redis GET, same gunicorn settings")
    # The bytes of a real first page (the busiest user's), so the ceiling serves as much.
    bare_body = RUN_DIR / "bare_page.json"
    bare_body.write_bytes(feed_page(user_id=run.graph["active"][0], limit=settings.FEED_PAGE_SIZE))
    run.results["bare_body_bytes"] = bare_body.stat().st_size
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")]
    bare = f"http://127.0.0.1:{run.bare_port}"
    run.stack.start(
        "bare",
        command=[*gunicorn, "--chdir", str(LUA_DIR), "bare_wsgi:application"],
        PORT=str(run.bare_port),
        BENCH_BARE_BODY=str(bare_body),
    )
    wait_http(f"{bare}/healthz")
    run.results["bare"] = run.wrk(bare, "feed.lua")
    run.stack.stop("bare")

    log("durable-write ceiling: bare WSGI app, post row + outbox row, one committed transaction")
    last_post = Post.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_outbox = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    run.stack.start(
        "bare_write",
        command=[*gunicorn, "--chdir", str(LUA_DIR), "bare_write:application"],
        PORT=str(run.bare_port),
        BENCH_DSN=os.environ["DATABASE_URL"],
        BENCH_USERS_FILE=str(run.authors_file),
        BENCH_POSTS_TABLE=Post._meta.db_table,
        BENCH_OUTBOX_TABLE=OutboxMessage._meta.db_table,
        BENCH_TOPIC=Topic.FEED_EVENTS.topic_name,
    )
    wait_http(f"{bare}/healthz")
    run.results["bare_write"] = run.wrk(bare, "post.lua", users_file=run.authors_file)
    run.stack.stop("bare_write")
    # Its rows go before the relay starts: they are not to be published nor fanned out.
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {OutboxMessage._meta.db_table} WHERE id > %s", [last_outbox])
        cursor.execute(f"DELETE FROM {Post._meta.db_table} WHERE id > %s", [last_post])
        cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Post._meta.db_table}")


def measure_api(run: Run) -> None:
    """Cached and uncached feed reads, and post creation with the fan-out worker stopped
    and running; closed loop and open loop."""
    from django.conf import settings

    from feeds.pages import feed_page
    from follows.authentication import CachedTokenAuthentication

    stack = run.stack
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
    run.open_loop("feed_cached_open", "GET /feeds", rate=0.7 * run.results["feed_cached"]["rps"])
    log("uncached GET /feeds/{id}?limit=19 (the cache holds only default pages)")
    run.results["feed_uncached"] = run.wrk(run.base, "feed.lua", BENCH_FEED_QUERY="?limit=19")
    measure_web_timeline(run)

    log("POST /posts, fan-out worker stopped: the API's own cost")
    wait_idle(run.metrics_url)
    stack.stop("fanout")
    first = last_post_id()
    run.results["post_paused"] = run.wrk(run.base, "post.lua", users_file=run.authors_file)
    stack.start("fanout")
    wait_http(run.metrics_url)
    # From the restart: the group join (about half the session timeout) is included.
    run.results["post_paused"]["drain"] = backlog_drain(since_post=first)

    log(f"POST /posts, fan-out worker running, ~{AUTHOR_FOLLOWERS} followers per author")
    first = last_post_id()
    run.results["post"] = run.wrk(run.base, "post.lua", users_file=run.authors_file)
    run.results["post"]["drain"] = backlog_drain(since_post=first)
    run.open_loop(
        "post_open", "POST /posts", rate=0.7 * run.results["post"]["rps"], users_file=run.authors_file
    )
    backlog_drain(since_post=first)


def measure_web_timeline(run: Run) -> None:
    """GET / (the web timeline), signed in as each active user by a session of their own,
    next to the uncached API read it is to stay within 2x of: both read a first page from
    PostgreSQL; the page adds the session, the reader's own newest posts, who to follow
    and the template."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    active = run.graph["active"]
    users = get_user_model().objects.in_bulk(active)
    keys = {user_id: get_random_string(32, VALID_KEY_CHARS) for user_id in active}
    store, expires = SessionStore(), timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    backend = "django.contrib.auth.backends.ModelBackend"
    Session.objects.bulk_create(
        [
            Session(
                session_key=key,
                session_data=store.encode(
                    {
                        SESSION_KEY: str(user_id),
                        BACKEND_SESSION_KEY: backend,
                        HASH_SESSION_KEY: users[user_id].get_session_auth_hash(),
                    }
                ),
                expire_date=expires,
            )
            for user_id, key in keys.items()
        ],
        batch_size=2000,
    )
    sessions = RUN_DIR / "sessions.txt"
    sessions.write_text("".join(f"{user_id} {key}\n" for user_id, key in keys.items()))
    log("GET / (web timeline), signed in")
    import requests

    # Who to follow counts the most-followed accounts once a minute: not on the clock.
    first = requests.get(f"{run.base}/", cookies={"sessionid": keys[active[0]]}, allow_redirects=False)
    if first.status_code != 200:
        raise RuntimeError(f"GET / signed in answered {first.status_code}")
    run.results["web_timeline"] = run.wrk(run.base, "web.lua", users_file=sessions)


def last_post_id() -> int:
    from posts.models import Post

    return Post.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def backlog_drain(*, since_post: int, timeout: float = 300.0) -> float:
    """Seconds until every post after ``since_post`` is in its author's own feed, which
    the fan-out writes in the same transaction as the followers' entries (authors the
    read time merges are left out)."""
    from django.db import connection

    from feeds.models import FeedEntry, PulledAuthor
    from posts.models import Post

    started = time.monotonic()
    query = (
        f"SELECT EXISTS (SELECT 1 FROM {Post._meta.db_table} p WHERE p.id > %s"
        f" AND p.author_id NOT IN (SELECT user_id FROM {PulledAuthor._meta.db_table})"
        f" AND NOT EXISTS (SELECT 1 FROM {FeedEntry._meta.db_table} f"
        "   WHERE f.user_id = p.author_id AND f.post_id = p.id))"
    )
    while True:
        with connection.cursor() as cursor:
            cursor.execute(query, [since_post])
            if not cursor.fetchone()[0]:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError("the fan-out backlog did not drain")
        time.sleep(0.05)


def measure_fanout(run: Run) -> None:
    """A burst drained by one worker, post-to-feed latencies, peak memory."""
    stack = run.stack
    log("fan-out burst: posts queue up while the worker is stopped, then one worker drains them")
    wait_idle(run.metrics_url)
    stack.stop("fanout")
    burst_api = Api(run.base)
    active = run.graph["active"]
    # Authors drawn at random, so their audiences follow the graph's distribution.
    burst_authors = run.chance.sample(active[len(run.graph["stars"]) :], min(200, len(active) - 2))
    burst = 200 if run.args.smoke else 4000
    burst_ids = []
    for i in progress(range(burst), desc="burst posts", unit="post"):
        burst_ids.append(
            burst_api.post(run.tokens[burst_authors[i % len(burst_authors)]], f"burst {i}")["id"]
        )
    stack.start("fanout")
    wait_http(run.metrics_url)
    rows, seconds = burst_drained(run.metrics_url)
    # Seconds the worker spent in batches: its start-up and group join are not counted.
    run.results["fanout_burst"] = {"posts": burst, "rows": rows, "seconds": seconds, "post_ids": burst_ids}

    wait_idle(run.metrics_url)
    rate = 0.5 * run.results["post"]["rps"]
    by_followers = run.graph["by_followers"]
    hundred = min(active[2:], key=lambda u: abs(by_followers.get(u, 0) - 100))
    probe = min(PROBE_RATE, rate)
    load_authors = [int(line.split()[0]) for line in run.authors_file.read_text().splitlines()]
    load_authors = [u for u in load_authors if u != hundred]
    log(
        f"post-to-feed latency: a ~100-follower author posting {probe:.0f}/s while the POST run's "
        f"authors post {rate - probe:.0f}/s: {rate:.0f}/s in all, 50% of the maximum"
    )
    lat = post_to_feed(
        run.base,
        run.tokens,
        hundred,
        followers(hundred)[:3],
        rate=probe,
        seconds=run.args.seconds / 2,
        load=rate - probe,
        load_authors=load_authors,
    )
    run.results["latency_100"] = {
        "author_followers": by_followers.get(hundred, 0),
        "rate": rate,
        "probe_rate": probe,
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


def fanout_compare(run: Run) -> None:
    """The burst's fan-out written again in this process, with the worker's
    ``feed_fanout_posts`` (INSERT ... SELECT) and with bulk_create(ignore_conflicts=True) of
    rows built in Python, each into a feed table cleared of the burst's rows; wall and CPU
    seconds of the faster of two runs of each. Runs after the stack has stopped, so nothing
    else writes."""
    from django.db import connection, transaction

    from feeds.models import FeedEntry
    from feeds.services import INSERT_BATCH_SIZE, feed_fanout_posts
    from follows.models import Follow
    from posts.models import Post

    post_ids = run.results["fanout_burst"].pop("post_ids")
    feeds = FeedEntry._meta.db_table

    def clear() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {feeds} WHERE post_id = ANY(%s)", [post_ids])
            cursor.execute(f"VACUUM ANALYZE {feeds}")

    def bulk() -> int:
        authors = dict(Post.objects.filter(pk__in=post_ids).values_list("pk", "author_id"))
        audience: dict[int, list[int]] = {}
        for followee, follower in Follow.objects.filter(followee_id__in=set(authors.values())).values_list(
            "followee_id", "follower_id"
        ):
            audience.setdefault(followee, []).append(follower)
        rows = [
            FeedEntry(user_id=user, post_id=post)
            for post, author in authors.items()
            for user in [author, *audience.get(author, [])]
        ]
        FeedEntry.objects.bulk_create(rows, ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE)
        return len(rows)

    def timed(write: Callable[[], int]) -> dict:
        clear()
        wall, cpu = time.monotonic(), time.process_time()
        with transaction.atomic():
            rows = write()
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        return {"rows": rows, "seconds": wall, "cpu": cpu, "rows_per_s": rows / wall}

    log("fan-out of the burst again in-process: bulk_create and INSERT ... SELECT, twice each")

    def sql() -> int:
        return feed_fanout_posts(post_ids=post_ids).rows

    # Alternated, and the faster of two kept, so that neither gains from running second.
    rounds = [(timed(bulk), timed(sql)) for _ in range(2)]
    run.results["fanout_bulk_create"] = min((b for b, _ in rounds), key=lambda t: t["seconds"])
    run.results["fanout_insert_select"] = min((q for _, q in rounds), key=lambda t: t["seconds"])


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
    pinned = (
        f"pinned with `taskset -c {args.pin_load}`; the server is not pinned"
        if args.pin_load
        else "not pinned: they and the server share every CPU"
    )
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
        f"Load: wrk (2 threads, 32 connections) and the open-loop driver, {pinned}. "
        f"{args.seconds} s per run. The POST runs post as the {r['authors']['count']} active users "
        f"with follower counts nearest {AUTHOR_FOLLOWERS} ({r['authors']['mean_followers']:.0f} on average).",
        "",
    ]
    lines += _render_closed(r)
    if "web_timeline" in r:
        lines += _render_web(r)
    if "feed_cached_open" in r:
        lines += _render_open(r)
    lines += _render_cpu(r, args=args)
    lines += _render_fanout(r)
    lines += _render_targets(r)
    lines += _render_commands(args)
    return "\n".join(lines)


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


def _render_cpu(r: dict, *, args: argparse.Namespace) -> list[str]:
    rows = []
    for key, name, ceiling in CLOSED_ROWS + OPEN_ROWS:
        if key not in r:
            continue
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
        rows.append("| " + " | ".join(cells) + " |")
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
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    c, b = r["ceiling_insert_select"], r["fanout_burst"]
    burst_rate = b["rows"] / b["seconds"] if b["seconds"] else float("nan")
    l100, l9k = r["latency_100"], r["latency_9k"]
    sql, bulk = r["fanout_insert_select"], r["fanout_bulk_create"]
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
        f"| the same burst in one process, INSERT ... SELECT (`feed_fanout_posts`), best of 2 "
        f"| {sql['rows_per_s']:,.0f} rows/s ({sql['rows']:,} rows in {sql['seconds']:.2f} s, "
        f"{sql['cpu']:.2f} s of Python CPU), {sql['rows_per_s'] / c['rows_per_s']:.0%} of the ceiling |",
        f"| the same burst in one process, bulk_create(ignore_conflicts=True), best of 2 "
        f"| {bulk['rows_per_s']:,.0f} rows/s ({bulk['rows']:,} rows in {bulk['seconds']:.2f} s, "
        f"{bulk['cpu']:.2f} s of Python CPU, {bulk['cpu'] / bulk['rows'] * 1e6:.1f} µs per row), "
        f"{bulk['rows_per_s'] / c['rows_per_s']:.0%} of the ceiling, "
        f"{bulk['rows_per_s'] / sql['rows_per_s']:.0%} of INSERT ... SELECT |",
        f"| post to feed via the API, {l100['author_followers']}-follower author posting "
        f"{l100['probe_rate']:.0f}/s in {l100['rate']:,.0f} posts/s in all (50% of the "
        f"worker-running maximum) | p50 {ms(l100['p50'])}, p99 {ms(l100['p99'])} "
        f"({l100['posts']} posts; 3 followers' first pages polled every 20 ms) |",
        f"| post to feed via the API, {l9k['author_followers']:,}-follower author "
        f"| p50 {ms(l9k['p50'])}, p99 {ms(l9k['p99'])} ({l9k['posts']} posts at 2/s, no other "
        f"load; until all {l9k['watchers']} sampled followers, their first pages polled "
        "every 20 ms, saw each) |",
        f"| peak RSS | worker {r['rss_worker_mb']:.0f} MB, largest API worker {r['rss_api_mb']:.0f} MB |",
        "",
    ]


def targets(r: dict) -> list[tuple[str, str, str, bool]]:
    """The write pipeline's targets: each one's name, goal, this run's figure and whether
    it was met."""

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
    out = []
    for name, goal, value, unit in filter(None, rows):
        if unit == "ratio":
            out.append((name, f"≥ {goal:.0%}", f"{value:.0%}", value >= goal))
        elif unit == "s":
            out.append((name, f"≤ {goal:g} s", f"{value:.2f} s", value <= goal))
        else:
            out.append((name, f"≤ {goal:g} ms", f"{value:.1f} ms", value <= goal))
    return out


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
