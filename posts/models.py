from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Cast
from django.utils import timezone

# The writing transaction's id as a bigint: xid8 counts from 0 and never wraps, and a
# bigint compares and indexes like any other.
ADDED_XACT = Cast(
    Cast(models.Func(function="pg_current_xact_id", output_field=models.TextField()), models.TextField()),
    models.BigIntegerField(),
)


class Post(models.Model):
    """A post. Ids grow with creation order, and feeds order by id, newest first."""

    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts", db_index=False
    )
    content = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The id of the transaction that wrote the post (pg_current_xact_id()), set by the
    # database. Streams order new posts by it: every post of a transaction below the oldest
    # one still running has committed, so "added after X" is exact, which ids in commit
    # order are not (streams.selectors). Null for posts written before the column existed.
    added = models.BigIntegerField(null=True, editable=False, db_default=ADDED_XACT)

    class Meta:
        indexes = [
            models.Index(fields=["author", "-id"], name="post_author_newest"),
            # A stream's window of new posts, and a returning stream's posts by followee.
            models.Index(fields=["added"], name="post_added"),
            models.Index(fields=["author", "added"], name="post_author_added"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(content=""), name="post_content_not_empty"),
        ]

    def __str__(self) -> str:
        return f"Post {self.pk} by {self.author.get_username()}"

    def save(self, *args, **kwargs) -> None:
        # The post_save receiver stores the post's event in the outbox; both must commit
        # together even when the caller runs in autocommit mode. Inside a caller's
        # transaction this joins it (no savepoint: nothing here needs a partial rollback).
        with transaction.atomic(savepoint=False):
            super().save(*args, **kwargs)


class PostRequest(models.Model):
    """A ``POST /posts`` made with an ``Idempotency-Key``, stored in the transaction of the
    post it created: a retry with the same key gets this response again instead of a second
    post (``posts.services.post_create_once``). Kept POST_IDEMPOTENCY_SECONDS, and no longer
    than its post."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, db_index=False)
    # Deleted with its post: the stored response holds the post's content.
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of the request's validated body: the same key with another body is refused.
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="post_request_user_key")]
        # The worker deletes expired keys oldest first (post_requests_prune).
        indexes = [models.Index(fields=["created_at"], name="post_request_created")]

    def __str__(self) -> str:
        return f"Idempotency-Key {self.key!r} of user {self.user_id}"
