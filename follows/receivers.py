"""Keep the token cache honest, and announce follow changes as events.

A deleted token or a changed user is looked up afresh. Follow events are stored in the
outbox in the transaction of the change and keyed by the follower, so that a follow and
an unfollow by the same person reach the worker in order.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token

from consumers.events import FOLLOW_CREATED, FOLLOW_DELETED, FollowChanged, event_build
from consumers.outbox import outbox_enqueue
from feedsite.cache_keys import auth_token_key
from follows.models import Follow


def forget_cached_token(sender: type[Token], instance: Token, **kwargs: Any) -> None:
    key = auth_token_key(instance.key)
    transaction.on_commit(lambda: get_redis_connection("default").delete(key))


def forget_cached_tokens_of_user(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, created: bool, **kwargs: Any
) -> None:
    if created or kwargs.get("raw"):
        return
    keys = [auth_token_key(k) for k in Token.objects.filter(user=instance).values_list("key", flat=True)]
    if keys:
        transaction.on_commit(lambda: get_redis_connection("default").delete(*keys))


def announce_follow_created(sender: type[Follow], instance: Follow, created: bool, **kwargs: Any) -> None:
    if created and not kwargs.get("raw"):
        _announce(FOLLOW_CREATED, instance)


def announce_follow_deleted(sender: type[Follow], instance: Follow, **kwargs: Any) -> None:
    _announce(FOLLOW_DELETED, instance)


def _announce(event_type: str, follow: Follow) -> None:
    payload = FollowChanged(follower_id=follow.follower_id, followee_id=follow.followee_id)
    outbox_enqueue(event=event_build(event_type=event_type, payload=payload), key=str(follow.follower_id))
