import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

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
