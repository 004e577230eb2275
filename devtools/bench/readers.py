"""Fan-out to readers: a realistic share of idle accounts, the rows gating saves, and what a
user who comes back pays: their first read, next to an active user's, and their rebuild."""

import datetime
import time

from devtools.bench.common import log
from devtools.bench.fanout import Api, percentiles
from devtools.bench.run import Run

# Accounts not seen for twice the activity window, the big accounts aside.
IDLE_SHARE = 0.7
RETURNING_READERS = 200


def idle_mark(run: Run) -> None:
    """Mark IDLE_SHARE of the accounts (not the two big ones) as last seen 60 days ago;
    the load runs read and post as the others."""
    from django.utils import timezone

    from follows.models import Reader

    stars = set(run.graph["stars"])
    accounts = sorted(Reader.objects.exclude(user_id__in=stars).values_list("user_id", flat=True))
    idle = run.chance.sample(accounts, round(IDLE_SHARE * len(accounts)))
    Reader.objects.filter(user_id__in=idle).update(seen_at=timezone.now() - datetime.timedelta(days=60))
    idle_set = set(idle)
    run.graph["idle"] = idle
    run.graph["active"] = [u for u in run.graph["active"] if u not in idle_set]
    run.results["readers"] = {"accounts": len(accounts) + len(stars), "idle": len(idle)}
    log(f"{len(idle):,} of {len(accounts) + len(stars):,} accounts idle ({IDLE_SHARE:.0%})")


def measure_gating(run: Run) -> None:
    """Rows per post of the fan-out burst as written, next to what fan-out to every
    follower would have written (each post's author and all its followers)."""
    from django.db import connection

    from follows.models import Follow
    from posts.models import Post

    burst = run.results["fanout_burst"]
    posts, follows = Post._meta.db_table, Follow._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) + (SELECT count(*) FROM {posts} WHERE id = ANY(%s))"
            f" FROM {posts} AS p JOIN {follows} AS f ON f.followee_id = p.author_id"
            " WHERE p.id = ANY(%s)",
            [burst["post_ids"], burst["post_ids"]],
        )
        [(ungated,)] = cursor.fetchall()
    run.results["gating"] = {
        "rows_per_post": burst["rows"] / burst["posts"],
        "rows_per_post_ungated": ungated / burst["posts"],
    }


def measure_returning(run: Run) -> None:
    """The first read of RETURNING_READERS idle users who follow someone (uncached: each
    is their first), then as many active users' uncached reads; and the seconds from the
    first return until the worker has rebuilt all their feeds."""
    from follows.models import Follow, Reader

    count = 20 if run.args.smoke else RETURNING_READERS
    following = set(Follow.objects.values_list("follower_id", flat=True).distinct())
    returning = [u for u in run.graph["idle"] if u in following][:count]
    active = [u for u in run.graph["active"] if u in following and u not in run.graph["stars"]][:count]
    api = Api(run.base)
    log(f"{len(returning)} idle users come back and read their feed")
    started = time.monotonic()
    back = [_timed_read(api, run, user_id) for user_id in returning]
    rebuilt = _rebuilt_within(returning, started=started, timeout=120)
    # An active user's read of the same page, uncached (a limit other than the default
    # one is never cached).
    warm = [_timed_read(api, run, user_id, limit=19) for user_id in active]
    run.results["returning"] = {
        "readers": len(returning),
        "first_read": percentiles(back),
        "active_read": percentiles(warm),
        "rebuild_seconds": rebuilt,
        "complete_after": Reader.objects.filter(user_id__in=returning, feed_complete=True).count(),
    }


def _timed_read(api: Api, run: Run, user_id: int, *, limit: int | None = None) -> float:
    started = time.perf_counter()
    query = "" if limit is None else f"?limit={limit}"
    response = api.session.get(
        f"{api.base}/feeds/{user_id}{query}",
        headers={"Authorization": f"Token {run.tokens[user_id]}"},
        timeout=10,
    )
    response.raise_for_status()
    return time.perf_counter() - started


def _rebuilt_within(user_ids: list[int], *, started: float, timeout: float) -> float | None:
    """Seconds from ``started`` until every one of these feeds is rebuilt; None past ``timeout``."""
    from follows.models import Reader

    while time.monotonic() - started < timeout:
        if Reader.objects.filter(user_id__in=user_ids, feed_complete=True).count() == len(user_ids):
            return time.monotonic() - started
        time.sleep(0.1)  # a poll of the database, bounded by timeout
    return None
