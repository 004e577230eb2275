"""What the web pages read from the feeds' selectors and page cache."""

import json

from django.conf import settings

from feeds.pages import feed_page
from feeds.selectors import feed_page_posts
from posts.models import Post


def timeline_page(*, user_id: int, before_post_id: int | None = None) -> tuple[list[Post], bool]:
    """One page of the user's feed, as the API pages it, with their own posts at once
    (a post they just wrote is shown before the worker has applied it)."""
    return feed_page_posts(
        user_id=user_id, limit=settings.FEED_PAGE_SIZE, before_post_id=before_post_id, with_own_posts=True
    )


def timeline_new_count(*, user_id: int, after_post_id: int) -> tuple[int, bool]:
    """How many posts of the first page of the user's feed are newer than
    ``after_post_id``, and whether there may be more (the whole page is newer and older
    posts follow it). Read from the cached first page, so that polling costs one Redis
    round trip while nothing changed."""
    page = json.loads(feed_page(user_id=user_id, limit=settings.FEED_PAGE_SIZE))
    count = sum(1 for post in page["results"] if post["id"] > after_post_id)
    return count, count == len(page["results"]) and page["next_cursor"] is not None
