import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from follows.models import Follow
from follows.serializers import UserCreateSerializer

User = get_user_model()
pytestmark = pytest.mark.django_db


def test_create_user_returns_id_username_and_a_working_token():
    response = APIClient().post("/users", {"username": "ada", "password": "pw-Secret-123"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "token"}
    assert body["username"] == "ada"
    assert User.objects.get(pk=body["id"]).check_password("pw-Secret-123")
    me = APIClient(HTTP_AUTHORIZATION=f"Token {body['token']}").get(f"/feeds/{body['id']}")
    assert me.status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": "pw-Secret-123"}, "username"),
        ({"username": "ada"}, "password"),
        ({"username": "", "password": "pw-Secret-123"}, "username"),
        ({"username": "a d a", "password": "pw-Secret-123"}, "username"),
        ({"username": "x" * 151, "password": "pw-Secret-123"}, "username"),
        ({"username": "ada", "password": "123"}, "password"),
        ({"username": "ada", "password": ["not", "a", "string"]}, "password"),
    ],
)
def test_create_user_rejects_invalid_input(payload, field):
    response = APIClient().post("/users", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not User.objects.exists()


def test_create_user_rejects_a_taken_username_in_any_case(make_user):
    make_user("ada")

    response = APIClient().post("/users", {"username": "ADA", "password": "pw-Secret-123"}, format="json")

    assert response.status_code == 400
    assert "username" in response.json()
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("taken", "requested"),
    [("Bob", "\uff42ob"), ("bob", "\uff22\uff2f\uff22"), ("\u00c9mile", "e\u0301mile"), ("\ufb01le", "FILE")],
)
def test_create_user_rejects_a_name_equal_to_a_taken_one_once_normalised(make_user, taken, requested):
    make_user(taken)

    response = APIClient().post("/users", {"username": requested, "password": "pw-Secret-123"}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_create_user_stores_the_normalised_name():
    fullwidth_a = "\uff41"

    response = APIClient().post(
        "/users", {"username": f"{fullwidth_a}da", "password": "pw-Secret-123"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["username"] == "ada"
    assert User.objects.get().username == "ada"


@pytest.mark.parametrize("rival", ["Ada", "ada", "\uff41DA"])
def test_of_two_concurrent_signups_of_one_name_the_second_is_a_400(monkeypatch, rival):
    check = UserCreateSerializer.validate_username

    def check_then_rival_signs_up(self, value):
        checked = check(self, value)
        # The rival's account commits after this request's check and before its insert.
        User.objects.create_user(username=rival, password="pw-Secret-456")
        return checked

    monkeypatch.setattr(UserCreateSerializer, "validate_username", check_then_rival_signs_up)

    response = APIClient().post("/users", {"username": "Ada", "password": "pw-Secret-123"}, format="json")

    assert response.status_code == 400, response.json()
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1
    assert not Token.objects.exists()


def test_create_user_rejects_malformed_json():
    response = APIClient().post("/users", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_token_for_good_credentials_is_the_users_token(make_user):
    user = make_user("ada")

    first = APIClient().post("/auth/token", {"username": "ada", "password": "pw-Secret-123"}, format="json")
    second = APIClient().post("/auth/token", {"username": "ada", "password": "pw-Secret-123"}, format="json")

    assert first.status_code == 200
    assert first.json() == second.json()
    assert first.json()["token"] == user.auth_token.key


@pytest.mark.parametrize(
    "payload",
    [{"username": "ada", "password": "wrong"}, {"username": "nobody", "password": "x"}, {"username": "ada"}],
)
def test_token_rejects_bad_credentials(make_user, payload):
    make_user("ada")

    response = APIClient().post("/auth/token", payload, format="json")

    assert response.status_code == 400
    assert "token" not in response.json()


def test_follow_creates_once_then_reports_existing(make_user, client_for):
    alice, bob = make_user(), make_user()
    client = client_for(bob)

    first = client.post("/follow", {"followee_id": alice.pk}, format="json")
    again = client.post("/follow", {"followee_id": alice.pk}, format="json")

    assert first.status_code == 201
    assert first.json()["follower_id"] == bob.pk
    assert first.json()["followee_id"] == alice.pk
    assert again.status_code == 200
    assert Follow.objects.filter(follower=bob, followee=alice).count() == 1


def test_follow_yourself_is_rejected(make_user, client_for):
    bob = make_user()

    response = client_for(bob).post("/follow", {"followee_id": bob.pk}, format="json")

    assert response.status_code == 400
    assert "followee_id" in response.json()
    assert not Follow.objects.exists()


@pytest.mark.parametrize("followee_id", [None, "abc", 0, -3, 2**63, 1.5, [1]])
def test_follow_rejects_invalid_ids(make_user, client_for, followee_id):
    response = client_for(make_user()).post("/follow", {"followee_id": followee_id}, format="json")

    assert response.status_code == 400
    assert "followee_id" in response.json()


@pytest.mark.parametrize("followee_id", [987654321, 2**31, 2**63 - 1])
def test_follow_unknown_user_is_404(make_user, client_for, followee_id):
    response = client_for(make_user()).post("/follow", {"followee_id": followee_id}, format="json")

    assert response.status_code == 404
    assert not Follow.objects.exists()


def test_follow_needs_authentication(make_user):
    alice = make_user()

    anonymous = APIClient().post("/follow", {"followee_id": alice.pk}, format="json")
    bad_token = APIClient(HTTP_AUTHORIZATION="Token nope").post(
        "/follow", {"followee_id": alice.pk}, format="json"
    )

    assert anonymous.status_code == 401
    assert bad_token.status_code == 401
    assert not Follow.objects.exists()


def test_follow_is_always_as_the_authenticated_user(make_user, client_for):
    alice, bob, mallory = make_user(), make_user(), make_user()

    response = client_for(mallory).post(
        "/follow", {"followee_id": alice.pk, "follower_id": bob.pk}, format="json"
    )

    assert response.status_code == 201
    assert list(Follow.objects.values_list("follower_id", "followee_id")) == [(mallory.pk, alice.pk)]


def test_follows_stop_at_the_follow_limit(make_user, client_for, settings):
    settings.FOLLOW_LIMIT = 3
    bob = make_user()
    client = client_for(bob)
    followed = [make_user() for _ in range(3)]
    for user in followed[:2]:
        Follow.objects.create(follower=bob, followee=user)

    below = client.post("/follow", {"followee_id": followed[2].pk}, format="json")
    at_limit = client.post("/follow", {"followee_id": make_user().pk}, format="json")
    again = client.post("/follow", {"followee_id": followed[0].pk}, format="json")

    assert below.status_code == 201
    assert at_limit.status_code == 400
    assert at_limit.json() == {"followee_id": ["You cannot follow more than 3 accounts."]}
    assert again.status_code == 200  # already following is not a new follow
    assert set(Follow.objects.filter(follower=bob).values_list("followee_id", flat=True)) == {
        u.pk for u in followed
    }


def test_delete_auth_token_revokes_the_token_of_the_request_only(
    make_user, client, django_capture_on_commit_callbacks
):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    ada = make_user()
    token = Token.objects.create(user=ada)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/markers").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete("/auth/token").status_code == 204
    assert not Token.objects.filter(user=ada).exists()
    assert api.get("/markers").status_code == 401
    assert api.delete("/auth/token").status_code == 401
    # A password still gives the account a new one.
    body = {"username": ada.username, "password": "pw-Secret-123"}
    assert client.post("/auth/token", body, content_type="application/json").status_code == 200


def test_delete_auth_token_without_a_token_is_a_401(client):
    assert client.delete("/auth/token").status_code == 401
