from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from follows.activity import reader_seen_marked
from follows.models import Follow, Reader
from follows.tokencache import cached_tokens_forget

User = get_user_model()


class FollowError(Exception):
    """A follow that the rules forbid."""


class UnknownUser(Exception):
    pass


@transaction.atomic
def user_create(*, username: str, password: str) -> tuple[AbstractBaseUser, Token]:
    """Create an account and its API token; raises IntegrityError if the name is taken.

    The new user is active, and their empty feed complete (``follows.activity``)."""
    user = User.objects.create_user(username=username, password=password)
    token = Token.objects.create(user=user)
    Reader.objects.create(user=user, seen_at=timezone.now(), feed_complete=True)
    return user, token


@transaction.atomic
def user_deactivate(*, user_ids: Iterable[int]) -> int:
    """Deactivate these users and drop their cached token lookups once that commits.

    Use it rather than ``User.objects.filter(...).update(is_active=False)``: a bulk update
    sends no signal, so its users' cached tokens keep working for up to
    AUTH_TOKEN_CACHE_TTL seconds. Returns how many users matched.
    """
    user_ids = list(user_ids)
    deactivated = User.objects.filter(pk__in=user_ids).update(is_active=False)
    transaction.on_commit(lambda: cached_tokens_forget(user_ids=user_ids))
    return deactivated


def user_tokens_revoke(*, user: AbstractBaseUser) -> None:
    """Delete the user's API tokens; the user gets a new one from POST /auth/token."""
    Token.objects.filter(user=user).delete()


def token_get_or_create(*, user: AbstractBaseUser) -> Token:
    """The user's API token, created on first use, for signing in: the user is seen now."""
    token, _ = Token.objects.get_or_create(user=user)
    reader_seen_marked(user_id=user.pk)
    return token


def follow_create(*, follower: AbstractBaseUser, followee_id: int) -> tuple[Follow, bool]:
    """Make ``follower`` follow ``followee_id``; return the follow and whether it is new.

    Raises FollowError for yourself or beyond FOLLOW_LIMIT accounts, UnknownUser for an
    unknown followee.
    """
    if followee_id == follower.pk:
        raise FollowError("You cannot follow yourself.")
    if not User.objects.filter(pk=followee_id).exists():
        raise UnknownUser(followee_id)
    try:
        with transaction.atomic():
            # The follower's row is locked, so that two follows at once cannot both pass
            # the limit: the second counts after the first has committed.
            User.objects.select_for_update().filter(pk=follower.pk).values_list("pk").first()
            existing = Follow.objects.filter(follower_id=follower.pk, followee_id=followee_id).first()
            if existing is not None:
                return existing, False
            if Follow.objects.filter(follower_id=follower.pk).count() >= settings.FOLLOW_LIMIT:
                raise FollowError(f"You cannot follow more than {settings.FOLLOW_LIMIT} accounts.")
            return Follow.objects.create(follower_id=follower.pk, followee_id=followee_id), True
    except IntegrityError:
        # The followee was deleted between the check and the insert.
        raise UnknownUser(followee_id) from None


@transaction.atomic
def follow_delete(*, follower: AbstractBaseUser, followee_id: int) -> None:
    """Stop ``follower`` following ``followee_id``; raises Follow.DoesNotExist if they did not."""
    # Locked, so that of two concurrent unfollows one finds nothing (404), not both 204.
    follow = Follow.objects.select_for_update().get(follower_id=follower.pk, followee_id=followee_id)
    follow.delete()
