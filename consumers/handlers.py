"""Event handlers, registered by type. Adding an event type: one function, one line below.

A handler takes consecutive events of its type (in partition order) and returns the
users whose feeds changed, so their cached pages can be invalidated.
"""

from collections.abc import Callable, Sequence

from consumers.events import POST_CREATED, Event
from feeds.services import feed_fanout_posts
from feedsite import metrics

Handler = Callable[[Sequence[Event]], set[int]]


def post_created(events: Sequence[Event]) -> set[int]:
    result = feed_fanout_posts(post_ids=[event.payload.post_id for event in events])
    metrics.FANOUT_ROWS.inc(result.rows)
    return result.users


HANDLERS: dict[str, Handler] = {
    POST_CREATED: post_created,
}
