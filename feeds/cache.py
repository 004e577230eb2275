"""Cache-aside storage of rendered first feed pages in Redis.

A page is stored as ``<generation>|<body>``. Invalidation bumps the user's generation, so
a stale page is never served, and a reader that rendered from PostgreSQL before a fan-out
committed cannot leave a stale page behind: it stores the page under the generation it
read first, which no longer matches.
"""

import functools
import logging
from collections.abc import Iterable

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from feedsite.cache_keys import feed_generation_key, feed_page_key

logger = logging.getLogger(__name__)

# Generations outlive pages by far, so an expired counter cannot revive a stale page.
GENERATION_TTL = 7 * 24 * 3600


def page_lookup(user_id: int) -> tuple[bytes | None, bytes]:
    """The cached page body (None on a miss) and the generation to store a fresh one under."""
    try:
        generation, page = get_redis_connection("default").mget(
            feed_generation_key(user_id), feed_page_key(user_id)
        )
    except RedisError:
        logger.warning("feed cache unavailable; reading from the database")
        return None, b""
    generation = generation or b"0"
    return page_body(page, generation), generation


def page_body(page: bytes | None, generation: bytes | None) -> bytes | None:
    """The body of a stored page if it is of the current generation, else None."""
    if page is None:
        return None
    stored_generation, _, body = page.partition(b"|")
    return body if stored_generation == (generation or b"0") else None


def page_store(user_id: int, *, generation: bytes, body: bytes) -> None:
    if not generation:
        return  # Redis was unreachable when the read began.
    try:
        get_redis_connection("default").set(
            feed_page_key(user_id), generation + b"|" + body, ex=settings.FEED_CACHE_TTL
        )
    except RedisError:
        logger.warning("feed cache unavailable; page not stored")


# Bumps each generation key and keeps it alive; one call per chunk of users.
BUMP_GENERATIONS = """
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""
INVALIDATE_CHUNK = 2000


@functools.lru_cache(maxsize=8)
def _bump_generations(client):
    """The script bound to a Redis client, built once per client."""
    return client.register_script(BUMP_GENERATIONS)


def pages_invalidate(user_ids: Iterable[int]) -> None:
    """Make every cached page of these users stale. Raises RedisError if Redis is down.

    Bumping the generation is enough: a page of an older generation is never served, and
    expires with FEED_CACHE_TTL.
    """
    client = get_redis_connection("default")
    keys = [feed_generation_key(user_id) for user_id in user_ids]
    for start in range(0, len(keys), INVALIDATE_CHUNK):
        _bump_generations(client)(
            keys=keys[start : start + INVALIDATE_CHUNK], args=[GENERATION_TTL], client=client
        )
