"""Who may do what, production settings, rate limits and input limits."""

import os
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import URLPattern, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.throttling import AccountLoginLimit
from follows.models import Follow
from posts.models import Post
from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.django_db

PUBLIC = {
    "user-create",
    "token-obtain",
    "metrics",
    "healthz",
    "readyz",
    "schema",
    "swagger-ui",
    "admin-login",
}
# Admin pages outside admin.site.urls: a staff login, not a token.
ADMIN_PAGES = {"admin-inspect"}


def api_routes() -> list[URLPattern]:
    return [p for p in get_resolver().url_patterns if isinstance(p, URLPattern)]


def test_every_endpoint_but_the_public_ones_requires_a_token():
    client = APIClient()
    checked = 0
    for pattern in api_routes():
        path = "/" + str(pattern.pattern).replace("<id:post_id>", "1").replace("<id:user_id>", "1")
        path = path.replace("<id:followee_id>", "1")
        for method in ("get", "post", "delete"):
            response = getattr(client, method)(path)
            if pattern.name in PUBLIC or response.status_code == 405:
                continue
            if pattern.name in ADMIN_PAGES:
                assert response.status_code == 302, (method, path, response.status_code)
                assert response["Location"].startswith("/admin/login/")
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.json() == {"detail": "Authentication credentials were not provided."}
            checked += 1
    assert checked >= 7


def test_public_endpoints_answer_without_a_token():
    client = APIClient()
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/schema").status_code == 200
    assert client.get("/api/docs").status_code == 200


def test_swagger_ui_assets_are_served_locally():
    page = APIClient().get("/api/docs").content.decode()
    assert "cdn.jsdelivr.net" not in page
    assert "unpkg.com" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert (
        APIClient().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code
        == 200
    )


def test_the_admin_is_for_staff_only(make_user):
    client = APIClient()
    assert client.get("/admin/").status_code == 302
    client.force_login(make_user())
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    client.force_login(make_user(is_staff=True))
    assert client.get("/admin/").status_code == 200


def test_only_the_author_deletes_a_post(make_user, client_for):
    author, other = make_user(), make_user()
    post = Post.objects.create(author=author, content="mine")

    assert client_for(other).delete(f"/posts/{post.pk}").status_code == 403
    assert client_for(make_user(is_staff=True)).delete(f"/posts/{post.pk}").status_code == 403
    assert Post.objects.filter(pk=post.pk).exists()
    assert client_for(author).delete(f"/posts/{post.pk}").status_code == 204
    assert client_for(author).delete(f"/posts/{post.pk}").status_code == 404


def rates(settings, **scopes: str) -> None:
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, **scopes}


def test_posting_is_limited_per_user_with_429_and_retry_after(make_user, client_for, settings):
    rates(settings, posts="3/minute")
    busy, other = client_for(make_user()), client_for(make_user())

    statuses = [busy.post("/posts", {"content": "x"}, format="json").status_code for _ in range(4)]
    refused = busy.post("/posts", {"content": "x"}, format="json")

    assert statuses == [201, 201, 201, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"].lower()
    assert other.post("/posts", {"content": "x"}, format="json").status_code == 201
    assert Post.objects.count() == 4


@pytest.mark.parametrize(
    ("path", "scope", "body"),
    [
        ("/users", "signup", {"username": "", "password": ""}),
        ("/auth/token", "token", {"username": "nobody", "password": "wrong"}),
    ],
)
def test_signup_and_token_are_limited_per_client_ip(path, scope, body, settings):
    rates(settings, **{scope: "2/hour"})
    client = APIClient(REMOTE_ADDR="203.0.113.7")

    statuses = [client.post(path, body, format="json").status_code for _ in range(3)]
    # A forged X-Forwarded-For does not make a new client: no proxy is trusted by default.
    forged = client.post(path, body, format="json", HTTP_X_FORWARDED_FOR="198.51.100.1")
    elsewhere = APIClient(REMOTE_ADDR="203.0.113.8").post(path, body, format="json")

    assert statuses == [400, 400, 429]
    assert forged.status_code == 429
    assert 1 <= int(forged["Retry-After"]) <= 3600
    assert elsewhere.status_code == 400


def test_an_empty_rate_disables_a_limit(make_user, client_for, settings):
    rates(settings, posts="")
    client = client_for(make_user())
    assert {client.post("/posts", {"content": "x"}, format="json").status_code for _ in range(30)} == {201}


def test_rate_limits_let_requests_through_while_redis_is_down(make_user, client_for, settings):
    user = make_user()
    client = client_for(user)
    rates(settings, posts="1/minute")
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }

    statuses = [client.post("/posts", {"content": "x"}, format="json").status_code for _ in range(3)]

    assert statuses == [201, 201, 201]


