"""The cached-page fast path answers exactly what FeedView would, or steps aside."""

import json
import re
from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection
from django.test import RequestFactory
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from rest_framework.authtoken.models import Token

from core.cache_keys import feed_generation_key
from feeds import cache
from feeds.fastpath import CachedFeedPages
from feeds.models import FeedEntry
from posts.models import Post
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    fast: bool

    def json(self):
        return json.loads(self.body)


class Server:
    """The WSGI stack gunicorn serves, built from the current settings, recording whether
    Django was reached."""

    def __init__(self) -> None:
        self.django_calls = 0
        django = WSGIHandler()

        def counted(environ, start_response):
            self.django_calls += 1
            # As Django's test client does: the test's transaction must outlive the request.
            request_started.disconnect(close_old_connections)
            request_finished.disconnect(close_old_connections)
            try:
                return django(environ, start_response)
            finally:
                request_started.connect(close_old_connections)
                request_finished.connect(close_old_connections)

        self.app = CachedFeedPages(counted)

    def get(
        self, path: str, *, token: str | None = None, authorization: str | None = None, **extra
    ) -> Answer:
        if token is not None:
            authorization = f"Token {token}"
        if authorization is not None:
            extra["HTTP_AUTHORIZATION"] = authorization
        # Both paths echo the client's request id; the same one keeps their answers comparable.
        extra.setdefault("HTTP_X_REQUEST_ID", "test-request-1")
        environ = RequestFactory().get(path, **extra).environ
        calls, started = self.django_calls, []
        chunks = self.app(environ, lambda status, headers: started.append((status, headers)))
        body = b"".join(chunks)
        request_finished.disconnect(close_old_connections)
        try:
            getattr(chunks, "close", lambda: None)()  # sends request_finished
        finally:
            request_finished.connect(close_old_connections)
        status, headers = started[0]
        return Answer(int(status.split()[0]), dict(headers), body, fast=self.django_calls == calls)


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def token_of():
    return lambda user: Token.objects.get_or_create(user=user)[0].key


@pytest.fixture
def ada(make_user):
    ada = make_user()
    post = Post.objects.create(author=ada, content="cached")
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)
    return ada


def test_a_cached_page_is_served_in_front_of_django_with_the_same_answer(ada, token_of, server):
    slow = server.get(f"/feeds/{ada.pk}", token=token_of(ada))  # a miss: renders and caches
    hits = REGISTRY.get_sample_value("feed_cache_hits_total") or 0.0
    served = REGISTRY.get_sample_value(
        "django_http_responses_total_by_status_view_method_total",
        {"status": "200", "view": "feed", "method": "GET"},
    )

    hit = server.get(f"/feeds/{ada.pk}", token=token_of(ada))

    assert not slow.fast
    assert hit.fast
    assert (hit.status, hit.body, hit.headers) == (slow.status, slow.body, slow.headers)
    assert [p["content"] for p in hit.json()["results"]] == ["cached"]
    assert REGISTRY.get_sample_value("feed_cache_hits_total") == hits + 1
    assert (
        REGISTRY.get_sample_value(
            "django_http_responses_total_by_status_view_method_total",
            {"status": "200", "view": "feed", "method": "GET"},
        )
        == served + 1
    )


@pytest.mark.parametrize("sent", ["", "not a valid id!", "x" * 129])
def test_both_paths_make_a_request_id_unless_the_client_sent_a_valid_one(ada, token_of, server, sent):
    slow = server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_X_REQUEST_ID=sent)
    hit = server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_X_REQUEST_ID=sent)

    assert (slow.fast, hit.fast) == (False, True)
    ids = {slow.headers["X-Request-ID"], hit.headers["X-Request-ID"]}
    assert len(ids) == 2, "each request gets its own id"
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids


