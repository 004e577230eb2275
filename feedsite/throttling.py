"""Request rate limits shared by every API process, kept in Redis.

Each limit is a generic cell rate algorithm (GCRA) run atomically in Redis: one key per
client and scope holds the time at which the client's allowance is next fully used.
A rate of ``N/period`` allows a burst of N and then one request per ``period/N``. A
refused request consumes nothing, and its Retry-After is exact.
"""

import functools
import logging

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from feedsite.cache_keys import throttle_key

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# KEYS[1]: the client's key. ARGV: period in microseconds, burst size.
# Returns 0 when allowed, else the microseconds until the next request would be.
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
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""


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


class RedisRateThrottle(BaseThrottle):
    """A DRF throttle for one scope of ``API_THROTTLE_RATES``. Subclasses pick the client."""

    scope = ""

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def ident(self, request: Request) -> str:
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        rate = settings.API_THROTTLE_RATES.get(self.scope)
        if not rate:
            return True
        count, period = rate_parse(rate)
        try:
            wait_us = _gcra(get_redis_connection("default"))(
                keys=[throttle_key(self.scope, self.ident(request))], args=[period * 1_000_000, count]
            )
        except RedisError:
            # Rate limits protect the service; an outage of their store must not take it down.
            logger.warning("throttle store unavailable; %s not limited", self.scope)
            return True
        if wait_us:
            self.retry_after = wait_us / 1_000_000
            return False
        return True

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


class SignupThrottle(ClientIPRateThrottle):
    scope = "signup"


class TokenThrottle(ClientIPRateThrottle):
    scope = "token"