def test_a_body_over_the_upload_limit_is_413(make_user, client_for, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    client = client_for(make_user())

    response = client.post("/posts", '{"content": "' + "x" * 2000 + '"}', content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {"detail": "Request body exceeds 1000 bytes."}
    assert Post.objects.count() == 0
    assert client.post("/posts", {"content": "small"}, format="json").status_code == 201


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/posts", '{"content": ', "detail"),
        ("/posts", "[1, 2]", "non_field_errors"),
        ("/posts", '{"content": ""}', "content"),
        ("/posts", '{"content": 5}', "content"),
        ("/follow", '{"followee_id": "abc"}', "followee_id"),
        ("/follow", '{"followee_id": 99999999999999999999}', "followee_id"),
        ("/follow", '{"followee_id": 0}', "followee_id"),
    ],
)
def test_bad_input_is_400_with_a_field_message(make_user, client_for, path, body, field):
    response = client_for(make_user()).post(path, body, content_type="application/json")

    assert response.status_code == 400, response.content
    if field:
        assert field in response.json()


NESTED_BODIES = {
    # About 40 KB, under the body limit, far past what the JSON decoder can recurse into.
    "arrays": "[" * 20_000 + "]" * 20_000,
    "objects": '{"a":' * 8_000 + "1" + "}" * 8_000,
    # Shallow enough to decode, deeper than any request of this API.
    "moderate": '{"content": ' + "[" * 200 + "]" * 200 + "}",
}


