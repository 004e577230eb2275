"""The admin's feed inspector: why a user does or does not see a post."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from consumers.models import AppliedOffset
from eventbus.models import OutboxMessage
from eventbus.producer import producer_flush
from feeds.models import FeedEntry, PulledAuthor
from feeds.selectors import EntrySource
from follows.models import Follow
from follows.services import block_create, mute_create
from posts.models import Post
from posts.services import post_create
from tests.helpers import drain

pytestmark = pytest.mark.django_db

INSPECT = "/admin/inspect/"


@pytest.fixture
def inspector(make_user) -> Client:
    """A staff user who may inspect feeds, and nothing else."""
    user = make_user("operator", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="inspect_feeds"))
    client = Client()
    client.force_login(user)
    return client


def sent(row: OutboxMessage, *, partition: int, offset: int) -> None:
    """Mark a row as its delivery report would: sent, with where the broker put it."""
    OutboxMessage.objects.filter(pk=row.pk).update(
        sent_at=timezone.now(), sent_partition=partition, sent_offset=offset
    )


def applied(settings, *, partition: int, next_offset: int) -> None:
    AppliedOffset.objects.update_or_create(
        consumer_group=settings.FANOUT_GROUP_ID,
        topic=settings.FEED_EVENTS_TOPIC,
        partition=partition,
        defaults={"next_offset": next_offset, "fetched_offset": next_offset},
    )


def test_the_inspector_needs_staff_and_its_permission(make_user):
    anonymous = Client().get(INSPECT)
    plain_staff = Client()
    plain_staff.force_login(make_user(is_staff=True))

    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    assert plain_staff.get(INSPECT).status_code == 403


def test_a_feed_is_shown_as_the_api_serves_it_with_each_entry_source(inspector, make_user, client_for):
    ada, bob, star, old = make_user("ada"), make_user("bob"), make_user("star"), make_user("old")
    history = Post.objects.create(author=old, content="from long ago")
    stored = Post.objects.create(author=ada, content="stored for bob")
    merged = Post.objects.create(author=star, content="a star's post")
    uncopied = Post.objects.create(author=old, content="older than the backfill copied")
    for followee in (ada, star, old):
        Follow.objects.create(follower=bob, followee=followee)
    # Fan-out stored Ada's post; Star is a pulled big account; the backfill of Old's
    # posts stopped above ``uncopied``; below the oldest stored entry history is pulled.
    FeedEntry.objects.create(user=bob, post=stored)
    newest = Post.objects.create(author=ada, content="newest, stored")
    FeedEntry.objects.create(user=bob, post=newest)
    PulledAuthor.objects.create(user=star)
    Follow.objects.filter(follower=bob, followee=old).update(pull_below=uncopied.pk + 1)
    api = client_for(bob).get(f"/feeds/{bob.pk}").json()

    page = inspector.get(INSPECT, {"user": str(bob.pk)})

    assert page.status_code == 200
    feed = page.context["feed"]
    assert [e.post_id for e in feed.entries] == [p["id"] for p in api["results"]]
    assert {e.post_id: e.source for e in feed.entries} == {
        newest.pk: EntrySource.STORED,
        uncopied.pk: EntrySource.UNCOPIED,
        merged.pk: EntrySource.PULLED_AUTHOR,
        stored.pk: EntrySource.STORED,
        history.pk: EntrySource.HISTORY,
    }
    assert feed.cached_first_page, "the API's read cached the first page"
    assert b"merged from a big account" in page.content
    assert b"pulled from history" in page.content
    assert b"Follows 3 accounts, 1 of them pulled big account." in page.content


def test_a_feed_is_read_page_by_page_as_far_as_the_inspector_goes(inspector, make_user, settings):
    settings.FEED_PAGE_SIZE = 2
    ada = make_user("ada")
    posts = [Post.objects.create(author=ada, content=f"post {n}") for n in range(7)]

    feed = inspector.get(INSPECT, {"user": "ADA"}).context["feed"]

    assert [(e.page, e.post_id) for e in feed.entries] == [
        (1, posts[6].pk),
        (1, posts[5].pk),
        (2, posts[4].pk),
        (2, posts[3].pk),
        (3, posts[2].pk),
        (3, posts[1].pk),
    ]
    assert feed.more


def test_a_post_whose_event_was_sent_and_applied(inspector, make_user, settings):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello")
    row = OutboxMessage.objects.order_by("pk").last()
    sent(row, partition=2, offset=41)
    applied(settings, partition=2, next_offset=42)
    FeedEntry.objects.bulk_create([FeedEntry(user=ada, post=post), FeedEntry(user=bob, post=post)])

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    assert page.status_code == 200
    [event] = page.context["post"].events
    assert (event.event_type, event.applied, event.group_next_offset) == ("post.created", True, 42)
    assert page.context["post"].author_entry
    reader = page.context["reader"]
    assert (reader.follow is not None, reader.stored, reader.reached) == (True, True, True)
    assert reader.verdict == f"bob sees post {post.pk}, on page 1, position 1 (stored entry)."
    assert b"2 / 41" in page.content
    assert b"yes (the group's next offset there is 42)" in page.content


def test_a_post_whose_event_is_sent_but_not_applied(inspector, make_user, settings):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    # Bob's feed holds an older post: above it, reads find only stored entries.
    FeedEntry.objects.create(user=bob, post=Post.objects.create(author=ada, content="older"))
    applied(settings, partition=0, next_offset=500)
    # The follow and the older post were applied long ago: their rows were pruned.
    OutboxMessage.objects.all().delete()
    post = Post.objects.create(author=ada, content="hello")
    sent(OutboxMessage.objects.get(), partition=0, offset=500)

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    [event] = page.context["post"].events
    assert (event.applied, event.group_next_offset) == (False, 500)
    reader = page.context["reader"]
    assert not reader.reached
    assert reader.verdict == f"bob does not see post {post.pk}."
    assert any("has not applied the post's event" in reason for reason in reader.reasons)


def test_a_post_whose_event_is_not_sent_yet(inspector, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    post = Post.objects.create(author=ada, content="hello")

    page = inspector.get(INSPECT, {"user": str(bob.pk), "post": str(post.pk)})

    [event] = page.context["post"].events
    assert event.message.sent_at is None
    assert event.applied is None
    reasons = page.context["reader"].reasons
    assert reasons[0] == "bob does not follow ada."
    assert "not sent yet" in reasons[1]
    assert b"unknown until sent" in page.content


def test_a_pruned_outbox_row_is_explained(inspector, make_user):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="old")
    OutboxMessage.objects.all().delete()

    page = inspector.get(INSPECT, {"post": str(post.pk)})

    assert page.context["post"].events == []
    assert b"No outbox row is kept for this post" in page.content
    assert b"OUTBOX_RETENTION_SECONDS" in page.content


def test_a_pulled_author_and_a_deleted_post(inspector, make_user):
    star, bob = make_user("star"), make_user("bob")
    PulledAuthor.objects.create(user=star)
    Follow.objects.create(follower=bob, followee=star)
    post = post_create(author=star, content="gone soon")
    post_id = post.pk
    post.delete()

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post_id)})

    inspected = page.context["post"]
    assert inspected.post is None
    assert inspected.author == star, "the author is read from the events"
    assert inspected.pulled_since is not None
    assert [e.event_type for e in inspected.events] == ["post.created", "post.deleted"]
    assert (
        page.context["reader"].verdict == f"Post {post_id} does not exist: it was deleted, or never created."
    )
    assert b"Pulled big account</th><td>yes" in page.content


def test_a_block_by_the_user_is_why_they_do_not_see_the_post(inspector, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello")
    block_create(user=bob, target_id=ada.pk)

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    reader = page.context["reader"]
    assert (reader.blocks is not None, reader.blocked_by is None, reader.mute is None) == (True, True, True)
    assert reader.verdict == f"bob does not see post {post.pk}."
    assert reader.reasons == [
        "bob blocks ada.",
        "bob does not follow ada: a block ends the follows between the two and refuses new ones.",
    ]
    assert b"bob blocks the author</th><td>yes, since" in page.content
    assert b"The author blocks bob</th><td>no" in page.content


def test_a_block_by_the_author_is_why_the_user_does_not_see_the_post(inspector, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello")
    block_create(user=ada, target_id=bob.pk)

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    reader = page.context["reader"]
    assert (reader.blocks is None, reader.blocked_by is not None) == (True, True)
    assert reader.verdict == f"bob does not see post {post.pk}."
    assert reader.reasons == [
        "ada blocks bob.",
        "bob does not follow ada: a block ends the follows between the two and refuses new ones.",
    ]
    assert b"bob blocks the author</th><td>no" in page.content
    assert b"The author blocks bob</th><td>yes, since" in page.content


def test_a_mute_is_why_the_user_does_not_see_the_post(inspector, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello")
    # Fan-out stored the post for Bob before he muted Ada.
    FeedEntry.objects.create(user=bob, post=post)
    mute_create(user=bob, target_id=ada.pk)

    page = inspector.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    reader = page.context["reader"]
    assert (reader.follow is not None, reader.mute is not None, reader.blocks, reader.blocked_by) == (
        True,
        True,
        None,
        None,
    )
    assert b"bob mutes the author</th><td>yes, since" in page.content
    assert reader.verdict == f"bob does not see post {post.pk}."
    assert reader.reasons == ["bob mutes ada."]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"user": "nobody"}, b"No user with the id or username"),
        ({"user": "999999"}, b"No user with the id or username"),
        ({"user": "9" * 30}, b"No user with the id or username"),
        ({"post": "x"}, b"Enter a whole number."),
        ({"post": "0"}, b"greater than or equal to 1"),
        ({"post": "9" * 30}, b"less than or equal to"),
    ],
)
def test_bad_input_is_a_400_with_the_reason(inspector, query, error):
    page = inspector.get(INSPECT, query)

    assert page.status_code == 400
    assert error in page.content


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_post_delivered_by_the_real_pipeline_is_sent_applied_and_seen(make_user, worker):
    # transaction=True: the outbox publishes on commit, and the worker commits on its own.
    operator = make_user("operator", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    post = post_create(author=ada, content="through the pipeline")
    assert producer_flush(10) == 0
    drain(worker, count=2)

    page = client.get(INSPECT, {"user": "bob", "post": str(post.pk)})

    [event] = page.context["post"].events
    assert event.message.sent_partition is not None
    assert event.applied is True
    assert page.context["reader"].verdict == f"bob sees post {post.pk}, on page 1, position 1 (stored entry)."


def test_an_outbox_row_that_is_not_an_event_is_skipped(inspector, make_user):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="hello")
    OutboxMessage.objects.create(
        topic="other", key=str(ada.pk), value=b"\xffnot json", headers=[["event_type", "post.created"]]
    )

    page = inspector.get(INSPECT, {"post": str(post.pk)})

    assert page.status_code == 200
    assert [e.event_type for e in page.context["post"].events] == ["post.created"]
