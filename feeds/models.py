from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone


class FeedEntry(models.Model):
    """One post in one user's precomputed feed.

    The composite primary key (user_id, post_id) is the only index a feed read needs: a
    backward scan of it yields a user's feed newest first, because post ids grow with
    creation order. It also makes a repeated fan-out a no-op under ``ignore_conflicts``.
    """

    pk = models.CompositePrimaryKey("user_id", "post_id")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # Deleting a post does not touch feeds in the request: its post.deleted event makes
    # the worker remove the entries (found through this index), and reads join posts, so
    # a deleted post vanishes at once. Hence no database constraint.
    post = models.ForeignKey("posts.Post", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")

    class Meta:
        verbose_name_plural = "feed entries"
        # The user admin's "Rebuild feeds" action, and the admin's feed inspector.
        permissions = [
            ("rebuild_feeds", "Can rebuild users' feeds"),
            ("inspect_feeds", "Can inspect users' feeds and posts' delivery"),
        ]

    def __str__(self) -> str:
        return f"post {self.post_id} in the feed of {self.user_id}"


class PulledAuthor(models.Model):
    """An author whose posts are merged into followers' feeds at read time (hybrid fan-out).

    The worker marks an author when a post finds more than FANOUT_FOLLOWER_LIMIT followers
    and writes no feed rows for it. The mark stays: posts written while it was set exist
    only for readers that merge them.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    marked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"author {self.user_id}, merged at read time"


class StalePages(models.Model):
    """Users whose cached feed pages a fan-out batch made stale.

    Written in the batch's transaction and deleted once Redis took their new generations,
    so that a worker that dies in between (SIGKILL, a Redis error it could not survive)
    leaves them to the next worker that starts, instead of pages stale for FEED_CACHE_TTL.
    One row per batch.
    """

    user_ids = ArrayField(models.BigIntegerField())
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "stale pages"

    def __str__(self) -> str:
        return f"stale pages of {len(self.user_ids)} users"


class Marker(models.Model):
    """Where a user stopped reading a timeline (Mastodon's markers): the newest post they
    have read, and a version that each change raises by one, so that two clients moving it
    at once find out (``feeds.markers``)."""

    HOME = "home"
    TIMELINES = [(HOME, "home")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    timeline = models.CharField(max_length=16, choices=TIMELINES, default=HOME)
    last_read_id = models.BigIntegerField()
    version = models.BigIntegerField(default=1)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "timeline"], name="marker_unique_timeline")]

    def __str__(self) -> str:
        return f"{self.timeline} of user {self.user_id} read to post {self.last_read_id}"
