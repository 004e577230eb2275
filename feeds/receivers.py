"""Feed effects that cannot wait for the fan-out worker.

A deleted post leaves the author's own cached first page at once, when the delete commits,
so the author sees it gone even while the worker lags; followers' pages are made stale by
the worker when it applies the ``post.deleted`` event. A user who comes back loses the
pages cached before they went away. A block, a mute or an unmute drops the cached pages of
the users it concerns when it commits, before the API answers.
"""

import logging
from typing import Any

from django.db import transaction
from redis.exceptions import RedisError

from feeds import cache
from feeds.stalepages import stale_pages_forget, stale_pages_record
from posts.models import Post

logger = logging.getLogger(__name__)


def author_page_forget_deleted_post(sender: type[Post], instance: Post, **kwargs: Any) -> None:
    author_id = instance.author_id
    transaction.on_commit(lambda: _author_page_invalidate(author_id))


def _author_page_invalidate(author_id: int) -> None:
    try:
        cache.pages_invalidate([author_id])
    except RedisError:
        # The delete has committed; the worker invalidates the page again once Redis is back.
        logger.warning("feed cache unavailable; author %s's cached page not invalidated", author_id)


def returning_reader_pages_forget(sender: type, user_id: int, **kwargs: Any) -> None:
    """A user came back (sent after the commit): a page cached before they went away may lack
    the posts fan-out skipped while they were away."""
    cache.pages_invalidate_quietly([user_id])


def hidden_pages_forget(sender: type, user_ids: list[int], **kwargs: Any) -> None:
    """Inside the transaction of a block, mute or unmute: its users' cache is held
    (``feeds.cache``: no page is stored or served) and recorded as stale in it, and once it
    commits their pages get a fresh generation. Should Redis refuse that, the hold keeps
    their cache off until it expires, and the row stays for the worker
    (``stale_pages_flush``), which invalidates them again when it applies the event. Should
    Redis refuse the hold, the block or mute goes on, and only the fresh generation after
    the commit keeps the pages rendered before it from being served."""
    try:
        cache.pages_hold(user_ids)
    except RedisError:
        logger.warning("feed cache unavailable; pages of users %s not held", user_ids)
    row = stale_pages_record(user_ids=user_ids)

    def invalidate() -> None:
        try:
            cache.pages_invalidate(user_ids)
        except RedisError:
            logger.warning("feed cache unavailable; pages of users %s held until the hold expires", user_ids)
            return
        stale_pages_forget(ids=[row])

    transaction.on_commit(invalidate)
