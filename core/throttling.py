"""Request rate limits shared by every API process, kept in Redis.

Each limit is a generic cell rate algorithm (GCRA) run atomically in Redis: one key per
client and scope holds the time at which the client's allowance is next fully used.
A rate of ``N/period`` allows a burst of N and then one request per ``period/N``. A
refused request consumes nothing, and its Retry-After is exact.

While Redis is unreachable, most limits let requests through: they protect the service,
and an outage of their store must not take it down. Limits on password checks (token
requests, admin logins) fail closed instead, with a 503 and Retry-After: unlimited
password guessing is worse than a short outage of logins.
"""

import functools
import hashlib
import logging
import unicodedata
from collections.abc import Mapping

from django.conf import settings
from django.http import HttpRequest
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from core.cache_keys import throttle_key

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Seconds a client is told to wait while the throttle store of a fail-closed limit is down.
STORE_DOWN_RETRY_AFTER = 5

# KEYS[1]: the client's key. ARGV: period in microseconds, burst size, and 1 to take one
# request from the allowance or 0 only to look. Returns 0 when allowed, else the
# microseconds until the next request would be.
GCRA = """
local period = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local interval = period / burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return allow_at - now
end
if ARGV[3] == '0' then return 0 end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""


# KEYS[1]: the client's key. ARGV: period in microseconds, burst size. Gives back one
# request taken by GCRA (never more than a full allowance).
GCRA_REFUND = """
local interval = tonumber(ARGV[1]) / tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat then return 0 end
local new_tat = tat - interval
if new_tat <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
end
return 1
"""


@functools.lru_cache(maxsize=8)
def _gcra_refund(client):
    return client.register_script(GCRA_REFUND)


@functools.lru_cache(maxsize=8)
def _gcra(client):
    """The GCRA script bound to a Redis client, built once per client, not per request."""
    return client.register_script(GCRA)


def rate_parse(rate: str) -> tuple[int, int]:
    """``"60/minute"`` as (60, 60 seconds). Raises ValueError for anything else."""
    count, _, period = rate.partition("/")
    if not count.isdigit() or int(count) < 1 or not period or period[0] not in PERIODS:
        raise ValueError(f"not a rate: {rate!r} (expected e.g. 60/minute)")
    return int(count), PERIODS[period[0]]


class ThrottleStoreUnavailable(APIException):
    """A fail-closed limit could not be checked: refused, and the client told to come back."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Service temporarily unavailable; try again shortly."
    default_code = "unavailable"
    wait = STORE_DOWN_RETRY_AFTER


def rate_wait(scope: str, ident: str, *, take: bool = True) -> float | None:
    """Take one request from the client's allowance in ``scope`` (API_THROTTLE_RATES), or
    with ``take=False`` only look whether one would be allowed.

    Returns None if allowed (or the scope has no rate), else the seconds until the next
    request would be. Raises RedisError when the store is unreachable: the caller decides
    whether that fails open or closed.
    """
    rate = settings.API_THROTTLE_RATES.get(scope)
    if not rate:
        return None
    count, period = rate_parse(rate)
    wait_us = _gcra(get_redis_connection("default"))(
        keys=[throttle_key(scope, ident)], args=[period * 1_000_000, count, int(take)]
    )
    return wait_us / 1_000_000 if wait_us else None


def rate_refund(scope: str, ident: str) -> None:
    """Give back one request taken from the client's allowance in ``scope``. Raises
    RedisError when the store is unreachable."""
    rate = settings.API_THROTTLE_RATES.get(scope)
    if not rate:
        return
    count, period = rate_parse(rate)
    _gcra_refund(get_redis_connection("default"))(
        keys=[throttle_key(scope, ident)], args=[period * 1_000_000, count]
    )


def client_ip(request: HttpRequest) -> str:
    """The client's address as the throttles see it: the socket's, or the one the trusted
    proxies (REST_FRAMEWORK["NUM_PROXIES"]) put in X-Forwarded-For."""
    return BaseThrottle().get_ident(request)


