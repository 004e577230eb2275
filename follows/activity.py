"""Who is active: recording that a user was seen, at almost no cost to the hot paths.

A user is seen when they authenticate an API request with their token (any request, a
cached first page included), load the web timeline signed in, sign in or sign up. The hot paths
only meet a Redis marker that lives FEED_ACTIVITY_RESOLUTION_SECONDS: the token lookup's
script sets it in its own round trip (``follows.tokencache``), and the fast path fetches it
in its MGET, leaving a request whose marker is gone to Django. Only a request that found
the marker gone records the user in PostgreSQL (``reader_seen``): at most one write per
user per resolution.

A user who was not active (not seen within FEED_ACTIVE_SECONDS, or never) comes back:
their stored feed missed what fan-out skipped while they were away, so it is no longer
trusted (reads merge the whole feed from the posts index meanwhile) and its rebuild is
queued, in the same transaction, as a ``feeds.rebuild`` event for the worker.
"""

import datetime
import logging

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from core.cache_keys import reader_seen_key
from eventbus.events import FEEDS_REBUILD, FeedsRebuild, event_build
from eventbus.outbox import outbox_enqueue
from follows.models import Reader
from follows.signals import reader_returned

logger = logging.getLogger(__name__)

# The row as it was, locked: it decides whether the user comes back (new, or not seen within
# the window).
_BEFORE = f"SELECT seen_at FROM {Reader._meta.db_table} WHERE user_id = %(user)s FOR UPDATE"
# Seen now, unless recorded within the resolution already (a no-op then, also with Redis
# down). A feed stays trusted only if it was, and the user was active until now.
_SEEN = f"""
    INSERT INTO {Reader._meta.db_table} AS r (user_id, seen_at, feed_complete)
    VALUES (%(user)s, %(now)s, false)
    ON CONFLICT (user_id) DO UPDATE SET
        seen_at = EXCLUDED.seen_at,
        feed_complete = r.feed_complete AND r.seen_at > %(cutoff)s
    WHERE r.seen_at < %(recent)s
"""
# Seconds a recording may wait for its row, which a vacuum step may hold: past it the user is
# recorded at their next sighting.
SEEN_LOCK_TIMEOUT = "200ms"


def active_since() -> datetime.datetime:
    """Users seen after this are active: reads trust their stored feeds (when complete)."""
    return timezone.now() - datetime.timedelta(seconds=settings.FEED_ACTIVE_SECONDS)


def written_since() -> datetime.datetime:
    """Users seen after this get rows from fan-out, backfill and rebuilds, and keep their
    stored entries: the active ones and a resolution more, so that every user whose stored
    feed a read trusts was written to, whatever the clocks and transactions in between."""
    grace = datetime.timedelta(seconds=settings.FEED_ACTIVITY_RESOLUTION_SECONDS)
    return active_since() - grace


def reader_seen(*, user_id: int) -> bool | None:
    """Record that the user was seen now; return whether they came back (their feed's
    rebuild then queued, once), or None when it could not be recorded (logged, not raised:
    recording is no reason to fail the request it rides on). Joins the caller's transaction,
    if any, as a savepoint."""
    now = timezone.now()
    params = {
        "user": user_id,
        "now": now,
        "cutoff": active_since(),
        "recent": now - datetime.timedelta(seconds=settings.FEED_ACTIVITY_RESOLUTION_SECONDS),
    }
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [SEEN_LOCK_TIMEOUT])
            cursor.execute(_BEFORE, params)
            before = cursor.fetchall()
            cursor.execute(_SEEN, params)
            written = cursor.rowcount == 1
            came_back = written and (not before or before[0][0] <= params["cutoff"])
            if came_back:
                event = event_build(event_type=FEEDS_REBUILD, payload=FeedsRebuild(user_ids=[user_id]))
                outbox_enqueue(event=event, key=str(user_id))
                transaction.on_commit(lambda: reader_returned.send(sender=Reader, user_id=user_id))
    except IntegrityError:
        # The user was deleted meanwhile: nobody to record.
        return False
    except DatabaseError as exc:
        logger.warning("user %s not recorded as seen: %s: %s", user_id, type(exc).__name__, exc)
        return None
    return came_back


def reader_seen_after_marker(*, user_id: int) -> None:
    """Record the user, whose activity marker was just set; if that fails, the marker is
    dropped, so that their next request tries again instead of an hour later."""
    if reader_seen(user_id=user_id) is None:
        try:
            get_redis_connection("default").delete(reader_seen_key(user_id))
        except RedisError:
            logger.warning("activity marker of user %s not dropped", user_id)


def reader_seen_marked(*, user_id: int) -> None:
    """Record the user as seen unless their Redis marker says it was done within
    FEED_ACTIVITY_RESOLUTION_SECONDS, and set the marker. With Redis unreachable, records
    (the database itself skips a recording within the resolution)."""
    try:
        fresh = get_redis_connection("default").set(
            reader_seen_key(user_id), b"1", nx=True, ex=settings.FEED_ACTIVITY_RESOLUTION_SECONDS
        )
    except RedisError:
        logger.warning("activity marker unavailable; recording the user in the database")
        reader_seen(user_id=user_id)
        return
    if fresh:
        reader_seen_after_marker(user_id=user_id)


def reader_state(*, user_id: int) -> Reader | None:
    """The user's row: when last seen, and whether their stored feed is trusted."""
    return Reader.objects.filter(user_id=user_id).first()


def reader_feed_trusted(*, user_id: int) -> bool:
    """Whether reads may rely on the user's stored entries: they are active and their
    feed complete (not awaiting the rebuild of a return, nor vacuumed)."""
    return Reader.objects.filter(user_id=user_id, feed_complete=True, seen_at__gt=active_since()).exists()
