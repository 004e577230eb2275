import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Subquery

from feeds import cache
from feeds.cursor import cursor_encode
from feeds.models import FeedEntry
from feedsite import metrics
from posts.models import Post
from posts.serializers import post_json

User = get_user_model()


def feed_posts(*, user_id: int, limit: int, before_post_id: int | None = None) -> list[Post]:
    """Up to ``limit`` posts of a user's feed, newest first, older than ``before_post_id``."""
    entries = FeedEntry.objects.filter(user_id=user_id)
    if before_post_id is not None:
        entries = entries.filter(post_id__lt=before_post_id)
    # The subquery is a backward scan of the (user_id, post_id) primary key, stopping at limit.
    newest = entries.order_by("-post_id").values("post_id")[:limit]
    return list(Post.objects.filter(pk__in=Subquery(newest)).select_related("author").order_by("-pk"))


def feed_page(*, user_id: int, limit: int, before_post_id: int | None = None) -> bytes:
    """One page of a user's feed as rendered JSON: ``{"results": [...], "next_cursor": ...}``.

    The default first page is served cache-aside from Redis. Raises User.DoesNotExist for
    an unknown user.
    """
    cacheable = before_post_id is None and limit == settings.FEED_PAGE_SIZE
    if cacheable:
        body, generation = cache.page_lookup(user_id)
        if body is not None:
            metrics.FEED_CACHE_HITS.inc()
            return body
        metrics.FEED_CACHE_MISSES.inc()

    posts = feed_posts(user_id=user_id, limit=limit + 1, before_post_id=before_post_id)
    if not posts and not User.objects.filter(pk=user_id).exists():
        raise User.DoesNotExist(user_id)
    has_more = len(posts) > limit
    posts = posts[:limit]
    body = json.dumps(
        {
            "results": [post_json(post) for post in posts],
            "next_cursor": cursor_encode(posts[-1].pk) if has_more else None,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()
    if cacheable:
        cache.page_store(user_id, generation=generation, body=body)
    return body
