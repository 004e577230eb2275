import json

import pytest
from django.test import Client
from django.utils import timezone

from consumers.models import DeadLetter, OutboxMessage
from feeds.models import PulledAuthor
from feedsite.testing import topic_read
from follows.models import Follow
from posts.models import Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(make_user):
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def dead_letter(settings):
    return DeadLetter.objects.create(
        topic=settings.FEED_EVENTS_TOPIC,
        partition=0,
        offset=7,
        key=b"1",
        value=b"\xffnot json",
        headers=[],
        error_class="UndecodableEvent",
        error_message="not valid JSON",
        consumer_group=settings.FANOUT_GROUP_ID,
        failed_at=timezone.now(),
    )


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
    assert b"1 accounts" in user.content


def test_replay_action_republishes_and_marks_replayed(staff_client, dead_letter, settings):
    response = staff_client.post(
        "/admin/consumers/deadletter/",
        {"action": "replay", "_selected_action": [dead_letter.pk]},
        follow=True,
    )

    assert b"Replayed 1 dead letters." in response.content
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REPLAYED
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert message.value() == b"\xffnot json"


def test_discard_action(staff_client, dead_letter):
    staff_client.post(
        "/admin/consumers/deadletter/", {"action": "discard", "_selected_action": [dead_letter.pk]}
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
