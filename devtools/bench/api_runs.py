"""The API's HTTP runs, closed loop (wrk) and open loop: cached and uncached feed reads,
the web timeline, and posts with the fan-out worker stopped and running."""

import time

from devtools.bench.common import RUN_DIR, log, progress, wait_idle
from devtools.bench.run import Run
from devtools.bench.seeding import AUTHOR_FOLLOWERS
from devtools.stack import wait_http

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.


def measure_api(run: Run) -> None:
    """Cached and uncached feed reads, and post creation with the fan-out worker stopped
    and running; closed loop and open loop."""
    for name in ("api", "fanout", "relay"):
        run.stack.start(name)
    wait_http(f"{run.base}/healthz")
    wait_http(run.metrics_url)
    measure_reads(run)
    measure_web_timeline(run)
    measure_posts_paused(run)
    measure_posts(run)


def measure_reads(run: Run) -> None:
    """GET /feeds/{id} cached, closed and open loop, and uncached."""
    log("cached GET /feeds/{id}")
    caches_warm(run)
    run.results["feed_cached"] = run.wrk(run.base, "feed.lua")
    run.open_loop("feed_cached_open", "GET /feeds", rate=0.7 * run.results["feed_cached"]["rps"])
    log("uncached GET /feeds/{id}?limit=19 (the cache holds only default pages)")
    run.results["feed_uncached"] = run.wrk(run.base, "feed.lua", BENCH_FEED_QUERY="?limit=19")


def caches_warm(run: Run) -> None:
    """The steady state of active users: their token lookups and first pages are cached."""
    from django.conf import settings

    from feeds.pages import feed_page
    from follows.authentication import CachedTokenAuthentication

    auth = CachedTokenAuthentication()
    for user_id in progress(run.graph["active"], desc="warm tokens and pages", unit="user"):
        auth.authenticate_credentials(run.tokens[user_id])
        feed_page(user_id=user_id, limit=settings.FEED_PAGE_SIZE)


def measure_posts_paused(run: Run) -> None:
    """POST /posts with the fan-out worker stopped, and its backlog's drain from the
    worker's restart."""
    log("POST /posts, fan-out worker stopped: the API's own cost")
    wait_idle(run.metrics_url)
    run.stack.stop("fanout")
    first = last_post_id()
    run.results["post_paused"] = run.wrk(run.base, "post.lua", users_file=run.authors_file)
    run.stack.start("fanout")
    wait_http(run.metrics_url)
    # From the restart: the group join (about half the session timeout) is included.
    run.results["post_paused"]["drain"] = backlog_drain(since_post=first)


def measure_posts(run: Run) -> None:
    """POST /posts with the fan-out worker running, closed loop (with its backlog's drain
    after the run) and open loop."""
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
    import requests

    active = run.graph["active"]
    keys = sessions_create(active)
    sessions = RUN_DIR / "sessions.txt"
    sessions.write_text("".join(f"{user_id} {key}\n" for user_id, key in keys.items()))
    log("GET / (web timeline), signed in")
    # Who to follow counts the most-followed accounts once a minute: not on the clock.
    first = requests.get(f"{run.base}/", cookies={"sessionid": keys[active[0]]}, allow_redirects=False)
    if first.status_code != 200:
        raise RuntimeError(f"GET / signed in answered {first.status_code}")
    run.results["web_timeline"] = run.wrk(run.base, "web.lua", users_file=sessions)


def sessions_create(user_ids: list[int]) -> dict[int, str]:
    """A signed-in session for each of ``user_ids``, written straight to the session
    table; their keys."""
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.base import VALID_KEY_CHARS
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    users = get_user_model().objects.in_bulk(user_ids)
    keys = {user_id: get_random_string(32, VALID_KEY_CHARS) for user_id in user_ids}
    store, expires = SessionStore(), timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    backend = "django.contrib.auth.backends.ModelBackend"

    def data(user_id: int) -> str:
        return store.encode(
            {
                SESSION_KEY: str(user_id),
                BACKEND_SESSION_KEY: backend,
                HASH_SESSION_KEY: users[user_id].get_session_auth_hash(),
            }
        )

    Session.objects.bulk_create(
        [
            Session(session_key=key, session_data=data(user_id), expire_date=expires)
            for user_id, key in keys.items()
        ],
        batch_size=2000,
    )
    return keys


def last_post_id() -> int:
    from posts.models import Post

    return Post.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def backlog_drain(*, since_post: int, timeout: float = 300.0) -> float:
    """Seconds until every post after ``since_post`` is in its author's own feed, which
    the fan-out writes in the same transaction as the followers' entries (authors the
    read time merges are left out), or below that feed's oldest entry: trimmed to
    FEED_MAX_ENTRIES since, so applied (ids grow: a post not applied yet is above them)."""
    from django.db import connection

    from feeds.models import FeedEntry, PulledAuthor
    from posts.models import Post

    started = time.monotonic()
    query = (
        f"SELECT EXISTS (SELECT 1 FROM {Post._meta.db_table} p WHERE p.id > %s"
        f" AND p.author_id NOT IN (SELECT user_id FROM {PulledAuthor._meta.db_table})"
        f" AND NOT EXISTS (SELECT 1 FROM {FeedEntry._meta.db_table} f"
        "   WHERE f.user_id = p.author_id AND f.post_id = p.id)"
        f" AND p.id > COALESCE((SELECT min(f.post_id) FROM {FeedEntry._meta.db_table} f"
        "   WHERE f.user_id = p.author_id), 0))"
    )
    while True:
        with connection.cursor() as cursor:
            cursor.execute(query, [since_post])
            if not cursor.fetchone()[0]:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError("the fan-out backlog did not drain")
        time.sleep(0.05)