def test_over_https_both_paths_send_hsts(ada, token_of, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    server = Server()
    slow = server.get(f"/feeds/{ada.pk}", token=token_of(ada), secure=True)

    hit = server.get(f"/feeds/{ada.pk}", token=token_of(ada), secure=True)

    assert hit.fast
    assert hit.headers == slow.headers
    assert hit.headers["Strict-Transport-Security"].startswith("max-age=3600")


def test_plain_http_is_redirected_by_django_under_ssl_redirect(ada, token_of, settings):
    Server().get(f"/feeds/{ada.pk}", token=token_of(ada))  # cached
    settings.SECURE_SSL_REDIRECT = True

    answer = Server().get(f"/feeds/{ada.pk}", token=token_of(ada))

    assert not answer.fast
    assert answer.status == 301
    assert answer.headers["Location"].startswith("https://")


def test_behind_a_trusted_proxy_https_is_read_from_its_header(ada, token_of, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    server = Server()
    server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_X_FORWARDED_PROTO="https")

    assert server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_X_FORWARDED_PROTO="https").fast
    assert server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_X_FORWARDED_PROTO="http").status == 301


def test_reading_someone_elses_cached_feed_is_still_forbidden(ada, make_user, token_of, server):
    server.get(f"/feeds/{ada.pk}", token=token_of(ada))
    bob = make_user()
    server.get(f"/feeds/{bob.pk}", token=token_of(bob))  # bob's token is cached too

    answer = server.get(f"/feeds/{ada.pk}", token=token_of(bob))

    assert answer.status == 403
    assert not answer.fast


def test_staff_reading_another_feed_take_the_slow_path(ada, make_user, token_of, server):
    server.get(f"/feeds/{ada.pk}", token=token_of(ada))
    admin = make_user(is_staff=True)

    answer = server.get(f"/feeds/{ada.pk}", token=token_of(admin))

    assert answer.status == 200
    assert not answer.fast
    assert [p["content"] for p in answer.json()["results"]] == ["cached"]


@pytest.mark.parametrize(
    "authorization", ["Token nonsense", "Token", "Bearer {key}", "Token {key} extra", ""]
)
def test_bad_credentials_get_what_the_api_gives_them(ada, token_of, server, authorization):
    server.get(f"/feeds/{ada.pk}", token=token_of(ada))

    answer = server.get(f"/feeds/{ada.pk}", authorization=authorization.format(key=token_of(ada)))

    assert answer.status == 401
    assert not answer.fast


def test_a_deactivated_users_token_is_refused_at_once(
    ada, token_of, server, django_capture_on_commit_callbacks
):
    server.get(f"/feeds/{ada.pk}", token=token_of(ada))
    with django_capture_on_commit_callbacks(execute=True):
        ada.is_active = False
        ada.save()

    assert server.get(f"/feeds/{ada.pk}", token=token_of(ada)).status == 401


@pytest.mark.parametrize("after_read", [1, 2])
def test_a_deactivation_during_the_lookup_that_cached_the_token_is_not_served_over(
    ada, token_of, server, django_capture_on_commit_callbacks, after_read
):
    token, reads = token_of(ada), []

    def deactivate_after_a_token_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "authtoken_token" in sql and len(reads) < after_read:
            reads.append(sql)
            if len(reads) == after_read:
                # Commits, with its on-commit effects, before the lookup writes the cache.
                with django_capture_on_commit_callbacks(execute=True):
                    ada.is_active = False
                    ada.save()
        return result

    with connection.execute_wrapper(deactivate_after_a_token_read):
        server.get(f"/feeds/{ada.pk}", token=token)  # renders the page, caches the lookup
    assert len(reads) == after_read

    answer = server.get(f"/feeds/{ada.pk}", token=token)

    assert answer.status == 401
    assert not answer.fast


def test_queries_other_methods_and_stale_pages_go_to_django(ada, token_of, server):
    token = token_of(ada)
    server.get(f"/feeds/{ada.pk}", token=token)

    with_query = server.get(f"/feeds/{ada.pk}?limit=20", token=token)
    newer = Post.objects.create(author=ada, content="newer")
    FeedEntry.objects.create(user_id=ada.pk, post_id=newer.pk)
    cache.pages_invalidate([ada.pk])
    after_change = server.get(f"/feeds/{ada.pk}", token=token)

    assert with_query.status == 200
    assert not with_query.fast
    assert not after_change.fast
    assert [p["content"] for p in after_change.json()["results"]] == ["newer", "cached"]
    assert server.get(f"/feeds/{ada.pk}", token=token).fast
    assert not server.get(f"/feeds/{ada.pk}/", token=token).fast


