"""Token authentication that answers from Redis, so a cached feed read never touches SQL."""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from feedsite.cache_keys import auth_token_key
from feedsite.logcontext import log_bind

logger = logging.getLogger(__name__)


class CachedTokenAuthentication(TokenAuthentication):
    """DRF token auth with the token-to-user lookup cached for AUTH_TOKEN_CACHE_TTL seconds.

    The cache holds only active users; deleting a token or saving its user drops the
    entry (see ``follows.receivers``).
    """

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, str]:
        redis = get_redis_connection("default")
        try:
            cached = redis.get(auth_token_key(key))
        except RedisError:
            logger.warning("token cache unavailable; falling back to the database")
            cached = None
        if cached is not None:
            user = _user_from_cache(cached)
            log_bind(user_id=user.pk)
            return user, key

        try:
            token = Token.objects.select_related("user").get(key=key)
        except Token.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        try:
            redis.set(auth_token_key(key), _user_to_cache(user), ex=settings.AUTH_TOKEN_CACHE_TTL)
        except RedisError:
            logger.warning("token cache unavailable; lookup not cached")
        log_bind(user_id=user.pk)
        return user, key


def _user_to_cache(user: AbstractBaseUser) -> bytes:
    flags = f"{int(user.is_staff)}{int(user.is_superuser)}"
    return f"{user.pk}:{flags}:{user.get_username()}".encode()


def _user_from_cache(raw: bytes) -> AbstractBaseUser:
    pk, flags, username = raw.decode().split(":", 2)
    user = get_user_model()(
        pk=int(pk),
        username=username,
        is_staff=flags[0] == "1",
        is_superuser=flags[1] == "1",
        is_active=True,
    )
    # Mark it as loaded from the database, which it mirrors.
    user._state.adding = False
    user._state.db = "default"
    return user
