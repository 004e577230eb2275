"""The admin's login page, behind the same rate limits as the token endpoint.

Each login attempt is a password hash: without a limit, a brute force and a way to burn
CPU. A POST is counted per client address (``admin_login``) and per username tried
(``account_login``, shared with POST /auth/token) before Django sees it; a refused one
gets 429 with Retry-After and no password check. While Redis is down, logins are refused
with 503 rather than let through unlimited.
"""

import logging
import math

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from redis.exceptions import RedisError

from core.throttling import (
    STORE_DOWN_RETRY_AFTER,
    AccountLoginLimit,
    ThrottleStoreUnavailable,
    client_ip,
    rate_wait,
)

logger = logging.getLogger(__name__)


def _refused(status: int, seconds: float, message: str) -> HttpResponse:
    return HttpResponse(
        message, status=status, content_type="text/plain", headers={"Retry-After": str(math.ceil(seconds))}
    )


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """``admin.site.login``, refusing password checks beyond the rate limits."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    account = AccountLoginLimit.of(request.POST)
    try:
        # One scope after the other: an attempt refused per address uses up nothing of
        # the account's allowance, which a right password gives back.
        wait = rate_wait("admin_login", f"ip:{client_ip(request)}")
        if wait is None:
            wait = account.check()
    except (RedisError, ThrottleStoreUnavailable):
        logger.error("throttle store unavailable; admin login refused")
        return _refused(503, STORE_DOWN_RETRY_AFTER, "Login is unavailable for a moment; try again shortly.")
    if wait is not None:
        return _refused(429, wait, f"Too many login attempts; try again in {math.ceil(wait)} seconds.")
    response = admin.site.login(request, extra_context)
    if response.status_code == 302:
        # Logged in. Anything else is the form again: a wrong password, or an account that
        # may not use the admin, also when posted from a session already logged in.
        account.succeeded()
    return response
