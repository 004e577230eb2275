"""POST /posts with an Idempotency-Key: a retry gets the first response again and stores
nothing; the same key with another body, a key in use and a malformed key are refused."""

import datetime

import psycopg
import pytest
from django.db import connection

from eventbus.models import OutboxMessage
from posts.models import Post, PostRequest
from posts.services import POST_REQUEST_LOCK_CLASS

pytestmark = pytest.mark.django_db


def post(client, content: str, key: str | None):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post("/posts", {"content": content}, format="json", **headers)


def test_a_retry_with_the_same_key_and_body_returns_the_first_response_and_stores_nothing(
    make_user, client_for
):
    client = client_for(make_user())

    first = post(client, "hello", '"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    retry = post(client, "hello", '"8e03978e-40d5-43e8-bc93-6894a57f9324"')

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Post.objects.count() == 1
    assert OutboxMessage.objects.count() == 1, "one post.created event"


def test_the_bare_and_the_quoted_form_are_the_same_key(make_user, client_for):
    client = client_for(make_user())

    first = post(client, "hello", "abc-123")
    retry = post(client, "hello", '"abc-123"')

    assert retry.json() == first.json()
    assert Post.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422_and_stores_nothing(make_user, client_for):
    client = client_for(make_user())
    post(client, "hello", "k1")

    response = post(client, "hello, edited", "k1")

    assert response.status_code == 422
    assert "another body" in response.json()["detail"]
    assert list(Post.objects.values_list("content", flat=True)) == ["hello"]


def test_keys_are_per_user(make_user, client_for):
    ada, bob = make_user(), make_user()

    post(client_for(ada), "hello", "same")
    response = post(client_for(bob), "hello", "same")

    assert response.status_code == 201
    assert sorted(Post.objects.values_list("author_id", flat=True)) == sorted([ada.pk, bob.pk])


def test_another_key_is_another_post_and_no_key_is_always_a_new_post(make_user, client_for):
    client = client_for(make_user())

    for key in ("k1", "k2", None, None):
        assert post(client, "hello", key).status_code == 201

    assert Post.objects.count() == 4


def test_a_key_older_than_the_retention_counts_as_unused(make_user, client_for, settings):
    settings.POST_IDEMPOTENCY_SECONDS = 60
    client = client_for(make_user())
    first = post(client, "hello", "k1").json()
    PostRequest.objects.update(
        created_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=61)
    )

    again = post(client, "hello", "k1")

    assert again.status_code == 201
    assert again.json()["id"] != first["id"]
    assert PostRequest.objects.count() == 1, "the expired key was deleted"


def test_a_retry_while_the_first_request_still_runs_is_a_409(make_user, client_for):
    user = make_user()
    # What the first request holds while it runs: the key's advisory lock, on a connection
    # of its own.
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=False) as first:
        first.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [POST_REQUEST_LOCK_CLASS, f"{user.pk}:k1"]
        )

        response = post(client_for(user), "hello", "k1")

    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert not Post.objects.exists()


def test_the_key_is_stored_with_its_post_or_not_at_all(make_user, client_for, monkeypatch):
    def failing(**fields):
        raise RuntimeError("the database went away between the two inserts")

    monkeypatch.setattr(PostRequest.objects, "create", failing)
    client = client_for(make_user())
    client.raise_request_exception = False

    response = post(client, "hello", "k1")

    assert response.status_code == 500
    assert not Post.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ('""', "empty"),
        ("", "empty"),
        ('"unterminated', "malformed"),
        ("two words", "malformed"),
        ('"tab\there"', "malformed"),
        ("caf\u00e9", "malformed"),
        ("x" * 256, "too long"),
        ('"' + "x" * 256 + '"', "too long"),
    ],
)
def test_a_malformed_or_too_long_key_is_a_400_and_stores_nothing(make_user, client_for, key, why):
    response = post(client_for(make_user()), "hello", key)

    assert response.status_code == 400, why
    assert "Idempotency-Key" in response.json()
    assert not Post.objects.exists()


def test_a_key_of_the_longest_length_with_escapes_is_accepted(make_user, client_for):
    client = client_for(make_user())
    key = '"' + "x" * 251 + '\\"\\\\"'  # 253 characters once unescaped

    assert post(client, "hello", key).status_code == 201
    assert PostRequest.objects.get().key == "x" * 251 + '"\\'
    assert post(client, "hello", '"' + "x" * 255 + '"').status_code == 201


def test_the_schema_documents_the_key_and_its_answers(client):
    schema = client.get("/api/schema?format=json").json()
    create = schema["paths"]["/posts"]["post"]

    [parameter] = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert parameter["in"] == "header"
    assert "255" in parameter["description"]
    assert {"201", "400", "409", "422", "503"} <= set(create["responses"])
