"""Cache-aside storage of rendered first feed pages in Redis.

A page is stored as ``<generation>|<body>``. Invalidation gives the user a new generation,
so a stale page is never served, and a reader that rendered from PostgreSQL before a
fan-out committed cannot leave a stale page behind: it stores the page under the
generation it read first, which no longer matches.

A block, a mute or an unmute first *holds* the cache of the users it concerns, inside its
transaction: their generation becomes ``HOLD``, under which no page is stored or served,
and once it commits a fresh generation replaces it. So a page rendered before the commit
is never served after it: not in the moment between the commit and the new generation,
nor when Redis refuses that one (the hold expires after HOLD_TTL seconds instead).

A generation is a random value, never a counter: Redis may evict a generation key or lose
its last writes in a failover, and a counter would then start again and match a page
stored under an old number. A reader that finds no generation creates one (SET NX), so a
page is only ever stored under a generation that exists.
"""

import functools
import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from core.cache_keys import feed_generation_key, feed_page_key

logger = logging.getLogger(__name__)

# Generations outlive pages by far, so that a page is rarely stored twice in a row just
# because its generation expired.
GENERATION_TTL = 7 * 24 * 3600


# The generation of a held cache (see above): never a random one (those are hex).
HOLD = b"hold"
HOLD_TTL = 60


def generation_new() -> str:
    """A generation no page was ever stored under: 64 random bits, in hex (no ``|``)."""
    return secrets.token_hex(8)


# The current generation, created if there is none (evicted, expired, never set).
GENERATION_GET_OR_CREATE = """
local generation = redis.call('GET', KEYS[1])
if generation then
  return generation
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""


def page_lookup(user_id: int) -> tuple[bytes | None, bytes]:
    """The cached page body (None on a miss) and the generation to store a fresh one under."""
    try:
        client = get_redis_connection("default")
        generation, page = client.mget(feed_generation_key(user_id), feed_page_key(user_id))
        if generation is None:
            # Any page found was stored under a generation that is gone: a miss.
            generation = _generation_get_or_create(client)(
                keys=[feed_generation_key(user_id)], args=[generation_new(), GENERATION_TTL], client=client
            )
    except RedisError:
        logger.warning("feed cache unavailable; reading from the database")
        return None, b""
    if generation == HOLD:
        # Read from the database, and not stored: a block or mute is committing.
        return None, b""
    return page_body(page, generation), generation


def page_body(page: bytes | None, generation: bytes | None) -> bytes | None:
    """The body of a stored page if it is of the current generation, else None.

    No generation is a miss: whatever page is there was stored under a lost one.
    """
    if page is None or not generation:
        return None
    stored_generation, _, body = page.partition(b"|")
    return body if stored_generation == generation else None


def page_store(user_id: int, *, generation: bytes, body: bytes) -> None:
    if not generation or generation == HOLD:
        return  # Redis was unreachable when the read began, or the cache is held.
    try:
        get_redis_connection("default").set(
            feed_page_key(user_id), generation + b"|" + body, ex=settings.FEED_CACHE_TTL
        )
    except RedisError:
        logger.warning("feed cache unavailable; page not stored")


# Gives each generation key a new value and keeps it alive; one call per chunk of users.
# The users of a chunk share the value: a generation only has to differ from the user's own
# earlier ones.
BUMP_GENERATIONS = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
return #KEYS
"""
INVALIDATE_CHUNK = 2000


@functools.lru_cache(maxsize=8)
def _bump_generations(client):
    """The script bound to a Redis client, built once per client."""
    return client.register_script(BUMP_GENERATIONS)


@functools.lru_cache(maxsize=8)
def _generation_get_or_create(client):
    return client.register_script(GENERATION_GET_OR_CREATE)


def pages_invalidate(user_ids: Iterable[int]) -> None:
    """Make every cached page of these users stale. Raises RedisError if Redis is down.

    A new generation is enough: a page of another generation is never served, and expires
    with FEED_CACHE_TTL.
    """
    client = get_redis_connection("default")
    keys = [feed_generation_key(user_id) for user_id in user_ids]
    for start in range(0, len(keys), INVALIDATE_CHUNK):
        _bump_generations(client)(
            keys=keys[start : start + INVALIDATE_CHUNK],
            args=[generation_new(), GENERATION_TTL],
            client=client,
        )


def pages_hold(user_ids: Iterable[int]) -> None:
    """Hold the cache of these users (see above) until ``pages_invalidate`` gives them a
    fresh generation, or for HOLD_TTL seconds. Raises RedisError if Redis is down."""
    client = get_redis_connection("default")
    keys = [feed_generation_key(user_id) for user_id in user_ids]
    for start in range(0, len(keys), INVALIDATE_CHUNK):
        _bump_generations(client)(
            keys=keys[start : start + INVALIDATE_CHUNK], args=[HOLD, HOLD_TTL], client=client
        )


def pages_invalidate_quietly(user_ids: Iterable[int]) -> None:
    """pages_invalidate, logging instead of raising while Redis is down (then no page is
    served from it either)."""
    try:
        pages_invalidate(user_ids)
    except RedisError:
        logger.warning("feed cache unavailable; pages not invalidated")
