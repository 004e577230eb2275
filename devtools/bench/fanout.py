"""The fan-out runs: a burst drained by one worker, post-to-feed latencies through the
API, peak memory, and the burst's fan-out written again in one process."""

import datetime
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from devtools.bench.common import log, metric, progress, wait_idle
from devtools.bench.run import Run
from devtools.bench.seeding import followers
from devtools.stack import wait_http

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.


# Posts per second of the author whose post-to-feed latency is measured; the other authors
# bring the total to the rate under test. One author posting the whole rate would fill a
# follower's first page faster than it can be read.
PROBE_RATE = 10.0


def measure_fanout(run: Run) -> None:
    """A burst drained by one worker, post-to-feed latencies, peak memory."""
    measure_burst(run)
    wait_idle(run.metrics_url)
    measure_latency_100(run)
    wait_idle(run.metrics_url)
    measure_latency_9k(run)
    run.results["rss_worker_mb"] = peak_rss_mb(run.stack.processes["fanout"].pid)
    run.results["rss_api_mb"] = max(peak_rss_mb(p) for p in children(run.stack.processes["api"].pid))


def measure_burst(run: Run) -> None:
    """Posts queue up while the worker is stopped, then one worker drains them."""
    log("fan-out burst: posts queue up while the worker is stopped, then one worker drains them")
    wait_idle(run.metrics_url)
    run.stack.stop("fanout")
    burst = 200 if run.args.smoke else 4000
    burst_ids = burst_post(run, burst)
    run.stack.start("fanout")
    wait_http(run.metrics_url)
    rows, seconds = burst_drained(run.metrics_url)
    # Seconds the worker spent in batches: its start-up and group join are not counted.
    run.results["fanout_burst"] = {"posts": burst, "rows": rows, "seconds": seconds, "post_ids": burst_ids}


def burst_post(run: Run, burst: int) -> list[int]:
    """``burst`` posts through the API, by authors drawn at random so that their audiences
    follow the graph's distribution; their ids."""
    burst_api = Api(run.base)
    active = run.graph["active"]
    burst_authors = run.chance.sample(active[len(run.graph["stars"]) :], min(200, len(active) - 2))
    burst_ids = []
    for i in progress(range(burst), desc="burst posts", unit="post"):
        burst_ids.append(
            burst_api.post(run.tokens[burst_authors[i % len(burst_authors)]], f"burst {i}")["id"]
        )
    return burst_ids


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


def measure_latency_100(run: Run) -> None:
    """Post-to-feed latency of a ~100-follower author posting PROBE_RATE per second while
    the POST runs' authors bring the total to 50% of the worker-running maximum."""
    run.results["latency_100"] = latency_100(run)


def latency_100(run: Run) -> dict:
    """measure_latency_100's figures, with whatever workers run."""
    rate = 0.5 * run.results["post"]["rps"]
    by_followers = run.graph["by_followers"]
    hundred = min(run.graph["active"][2:], key=lambda u: abs(by_followers.get(u, 0) - 100))
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
        active_followers(run, hundred)[:3],
        rate=probe,
        seconds=run.args.seconds / 2,
        load=rate - probe,
        load_authors=load_authors,
    )
    return {
        "author_followers": by_followers.get(hundred, 0),
        "rate": rate,
        "probe_rate": probe,
        "posts": len(lat),
        **percentiles(lat),
    }


def measure_latency_9k(run: Run) -> None:
    """Post-to-feed latency of the 9,000-follower account posting 2 per second, no other
    load, until 8 of its followers drawn at random saw each post."""
    log("post-to-feed latency: the 9,000-follower account, 2 posts/s")
    star9k = run.graph["stars"][1]
    sample = run.chance.sample(active_followers(run, star9k), 8)
    lat9k = post_to_feed(run.base, run.tokens, star9k, sample, rate=2, seconds=max(3, run.args.seconds / 2))
    run.results["latency_9k"] = {
        "author_followers": run.graph["by_followers"].get(star9k, 0),
        "posts": len(lat9k),
        "watchers": len(sample),
        **percentiles(lat9k),
    }


def fanout_compare(run: Run) -> None:
    """The burst's fan-out written again in this process, with the worker's
    ``feed_fanout_posts`` (INSERT ... SELECT) and with bulk_create(ignore_conflicts=True) of
    rows built in Python, each into a feed table cleared of the burst's rows; wall and CPU
    seconds of the faster of two runs of each. Runs after the stack has stopped, so nothing
    else writes."""
    post_ids = run.results["fanout_burst"].pop("post_ids")
    log("fan-out of the burst again in-process: bulk_create and INSERT ... SELECT, twice each")
    # Alternated, and the faster of two kept, so that neither gains from running second.
    rounds = [
        (fanout_timed(fanout_bulk_create, post_ids), fanout_timed(fanout_insert_select, post_ids))
        for _ in range(2)
    ]
    run.results["fanout_bulk_create"] = min((b for b, _ in rounds), key=lambda t: t["seconds"])
    run.results["fanout_insert_select"] = min((q for _, q in rounds), key=lambda t: t["seconds"])


def fanout_timed(write: Callable[[list[int]], int], post_ids: list[int]) -> dict:
    """Wall and CPU seconds of ``write``, in one transaction, into a feed table cleared of
    the feed rows of ``post_ids``."""
    from django.db import transaction

    feed_clear(post_ids)
    wall, cpu = time.monotonic(), time.process_time()
    with transaction.atomic():
        rows = write(post_ids)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    return {"rows": rows, "seconds": wall, "cpu": cpu, "rows_per_s": rows / wall}


