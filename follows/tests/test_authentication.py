import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.logcontext import log_context
from follows.authentication import CachedTokenAuthentication

pytestmark = pytest.mark.django_db(transaction=True)


def feed_status(token: str, user_id: int) -> int:
    return APIClient(HTTP_AUTHORIZATION=f"Token {token}").get(f"/feeds/{user_id}?limit=5").status_code


def test_token_lookups_are_cached(make_user):
    ada = make_user()
    token = Token.objects.create(user=ada).key
    assert feed_status(token, ada.pk) == 200

    with CaptureQueriesContext(connection) as queries:
        assert feed_status(token, ada.pk) == 200

    assert not [q for q in queries.captured_queries if "authtoken_token" in q["sql"]]


def test_a_deleted_token_stops_working_at_once(make_user):
    ada = make_user()
    token = Token.objects.create(user=ada)
    assert feed_status(token.key, ada.pk) == 200

    token.delete()

    assert feed_status(token.key, ada.pk) == 401


def test_a_deactivated_user_is_locked_out_at_once(make_user):
    ada = make_user()
    token = Token.objects.create(user=ada).key
    assert feed_status(token, ada.pk) == 200

    ada.is_active = False
    ada.save()

    assert feed_status(token, ada.pk) == 401


def test_staff_rights_follow_the_user_record(make_user):
    ada, bob = make_user(), make_user()
    token = Token.objects.create(user=bob).key
    assert feed_status(token, ada.pk) == 403

    bob.is_staff = True
    bob.save()

    assert feed_status(token, ada.pk) == 200


def deactivate_by_save(user):
    user.is_active = False
    user.save()


def deactivate_by_service(user):
    from follows.services import user_deactivate

    user_deactivate(user_ids=[user.pk])


def delete_tokens(user):
    Token.objects.filter(user=user).delete()


def change_password(user):
    user.set_password("another-Secret-456")
    user.save()


@contextmanager
def revoked_between_token_read_and_cache_write(revoke, user, *, after_read: int) -> Iterator[threading.Event]:
    """Run ``revoke(user)`` in another thread, committed with its on-commit effects, right
    after this thread's ``after_read``-th query of the token table returns."""
    reads, done = 0, threading.Event()

    def revoke_in_own_connection():
        try:
            revoke(get_user_model().objects.get(pk=user.pk))
        finally:
            connection.close()

    def hook(execute, sql, params, many, context):
        nonlocal reads
        result = execute(sql, params, many, context)
        if "authtoken_token" in sql and not done.is_set():
            reads += 1
            if reads == after_read:
                thread = threading.Thread(target=revoke_in_own_connection)
                thread.start()
                thread.join(timeout=10)
                assert not thread.is_alive(), "the revocation hung"
                done.set()
        return result

    with connection.execute_wrapper(hook):
        yield done


@pytest.mark.parametrize("after_read", [1, 2])
@pytest.mark.parametrize(
    "revoke", [deactivate_by_save, deactivate_by_service, delete_tokens, change_password]
)
def test_a_revocation_committing_during_a_token_lookup_is_not_cached_over(make_user, revoke, after_read):
    ada = make_user()
    token = Token.objects.create(user=ada).key

    with revoked_between_token_read_and_cache_write(revoke, ada, after_read=after_read) as revoked:
        feed_status(token, ada.pk)  # 200 or 401: it raced the revocation
    assert revoked.is_set(), f"the lookup read the token table fewer than {after_read} times"

    assert feed_status(token, ada.pk) == 401
    client = APIClient(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/posts", {"content": "after"}, format="json").status_code == 401


def test_a_password_change_revokes_the_old_token(make_user):
    ada = make_user()
    old = Token.objects.create(user=ada).key
    assert feed_status(old, ada.pk) == 200

    change_password(ada)

    assert feed_status(old, ada.pk) == 401
    login = {"username": ada.username, "password": "another-Secret-456"}
    new = APIClient().post("/auth/token", login, format="json").json()["token"]
    assert new != old
    assert feed_status(new, ada.pk) == 200


def test_a_save_that_leaves_the_password_keeps_the_token(make_user):
    ada = make_user()
    token = Token.objects.create(user=ada).key

    ada.first_name = "Ada"
    ada.save()

    assert feed_status(token, ada.pk) == 200


def test_the_deactivation_service_locks_users_out_at_once(make_user):
    from follows.services import user_deactivate

    ada, bob, cy = make_user(), make_user(), make_user()
    tokens = {user: Token.objects.create(user=user).key for user in (ada, bob, cy)}
    assert [feed_status(tokens[u], u.pk) for u in (ada, bob, cy)] == [200, 200, 200]

    assert user_deactivate(user_ids=[ada.pk, bob.pk, 10**12]) == 2

    assert [feed_status(tokens[u], u.pk) for u in (ada, bob, cy)] == [401, 401, 200]
    assert list(get_user_model().objects.filter(is_active=False).order_by("pk")) == [ada, bob]


def test_a_user_from_the_token_cache_cannot_be_saved(make_user):
    ada = make_user()
    token = Token.objects.create(user=ada).key
    auth = CachedTokenAuthentication()
    # Inside a context, as in a request: authentication binds the user to the log fields.
    with log_context():
        auth.authenticate_credentials(token)  # caches the lookup
        cached, _ = auth.authenticate_credentials(token)

    with pytest.raises(TypeError):
        cached.save()
    ada.refresh_from_db()
    assert ada.check_password("pw-Secret-123")
    assert cached == ada


def test_a_user_from_the_token_cache_is_a_read_only_user_that_can_author_posts(make_user):
    from posts.services import post_create

    ada = make_user()
    token = Token.objects.create(user=ada).key
    auth = CachedTokenAuthentication()
    with log_context():
        auth.authenticate_credentials(token)  # caches the lookup
        with CaptureQueriesContext(connection) as queries:
            cached, _ = auth.authenticate_credentials(token)
            known = (cached.pk, cached.id, cached.get_username(), cached.is_staff, cached.is_superuser)
            flags = (cached.is_active, cached.is_authenticated)

    assert not queries.captured_queries, "a cached lookup queried the database"
    assert known == (ada.pk, ada.pk, ada.username, False, False)
    assert flags == (True, True)
    assert isinstance(cached, get_user_model())
    with pytest.raises(TypeError):
        cached.delete()
    assert get_user_model().objects.filter(pk=ada.pk).exists()
    post = post_create(author=cached, content="as the cached user")
    assert post.author_id == ada.pk
    assert cached.email == ada.email, "fields the cache lacks are read from the database"
