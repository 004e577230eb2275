"""Token authentication that answers from Redis, so a cached feed read never touches SQL.

A cached lookup is ``<user id>:<epoch>:<flags>:<username>`` under the token's key. Each user
has an epoch: a random value under their own key, created by the first lookup that needs
it and deleted when the user's access changes (a save of the user, a deleted token, a
deactivation through ``user_deactivate``). A cached lookup counts only while its epoch is
still the user's current one, so deleting one key drops every cached token of the user, and
a missing epoch is never current.

The race this closes: a lookup that misses the cache reads the user from PostgreSQL while
a deactivation commits, and writes the cache after the deactivation's on-commit cleanup ran.
A miss therefore reads (or creates) the epoch first, then reads the token and user, then
writes the entry only if the epoch is unchanged (one Lua script). A revocation that commits
after that read deletes the epoch after it was read, so the entry is never written or
never matches; one that commits before it is seen by the read.
"""

import functools
import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django_redis import get_redis_connection
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from core.cache_keys import auth_epoch_key, auth_epoch_key_prefix, auth_token_key
from core.logcontext import log_bind

logger = logging.getLogger(__name__)

# KEYS[1] token entry; ARGV[1] epoch key prefix. The entry if its epoch is current; a stale
# one is deleted. The epoch key is built here from the entry's user id, so this needs a
# single Redis, not a cluster.
_GET_CURRENT = """
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local user_id, epoch = string.match(entry, '^(%d+):(%x+):')
if user_id and redis.call('GET', ARGV[1] .. user_id) == epoch then return entry end
redis.call('DEL', KEYS[1])
return false
"""

# KEYS[1] epoch key; ARGV[1] a fresh epoch, ARGV[2] its lifetime. The current epoch, made
# from ARGV[1] if there is none.
_EPOCH_GET_OR_CREATE = """
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""

# KEYS[1] token entry, KEYS[2] epoch key; ARGV[1] the epoch read before the database,
# ARGV[2] the entry, ARGV[3] its lifetime. Writes only if no revocation deleted the epoch
# since, and keeps the epoch alive at least as long as the entry.
_SET_IF_EPOCH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


@functools.lru_cache(maxsize=8)
def _script(client: Redis, source: str) -> Script:
    """A script bound to a Redis client, built once per client, not per request."""
    return client.register_script(source)


class CachedTokenAuthentication(TokenAuthentication):
    """DRF token auth with the token-to-user lookup cached for AUTH_TOKEN_CACHE_TTL seconds.

    The cache holds only active users, and only while the user's epoch is unchanged (see
    the module docstring and ``follows.receivers``).
    """

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, str]:
        redis = get_redis_connection("default")
        try:
            cached = _script(redis, _GET_CURRENT)(keys=[auth_token_key(key)], args=[auth_epoch_key_prefix()])
        except RedisError:
            logger.warning("token cache unavailable; falling back to the database")
            cached = None
        if cached is not None:
            user = _user_from_cache(cached)
            log_bind(user_id=user.pk)
            return user, key

        user_id = Token.objects.filter(key=key).values_list("user_id", flat=True).first()
        if user_id is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        epoch = _epoch_get_or_create(redis, user_id)
        # Read after the epoch: a revocation committing from here on deletes that epoch.
        token = Token.objects.select_related("user").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if epoch is not None and user.pk == user_id:
            try:
                _script(redis, _SET_IF_EPOCH)(
                    keys=[auth_token_key(key), auth_epoch_key(user.pk)],
                    args=[epoch, _user_to_cache(user, epoch), settings.AUTH_TOKEN_CACHE_TTL],
                )
            except RedisError:
                logger.warning("token cache unavailable; lookup not cached")
        log_bind(user_id=user.pk)
        return user, key


def cached_tokens_forget(*, user_ids: Iterable[int], token_keys: Iterable[str] = ()) -> None:
    """Drop every cached token lookup of these users (and these tokens' entries).

    Call it after the change commits. If Redis is unreachable the cached lookups live on
    for up to AUTH_TOKEN_CACHE_TTL seconds; this logs that and does not raise, so that the
    committed change's caller still gets its answer.
    """
    keys = [auth_epoch_key(user_id) for user_id in user_ids] + [auth_token_key(k) for k in token_keys]
    if not keys:
        return
    try:
        get_redis_connection("default").delete(*keys)
    except RedisError:
        logger.warning(
            "token cache unavailable; revoked tokens may be accepted for up to AUTH_TOKEN_CACHE_TTL seconds"
        )


def _epoch_get_or_create(redis: Redis, user_id: int) -> str | None:
    try:
        epoch = _script(redis, _EPOCH_GET_OR_CREATE)(
            keys=[auth_epoch_key(user_id)], args=[secrets.token_hex(8), settings.AUTH_TOKEN_CACHE_TTL]
        )
    except RedisError:
        logger.warning("token cache unavailable; lookup not cached")
        return None
    return epoch.decode()


def _user_to_cache(user: AbstractBaseUser, epoch: str) -> bytes:
    flags = f"{int(user.is_staff)}{int(user.is_superuser)}"
    return f"{user.pk}:{epoch}:{flags}:{user.get_username()}".encode()


def _read_only(*args: object, **kwargs: object) -> None:
    raise TypeError("A user from the token cache is read-only: load it from the database to change it.")


def _user_from_cache(raw: bytes) -> AbstractBaseUser:
    pk, _epoch, flags, username = raw.decode().split(":", 3)
    user = get_user_model()(
        pk=int(pk),
        username=username,
        is_staff=flags[0] == "1",
        is_superuser=flags[1] == "1",
        is_active=True,
    )
    # Marked as loaded from the database, which it mirrors, so it can be assigned to
    # foreign keys; but it lacks the password and the other fields, and a save would
    # blank them.
    user._state.adding = False
    user._state.db = "default"
    user.save = user.delete = _read_only
    return user
