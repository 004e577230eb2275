from django.conf import settings
from django.db import models, transaction
from django.db.models import F, Q
from rest_framework.authtoken.models import TokenProxy

# The token cache's read-only user, a proxy model of the user, registered with this app.
from follows.tokencache import CachedUser  # noqa: F401


class Follow(models.Model):
    """``follower`` sees the posts of ``followee`` in their feed."""

    follower = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="following", db_index=False
    )
    followee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="followers", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by the backfill when it copied only the newest FEED_BACKFILL_LIMIT posts of the
    # followee: their posts older than this id are not in the follower's stored feed, so
    # reads pull them from the posts index. Null: nothing of theirs is missing above the
    # feed's oldest stored entry.
    pull_below = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["follower", "followee"], name="follow_unique_pair"),
            models.CheckConstraint(condition=~Q(follower=F("followee")), name="follow_not_self"),
        ]
        # Fan-out reads "followers of these authors": an index-only scan on this one.
        indexes = [
            models.Index(fields=["followee", "follower"], name="follow_followee_follower"),
            # Reads find a follower's partly copied followees here.
            models.Index(
                fields=["follower", "pull_below"],
                name="follow_pull_below",
                condition=Q(pull_below__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.follower.get_username()} follows {self.followee.get_username()}"

    def save(self, *args, **kwargs) -> None:
        # The post_save receiver stores the follow's event in the outbox; both must commit
        # together even when the caller runs in autocommit mode.
        with transaction.atomic(savepoint=False):
            super().save(*args, **kwargs)


class Relation(models.Model):
    """One account hiding another: ``user`` blocks or mutes ``target``."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        # As for a follow: the receiver's outbox event commits with the row.
        with transaction.atomic(savepoint=False):
            super().save(*args, **kwargs)


class Block(Relation):
    """``user`` blocks ``target``: the two are separated both ways. No follow stands between
    them, neither can follow the other, and neither's posts reach the other's feed; the
    blocked one cannot read the blocker's posts or profile. Reads check the pair (the
    unique index, both ways round) for every post they take (``feeds.selectors``)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "target"], name="block_unique_pair"),
            models.CheckConstraint(condition=~Q(user=F("target")), name="block_not_self"),
        ]
        indexes = [
            # The blocks of a user, newest first (GET /blocks), and who blocks a user.
            models.Index(fields=["user", "-id"], name="block_user_newest"),
            models.Index(fields=["target", "user"], name="block_target_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} blocks {self.target.get_username()}"


class Mute(Relation):
    """``user`` mutes ``target``: the target's posts stay out of the user's home feed while
    the mute stands; the follow, if any, stays, and the target is told nothing."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "target"], name="mute_unique_pair"),
            models.CheckConstraint(condition=~Q(user=F("target")), name="mute_not_self"),
        ]
        indexes = [
            models.Index(fields=["user", "-id"], name="mute_user_newest"),
            models.Index(fields=["target", "user"], name="mute_target_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} mutes {self.target.get_username()}"


# Characters of a token's key the admin shows: enough to recognise one, too few to use it.
TOKEN_PREFIX_LENGTH = 6


class UserToken(TokenProxy):
    """An API token as the admin shows it: named by its user and the first characters of
    its key, never the whole key (titles, history entries, delete pages)."""

    class Meta:
        proxy = True
        verbose_name = "token"

    def __str__(self) -> str:
        return f"{self.key_prefix} of {self.user.get_username()}"

    @property
    def key_prefix(self) -> str:
        return f"{self.key[:TOKEN_PREFIX_LENGTH]}…"


class Reader(models.Model):
    """When a user was last seen, and whether their stored feed can be trusted.

    A user is active while ``seen_at`` lies within FEED_ACTIVE_SECONDS: only active users'
    feeds get rows from fan-out, backfill and rebuilds (``feeds.services``). ``seen_at`` is
    written at most once per FEED_ACTIVITY_RESOLUTION_SECONDS (``follows.activity``).
    ``feed_complete`` says that the stored entries hold every post of the feed above the
    oldest of them: cleared when an inactive user comes back (their feed missed the posts
    of their absence) and when their entries are vacuumed, set by the rebuild that follows;
    until then reads merge the whole feed from the posts index.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    seen_at = models.DateTimeField()
    feed_complete = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # vacuum_feeds finds the idle users whose entries are still stored here.
            models.Index(fields=["seen_at"], name="reader_stored_idle", condition=Q(feed_complete=True)),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id}, last seen {self.seen_at:%Y-%m-%d %H:%M}"
