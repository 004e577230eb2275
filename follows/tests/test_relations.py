"""POST/GET /blocks and /mutes, DELETE /blocks/{id} and /mutes/{id}: shapes, rules, events."""

import json
import threading

import pytest

from eventbus.models import OutboxMessage
from follows.models import Block, Follow, Mute
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db

KINDS = ["blocks", "mutes"]
MODELS = {"blocks": Block, "mutes": Mute}


def events_of(event_type: str) -> list[dict]:
    rows = OutboxMessage.objects.filter(headers__contains=[["event_type", event_type]]).order_by("pk")
    return [json.loads(bytes(row.value))["payload"] for row in rows]


@pytest.mark.parametrize("kind", KINDS)
def test_adding_is_201_then_200_and_announced_once(kind, make_user, client_for):
    alice, bob = make_user(), make_user()
    client = client_for(alice)
    first = client.post(f"/{kind}", {"user_id": bob.pk}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["user_id"] == bob.pk
    assert first.json()["username"] == bob.username
    again = client.post(f"/{kind}", {"user_id": bob.pk}, format="json")
    assert again.status_code == 200
    assert MODELS[kind].objects.filter(user=alice, target=bob).count() == 1
    event = f"{kind[:-1]}.created"
    assert events_of(event) == [{"user_id": alice.pk, "target_id": bob.pk}]


@pytest.mark.parametrize("kind", KINDS)
def test_removing_is_204_then_404_and_announced(kind, make_user, client_for):
    alice, bob = make_user(), make_user()
    client = client_for(alice)
    assert client.post(f"/{kind}", {"user_id": bob.pk}, format="json").status_code == 201
    assert client.delete(f"/{kind}/{bob.pk}").status_code == 204
    missing = client.delete(f"/{kind}/{bob.pk}")
    assert missing.status_code == 404
    assert "detail" in missing.json()
    assert not MODELS[kind].objects.exists()
    assert events_of(f"{kind[:-1]}.deleted") == [{"user_id": alice.pk, "target_id": bob.pk}]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"user_id": "self"}, 400),
        ({"user_id": 0}, 400),
        ({"user_id": "x"}, 400),
        ({}, 400),
        ({"user_id": 2**63}, 400),
        ({"user_id": 2**63 - 1}, 404),
    ],
)
def test_bad_targets_are_4xx_and_store_nothing(kind, body, status, make_user, client_for):
    alice = make_user()
    if body.get("user_id") == "self":
        body = {"user_id": alice.pk}
    response = client_for(alice).post(f"/{kind}", body, format="json")
    assert response.status_code == status, response.content
    assert not MODELS[kind].objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_the_limit_is_a_400(kind, make_user, client_for, settings):
    setattr(settings, f"{kind[:-1].upper()}_LIMIT", 2)
    alice = make_user()
    client = client_for(alice)
    for _ in range(2):
        assert client.post(f"/{kind}", {"user_id": make_user().pk}, format="json").status_code == 201
    refused = client.post(f"/{kind}", {"user_id": make_user().pk}, format="json")
    assert refused.status_code == 400
    assert "more than 2" in refused.json()["user_id"][0]
    assert MODELS[kind].objects.filter(user=alice).count() == 2