def feed_clear(post_ids: list[int]) -> None:
    from django.db import connection

    from feeds.models import FeedEntry

    feeds = FeedEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {feeds} WHERE post_id = ANY(%s)", [post_ids])
        cursor.execute(f"VACUUM ANALYZE {feeds}")


def fanout_insert_select(post_ids: list[int]) -> int:
    from feeds.services import feed_fanout_posts

    return feed_fanout_posts(post_ids=post_ids).rows


def fanout_bulk_create(post_ids: list[int]) -> int:
    """The posts' feed rows built in Python, written with bulk_create(ignore_conflicts=True):
    the rows feed_fanout_posts writes (to the authors' active followers who do not mute
    them, block them or are blocked by them)."""
    from feeds.models import FeedEntry
    from feeds.services import INSERT_BATCH_SIZE
    from follows.activity import active_since
    from follows.models import Block, Follow, Mute, Reader
    from posts.models import Post

    authors = dict(Post.objects.filter(pk__in=post_ids).values_list("pk", "author_id"))
    audience: dict[int, list[int]] = {}
    follows = Follow.objects.filter(
        followee_id__in=set(authors.values()),
        follower__in=Reader.objects.filter(seen_at__gt=active_since()).values("user_id"),
    )
    hidden = set(Mute.objects.filter(target_id__in=authors.values()).values_list("user_id", "target_id"))
    hidden |= set(Block.objects.filter(target_id__in=authors.values()).values_list("user_id", "target_id"))
    hidden |= set(Block.objects.filter(user_id__in=authors.values()).values_list("target_id", "user_id"))
    for followee, follower in follows.values_list("followee_id", "follower_id"):
        if (follower, followee) not in hidden:
            audience.setdefault(followee, []).append(follower)
    rows = [
        FeedEntry(user_id=user, post_id=post)
        for post, author in authors.items()
        for user in [author, *audience.get(author, [])]
    ]
    FeedEntry.objects.bulk_create(rows, ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE)
    return len(rows)


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


def active_followers(run: Run, user_id: int) -> list[int]:
    """The author's followers who are not idle: the ones whose feeds fan-out writes (an idle
    one's first read would come back, and read the feed merged)."""
    idle = set(run.graph.get("idle", ()))
    return [f for f in followers(user_id) if f not in idle]


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
    probe = FeedProbe(base, tokens, watchers, seconds=seconds)
    watchers_threads = [threading.Thread(target=probe.watcher, args=(w,), daemon=True) for w in watchers]
    posters = [threading.Thread(target=probe.poster, args=(i, rate, [author], True)) for i in range(4)]
    if load and load_authors:
        posters += [
            threading.Thread(target=probe.poster, args=(i, load, load_authors, False)) for i in range(4)
        ]
    for thread in watchers_threads + posters:
        thread.start()
    for thread in posters:
        thread.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not probe.all_seen():
        time.sleep(0.1)
    probe.stop.set()
    for thread in watchers_threads:
        thread.join(10)
    return probe.latencies()


class FeedProbe:
    """The threads of one post-to-feed measurement, and what they found: when each probe
    post was created, and when each watcher first saw it in its feed."""

    def __init__(self, base: str, tokens: dict[int, str], watchers: list[int], *, seconds: float) -> None:
        self.base, self.tokens, self.watchers, self.seconds = base, tokens, watchers, seconds
        self.created: dict[int, float] = {}
        self.seen: dict[int, dict[int, float]] = {}
        self.stop = threading.Event()

    def poster(self, offset: int, per_second: float, authors: Sequence[int], probe: bool) -> None:
        """The ``offset``-th of 4 threads posting ``per_second`` in all, by ``authors`` in
        turn; the creation times of ``probe`` posts are kept."""
        api = Api(self.base)
        start = time.monotonic()
        n = 0
        while (due := start + (n * 4 + offset) / per_second) < start + self.seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            author = authors[(n * 4 + offset) % len(authors)]
            post = api.post(self.tokens[author], f"latency probe {offset}-{n}")
            if probe:
                self.created[post["id"]] = created_at(post)
            n += 1

    def watcher(self, user_id: int) -> None:
        api = Api(self.base)
        while not self.stop.is_set():
            now = time.time()
            # The first page, as clients read it: served from the page cache until the
            # worker invalidates it. (Reading 100 posts uncached every 20 ms, three
            # watchers alone kept the machine busy.) A page holds more than the posts
            # that arrive between two polls.
            for post_id in api.feed_ids(user_id, self.tokens[user_id]):
                self.seen.setdefault(post_id, {}).setdefault(user_id, now)
            # A poll every 20 ms at most, so that the watchers do not load the API themselves.
            self.stop.wait(max(0.0, 0.02 - (time.time() - now)))

    def all_seen(self) -> bool:
        return not any(len(self.seen.get(p, {})) < len(self.watchers) for p in self.created)

    def latencies(self) -> list[float]:
        """Per probe post every watcher saw, the seconds from its creation until the last saw it."""
        return [
            max(self.seen[p].values()) - t
            for p, t in self.created.items()
            if len(self.seen.get(p, {})) == len(self.watchers)
        ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def percentiles(latencies: list[float]) -> dict[str, float]:
    return {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
