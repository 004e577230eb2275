from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core import metrics
from posts.models import Post


@transaction.atomic
def post_create(*, author: AbstractBaseUser, content: str) -> Post:
    """Save a post; its ``post.created`` event is published when the transaction commits."""
    post = Post(author=author, content=content)
    post.save(force_insert=True)
    transaction.on_commit(metrics.POSTS_CREATED.inc)
    return post


class NotAuthor(Exception):
    """Only a post's author may delete it."""


@transaction.atomic
def post_delete(*, post_id: int, actor: AbstractBaseUser) -> None:
    """Delete a post of ``actor``; its ``post.deleted`` event removes it from every feed.

    Raises Post.DoesNotExist, or NotAuthor when ``actor`` did not write it.
    """
    # Locked, so that of two concurrent deletes one finds nothing (404), not both 204.
    post = Post.objects.select_for_update().get(pk=post_id)
    if post.author_id != actor.pk:
        raise NotAuthor(post_id)
    post.delete()
