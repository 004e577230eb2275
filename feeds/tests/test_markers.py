"""GET/POST /markers and GET /feeds/{id}/unread."""

import threading

import pytest

from feeds.markers import UNREAD_CAP
from feeds.models import FeedEntry, Marker
from posts.models import Post

pytestmark = pytest.mark.django_db


def test_no_marker_is_null(make_user, client_for):
    response = client_for(make_user()).get("/markers")
    assert response.status_code == 200
    assert response.json() == {"home": None}


def test_moving_the_marker_raises_its_version_by_one(make_user, client_for):
    client = client_for(make_user())
    first = client.post("/markers", {"home": {"last_read_id": 5}}, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["home"]["last_read_id"] == 5
    assert first.json()["home"]["version"] == 1
    second = client.post("/markers", {"home": {"last_read_id": 9, "version": 1}}, format="json")
    assert second.status_code == 200
    assert second.json()["home"]["version"] == 2
    assert client.get("/markers").json() == second.json()


def test_a_stale_version_is_a_409_with_the_current_marker_and_changes_nothing(make_user, client_for):
    client = client_for(make_user())
    client.post("/markers", {"home": {"last_read_id": 5}}, format="json")
    client.post("/markers", {"home": {"last_read_id": 7}}, format="json")
    stale = client.post("/markers", {"home": {"last_read_id": 3, "version": 1}}, format="json")
    assert stale.status_code == 409
    assert stale.json()["home"]["last_read_id"] == 7
    assert stale.json()["home"]["version"] == 2
    assert client.get("/markers").json()["home"]["last_read_id"] == 7


def test_version_zero_means_no_marker_yet(make_user, client_for):
    client = client_for(make_user())
    assert (
        client.post("/markers", {"home": {"last_read_id": 5, "version": 0}}, format="json").status_code == 200
    )
    assert (
        client.post("/markers", {"home": {"last_read_id": 6, "version": 0}}, format="json").status_code == 409
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"home": None},
        {"home": {}},
        {"home": {"last_read_id": 0}},
        {"home": {"last_read_id": "x"}},
        {"home": {"last_read_id": 2**63}},
        {"home": {"last_read_id": 1, "version": -1}},
        {"home": {"last_read_id": 1, "extra": 1}},
        {"home": {"last_read_id": 1}, "notifications": {"last_read_id": 1}},
    ],
)
def test_bad_bodies_are_400s_and_store_nothing(body, make_user, client_for):
    response = client_for(make_user()).post("/markers", body, format="json")
    assert response.status_code == 400, response.content
    assert not Marker.objects.exists()


def test_markers_are_per_user_and_need_a_token(make_user, client_for, client):
    ada, bob = make_user(), make_user()
    client_for(ada).post("/markers", {"home": {"last_read_id": 5}}, format="json")
    assert client_for(bob).get("/markers").json() == {"home": None}
    assert client.get("/markers").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_two_moves_naming_the_same_version_one_wins(make_user, client_for):
    user = make_user()
    client_for(user).post("/markers", {"home": {"last_read_id": 1}}, format="json")
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def move(last_read_id: int) -> None:
        from django.db import connection

        try:
            barrier.wait(timeout=10)
            body = {"home": {"last_read_id": last_read_id, "version": 1}}
            statuses.append(client_for(user).post("/markers", body, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=move, args=(n,)) for n in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200, 409]
    assert Marker.objects.get(user=user).version == 2


def stored_feed(user, count: int) -> list[int]:
    posts = Post.objects.bulk_create([Post(author=user, content=f"p{i}") for i in range(count)])
    FeedEntry.objects.bulk_create([FeedEntry(user_id=user.pk, post_id=p.pk) for p in posts])
    return [p.pk for p in posts]


def test_unread_counts_the_entries_above_the_marker(make_user, client_for):
    user = make_user()
    client = client_for(user)
    ids = stored_feed(user, 10)
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": 10, "capped": False}
    client.post("/markers", {"home": {"last_read_id": ids[6]}}, format="json")
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": 3, "capped": False}
    client.post("/markers", {"home": {"last_read_id": ids[-1]}}, format="json")
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": 0, "capped": False}


def test_unread_is_counted_up_to_the_cap(make_user, client_for):
    user = make_user()
    client = client_for(user)
    ids = stored_feed(user, UNREAD_CAP + 5)
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": UNREAD_CAP, "capped": True}
    client.post("/markers", {"home": {"last_read_id": ids[4]}}, format="json")
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": UNREAD_CAP, "capped": False}
    client.post("/markers", {"home": {"last_read_id": ids[5]}}, format="json")
    assert client.get(f"/feeds/{user.pk}/unread").json() == {"count": UNREAD_CAP - 1, "capped": False}


def test_unread_is_only_for_the_feeds_owner(make_user, client_for, client):
    ada, bob = make_user(), make_user()
    assert client_for(bob).get(f"/feeds/{ada.pk}/unread").status_code == 403
    assert client.get(f"/feeds/{ada.pk}/unread").status_code == 401
    assert client_for(ada).get(f"/feeds/{ada.pk}/unread", {"limit": 5}).status_code == 400