@pytest.mark.parametrize("kind", KINDS)
def test_adding_is_rate_limited_and_listing_is_not(kind, make_user, client_for, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, kind[:-1]: "2/hour"}
    alice = make_user()
    client = client_for(alice)
    for _ in range(2):
        assert client.post(f"/{kind}", {"user_id": make_user().pk}, format="json").status_code == 201
    refused = client.post(f"/{kind}", {"user_id": make_user().pk}, format="json")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    for _ in range(3):
        assert client.get(f"/{kind}").status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_the_list_is_newest_first_and_cursor_paged(kind, make_user, client_for):
    alice = make_user()
    client = client_for(alice)
    targets = [make_user() for _ in range(5)]
    for target in targets:
        assert client.post(f"/{kind}", {"user_id": target.pk}, format="json").status_code == 201
    other = make_user()
    client_for(other).post(f"/{kind}", {"user_id": targets[0].pk}, format="json")
    seen, cursor = [], None
    while True:
        page = client.get(f"/{kind}", {"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["results"]) <= 2
        seen += [entry["user_id"] for entry in page["results"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [target.pk for target in reversed(targets)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("query", [{"cursor": "nope"}, {"limit": 0}, {"limit": 10_000}, {"page": 2}])
def test_a_bad_list_query_is_a_400(kind, query, make_user, client_for):
    assert client_for(make_user()).get(f"/{kind}", query).status_code == 400


@pytest.mark.parametrize("kind", KINDS)
def test_anonymous_is_a_401(kind, client):
    assert client.get(f"/{kind}").status_code == 401
    assert client.post(f"/{kind}", {"user_id": 1}, content_type="application/json").status_code == 401
    assert client.delete(f"/{kind}/1").status_code == 401


def test_a_block_ends_the_follows_both_ways_and_unblocking_does_not_bring_them_back(make_user, client_for):
    alice, bob, carol = make_user(), make_user(), make_user()
    Follow.objects.create(follower=alice, followee=bob)
    Follow.objects.create(follower=bob, followee=alice)
    Follow.objects.create(follower=carol, followee=bob)
    client = client_for(alice)
    assert client.post("/blocks", {"user_id": bob.pk}, format="json").status_code == 201
    assert set(Follow.objects.values_list("follower_id", "followee_id")) == {(carol.pk, bob.pk)}
    ended = events_of("follow.deleted")
    assert sorted((e["follower_id"], e["followee_id"]) for e in ended) == sorted(
        [(alice.pk, bob.pk), (bob.pk, alice.pk)]
    )
    assert client.delete(f"/blocks/{bob.pk}").status_code == 204
    assert set(Follow.objects.values_list("follower_id", "followee_id")) == {(carol.pk, bob.pk)}


def test_neither_side_of_a_block_can_follow_the_other(make_user, client_for):
    alice, bob = make_user(), make_user()
    assert client_for(alice).post("/blocks", {"user_id": bob.pk}, format="json").status_code == 201
    for follower, followee in [(bob, alice), (alice, bob)]:
        refused = client_for(follower).post("/follow", {"followee_id": followee.pk}, format="json")
        assert refused.status_code == 403
        # It says only that the account cannot be followed, not who blocks whom.
        assert refused.json() == {"detail": "This account cannot be followed."}
    assert not Follow.objects.exists()
    client_for(alice).delete(f"/blocks/{bob.pk}")
    assert client_for(bob).post("/follow", {"followee_id": alice.pk}, format="json").status_code == 201


def test_a_mute_keeps_the_follow_and_tells_the_muted_nothing(make_user, client_for):
    alice, carol = make_user(), make_user()
    Follow.objects.create(follower=alice, followee=carol)
    assert client_for(alice).post("/mutes", {"user_id": carol.pk}, format="json").status_code == 201
    assert Follow.objects.filter(follower=alice, followee=carol).exists()
    assert client_for(carol).get("/mutes").json()["results"] == []
    assert client_for(carol).get("/blocks").json()["results"] == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("query", ["cursor=", "limit="])
def test_an_empty_list_parameter_is_a_400_not_the_first_page(kind, query, make_user, client_for):
    response = client_for(make_user()).get(f"/{kind}?{query}")
    assert response.status_code == 400
    assert response.json() == {query.rstrip("="): ["This field may not be blank."]}


def waiting_for_a_lock() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_block_and_a_follow_between_the_same_two_at_once_both_finish(make_user, monkeypatch):
    """B follows A while A blocks B, interleaved as a deadlock would need: the follow has
    locked B's row when the block locks A's and waits for B's; the follow then commits,
    which checks its foreign key to A's row. Neither waits for the other: the follow
    commits, the block sees it and ends it."""
    from django.db import connection

    from follows import services

    a, b = make_user(), make_user()
    if a.pk > b.pk:
        a, b = b, a
    followed = threading.Event()
    go = threading.Event()
    real = services.blocked_between

    def paused(user_id, other_id):
        followed.set()
        assert go.wait(timeout=10)
        return real(user_id, other_id)

    monkeypatch.setattr(services, "blocked_between", paused)
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    follow = threading.Thread(
        target=run, args=(lambda: services.follow_create(follower=b, followee_id=a.pk),)
    )
    follow.start()
    assert followed.wait(timeout=10)
    monkeypatch.setattr(services, "blocked_between", real)
    block = threading.Thread(target=run, args=(lambda: services.block_create(user=a, target_id=b.pk),))
    block.start()
    wait_for(lambda: waiting_for_a_lock() == 1, timeout=10, what="the block waiting for B's row")
    go.set()
    follow.join(timeout=30)
    block.join(timeout=30)
    assert not follow.is_alive()
    assert not block.is_alive()
    assert errors == []
    assert Block.objects.filter(user=a, target=b).exists()
    assert not Follow.objects.filter(follower=b, followee=a).exists()
