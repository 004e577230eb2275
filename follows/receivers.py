"""Keep the token cache honest, and announce follow changes as events.

A deleted token or a changed user is looked up afresh; a changed password revokes the
user's tokens. Follow, block and mute events are stored in the outbox in the transaction
of the change and keyed by the follower (the blocker, the muter), so that the changes one
person makes reach the worker in order.
"""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token

from eventbus.events import (
    BLOCK_CREATED,
    BLOCK_DELETED,
    FOLLOW_CREATED,
    FOLLOW_DELETED,
    MUTE_CREATED,
    MUTE_DELETED,
    FollowChanged,
    RelationChanged,
    event_build,
)
from eventbus.outbox import outbox_enqueue
from follows.models import Block, Follow, Relation
from follows.services import user_tokens_revoke
from follows.tokencache import cached_tokens_forget


def forget_cached_token(sender: type[Token], instance: Token, **kwargs: Any) -> None:
    user_id, key = instance.user_id, instance.key
    transaction.on_commit(lambda: cached_tokens_forget(user_ids=[user_id], token_keys=[key]))


def forget_cached_tokens_of_user(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, created: bool, **kwargs: Any
) -> None:
    if created or kwargs.get("raw"):
        return
    user_id = instance.pk
    transaction.on_commit(lambda: cached_tokens_forget(user_ids=[user_id]))


def revoke_tokens_on_password_change(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, created: bool, **kwargs: Any
) -> None:
    # set_password() leaves the new raw password in _password until the save is done, the
    # same mark Django's password_changed() hooks go by; a hash upgrade on login does not.
    if not created and not kwargs.get("raw") and getattr(instance, "_password", None) is not None:
        user_tokens_revoke(user=instance)


def announce_follow_created(sender: type[Follow], instance: Follow, created: bool, **kwargs: Any) -> None:
    if created and not kwargs.get("raw"):
        _announce(FOLLOW_CREATED, instance)


def announce_follow_deleted(sender: type[Follow], instance: Follow, **kwargs: Any) -> None:
    _announce(FOLLOW_DELETED, instance)


def _announce(event_type: str, follow: Follow) -> None:
    payload = FollowChanged(follower_id=follow.follower_id, followee_id=follow.followee_id)
    outbox_enqueue(event=event_build(event_type=event_type, payload=payload), key=str(follow.follower_id))


def announce_relation_created(
    sender: type[Relation], instance: Relation, created: bool, **kwargs: Any
) -> None:
    if created and not kwargs.get("raw"):
        _announce_relation(BLOCK_CREATED if sender is Block else MUTE_CREATED, instance)


def announce_relation_deleted(sender: type[Relation], instance: Relation, **kwargs: Any) -> None:
    _announce_relation(BLOCK_DELETED if sender is Block else MUTE_DELETED, instance)


def _announce_relation(event_type: str, relation: Relation) -> None:
    payload = RelationChanged(user_id=relation.user_id, target_id=relation.target_id)
    outbox_enqueue(event=event_build(event_type=event_type, payload=payload), key=str(relation.user_id))
