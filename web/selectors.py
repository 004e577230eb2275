"""What the web pages read: feeds, from the feeds' selectors and page cache, and how a
viewer stands with the account of a profile."""

import json
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from feeds.pages import feed_page
from feeds.selectors import feed_page_posts
from follows.models import Block, Follow, Mute
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


@dataclass(frozen=True)
class Standing:
    """How a signed-in viewer stands with an account whose profile they read."""

    follows: bool
    blocks: bool
    blocked_by: bool
    mutes: bool

    @property
    def separated(self) -> bool:
        """A block stands between the two, one way or the other (``blocked_between``): the
        profile shows neither posts nor a Follow button."""
        return self.blocks or self.blocked_by


def profile_standing(*, viewer_id: int, user_id: int) -> Standing:
    """Whether the viewer follows, blocks or mutes the account, and whether it blocks them:
    four probes of the unique pairs in one round trip."""
    follow, block, mute = (model._meta.db_table for model in (Follow, Block, Mute))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT FROM {follow} WHERE follower_id = %s AND followee_id = %s),"
            f" EXISTS (SELECT FROM {block} WHERE user_id = %s AND target_id = %s),"
            f" EXISTS (SELECT FROM {block} WHERE user_id = %s AND target_id = %s),"
            f" EXISTS (SELECT FROM {mute} WHERE user_id = %s AND target_id = %s)",
            [viewer_id, user_id, viewer_id, user_id, user_id, viewer_id, viewer_id, user_id],
        )
        return Standing(*cursor.fetchone())
