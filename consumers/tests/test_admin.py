import json

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.test import Client

from consumers.models import DeadLetter
from eventbus.models import OutboxMessage
from feeds.models import PulledAuthor
from follows.models import Follow
from posts.models import Post
from tests.helpers import topic_read

User = get_user_model()

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_letter(make_dead_letter):
    return make_dead_letter()


def test_admin_needs_staff_login(make_user):
    response = Client().get("/admin/posts/post/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_operators_can_browse_and_search(staff_client, make_user, dead_letter):
    ada, bob = make_user("ada"), make_user("bob")
    Post.objects.create(author=ada, content="findable words")
    Follow.objects.create(follower=bob, followee=ada)

    posts = staff_client.get("/admin/posts/post/?q=findable")
    follows = staff_client.get("/admin/follows/follow/?q=ada")
    letters = staff_client.get("/admin/consumers/deadletter/?status__exact=pending")
    letter = staff_client.get(f"/admin/consumers/deadletter/{dead_letter.pk}/change/")
    user = staff_client.get(f"/admin/auth/user/{bob.pk}/change/")

    assert b"findable words" in posts.content
    assert follows.status_code == 200
    assert b"UndecodableEvent" in letters.content
    assert b"\\xffnot json" in letter.content
    assert f"?follower__id__exact={bob.pk}".encode() in user.content
    assert b"1 account<" in user.content


@pytest.mark.broker
def test_replay_action_republishes_and_marks_replayed(staff_client, dead_letter, settings):
    response = staff_client.post(
        "/admin/consumers/deadletter/",
        {"action": "replay", "_selected_action": [dead_letter.pk], "confirm": "yes"},
        follow=True,
    )

    assert b"Replayed 1 dead letter." in response.content
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REPLAYED
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert message.value() == b"\xffnot json"


def test_discard_action(staff_client, dead_letter):
    staff_client.post(
        "/admin/consumers/deadletter/",
        {"action": "discard", "_selected_action": [dead_letter.pk], "confirm": "yes"},
    )

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DISCARDED


def test_deleting_a_post_or_follow_in_the_admin_announces_it(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    post = Post.objects.create(author=ada, content="regrettable")
    follow = Follow.objects.create(follower=bob, followee=ada)

    staff_client.post(f"/admin/posts/post/{post.pk}/delete/", {"post": "yes"})
    staff_client.post(f"/admin/follows/follow/{follow.pk}/delete/", {"post": "yes"})

    events = [json.loads(bytes(row.value)) for row in OutboxMessage.objects.order_by("pk")]
    assert [e["type"] for e in events] == ["post.created", "follow.created", "post.deleted", "follow.deleted"]
    assert events[2]["payload"] == {"post_id": post.pk, "author_id": ada.pk}
    assert events[3]["payload"] == {"follower_id": bob.pk, "followee_id": ada.pk}


def test_pulled_authors_are_listed_read_only(staff_client, make_user):
    star = make_user("star")
    PulledAuthor.objects.create(user=star)

    page = staff_client.get("/admin/feeds/pulledauthor/")

    assert b"star" in page.content
    assert staff_client.get("/admin/feeds/pulledauthor/add/").status_code == 403


def staff_with(make_user, *codenames: str) -> Client:
    """A client logged in as a staff user who holds exactly these permissions."""
    from django.contrib.auth.models import Permission

    user = make_user(is_staff=True)
    for codename in codenames:
        app_label, _, name = codename.partition(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=name))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("action", ["replay", "discard"])
def test_a_staff_user_who_may_only_view_dead_letters_cannot_replay_or_discard(make_user, dead_letter, action):
    client = staff_with(make_user, "consumers.view_deadletter")

    page = client.get("/admin/consumers/deadletter/")
    refused = client.post(
        "/admin/consumers/deadletter/", {"action": action, "_selected_action": [dead_letter.pk]}, follow=True
    )

    assert page.status_code == 200
    assert f'value="{action}"'.encode() not in page.content, "the action is offered"
    assert refused.status_code == 200
    assert b"dead letters." not in refused.content, "the action ran"
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING
    assert not LogEntry.objects.exists()


@pytest.mark.broker
@pytest.mark.parametrize(
    ("action", "permission", "status", "message"),
    [
        ("replay", "consumers.replay_deadletter", DeadLetter.Status.REPLAYED, "Replayed"),
        ("discard", "consumers.discard_deadletter", DeadLetter.Status.DISCARDED, "Discarded"),
    ],
)
def test_replay_and_discard_each_need_their_permission_and_are_logged(
    make_user, dead_letter, settings, action, permission, status, message
):
    other = DeadLetter.objects.create(
        **{
            f.attname: getattr(dead_letter, f.attname)
            for f in DeadLetter._meta.concrete_fields
            if f.attname != "id"
        }
        | {"offset": 8}
    )
    # The other action's permission does not grant this one.
    wrong = "consumers.discard_deadletter" if action == "replay" else "consumers.replay_deadletter"
    assert (
        b"No action selected."
        in staff_with(make_user, "consumers.view_deadletter", wrong)
        .post(
            "/admin/consumers/deadletter/",
            {"action": action, "_selected_action": [dead_letter.pk]},
            follow=True,
        )
        .content
    )
    client = staff_with(make_user, "consumers.view_deadletter", permission)

    page = client.get("/admin/consumers/deadletter/")
    response = client.post(
        "/admin/consumers/deadletter/",
        {"action": action, "_selected_action": [dead_letter.pk, other.pk], "confirm": "yes"},
        follow=True,
    )

    assert f'value="{action}"'.encode() in page.content
    assert f"{message} 2 dead letters.".encode() in response.content
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {status}
    entries = LogEntry.objects.order_by("object_id")
    assert [e.object_id for e in entries] == sorted([str(dead_letter.pk), str(other.pk)])
    for entry in entries:
        assert entry.user_id == response.wsgi_request.user.pk
        assert entry.content_type.model_class() is DeadLetter
        assert entry.action_flag == CHANGE
        assert message in entry.get_change_message()
        assert entry.action_time is not None


def test_rebuilding_feeds_needs_its_permission_and_is_logged(make_user):
    ada, bob = make_user("ada"), make_user("bob")
    only_view = staff_with(make_user, "auth.view_user")
    allowed = staff_with(make_user, "auth.view_user", "feeds.rebuild_feeds")
    OutboxMessage.objects.all().delete()

    page = only_view.get("/admin/auth/user/")
    refused = only_view.post(
        "/admin/auth/user/", {"action": "rebuild_feeds", "_selected_action": [ada.pk]}, follow=True
    )
    assert page.status_code == 200
    assert b'value="rebuild_feeds"' not in page.content, "the action is offered"
    assert refused.status_code == 200
    assert b"Queued" not in refused.content, "the action ran"
    assert not OutboxMessage.objects.exists()
    assert not LogEntry.objects.exists()

    response = allowed.post(
        "/admin/auth/user/", {"action": "rebuild_feeds", "_selected_action": [ada.pk, bob.pk]}, follow=True
    )

    assert b"Queued the rebuild of 2 feeds" in response.content
    assert OutboxMessage.objects.count() == 1
    entries = LogEntry.objects.order_by("object_id")
    assert [e.object_id for e in entries] == sorted([str(ada.pk), str(bob.pk)])
    for entry in entries:
        assert entry.user_id == response.wsgi_request.user.pk
        assert entry.content_type.model_class() is User
        assert entry.action_flag == CHANGE
        assert "Queued a rebuild of the feed" in entry.get_change_message()
