from unittest import mock

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import RedisError
from rest_framework.test import APIClient

from feeds.models import FeedEntry
from posts.models import Post

pytestmark = pytest.mark.django_db


def test_create_post_returns_the_post(make_user, client_for):
    ada = make_user("ada")

    response = client_for(ada).post("/posts", {"content": "hello ✓"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "author_id", "author", "content", "created_at"}
    assert body["author_id"] == ada.pk
    assert body["author"] == "ada"
    assert body["content"] == "hello ✓"
    assert body["created_at"].endswith("Z")
    assert Post.objects.get(pk=body["id"]).author_id == ada.pk


def test_create_post_counts_in_metrics(make_user, client_for, django_capture_on_commit_callbacks):
    before = REGISTRY.get_sample_value("feed_posts_created_total") or 0

    with django_capture_on_commit_callbacks(execute=True):
        client_for(make_user()).post("/posts", {"content": "x"}, format="json")

    assert REGISTRY.get_sample_value("feed_posts_created_total") == before + 1


def test_author_is_always_the_authenticated_user(make_user, client_for):
    ada, bob = make_user(), make_user()

    response = client_for(bob).post("/posts", {"content": "hi", "author_id": ada.pk}, format="json")

    assert response.status_code == 201
    assert response.json()["author_id"] == bob.pk
    assert list(Post.objects.values_list("author_id", flat=True)) == [bob.pk]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 501},
        {"content": None},
        {"content": "a\x00b"},
    ],
)
def test_create_post_rejects_invalid_content(make_user, client_for, payload):
    response = client_for(make_user()).post("/posts", payload, format="json")

    assert response.status_code == 400
    assert "content" in response.json()
    assert not Post.objects.exists()


def test_post_max_length_is_configurable(make_user, client_for, settings):
    settings.POST_MAX_LENGTH = 10
    client = client_for(make_user())

    assert client.post("/posts", {"content": "x" * 11}, format="json").status_code == 400
    assert client.post("/posts", {"content": "x" * 10}, format="json").status_code == 201


def test_create_post_needs_authentication():
    response = APIClient().post("/posts", {"content": "hi"}, format="json")

    assert response.status_code == 401
    assert not Post.objects.exists()


def test_get_post(make_user, client_for):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="hello")

    response = client_for(make_user()).get(f"/posts/{post.pk}")

    assert response.status_code == 200
    assert response.json()["id"] == post.pk
    assert response.json()["author"] == "ada"


@pytest.mark.parametrize("path", ["/posts/999999", "/posts/0", "/posts/abc", "/posts/99999999999999999999"])
def test_get_missing_post_is_404(make_user, client_for, path):
    response = client_for(make_user()).get(path)

    assert response.status_code == 404


def test_get_post_needs_authentication(make_user):
    post = Post.objects.create(author=make_user(), content="hello")

    assert APIClient().get(f"/posts/{post.pk}").status_code == 401


def test_trailing_slash_is_not_an_alias(make_user, client_for):
    response = client_for(make_user()).post("/posts/", {"content": "hi"}, format="json")

    assert response.status_code == 404


def test_deleting_a_post_refreshes_the_authors_cached_page_without_the_worker(
    make_user, client_for, django_capture_on_commit_callbacks
):
    ada = make_user("ada")
    client = client_for(ada)
    kept, doomed = (Post.objects.create(author=ada, content=c) for c in ("kept", "doomed"))
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in (kept, doomed)])
    page = client.get(f"/feeds/{ada.pk}").json()  # now cached
    assert [p["id"] for p in page["results"]] == [doomed.pk, kept.pk]

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/posts/{doomed.pk}").status_code == 204

    # No worker has run: the feed row is still there, the cached page is not.
    assert FeedEntry.objects.filter(post_id=doomed.pk).exists()
    assert [p["id"] for p in client.get(f"/feeds/{ada.pk}").json()["results"]] == [kept.pk]


def test_a_delete_succeeds_while_the_feed_cache_is_down(
    make_user, client_for, django_capture_on_commit_callbacks, caplog
):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="doomed")

    with (
        mock.patch("feeds.cache.pages_invalidate", side_effect=RedisError("down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client_for(ada).delete(f"/posts/{post.pk}")

    assert response.status_code == 204
    assert not Post.objects.filter(pk=post.pk).exists()
    assert "feed cache unavailable" in caplog.text
