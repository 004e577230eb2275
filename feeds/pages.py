"""Feed pages as the API sends them: rendered JSON bytes, the default first page served
cache-aside from Redis (``feeds.cache``). The posts come from ``feeds.selectors``."""

import json

from django.conf import settings

from core import metrics
from core.cursor import cursor_encode
from feeds import cache
from feeds.selectors import feed_page_posts
from follows.activity import reader_feed_trusted
from posts.models import Post
from posts.serializers import post_json


def feed_page(*, user_id: int, limit: int, before_post_id: int | None = None) -> bytes:
    """One page of a user's feed as rendered JSON: ``{"results": [...], "next_cursor": ...}``.

    The default first page is served cache-aside from Redis. Only a page of a trusted
    stored feed is cached: one that is not (its user is idle, or came back and awaits the
    rebuild) is merged at read time each time, since fan-out does not make the pages of
    users it skips stale; the pages cached before a user went away are dropped when they
    come back (feeds.receivers). Raises User.DoesNotExist for an unknown user.
    """
    if before_post_id is not None or limit != settings.FEED_PAGE_SIZE:
        return _page_render(user_id=user_id, limit=limit, before_post_id=before_post_id)
    body, generation = cache.page_lookup(user_id)
    if body is not None:
        metrics.FEED_CACHE_HITS.inc()
        return body
    metrics.FEED_CACHE_MISSES.inc()
    trusted = reader_feed_trusted(user_id=user_id)
    body = _page_render(user_id=user_id, limit=limit, stored=trusted)
    if trusted:
        # Stored under the generation read before the posts: a fan-out committing meanwhile
        # replaces it, and this page is never served.
        cache.page_store(user_id, generation=generation, body=body)
    return body


def _page_render(
    *, user_id: int, limit: int, before_post_id: int | None = None, stored: bool | None = None
) -> bytes:
    posts, has_more = feed_page_posts(
        user_id=user_id, limit=limit, before_post_id=before_post_id, stored=stored
    )
    return page_json(posts, has_more=has_more)


def page_json(posts: list[Post], *, has_more: bool) -> bytes:
    """The page's JSON body; with ``has_more``, its cursor points below the last post."""
    return json.dumps(
        {
            "results": [post_json(post) for post in posts],
            "next_cursor": cursor_encode(posts[-1].pk) if has_more else None,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
