"""Announce post changes as events once their transaction commits."""

from functools import partial
from typing import Any

from django.db import transaction

from consumers.events import POST_CREATED, PostCreated, event_build
from consumers.producer import event_publish
from posts.models import Post


def announce_post_created(sender: type[Post], instance: Post, created: bool, **kwargs: Any) -> None:
    if not created or kwargs.get("raw"):
        return
    event = event_build(
        event_type=POST_CREATED,
        payload=PostCreated(post_id=instance.pk, author_id=instance.author_id),
    )
    # robust: the post is already committed, so a broker error must not turn into a 500.
    transaction.on_commit(partial(event_publish, event=event, key=str(instance.author_id)), robust=True)
