"""The reference ceilings each workload is measured against: framework-free WSGI apps
(``scripts/bench/``) under the API's gunicorn settings for reads and durable writes, and
``INSERT ... SELECT`` fan-out straight in PostgreSQL."""

import os
import sys
import time

from devtools.bench.common import LUA_DIR, RUN_DIR, log
from devtools.bench.run import Run
from devtools.bench.seeding import FOLLOWER_LIMIT
from devtools.processes import ROOT
from devtools.stack import wait_http

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.


def measure_insert_select(run: Run) -> None:
    """The INSERT ... SELECT ceiling, over the seeded history."""
    ceiling = fanout_ceiling(follower_limit=FOLLOWER_LIMIT)
    log(f"INSERT...SELECT ceiling: {ceiling['rows']} rows in {ceiling['seconds']:.1f}s")
    run.results["ceiling_insert_select"] = ceiling


def fanout_ceiling(*, follower_limit: int) -> dict:
    """Write the seeded history into the feed table with INSERT ... SELECT ... ON CONFLICT
    DO NOTHING, straight in PostgreSQL, to the followers fan-out writes to (the active
    ones): the rows/s no fan-out path can beat."""
    from django.db import connection

    from feeds.models import FeedEntry, PulledAuthor
    from follows.activity import active_since
    from follows.models import Follow, Reader
    from follows.selectors import feed_shows_sql
    from posts.models import Post

    feeds, pulled = FeedEntry._meta.db_table, PulledAuthor._meta.db_table
    follows, posts, readers = Follow._meta.db_table, Post._meta.db_table, Reader._meta.db_table
    # The rows fan-out writes: to active followers who hide not the author (no block, no
    # mute), of authors with at most follower_limit of them (the worker's rules,
    # feeds.services.feed_fanout_posts).
    active = f"JOIN {readers} r ON r.user_id = f.follower_id AND r.seen_at > %(since)s"
    big = f"SELECT f.followee_id FROM {follows} f {active} GROUP BY f.followee_id HAVING count(*) > %(limit)s"
    params = {"since": active_since(), "limit": follower_limit}
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {feeds} (user_id, post_id)"
            f" SELECT f.follower_id, p.id FROM {posts} p"
            f" JOIN {follows} f ON f.followee_id = p.author_id {active}"
            f" WHERE p.author_id NOT IN ({big}) AND {feed_shows_sql('f.follower_id', 'p.author_id')}"
            f" UNION ALL SELECT author_id, id FROM {posts}"
            " ON CONFLICT DO NOTHING",
            params,
        )
        rows = cursor.rowcount
        cursor.execute(
            f"INSERT INTO {pulled} (user_id, marked_at) SELECT followee_id, now() FROM ({big}) b", params
        )
    elapsed = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {feeds}")
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def measure_ceilings(run: Run) -> None:
    """The bare apps under the API's gunicorn settings: one Redis GET for reads, one
    committed transaction of a post row and an outbox row for writes."""
    measure_read_ceiling(run)
    measure_write_ceiling(run)


def bare_start(run: Run, name: str, app: str, **env: str) -> str:
    """Start the bare WSGI app ``app`` of ``scripts/bench/`` as process ``name``, under the
    API's gunicorn settings; its address, once it answers."""
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")]
    bare = f"http://127.0.0.1:{run.bare_port}"
    run.stack.start(
        name,
        command=[*gunicorn, "--chdir", str(LUA_DIR), app],
        PORT=str(run.bare_port),
        **env,
    )
    wait_http(f"{bare}/healthz")
    return bare


def measure_read_ceiling(run: Run) -> None:
    from django.conf import settings

    from feeds.pages import feed_page

    log("read ceiling: bare WSGI app with one Redis GET, same gunicorn settings")
    # The bytes of a real first page (the busiest user's), so the ceiling serves as much.
    bare_body = RUN_DIR / "bare_page.json"
    bare_body.write_bytes(feed_page(user_id=run.graph["active"][0], limit=settings.FEED_PAGE_SIZE))
    run.results["bare_body_bytes"] = bare_body.stat().st_size
    bare = bare_start(run, "bare", "bare_wsgi:application", BENCH_BARE_BODY=str(bare_body))
    run.results["bare"] = run.wrk(bare, "feed.lua")
    run.stack.stop("bare")


def measure_write_ceiling(run: Run) -> None:
    from eventbus.models import OutboxMessage
    from eventbus.topics import Topic
    from posts.models import Post

    log("durable-write ceiling: bare WSGI app, post row + outbox row, one committed transaction")
    last_post = Post.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    last_outbox = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    bare = bare_start(
        run,
        "bare_write",
        "bare_write:application",
        BENCH_DSN=os.environ["DATABASE_URL"],
        BENCH_USERS_FILE=str(run.authors_file),
        BENCH_POSTS_TABLE=Post._meta.db_table,
        BENCH_OUTBOX_TABLE=OutboxMessage._meta.db_table,
        BENCH_TOPIC=Topic.FEED_EVENTS.topic_name,
    )
    run.results["bare_write"] = run.wrk(bare, "post.lua", users_file=run.authors_file)
    run.stack.stop("bare_write")
    # Its rows go before the relay starts: they are not to be published nor fanned out.
    written_delete(since_post=last_post, since_outbox=last_outbox)


def written_delete(*, since_post: int, since_outbox: int) -> None:
    """The post and outbox rows after ``since_post`` and ``since_outbox``, deleted."""
    from django.db import connection

    from eventbus.models import OutboxMessage
    from posts.models import Post

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {OutboxMessage._meta.db_table} WHERE id > %s", [since_outbox])
        cursor.execute(f"DELETE FROM {Post._meta.db_table} WHERE id > %s", [since_post])
        cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {Post._meta.db_table}")
