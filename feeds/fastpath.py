"""The hot path: a cached first feed page, answered in front of Django.

A feed read that the page cache can answer needs only the token's user and the page, so
this WSGI layer fetches both in one Redis round trip and returns the page at once. Django's
request cycle (request objects, signals, middleware, DRF's dispatch) costs several times
what the lookup does, and a cache hit needs none of it.

Anything it is not sure of goes to Django unchanged, where FeedView gives the same answer
the slow way: another path or method, a query string, a token, page or generation
missing from Redis, a reader whose activity marker expired (Django records them as
seen), a stale page, a user reading someone else's feed, a Host not in ALLOWED_HOSTS,
plain HTTP under SECURE_SSL_REDIRECT, or Redis down. The headers are those Django's
security and X-Frame-Options middleware put on the slow path's response, worked out once
by those middleware themselves, plus the X-Request-ID that RequestContextMiddleware gives
every response. A hit writes no log line: metrics count it.

No other middleware runs on a hit, so a test pins settings.MIDDLEWARE to the list this
layer accounts for (feeds/tests/test_fastpath.py): a middleware added there must be
mirrored here, or found harmless to skip, before the list is updated.
"""

import logging
import re
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django_prometheus.middleware import Metrics
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from core import metrics
from core.cache_keys import feed_generation_key, feed_page_key, reader_seen_key
from core.converters import IdConverter
from core.logcontext import REQUEST_ID_HEADER, request_id_of
from feeds.cache import page_body
from follows.tokencache import cached_token_is_users, cached_token_keys

logger = logging.getLogger(__name__)

# The path of the "feed" URL pattern, with the same id rule.
FEED_PATH = re.compile(rf"/feeds/({IdConverter.regex})")
# Its view name in django_prometheus's per-view metrics.
VIEW_NAME = "feed"

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


def _never_called(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only the middleware's process_response is used")


def _headers_of_slow_path(*, secure: bool) -> list[tuple[str, str]]:
    """The headers a feed response gets on its way out through Django's middleware."""
    response = HttpResponse(content_type="application/json", headers={"Allow": "GET, HEAD, OPTIONS"})
    request = SimpleNamespace(is_secure=lambda: secure)
    for middleware in (SecurityMiddleware, XFrameOptionsMiddleware):
        # Only process_response runs; the view they would wrap is never called.
        response = middleware(get_response=_never_called).process_response(request, response)
    return list(response.items())


class CachedFeedPages:
    """WSGI middleware in front of Django that serves cached first feed pages.

    It reads the settings and takes its Redis client when built, like Django's own
    middleware: build a new one to apply changed settings.
    """

    def __init__(self, application: WSGIApp) -> None:
        self.application = application
        self.headers = {secure: _headers_of_slow_path(secure=secure) for secure in (False, True)}
        # Read once: Django's settings object is slow to ask on every request.
        self.proxy_ssl_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
        self.ssl_redirect = settings.SECURE_SSL_REDIRECT
        self.use_x_forwarded_host = settings.USE_X_FORWARDED_HOST
        self.allowed_hosts = settings.ALLOWED_HOSTS
        self.redis = get_redis_connection("default")
        django_metrics = Metrics.get_instance()
        self.responses = django_metrics.responses_by_status_view_method.labels(
            status="200", view=VIEW_NAME, method="GET"
        )
        self.latency = django_metrics.requests_latency_by_view_method.labels(view=VIEW_NAME, method="GET")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        secure = self._is_secure(environ)
        body = self._cached_page(environ, secure=secure)
        if body is None:
            return self.application(environ, start_response)
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID"))
        start_response(
            "200 OK",
            [*self.headers[secure], ("Content-Length", str(len(body))), (REQUEST_ID_HEADER, request_id)],
        )
        metrics.FEED_CACHE_HITS.inc()
        self.responses.inc()
        self.latency.observe(time.perf_counter() - started)
        return [body]

    def _is_secure(self, environ: dict) -> bool:
        """HttpRequest.is_secure() without building a request."""
        if self.proxy_ssl_header:
            header, secure_value = self.proxy_ssl_header
            value = environ.get(header)
            if value is not None:
                return value.split(",", 1)[0].strip() == secure_value
        return environ.get("wsgi.url_scheme") == "https"

    def _allowed_host(self, environ: dict) -> bool:
        if self.use_x_forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
            return False  # Rare enough to leave to Django.
        domain, _ = split_domain_port(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
        return bool(domain) and validate_host(domain, self.allowed_hosts)

    def _cached_page(self, environ: dict, *, secure: bool) -> bytes | None:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return None
        match = FEED_PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None:
            return None
        keyword, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if keyword.lower() != "token" or not token or " " in token:
            return None
        if (self.ssl_redirect and not secure) or not self._allowed_host(environ):
            return None  # Django redirects to HTTPS, or answers 400.
        user_id = int(match[1])
        try:
            owner, epoch, seen, generation, page = self.redis.mget(
                *cached_token_keys(token, user_id=user_id),
                reader_seen_key(user_id),
                feed_generation_key(user_id),
                feed_page_key(user_id),
            )
        except RedisError:
            logger.warning("feed cache unavailable; answering the slow way")
            return None
        # Only a token cached as this user's, active and current, counts (follows.tokencache);
        # a reader not recorded as seen lately is recorded by the slow way (follows.activity).
        if seen is None or not cached_token_is_users(owner, epoch, user_id=user_id):
            return None
        return page_body(page, generation)
