import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core import metrics
from posts.announce import post_announce_on_commit, post_delete_announce_on_commit
from posts.models import Post, PostRequest
from posts.serializers import post_json

# First key of the two-key advisory lock on a (user, Idempotency-Key); a constant unique to
# this project (beside feeds.services' lock classes).
POST_REQUEST_LOCK_CLASS = 0x6670


@transaction.atomic
def post_create(*, author: AbstractBaseUser, content: str) -> Post:
    """Save a post; its ``post.created`` event is published when the transaction commits."""
    post = Post(author=author, content=content)
    post.save(force_insert=True)
    transaction.on_commit(metrics.POSTS_CREATED.inc)
    post_announce_on_commit(post)
    return post


class PostRequestInProgress(Exception):
    """A request with this Idempotency-Key is still running."""


class PostRequestMismatch(Exception):
    """This Idempotency-Key was used with another body."""


@dataclass(frozen=True)
class PostCreated:
    """The answer to a keyed post: ``status`` and ``body``, and whether they were stored by
    an earlier request with the same key (``replayed``)."""

    status: int
    body: dict[str, Any]
    replayed: bool


@transaction.atomic
def post_create_once(*, author: AbstractBaseUser, content: str, key: str) -> PostCreated:
    """``post_create`` at most once per author and Idempotency-Key: a retry with the same
    key and content gets the first response again, and stores nothing.

    The key is stored in the post's own transaction, so a crash, a lost cache or a restart
    cannot let a retry store the post twice. A transaction-scoped advisory lock on the key,
    taken without waiting, tells a retry that arrives while the first request still runs
    (PostRequestInProgress). Raises PostRequestMismatch for the same key with other content.
    Keys older than POST_IDEMPOTENCY_SECONDS count as unused; the author's are deleted here.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
            [POST_REQUEST_LOCK_CLASS, f"{author.pk}:{key}"],
        )
        [(locked,)] = cursor.fetchall()
    if not locked:
        raise PostRequestInProgress(key)
    fingerprint = hashlib.sha256(content.encode()).hexdigest()
    expired = timezone.now() - datetime.timedelta(seconds=settings.POST_IDEMPOTENCY_SECONDS)
    PostRequest.objects.filter(user=author, created_at__lt=expired).delete()
    stored = PostRequest.objects.filter(user=author, key=key).first()
    if stored is not None:
        if stored.fingerprint != fingerprint:
            raise PostRequestMismatch(key)
        return PostCreated(status=stored.status, body=stored.response, replayed=True)
    post = post_create(author=author, content=content)
    body = post_json(post, author_username=author.get_username())
    try:
        with transaction.atomic():
            PostRequest.objects.create(
                user=author, post=post, key=key, fingerprint=fingerprint, status=201, response=body
            )
    except IntegrityError:
        # Unreachable while every writer of a key holds its lock first; a row written some
        # other way is answered as a key in use, not as a server error.
        raise PostRequestInProgress(key) from None
    return PostCreated(status=201, body=body, replayed=False)


def post_requests_prune(*, limit: int) -> int:
    """Delete up to ``limit`` Idempotency-Keys older than POST_IDEMPOTENCY_SECONDS, oldest
    first; return how many. The fan-out worker runs it now and then."""
    expired = timezone.now() - datetime.timedelta(seconds=settings.POST_IDEMPOTENCY_SECONDS)
    ids = PostRequest.objects.filter(created_at__lt=expired).order_by("created_at").values("pk")[:limit]
    deleted, _ = PostRequest.objects.filter(pk__in=ids).delete()
    return deleted


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
    post_delete_announce_on_commit(post_id=post_id, author_id=actor.pk)