def account_ident(username: str) -> str:
    """The client key of the account a login names: normalised as Django normalises
    usernames, stripped and case-folded so that variants of one name share one allowance,
    and hashed so that any input makes a short key."""
    name = unicodedata.normalize("NFKC", username).strip().casefold()
    return "account:" + hashlib.sha256(name.encode()).hexdigest()[:32]


class RedisRateThrottle(BaseThrottle):
    """A DRF throttle for one scope of ``API_THROTTLE_RATES``. Subclasses pick the client."""

    scope = ""
    # True: refuse (503) while Redis is unreachable, instead of letting requests through.
    fail_closed = False

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def ident(self, request: Request) -> str | None:
        """The client's key in this scope; None leaves the request out of this limit."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        if not settings.API_THROTTLE_RATES.get(self.scope):
            return True
        ident = self.ident(request)
        if ident is None:
            return True
        try:
            self.retry_after = rate_wait(self.scope, ident)
        except RedisError:
            if self.fail_closed:
                logger.error("throttle store unavailable; %s refused", self.scope)
                raise ThrottleStoreUnavailable() from None
            # Rate limits protect the service; an outage of their store must not take it down.
            logger.warning("throttle store unavailable; %s not limited", self.scope)
            return True
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after


class UserRateThrottle(RedisRateThrottle):
    """Limits each authenticated user."""

    def ident(self, request: Request) -> str:
        return f"user:{request.user.pk}"


class ClientIPRateThrottle(RedisRateThrottle):
    """Limits each client address (see REST_FRAMEWORK["NUM_PROXIES"])."""

    def ident(self, request: Request) -> str:
        return f"ip:{self.get_ident(request)}"


class PostCreateThrottle(UserRateThrottle):
    scope = "posts"


class FollowCreateThrottle(UserRateThrottle):
    """Each follow copies up to FEED_BACKFILL_LIMIT posts into the follower's feed."""

    scope = "follow"


class BlockCreateThrottle(UserRateThrottle):
    """Each block ends the follows both ways and rewrites both feeds."""

    scope = "block"


class MuteCreateThrottle(UserRateThrottle):
    """Each mute removes the muted account's posts from a feed."""

    scope = "mute"


class FeedReadThrottle(UserRateThrottle):
    """Feed reads that reach Django: the fast path answers cached first pages before
    this runs, so a cache hit never pays for the limit."""

    scope = "feeds"


class SignupThrottle(ClientIPRateThrottle):
    scope = "signup"


class TokenThrottle(ClientIPRateThrottle):
    scope = "token"
    fail_closed = True


class AccountLoginLimit:
    """Failed password checks against one account, from any address (``account_login``):
    shared by the token endpoint and the admin login, so neither adds to the other's guesses.

    ``check`` takes one from the allowance before the password is checked, atomically, so
    checks in flight at once cannot all pass; ``succeeded`` gives it back after a right
    password. So only failed checks use the allowance up, and the account's owner, who
    knows the password, is not refused for logging in often; guesses are. Fails closed:
    raises ThrottleStoreUnavailable while Redis is unreachable.
    """

    scope = "account_login"

    def __init__(self, username: object) -> None:
        # Without a username there is no password check to limit: the request is a 400.
        self.ident = account_ident(username) if isinstance(username, str) and username.strip() else None

    @classmethod
    def of(cls, data: object) -> "AccountLoginLimit":
        """The limit of the account a login form or JSON body names."""
        return cls(data.get("username") if isinstance(data, Mapping) else None)

    def check(self) -> float | None:
        """None if a password check may go ahead (one is taken), else the seconds to wait."""
        if self.ident is None:
            return None
        try:
            return rate_wait(self.scope, self.ident)
        except RedisError:
            logger.error("throttle store unavailable; %s refused", self.scope)
            raise ThrottleStoreUnavailable() from None

    def succeeded(self) -> None:
        """Give back what ``check`` took: the password was right."""
        if self.ident is None:
            return
        try:
            rate_refund(self.scope, self.ident)
        except RedisError:
            logger.warning("throttle store unavailable; a right password still counts against %s", self.scope)