def test_a_lost_generation_bumped_again_does_not_make_an_old_page_current(ada, token_of, server):
    token = token_of(ada)
    cache.pages_invalidate([ada.pk])
    server.get(f"/feeds/{ada.pk}", token=token)
    assert server.get(f"/feeds/{ada.pk}", token=token).fast  # cached
    newer = Post.objects.create(author=ada, content="newer")
    FeedEntry.objects.create(user_id=ada.pk, post_id=newer.pk)

    get_redis_connection("default").delete(feed_generation_key(ada.pk))  # evicted
    cache.pages_invalidate([ada.pk])
    answer = server.get(f"/feeds/{ada.pk}", token=token)

    assert not answer.fast
    assert [p["content"] for p in answer.json()["results"]] == ["newer", "cached"]
    assert server.get(f"/feeds/{ada.pk}", token=token).fast


def test_a_page_without_a_generation_goes_to_django(ada, token_of, server):
    token = token_of(ada)
    server.get(f"/feeds/{ada.pk}", token=token)
    newer = Post.objects.create(author=ada, content="newer")
    FeedEntry.objects.create(user_id=ada.pk, post_id=newer.pk)
    cache.pages_invalidate([ada.pk])

    get_redis_connection("default").delete(feed_generation_key(ada.pk))  # evicted
    answer = server.get(f"/feeds/{ada.pk}", token=token)

    assert not answer.fast
    assert [p["content"] for p in answer.json()["results"]] == ["newer", "cached"]


def test_a_disallowed_host_is_400(ada, token_of, server):
    server.get(f"/feeds/{ada.pk}", token=token_of(ada))

    answer = server.get(f"/feeds/{ada.pk}", token=token_of(ada), HTTP_HOST="evil.example")

    assert answer.status == 400
    assert not answer.fast


def test_with_redis_down_the_feed_is_read_from_postgresql(ada, token_of, settings):
    Server().get(f"/feeds/{ada.pk}", token=token_of(ada))
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1},
        }
    }

    answer = Server().get(f"/feeds/{ada.pk}", token=token_of(ada))

    assert answer.status == 200
    assert not answer.fast
    assert [p["content"] for p in answer.json()["results"]] == ["cached"]


def test_cached_pages_do_not_count_against_the_feed_read_limit(ada, token_of, server, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "feeds": "2/minute"}
    token = token_of(ada)

    miss = server.get(f"/feeds/{ada.pk}", token=token)  # through Django: counts
    hits = [server.get(f"/feeds/{ada.pk}", token=token) for _ in range(5)]
    paged = server.get(f"/feeds/{ada.pk}?limit=1", token=token)  # through Django: counts
    refused = server.get(f"/feeds/{ada.pk}?limit=1", token=token)

    assert (miss.status, miss.fast) == (200, False)
    assert [(h.status, h.fast) for h in hits] == [(200, True)] * 5
    assert paged.status == 200
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1


# feeds/fastpath.py answers cache hits in front of Django, so on a hit none of these run: it
# gives the response what they would (SecurityMiddleware's and XFrameOptionsMiddleware's
# headers, RequestContextMiddleware's X-Request-ID, the Prometheus counts of the first and
# last), and what the others do does not concern a token-authenticated GET of a feed. A
# middleware added here would be skipped by every hit without a word: mirror it in
# feeds/fastpath.py, or check that hits may skip it, and only then update this list.
MIDDLEWARE_THE_FAST_PATH_ACCOUNTS_FOR = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.logcontext.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.middleware.BrowserCsrfViewMiddleware",
    "core.middleware.BrowserAuthenticationMiddleware",
    "core.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]


def test_every_middleware_is_accounted_for_by_the_fast_path():
    assert list(django_settings.MIDDLEWARE) == MIDDLEWARE_THE_FAST_PATH_ACCOUNTS_FOR, (
        "settings.MIDDLEWARE changed: cache hits answered by feeds/fastpath.py skip every "
        "middleware; mirror the change there or check hits may skip it, then update this list"
    )
