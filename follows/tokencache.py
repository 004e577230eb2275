"""The token cache: which user an API token belongs to, kept in Redis so that a cached feed
read never touches SQL (but once an hour per user, to record them as seen:
follows.activity). Its key, its value's layout, reading, writing and forgetting it all
live here; the token authentication, the fast path in front of Django and the code that
changes a user's access go through these functions.

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
from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django_redis import get_redis_connection
from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from core.cache_keys import auth_epoch_key, auth_epoch_key_prefix, auth_token_key, reader_seen_key_prefix

logger = logging.getLogger(__name__)

# KEYS[1] token entry; ARGV[1] epoch key prefix, ARGV[2] activity marker key prefix, ARGV[3]
# the marker's lifetime. The entry if its epoch is current, and 1 if the user's activity
# marker was missing (it is set now: follows.activity), else 0; a stale entry is deleted.
# The other keys are built here from the entry's user id, so this needs a single Redis,
# not a cluster.
_GET_CURRENT = """
local entry = redis.call('GET', KEYS[1])
if not entry then return false end
local user_id, epoch = string.match(entry, '^(%d+):(%x+):')
if user_id and redis.call('GET', ARGV[1] .. user_id) == epoch then
  -- pcall: a read-only replica or OOM refuses the marker, not the lookup.
  local fresh = redis.pcall('SET', ARGV[2] .. user_id, '1', 'NX', 'EX', ARGV[3])
  if type(fresh) == 'table' and fresh.err then fresh = false end
  return {entry, fresh and 1 or 0}
end
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


class CachedUser(get_user_model()):
    """A user as the token cache knows them: id, username, staff and superuser flags, and
    active (only active users are cached); any other field is loaded from the database when
    read. It can be assigned to foreign keys like the user it mirrors, but not saved or
    deleted: load the user from the database to change them."""

    class Meta:
        proxy = True
        app_label = "follows"
        default_permissions = ()

    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("A user from the token cache is read-only: load it from the database to change it.")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("A user from the token cache is read-only: load it from the database to change it.")


@functools.lru_cache(maxsize=8)
def _script(client: Redis, source: str) -> Script:
    """A script bound to a Redis client, built once per client, not per request."""
    return client.register_script(source)


def cached_token_get(key: str) -> tuple[CachedUser, bool] | None:
    """The user of this token if the cache holds a current lookup of it, and whether the
    user's activity marker was missing (the caller records them as seen); None on a miss
    or with Redis unreachable."""
    redis = get_redis_connection("default")
    try:
        found = _script(redis, _GET_CURRENT)(
            keys=[auth_token_key(key)],
            args=[
                auth_epoch_key_prefix(),
                reader_seen_key_prefix(),
                settings.FEED_ACTIVITY_RESOLUTION_SECONDS,
            ],
        )
    except RedisError:
        logger.warning("token cache unavailable; falling back to the database")
        return None
    if found is None:
        return None
    entry, fresh = found
    return _user_of(entry), bool(fresh)


def cached_token_epoch(user_id: int) -> str | None:
    """The user's current epoch, created if there is none; None with Redis unreachable.

    Read it before reading the token and user from the database, and give it to
    cached_token_set.
    """
    try:
        epoch = _script(get_redis_connection("default"), _EPOCH_GET_OR_CREATE)(
            keys=[auth_epoch_key(user_id)], args=[secrets.token_hex(8), settings.AUTH_TOKEN_CACHE_TTL]
        )
    except RedisError:
        logger.warning("token cache unavailable; lookup not cached")
        return None
    return epoch.decode()


def cached_token_set(key: str, *, user: AbstractBaseUser, epoch: str) -> None:
    """Cache that this token is this active user's, for AUTH_TOKEN_CACHE_TTL seconds, unless
    the user's epoch is no longer ``epoch`` (their access changed since it was read)."""
    try:
        _script(get_redis_connection("default"), _SET_IF_EPOCH)(
            keys=[auth_token_key(key), auth_epoch_key(user.pk)],
            args=[epoch, _entry_of(user, epoch), settings.AUTH_TOKEN_CACHE_TTL],
        )
    except RedisError:
        logger.warning("token cache unavailable; lookup not cached")


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


def cached_token_keys(key: str, *, user_id: int) -> list[str]:
    """The keys to fetch (in one MGET with others) to check without a script that this
    token is cached as this user's: give their values to cached_token_is_users."""
    return [auth_token_key(key), auth_epoch_key(user_id)]


def cached_token_is_users(entry: bytes | None, epoch: bytes | None, *, user_id: int) -> bool:
    """Whether a token's cached lookup and a user's epoch, as fetched under
    cached_token_keys, say the token is that active user's now."""
    if entry is None or epoch is None:
        return False
    entry_user_id, _, rest = entry.partition(b":")
    return entry_user_id == str(user_id).encode() and rest.partition(b":")[0] == epoch


def _entry_of(user: AbstractBaseUser, epoch: str) -> bytes:
    flags = f"{int(user.is_staff)}{int(user.is_superuser)}"
    return f"{user.pk}:{epoch}:{flags}:{user.get_username()}".encode()


def _user_of(entry: bytes) -> CachedUser:
    pk, _epoch, flags, username = entry.decode().split(":", 3)
    known = {
        CachedUser._meta.pk.attname: int(pk),
        CachedUser.USERNAME_FIELD: username,
        "is_staff": flags[0] == "1",
        "is_superuser": flags[1] == "1",
        "is_active": True,
    }
    # As loaded from the database, which it mirrors (so foreign keys accept it), with the
    # fields the entry lacks deferred.
    fields = [f.attname for f in CachedUser._meta.concrete_fields if f.attname in known]
    return CachedUser.from_db("default", fields, [known[name] for name in fields])
