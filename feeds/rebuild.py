"""Feed rebuilds as operators run them: in batches, retried on lock conflicts with the
worker, with cached pages invalidated once each batch has committed."""

import logging
import time
from collections.abc import Iterable

from django.db import OperationalError
from redis.exceptions import RedisError

from feeds.cache import pages_invalidate
from feeds.services import RebuildResult, feeds_rebuild

logger = logging.getLogger(__name__)

ATTEMPTS = 5
# Feeds rebuilt per transaction unless told otherwise (rebuild_feeds, the admin action).
BATCH_SIZE = 200


class CacheNotInvalidated(Exception):
    """The feeds were rebuilt, but Redis refused to invalidate their cached pages."""


def feeds_rebuild_batch(user_ids: Iterable[int], *, dry_run: bool = False) -> RebuildResult:
    """Rebuild these feeds in one transaction, then invalidate the pages of those that changed.

    A deadlock with the fan-out worker (both may insert the same entry) aborts one side;
    this side retries. Raises CacheNotInvalidated, after the rebuild committed, when Redis
    is unreachable: the pages then refresh within FEED_CACHE_TTL.
    """
    user_ids = list(user_ids)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = feeds_rebuild(user_ids=user_ids, dry_run=dry_run)
            break
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                raise
            logger.warning("feed rebuild of %d users failed (%s); retrying", len(user_ids), exc)
            time.sleep(0.1 * attempt)
    if result.changed and not dry_run:
        try:
            pages_invalidate(result.changed)
        except RedisError as exc:
            raise CacheNotInvalidated(
                f"{len(result.changed)} rebuilt feeds kept their cached pages: {exc}"
            ) from exc
    return result
