"""Browser middleware (sessions, CSRF, Django's auth, messages) runs only where browsers go."""

import pytest
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_middleware_seen(monkeypatch) -> list[tuple[str, str]]:
    """The (middleware, path) of every browser middleware hook that ran."""
    seen = []
    for cls, hook in (
        (SessionMiddleware, "process_request"),
        (CsrfViewMiddleware, "process_view"),
        (MessageMiddleware, "process_request"),
    ):
        original = getattr(cls, hook)

        def spy(self, request, *args, _original=original, _name=cls.__name__):
            seen.append((_name, request.path))
            return _original(self, request, *args)

        monkeypatch.setattr(cls, hook, spy)
    return seen


def test_a_token_authenticated_post_runs_no_browser_middleware(
    make_user, client_for, browser_middleware_seen
):
    response = client_for(make_user()).post("/posts", {"content": "hi"}, format="json")

    assert response.status_code == 201
    assert browser_middleware_seen == []


def test_the_admin_still_gets_sessions_csrf_and_messages(browser_middleware_seen):
    response = Client().get("/admin/login/")

    assert response.status_code == 200
    assert {name for name, path in browser_middleware_seen if path == "/admin/login/"} == {
        "SessionMiddleware",
        "CsrfViewMiddleware",
        "MessageMiddleware",
    }
    assert "csrftoken" in response.cookies


def test_an_admin_login_without_its_csrf_token_is_refused(make_user):
    make_user(username="ada")

    response = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "ada", "password": "pw-Secret-123"}
    )

    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/", "/signin", "/signup", "/@ada"])
def test_the_web_pages_get_sessions_csrf_and_messages(make_user, browser_middleware_seen, path):
    make_user(username="ada")

    response = Client().get(path)

    assert response.status_code == (302 if path == "/" else 200)
    assert {name for name, seen in browser_middleware_seen if seen == path} == {
        "SessionMiddleware",
        "CsrfViewMiddleware",
        "MessageMiddleware",
    }


@pytest.mark.parametrize("path", ["/feeds/1", "/posts/1", "/healthz", "/users"])
def test_api_paths_beside_the_web_pages_run_no_browser_middleware(
    make_user, client_for, browser_middleware_seen, path
):
    client_for(make_user()).get(path)

    assert browser_middleware_seen == []
