"""Committed and deleted posts, announced on the stream channel (``stream_channel``) so
that the stream processes read them at once. Best effort: a stream process also reads
new posts every STREAM_POLL_SECONDS, so a lost announcement only delays them."""

import functools
import json
import logging
import time

import redis
from django.conf import settings
from django.db import connection, transaction

from core.cache_keys import stream_channel
from posts.models import Post

logger = logging.getLogger(__name__)


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _publish(message: dict) -> None:
    try:
        _client(settings.STREAM_REDIS_URL).publish(stream_channel(), json.dumps(message))
    except (redis.RedisError, OSError) as error:
        logger.warning(
            "stream channel unavailable (%s); streams read the post within STREAM_POLL_SECONDS", error
        )


def post_announce_on_commit(post: Post) -> None:
    """Inside the post's transaction: announce it once that commits, with the transaction's
    id (what the streams order by) and the commit time (their delivery lag)."""
    added = post.added  # returned by the INSERT (a database default)
    if added is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()::text::bigint")
            (added,) = cursor.fetchone()
    post_id = post.pk
    transaction.on_commit(lambda: _publish({"post": post_id, "added": added, "at": time.time()}))


def post_delete_announce_on_commit(*, post_id: int, author_id: int) -> None:
    transaction.on_commit(lambda: _publish({"deleted": post_id, "author": author_id}))
