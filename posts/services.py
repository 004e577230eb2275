import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from redis.exceptions import RedisError

from feeds import cache
from feedsite import metrics
from posts.models import Post


@transaction.atomic
def post_create(*, author: AbstractBaseUser, content: str) -> Post:
    """Save a post; its ``post.created`` event is published when the transaction commits."""
    post = Post(author=author, content=content)
    post.save(force_insert=True)
    transaction.on_commit(metrics.POSTS_CREATED.inc)
    return post


logger = logging.getLogger(__name__)


class NotAuthor(Exception):
    """Only a post's author may delete it."""


@transaction.atomic
def post_delete(*, post_id: int, actor: AbstractBaseUser) -> None:
    """Delete a post of ``actor``; its ``post.deleted`` event removes it from every feed.

    The author's own cached page is made stale once the delete commits, so the author sees
    it gone at once even while the worker lags; followers' pages wait for the worker.
    Raises Post.DoesNotExist, or NotAuthor when ``actor`` did not write it.
    """
    # Locked, so that of two concurrent deletes one finds nothing (404), not both 204.
    post = Post.objects.select_for_update().get(pk=post_id)
    if post.author_id != actor.pk:
        raise NotAuthor(post_id)
    post.delete()
    transaction.on_commit(lambda: _author_page_invalidate(actor.pk))


def _author_page_invalidate(author_id: int) -> None:
    try:
        cache.pages_invalidate([author_id])
    except RedisError:
        # The delete has committed; the worker invalidates the page again once it is back.
        logger.warning("feed cache unavailable; author %s's cached page not invalidated", author_id)