@pytest.mark.parametrize("path", ["/posts", "/follow", "/users"])
@pytest.mark.parametrize("nesting", NESTED_BODIES)
def test_deeply_nested_json_is_400_without_a_traceback(make_user, client_for, caplog, path, nesting):
    client = APIClient() if path == "/users" else client_for(make_user())

    response = client.post(path, NESTED_BODIES[nesting], content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json() == {"detail": "JSON parse error - nested deeper than 32 levels."}
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert Post.objects.count() == 0


@pytest.mark.parametrize("path", ["/nothing-here", "/posts/0", "/feeds/-1", "/follow/999999999999999999999"])
def test_unknown_urls_are_json_404s(make_user, client_for, path):
    response = client_for(make_user()).get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def production_env(**extra: str) -> dict[str, str]:
    """A deployment's environment: no DJANGO_ or THROTTLE_ variables but ``extra``, and no
    local settings file (a developer's .env must not answer for production)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "THROTTLE_"))}
    return {**env, "DJANGO_SETTINGS_MODULE": "feedsite.settings.base", "DJANGO_ENV_FILE": "", **extra}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_is_clean_under_production_settings():
    env = production_env(
        DJANGO_SECRET_KEY="k7#Qw9!zR2@xV5$mN8^bT4&cY1*pL6(jH3)sD0_fG-aU+eI=oW",
        DJANGO_ALLOWED_HOSTS="feeds.example.com",
    )

    result = manage("check", "--deploy", "--fail-level", "DEBUG", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = manage("check", env=production_env())

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_a_malformed_rate_limit_stops_startup():
    env = production_env(DJANGO_SECRET_KEY="x" * 50, THROTTLE_POSTS_RATE="lots")

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "Rate for 'posts' must look like 60/minute, not 'lots'" in result.stderr


def redis_unreachable(settings) -> None:
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }


def test_token_requests_are_limited_per_account_from_any_address(make_user, settings):
    rates(settings, account_login="2/hour")
    ada, bob = make_user("ada"), make_user("bob")
    wrong = [
        APIClient(REMOTE_ADDR=f"203.0.113.{i}").post(
            "/auth/token", {"username": name, "password": "wrong"}, format="json"
        )
        for i, name in enumerate(["ada", " Ada "])
    ]

    # The right password, from yet another address: refused before it is checked.
    refused = APIClient(REMOTE_ADDR="203.0.113.50").post(
        "/auth/token", {"username": "ada", "password": "pw-Secret-123"}, format="json"
    )
    other = APIClient(REMOTE_ADDR="203.0.113.50").post(
        "/auth/token", {"username": "bob", "password": "pw-Secret-123"}, format="json"
    )

    assert [r.status_code for r in wrong] == [400, 400]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert not Token.objects.filter(user=ada).exists()
    assert other.status_code == 200
    assert Token.objects.get(user=bob).key == other.json()["token"]


def test_only_failed_password_checks_use_up_an_accounts_allowance(make_user, settings):
    rates(settings, account_login="2/hour")
    make_user("ada", is_staff=True)
    right = [
        APIClient(REMOTE_ADDR=f"203.0.113.{i}").post(
            "/auth/token", {"username": "ada", "password": "pw-Secret-123"}, format="json"
        )
        for i in range(4)
    ]
    logins = [admin_login(Client(REMOTE_ADDR=f"198.51.100.{i}"), "ada").status_code for i in range(3)]

    assert [r.status_code for r in right] == [200, 200, 200, 200]
    assert len({r.json()["token"] for r in right}) == 1
    assert logins == [302, 302, 302]
    wrong = APIClient(REMOTE_ADDR="203.0.113.9").post(
        "/auth/token", {"username": "ada", "password": "wrong"}, format="json"
    )
    assert wrong.status_code == 400


def test_password_checks_in_flight_at_once_share_the_accounts_allowance(settings):
    rates(settings, account_login="1/hour")
    first, second = AccountLoginLimit("ada"), AccountLoginLimit("ADA")

    # The first check is under way (its password is being hashed) when the second arrives.
    assert first.check() is None
    assert second.check() is not None


def test_a_wrong_admin_password_counts_even_from_a_logged_in_session(make_user, settings):
    rates(settings, account_login="1/hour")
    boss = make_user("boss", is_staff=True)
    make_user("other", is_staff=True)
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(boss)

    tries = [admin_login(client, "other", "wrong").status_code for _ in range(2)]

    assert tries == [200, 429]


def test_token_requests_refused_per_address_use_up_nothing_of_the_account(make_user, settings):
    rates(settings, token="1/hour", account_login="2/hour")
    make_user("ada")
    client = APIClient(REMOTE_ADDR="203.0.113.1")
    statuses = [
        client.post("/auth/token", {"username": "ada", "password": "wrong"}, format="json").status_code
        for _ in range(3)
    ]

    elsewhere = APIClient(REMOTE_ADDR="203.0.113.2").post(
        "/auth/token", {"username": "ada", "password": "wrong"}, format="json"
    )

    assert statuses == [400, 429, 429]
    assert elsewhere.status_code == 400, "only one failed check was counted against the account"


def admin_login(client: Client, username: str, password: str = "pw-Secret-123"):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})


def test_admin_logins_are_limited_per_ip(make_user, settings):
    rates(settings, admin_login="2/hour")
    admin_user = make_user("boss", is_staff=True)
    client = Client(REMOTE_ADDR="203.0.113.7")

    tries = [admin_login(client, "boss", "wrong").status_code for _ in range(2)]
    refused = admin_login(client, "boss")
    elsewhere = admin_login(Client(REMOTE_ADDR="203.0.113.8"), "boss")

    assert tries == [200, 200]  # the form again, with its error
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert "_auth_user_id" not in client.session
    assert elsewhere.status_code == 302
    admin_user.refresh_from_db()
    assert admin_user.last_login is not None


def test_admin_logins_are_limited_per_username(make_user, settings):
    rates(settings, account_login="2/hour")
    boss = make_user("boss", is_staff=True)

    tries = [admin_login(Client(REMOTE_ADDR=f"203.0.113.{i}"), "boss", "wrong").status_code for i in range(2)]
    client = Client(REMOTE_ADDR="203.0.113.99")
    refused = admin_login(client, "BOSS")
    also_refused = APIClient(REMOTE_ADDR="203.0.113.98").post(
        "/auth/token", {"username": "boss", "password": "pw-Secret-123"}, format="json"
    )

    assert tries == [200, 200]
    assert refused.status_code == 429
    assert also_refused.status_code == 429, "the token endpoint shares the account's allowance"
    assert "_auth_user_id" not in client.session
    boss.refresh_from_db()
    assert boss.last_login is None
    assert not Token.objects.filter(user=boss).exists()


def test_password_checks_fail_closed_while_the_throttle_store_is_down(make_user, settings):
    boss = make_user("boss", is_staff=True)
    redis_unreachable(settings)

    token = APIClient().post("/auth/token", {"username": "boss", "password": "pw-Secret-123"}, format="json")
    client = Client()
    login = admin_login(client, "boss")

    assert token.status_code == 503
    assert int(token["Retry-After"]) >= 1
    assert "detail" in token.json()
    assert login.status_code == 503
    assert int(login["Retry-After"]) >= 1
    assert "_auth_user_id" not in client.session
    boss.refresh_from_db()
    assert boss.last_login is None
    assert not Token.objects.exists()


def test_follows_are_limited_per_user(make_user, client_for, settings):
    rates(settings, follow="2/hour")
    ada, other = make_user(), make_user()
    client = client_for(ada)
    followees = [make_user() for _ in range(3)]

    statuses = [
        client.post("/follow", {"followee_id": f.pk}, format="json").status_code for f in followees[:2]
    ]
    refused = client.post("/follow", {"followee_id": followees[2].pk}, format="json")

    assert statuses == [201, 201]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert not Follow.objects.filter(follower=ada, followee=followees[2]).exists()
    assert Follow.objects.filter(follower=ada).count() == 2
    assert client_for(other).post("/follow", {"followee_id": ada.pk}, format="json").status_code == 201


def test_follows_are_not_limited_while_redis_is_down(make_user, client_for, settings):
    rates(settings, follow="1/hour")
    client = client_for(make_user())
    followees = [make_user() for _ in range(3)]
    redis_unreachable(settings)

    statuses = [client.post("/follow", {"followee_id": f.pk}, format="json").status_code for f in followees]

    assert statuses == [201, 201, 201]


def test_feed_reads_that_reach_django_are_limited_per_user(make_user, client_for, settings):
    rates(settings, feeds="2/minute")
    ada, bob = make_user(), make_user()
    client = client_for(ada)

    statuses = [client.get(f"/feeds/{ada.pk}?limit=5").status_code for _ in range(2)]
    refused = client.get(f"/feeds/{ada.pk}")

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert client_for(bob).get(f"/feeds/{bob.pk}?limit=5").status_code == 200
