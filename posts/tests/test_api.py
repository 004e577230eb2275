import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

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
