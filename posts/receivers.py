"""Announce post changes as events, stored in the same transaction as the change.

Both events of a post are keyed by its author, so they share a partition and the worker
sees a delete after the create it undoes.
"""

from typing import Any

from eventbus.events import POST_CREATED, POST_DELETED, PostCreated, PostDeleted, event_build
from eventbus.outbox import outbox_enqueue
from posts.models import Post


def announce_post_created(sender: type[Post], instance: Post, created: bool, **kwargs: Any) -> None:
    if not created or kwargs.get("raw"):
        return
    event = event_build(
        event_type=POST_CREATED,
        payload=PostCreated(post_id=instance.pk, author_id=instance.author_id),
    )
    # Published once the transaction commits; see eventbus.outbox.
    outbox_enqueue(event=event, key=str(instance.author_id))


def announce_post_deleted(sender: type[Post], instance: Post, **kwargs: Any) -> None:
    event = event_build(
        event_type=POST_DELETED,
        payload=PostDeleted(post_id=instance.pk, author_id=instance.author_id),
    )
    outbox_enqueue(event=event, key=str(instance.author_id))
