"""Event handlers, registered by type. Adding an event type: one function, one line below.

A handler takes consecutive events of its type (in partition order) and returns what it
changed in the feeds; the loop hands that to ``feeds.effects.FeedEffects``, which
invalidates cached pages, trims feeds and observes the post-to-feed latency.
"""

import logging
from collections.abc import Callable, Sequence

from core import metrics
from eventbus.events import (
    BLOCK_CREATED,
    BLOCK_DELETED,
    FEEDS_REBUILD,
    FOLLOW_CREATED,
    FOLLOW_DELETED,
    MUTE_CREATED,
    MUTE_DELETED,
    POST_CREATED,
    POST_DELETED,
    Event,
)
from feeds.rebuild import BATCH_SIZE
from feeds.services import (
    FeedChanges,
    feed_backfill,
    feed_fanout_posts,
    feed_remove_posts,
    feed_unfollow,
    feeds_rebuild,
)

logger = logging.getLogger(__name__)

Handler = Callable[[Sequence[Event]], FeedChanges]


def post_created(events: Sequence[Event]) -> FeedChanges:
    changes = feed_fanout_posts(post_ids=[event.payload.post_id for event in events])
    changes.posted_at += [event.occurred_at for event in events]
    metrics.FANOUT_ROWS.inc(changes.rows)
    metrics.FANOUT_ROWS_SKIPPED.inc(changes.skipped)
    return changes


def post_deleted(events: Sequence[Event]) -> FeedChanges:
    return feed_remove_posts(posts=[(event.payload.post_id, event.payload.author_id) for event in events])


def follow_created(events: Sequence[Event]) -> FeedChanges:
    changes = feed_backfill(follows=_pairs(events))
    metrics.FANOUT_ROWS.inc(changes.rows)
    return changes


def follow_deleted(events: Sequence[Event]) -> FeedChanges:
    return feed_unfollow(follows=_pairs(events))


def block_created(events: Sequence[Event]) -> FeedChanges:
    """Each one's posts leave the other's feed, both ways round (the block's transaction
    ended the follows; their follow.deleted events may come later, on other partitions)."""
    pairs = _relation_pairs(events)
    return feed_unfollow(follows=pairs + [(target, user) for user, target in pairs])


def block_deleted(events: Sequence[Event]) -> FeedChanges:
    """Nothing to do: an unblock ends the block and nothing more (the follows it ended
    stay ended), and reads stopped applying it when it committed."""
    return FeedChanges()


def mute_created(events: Sequence[Event]) -> FeedChanges:
    return feed_unfollow(follows=_relation_pairs(events))


def mute_deleted(events: Sequence[Event]) -> FeedChanges:
    """The muted account's newest posts are copied back, as for a new follow; reads pulled
    them from the posts index since the unmute committed (the follow's pull_below)."""
    changes = feed_backfill(follows=_relation_pairs(events))
    metrics.FANOUT_ROWS.inc(changes.rows)
    return changes


def feeds_rebuild_requested(events: Sequence[Event]) -> FeedChanges:
    """Rebuild the feeds queued by an operator (the user admin's action) or by users coming
    back (follows.activity), BATCH_SIZE per statement, in the batch's transaction; the loop
    invalidates the pages that changed."""
    user_ids = sorted({user_id for event in events for user_id in event.payload.user_ids})
    changes = FeedChanges()
    added = removed = 0
    for start in range(0, len(user_ids), BATCH_SIZE):
        result = feeds_rebuild(user_ids=user_ids[start : start + BATCH_SIZE])
        added, removed = added + result.added, removed + result.removed
        changes.changed |= result.changed
    changes.rows = added + removed
    logger.info(
        "feeds rebuilt",
        extra={"feeds": len(user_ids), "changed": len(changes.changed), "added": added, "removed": removed},
    )
    return changes


def _pairs(events: Sequence[Event]) -> list[tuple[int, int]]:
    return [(event.payload.follower_id, event.payload.followee_id) for event in events]


def _relation_pairs(events: Sequence[Event]) -> list[tuple[int, int]]:
    return [(event.payload.user_id, event.payload.target_id) for event in events]


HANDLERS: dict[str, Handler] = {
    POST_CREATED: post_created,
    POST_DELETED: post_deleted,
    FOLLOW_CREATED: follow_created,
    FOLLOW_DELETED: follow_deleted,
    FEEDS_REBUILD: feeds_rebuild_requested,
    BLOCK_CREATED: block_created,
    BLOCK_DELETED: block_deleted,
    MUTE_CREATED: mute_created,
    MUTE_DELETED: mute_deleted,
}
