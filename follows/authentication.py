"""Token authentication that answers from Redis, so a cached feed read never touches SQL
(the cache and its consistency rules: ``follows.tokencache``)."""

from django.contrib.auth.models import AbstractBaseUser
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from core.logcontext import log_bind
from follows.activity import reader_seen_after_marker, reader_seen_marked
from follows.tokencache import cached_token_epoch, cached_token_get, cached_token_set


class CachedTokenAuthentication(TokenAuthentication):
    """DRF token auth with the token-to-user lookup cached for AUTH_TOKEN_CACHE_TTL seconds.

    The cache holds only active users, and only while the user's epoch is unchanged (see
    ``follows.tokencache`` and ``follows.receivers``). A user from the cache is a read-only
    ``CachedUser``. The request also records the user as seen (``follows.activity``): the
    cached lookup sets the activity marker in the same round trip.
    """

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, str]:
        cached = cached_token_get(key)
        if cached is not None:
            user, fresh = cached
            log_bind(user_id=user.pk)
            if fresh:
                reader_seen_after_marker(user_id=user.pk)
            return user, key

        user_id = Token.objects.filter(key=key).values_list("user_id", flat=True).first()
        if user_id is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        epoch = cached_token_epoch(user_id)
        # Read after the epoch: a revocation committing from here on deletes that epoch.
        token = Token.objects.select_related("user").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if epoch is not None and user.pk == user_id:
            cached_token_set(key, user=user, epoch=epoch)
        log_bind(user_id=user.pk)
        reader_seen_marked(user_id=user.pk)
        return user, key
