from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from follows.activity import reader_seen_marked
from follows.models import Block, Follow, Mute, Reader, Relation
from follows.selectors import blocked_between
from follows.signals import feeds_hidden
from follows.tokencache import cached_tokens_forget

User = get_user_model()


# A follow's ``pull_below`` that makes reads pull every post of the followee from the posts
# index: above every post id (bigint's largest value).
PULL_EVERYTHING = 2**63 - 1


class FollowError(Exception):
    """A follow that the rules forbid."""


class FollowBlocked(FollowError):
    """A block stands between the two accounts, one way or the other. Its message does not
    say which way."""

    def __init__(self) -> None:
        super().__init__("This account cannot be followed.")


class UnknownUser(Exception):
    pass


class RelationError(Exception):
    """A block or mute that the rules forbid: of yourself, or beyond the limit."""


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


def token_revoke(*, key: str) -> None:
    """Delete this API token; its cached lookup is dropped once that commits
    (``follows.receivers``)."""
    Token.objects.filter(key=key).delete()


def token_get_or_create(*, user: AbstractBaseUser) -> Token:
    """The user's API token, created on first use, for signing in: the user is seen now."""
    token, _ = Token.objects.get_or_create(user=user)
    reader_seen_marked(user_id=user.pk)
    return token


def follow_create(*, follower: AbstractBaseUser, followee_id: int) -> tuple[Follow, bool]:
    """Make ``follower`` follow ``followee_id``; return the follow and whether it is new.

    Raises FollowError for yourself or beyond FOLLOW_LIMIT accounts, FollowBlocked when
    either blocks the other, UnknownUser for an unknown followee.
    """
    if followee_id == follower.pk:
        raise FollowError("You cannot follow yourself.")
    if not User.objects.filter(pk=followee_id).exists():
        raise UnknownUser(followee_id)
    try:
        with transaction.atomic():
            # The follower's row is locked, so that two follows at once cannot both pass
            # the limit: the second counts after the first has committed. FOR NO KEY UPDATE,
            # not FOR UPDATE: a commit checks its foreign keys with FOR KEY SHARE on the rows
            # they name, which FOR UPDATE would make wait (a follow and a block between the
            # same two then deadlocked).
            User.objects.select_for_update(no_key=True).filter(pk=follower.pk).values_list("pk").first()
            existing = Follow.objects.filter(follower_id=follower.pk, followee_id=followee_id).first()
            if existing is not None:
                return existing, False
            # A block takes both users' rows first, so it either sees this follow and ends
            # it, or has committed before this check.
            if blocked_between(follower.pk, followee_id):
                raise FollowBlocked()
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


def _relation_create(
    model: type[Relation], *, user: AbstractBaseUser, target_id: int, limit: int, lock_target: bool
) -> tuple[Relation, bool]:
    noun = model._meta.verbose_name
    if target_id == user.pk:
        raise RelationError(f"You cannot {noun} yourself.")
    if not User.objects.filter(pk=target_id).exists():
        raise UnknownUser(target_id)
    try:
        with transaction.atomic():
            # The user's row is locked, so that two at once cannot both pass the limit; for a
            # block the target's too, in id order, so that a follow between them waits for it
            # (FOR NO KEY UPDATE, as in follow_create).
            locked = sorted({user.pk, target_id}) if lock_target else [user.pk]
            rows = list(
                User.objects.select_for_update(no_key=True)
                .filter(pk__in=locked)
                .order_by("pk")
                .values_list("pk")
            )
            if len(rows) != len(locked):
                raise UnknownUser(target_id)
            existing = model.objects.filter(user_id=user.pk, target_id=target_id).first()
            if existing is not None:
                return existing, False
            if model.objects.filter(user_id=user.pk).count() >= limit:
                raise RelationError(f"You cannot {noun} more than {limit} accounts.")
            relation = model.objects.create(user_id=user.pk, target_id=target_id)
            if model is Block:
                # Each delete announces its follow.deleted event in this transaction.
                Follow.objects.filter(follower_id=user.pk, followee_id=target_id).delete()
                Follow.objects.filter(follower_id=target_id, followee_id=user.pk).delete()
            # Cached pages that may show what is hidden now are dropped once this commits.
            feeds_hidden.send(sender=model, user_ids=[user.pk, target_id] if model is Block else [user.pk])
            return relation, True
    except IntegrityError:
        # The target was deleted between the check and the insert.
        raise UnknownUser(target_id) from None


def block_create(*, user: AbstractBaseUser, target_id: int) -> tuple[Block, bool]:
    """Make ``user`` block ``target_id``; return the block and whether it is new.

    The follows between the two end, both ways, in the same transaction, and cached pages
    of both are dropped when it commits: from then on neither's reads show the other's
    posts. Raises RelationError for yourself or beyond BLOCK_LIMIT, UnknownUser for an
    unknown target.
    """
    return _relation_create(
        Block, user=user, target_id=target_id, limit=settings.BLOCK_LIMIT, lock_target=True
    )


def mute_create(*, user: AbstractBaseUser, target_id: int) -> tuple[Mute, bool]:
    """Make ``user`` mute ``target_id``; return the mute and whether it is new. Any follow
    stays. Raises RelationError for yourself or beyond MUTE_LIMIT, UnknownUser for an
    unknown target."""
    return _relation_create(
        Mute, user=user, target_id=target_id, limit=settings.MUTE_LIMIT, lock_target=False
    )


@transaction.atomic
def block_delete(*, user: AbstractBaseUser, target_id: int) -> None:
    """End ``user``'s block of ``target_id``, and nothing more: the follows it ended stay
    ended. Raises Block.DoesNotExist if there was none."""
    Block.objects.select_for_update().get(user_id=user.pk, target_id=target_id).delete()


@transaction.atomic
def mute_delete(*, user: AbstractBaseUser, target_id: int) -> None:
    """End ``user``'s mute of ``target_id``: every post of theirs is back in the user's feed,
    those written during the mute included. Raises Mute.DoesNotExist if there was none.

    Until the worker has copied them back (the ``mute.deleted`` event), reads pull the
    target's posts from the posts index: the follow's ``pull_below`` is set above every post.
    """
    Mute.objects.select_for_update().get(user_id=user.pk, target_id=target_id).delete()
    Follow.objects.filter(follower_id=user.pk, followee_id=target_id).update(pull_below=PULL_EVERYTHING)
    feeds_hidden.send(sender=Mute, user_ids=[user.pk])
