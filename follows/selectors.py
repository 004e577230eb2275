import json
import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Count
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from core.cache_keys import follow_suggestions_key
from follows.models import Block, Follow, Mute, Relation

logger = logging.getLogger(__name__)

User = get_user_model()

# How many of the most-followed accounts are counted and cached for suggestions, and for
# how many seconds: counting every follow is a scan of the follows table.
MOST_FOLLOWED_COUNT = 100
MOST_FOLLOWED_TTL = 60


def user_get_by_username(*, username: str) -> AbstractBaseUser:
    """The user of this name, ignoring case as signup does; raises User.DoesNotExist."""
    name = User.normalize_username(username)
    return User.objects.get(**{f"{User.USERNAME_FIELD}__iexact": name})


def follow_counts(*, user_id: int) -> tuple[int, int]:
    """How many accounts follow the user, and how many the user follows."""
    return (
        Follow.objects.filter(followee_id=user_id).count(),
        Follow.objects.filter(follower_id=user_id).count(),
    )


def follow_exists(*, follower_id: int, followee_id: int) -> bool:
    return Follow.objects.filter(follower_id=follower_id, followee_id=followee_id).exists()


@dataclass(frozen=True)
class Suggestion:
    """An account to follow, with how many follow it."""

    user_id: int
    username: str
    followers: int


def _most_followed() -> list[Suggestion]:
    """The most-followed active accounts, most first, cached in Redis."""
    key = follow_suggestions_key()
    try:
        client = get_redis_connection("default")
        cached = client.get(key)
        if cached is not None:
            return [Suggestion(*fields) for fields in json.loads(cached)]
    except RedisError:
        client = None
        logger.warning("suggestions cache unavailable; counting followers in the database")
    ranked = [
        Suggestion(*fields)
        for fields in Follow.objects.filter(followee__is_active=True)
        .values("followee_id", f"followee__{User.USERNAME_FIELD}")
        .annotate(followers=Count("*"))
        .order_by("-followers", "followee_id")
        .values_list("followee_id", f"followee__{User.USERNAME_FIELD}", "followers")[:MOST_FOLLOWED_COUNT]
    ]
    if client is not None:
        try:
            client.set(
                key, json.dumps([[s.user_id, s.username, s.followers] for s in ranked]), ex=MOST_FOLLOWED_TTL
            )
        except RedisError:
            logger.warning("suggestions cache unavailable; not stored")
    return ranked


def follow_suggestions(*, user_id: int, limit: int) -> list[Suggestion]:
    """Up to ``limit`` of the most-followed accounts the user does not follow, block, mute
    or is blocked by, most followed first: one query besides the cached ranking, whose
    probes of the follow, block and mute unique pairs (and of who blocks the user) it
    unites."""
    ranked = [s for s in _most_followed() if s.user_id != user_id]
    ids = [s.user_id for s in ranked]
    follow, block, mute = (model._meta.db_table for model in (Follow, Block, Mute))
    with connection.cursor() as cursor:
        # One array parameter: a hundred IN parameters cost PostgreSQL more to plan than to run.
        cursor.execute(
            f"SELECT followee_id FROM {follow} WHERE follower_id = %s AND followee_id = ANY(%s::bigint[])"
            f" UNION ALL SELECT target_id FROM {block} WHERE user_id = %s AND target_id = ANY(%s::bigint[])"
            f" UNION ALL SELECT user_id FROM {block} WHERE target_id = %s AND user_id = ANY(%s::bigint[])"
            f" UNION ALL SELECT target_id FROM {mute} WHERE user_id = %s AND target_id = ANY(%s::bigint[])",
            [user_id, ids] * 4,
        )
        left_out = {account_id for (account_id,) in cursor.fetchall()}
    return [s for s in ranked if s.user_id not in left_out][:limit]


def relations_page(
    model: type[Relation], *, user_id: int, limit: int, before_id: int | None = None
) -> tuple[list[Relation], bool]:
    """Up to ``limit`` of the user's blocks (or mutes), newest first, made before the one of
    id ``before_id``, and whether older ones follow (one scan of the user's newest index)."""
    relations = model.objects.filter(user_id=user_id).select_related("target").order_by("-pk")
    if before_id is not None:
        relations = relations.filter(pk__lt=before_id)
    page = list(relations[: limit + 1])
    return page[:limit], len(page) > limit


def feed_shows_sql(user: str, author: str, *, per_row: bool = False) -> str:
    """An SQL condition: posts of ``author`` may be in the home feed of ``user`` (both SQL
    expressions): neither blocks the other, and ``user`` does not mute ``author``.

    Each part is one probe of a pair's unique index (block_unique_pair both ways round,
    mute_unique_pair). With ``per_row``, as reads use it, each stays a probe per row
    whatever the planner estimates (``OFFSET 0`` keeps the subquery from being turned into
    a join): otherwise it may hash every block and mute of the reader to join a hundred
    followees, a cost that grows with their number. Fan-out, backfill and rebuild leave the
    planner free: it hashes the blocks and mutes of a batch's authors, which is cheaper
    per row there."""
    fence = " OFFSET 0" if per_row else ""
    return (
        f"NOT EXISTS (SELECT 1 FROM {Block._meta.db_table} AS hb"
        f" WHERE hb.user_id = {user} AND hb.target_id = {author}{fence})"
        f" AND NOT EXISTS (SELECT 1 FROM {Block._meta.db_table} AS hbb"
        f" WHERE hbb.user_id = {author} AND hbb.target_id = {user}{fence})"
        f" AND NOT EXISTS (SELECT 1 FROM {Mute._meta.db_table} AS hm"
        f" WHERE hm.user_id = {user} AND hm.target_id = {author}{fence})"
    )


def blocked_between(user_id: int, other_id: int) -> bool:
    """Whether either of the two blocks the other."""
    return Block.objects.filter(user_id__in=[user_id, other_id], target_id__in=[user_id, other_id]).exists()


@dataclass(frozen=True)
class Standing:
    """How a signed-in viewer stands with an account whose profile they read."""

    follows: bool
    blocks: bool
    blocked_by: bool
    mutes: bool

    @property
    def separated(self) -> bool:
        """A block stands between the two, one way or the other (``blocked_between``): the
        profile shows neither posts nor a Follow button."""
        return self.blocks or self.blocked_by


def profile_standing(*, viewer_id: int, user_id: int) -> Standing:
    """Whether the viewer follows, blocks or mutes the account, and whether it blocks them:
    four probes of the unique pairs in one round trip."""
    follow, block, mute = (model._meta.db_table for model in (Follow, Block, Mute))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT FROM {follow} WHERE follower_id = %s AND followee_id = %s),"
            f" EXISTS (SELECT FROM {block} WHERE user_id = %s AND target_id = %s),"
            f" EXISTS (SELECT FROM {block} WHERE user_id = %s AND target_id = %s),"
            f" EXISTS (SELECT FROM {mute} WHERE user_id = %s AND target_id = %s)",
            [viewer_id, user_id, viewer_id, user_id, user_id, viewer_id, viewer_id, user_id],
        )
        return Standing(*cursor.fetchone())
