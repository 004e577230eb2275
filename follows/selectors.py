import json
import logging

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from core.cache_keys import follow_suggestions_key
from follows.models import Follow

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


def _most_followed() -> list[tuple[int, int]]:
    """(user id, followers) of the most-followed accounts, most first, cached in Redis."""
    key = follow_suggestions_key()
    try:
        client = get_redis_connection("default")
        cached = client.get(key)
        if cached is not None:
            return [tuple(pair) for pair in json.loads(cached)]
    except RedisError:
        client = None
        logger.warning("suggestions cache unavailable; counting followers in the database")
    ranked = list(
        Follow.objects.values("followee_id")
        .annotate(followers=Count("*"))
        .order_by("-followers", "followee_id")
        .values_list("followee_id", "followers")[:MOST_FOLLOWED_COUNT]
    )
    if client is not None:
        try:
            client.set(key, json.dumps(ranked), ex=MOST_FOLLOWED_TTL)
        except RedisError:
            logger.warning("suggestions cache unavailable; not stored")
    return ranked


def follow_suggestions(*, user_id: int, limit: int) -> list[tuple[AbstractBaseUser, int]]:
    """Up to ``limit`` of the most-followed accounts the user does not follow yet, with
    their follower counts, most followed first."""
    ranked = [(pk, followers) for pk, followers in _most_followed() if pk != user_id]
    followed = set(
        Follow.objects.filter(follower_id=user_id, followee_id__in=[pk for pk, _ in ranked]).values_list(
            "followee_id", flat=True
        )
    )
    wanted = [(pk, followers) for pk, followers in ranked if pk not in followed][:limit]
    users = User.objects.in_bulk([pk for pk, _ in wanted])
    return [(users[pk], followers) for pk, followers in wanted if pk in users and users[pk].is_active]
