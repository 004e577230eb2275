"""rebuild_feeds: feeds recomputed from follows and posts, safely next to the worker."""

import contextlib
import io
import json
import threading
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.test import Client

from eventbus.models import OutboxMessage
from feeds import cache
from feeds.models import FeedEntry, PulledAuthor
from feeds.pages import feed_page
from feeds.rebuild import feeds_rebuild_batch
from feeds.services import feed_fanout_posts, feed_unfollow, feeds_rebuild
from follows.models import Follow
from follows.services import follow_create, follow_delete
from posts.models import Post
from posts.services import post_create, post_delete
from tests.helpers import drain, wait_for

User = get_user_model()


@contextlib.contextmanager
def override_batch(size: int):
    """Feeds per queued rebuild event."""
    with mock.patch("feeds.rebuild.BATCH_SIZE", size):
        yield


def stored(user) -> set[int]:
    return set(FeedEntry.objects.filter(user=user).values_list("post_id", flat=True))


def expected_feed(user, *, limit: int = 10**6) -> set[int]:
    """What a feed holds, computed independently: newest posts of the user and followees,
    except pulled authors."""
    authors = {user.pk, *Follow.objects.filter(follower=user).values_list("followee_id", flat=True)}
    authors -= set(PulledAuthor.objects.values_list("user_id", flat=True))
    return set(
        Post.objects.filter(author_id__in=authors).order_by("-pk").values_list("pk", flat=True)[:limit]
    )


@pytest.fixture
def broken(make_user):
    """Ada follows Bob and Cy; her stored feed lost Bob's newest post and holds a post by
    Dee, whom she never followed."""
    ada, bob, cy, dee = (make_user(name) for name in ("ada", "bob", "cy", "dee"))
    Follow.objects.create(follower=ada, followee=bob)
    Follow.objects.create(follower=ada, followee=cy)
    posts = [Post.objects.create(author=author, content="x") for author in (bob, cy, ada, dee, bob)]
    feed_fanout_posts(post_ids=[p.pk for p in posts])
    FeedEntry.objects.filter(user=ada, post=posts[-1]).delete()
    FeedEntry.objects.create(user=ada, post=posts[3])
    return ada, posts


@pytest.mark.django_db
def test_a_rebuild_adds_what_is_missing_and_removes_what_does_not_belong(broken):
    ada, posts = broken
    assert stored(ada) != expected_feed(ada)

    result = feeds_rebuild(user_ids=[ada.pk])

    assert stored(ada) == expected_feed(ada) == {posts[i].pk for i in (0, 1, 2, 4)}
    assert (result.added, result.removed, result.changed) == (1, 1, {ada.pk})


@pytest.mark.django_db
def test_a_second_rebuild_and_a_dry_run_change_nothing(broken):
    ada, _ = broken
    before = set(FeedEntry.objects.values_list("user_id", "post_id"))
    dry = feeds_rebuild(user_ids=[ada.pk], dry_run=True)
    assert (dry.added, dry.removed, dry.changed) == (1, 1, {ada.pk})
    assert set(FeedEntry.objects.values_list("user_id", "post_id")) == before

    feeds_rebuild(user_ids=[ada.pk])
    again = feeds_rebuild(user_ids=[ada.pk])
    assert (again.added, again.removed, again.changed) == (0, 0, set())


@pytest.mark.django_db
def test_a_rebuild_keeps_feeds_within_the_bound_and_leaves_pulled_authors_to_reads(make_user, settings):
    settings.FEED_MAX_ENTRIES = 3
    ada, bob, star = make_user(), make_user(), make_user()
    Follow.objects.create(follower=ada, followee=bob)
    Follow.objects.create(follower=ada, followee=star)
    PulledAuthor.objects.create(user=star)
    by_bob = [Post.objects.create(author=bob, content=str(i)).pk for i in range(5)]
    Post.objects.create(author=star, content="merged at read time")

    feeds_rebuild(user_ids=[ada.pk])

    assert stored(ada) == set(by_bob[-3:])


@pytest.mark.django_db
def test_rebuilt_feeds_lose_their_cached_pages(broken, settings):
    ada, posts = broken
    feed_page(user_id=ada.pk, limit=settings.FEED_PAGE_SIZE)
    assert cache.page_lookup(ada.pk)[0] is not None

    feeds_rebuild_batch([ada.pk])

    assert cache.page_lookup(ada.pk)[0] is None
    body = feed_page(user_id=ada.pk, limit=settings.FEED_PAGE_SIZE)
    assert f'"id":{posts[-1].pk},'.encode() in body


@pytest.mark.django_db(transaction=True)
def test_readers_see_the_old_feed_until_the_rebuild_commits(broken):
    ada, _ = broken
    old = stored(ada)
    rebuilt, release = threading.Event(), threading.Event()

    def rebuild() -> None:
        try:
            with transaction.atomic():
                feeds_rebuild(user_ids=[ada.pk])
                rebuilt.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=rebuild)
    thread.start()
    try:
        assert rebuilt.wait(10)
        assert stored(ada) == old, "no reader sees an empty or half-built feed"
    finally:
        release.set()
        thread.join(10)
    assert stored(ada) == expected_feed(ada) != old


@pytest.mark.django_db(transaction=True)
def test_an_unfollow_applied_during_a_rebuild_waits_for_it_and_wins(make_user):
    """The rebuild copies Bob's posts while the follow still stands; the unfollow commits
    and its event is applied before the rebuild commits. The entries must not survive."""
    ada, bob = make_user(), make_user()
    Follow.objects.create(follower=ada, followee=bob)
    post = Post.objects.create(author=bob, content="x")
    copied, release, applied = threading.Event(), threading.Event(), threading.Event()

    def rebuild() -> None:
        try:
            with transaction.atomic():
                feeds_rebuild(user_ids=[ada.pk])
                copied.set()
                release.wait(10)
        finally:
            connections.close_all()

    def unfollow_event() -> None:
        try:
            feed_unfollow(follows=[(ada.pk, bob.pk)])
            applied.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=rebuild), threading.Thread(target=unfollow_event)]
    threads[0].start()
    try:
        assert copied.wait(10)
        Follow.objects.filter(follower=ada, followee=bob).delete()
        threads[1].start()
        waiting = wait_for(
            lambda: applied.is_set() or advisory_waiters(), timeout=10, what="the unfollow to finish or wait"
        )
    finally:
        release.set()
        for thread in threads:
            if thread.ident is not None:  # Started.
                thread.join(10)
    assert waiting is not True, "the unfollow did not wait for the rebuild's lock"
    assert applied.is_set()
    assert post.pk not in stored(ada)


def advisory_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0]


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_rebuilds_running_next_to_the_worker_leave_every_feed_exact(make_user, worker):
    """Posts, follows, unfollows and deletes flow through the worker while rebuilds of every
    feed run in a loop; at the end each stored feed is exactly what it should be."""
    users = [make_user() for _ in range(8)]
    stop, errors, rounds = threading.Event(), [], [0]

    def rebuild_forever() -> None:
        try:
            while not stop.is_set():
                feeds_rebuild_batch([u.pk for u in users])
                rounds[0] += 1
        except Exception as exc:  # Reported by the assertion below.
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=rebuild_forever)
    thread.start()
    try:
        events = 0
        for step in range(6):
            for i, user in enumerate(users):
                other = users[(i + step + 1) % len(users)]
                _, created = follow_create(follower=user, followee_id=other.pk)
                events += created
                post = post_create(author=user, content=f"{step}-{i}")
                events += 1
                if (i + step) % 3 == 0:
                    follow_delete(follower=user, followee_id=other.pk)
                    events += 1
                if (i + step) % 4 == 0:
                    post_delete(post_id=post.pk, actor=user)
                    events += 1
            drain(worker, events, timeout=60)
            events = 0
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert rounds[0] > 0
    for user in users:
        assert stored(user) == expected_feed(user), user


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rebuild_feeds", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_the_command_rebuilds_every_feed_with_threads(broken):
    ada, _ = broken
    assert "dry run: 4 feeds checked" in run("--all", "--dry-run")
    assert "would change 1: 1 entries added, 1 removed" in run("--all", "--dry-run")
    assert stored(ada) != expected_feed(ada)

    out = run("--all", "--concurrency", "3", "--batch-size", "1")

    assert "4 feeds checked" in out
    assert "changed 1: 1 entries added, 1 removed" in out
    assert stored(ada) == expected_feed(ada)
    assert "changed 0" in run("--user", str(ada.pk))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either --user ID ... or --all"),
        (("--all", "--user", "1"), "give either --user ID ... or --all"),
        (("--user", "424242"), "no such users: 424242"),
        (("--user", str(2**64)), f"no such users: {2**64}"),
        (("--user", "x"), "'x' is not a whole number"),
        (("--all", "--concurrency", "0"), "must be at least 1, not 0"),
    ],
)
@pytest.mark.django_db
def test_the_command_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


@pytest.mark.django_db
def test_the_admin_queues_the_rebuild_of_the_selected_feeds_as_events(broken, make_user, settings):
    ada, _ = broken
    before = stored(ada)
    settings_batch = 2
    others = [make_user() for _ in range(4)]
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    OutboxMessage.objects.all().delete()

    with override_batch(settings_batch):
        response = client.post(
            "/admin/auth/user/",
            {"action": "rebuild_feeds", "_selected_action": [ada.pk, *(u.pk for u in others)]},
            follow=True,
        )

    assert response.status_code == 200
    assert "Queued the rebuild of 5 feeds in 3 events" in response.content.decode()
    assert stored(ada) == before, "nothing is rebuilt in the request"
    events = [json.loads(bytes(row.value)) for row in OutboxMessage.objects.order_by("pk")]
    assert [e["type"] for e in events] == ["feeds.rebuild"] * 3
    assert [e["payload"]["user_ids"] for e in events] == [
        [ada.pk, others[0].pk],
        [others[1].pk, others[2].pk],
        [others[3].pk],
    ]
    assert {row.topic for row in OutboxMessage.objects.all()} == {settings.FEED_EVENTS_TOPIC}


@pytest.mark.django_db
def test_one_user_queued_is_one_feed_in_one_event(broken, make_user):
    ada, _ = broken
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))

    response = client.post(
        "/admin/auth/user/", {"action": "rebuild_feeds", "_selected_action": [ada.pk]}, follow=True
    )

    assert "Queued the rebuild of 1 feed in 1 event:" in response.content.decode()


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_the_worker_applies_a_queued_rebuild_and_invalidates_the_pages(broken, make_user, worker):
    ada, _ = broken
    drain(worker, count=OutboxMessage.objects.count())
    stale_page = feed_page(user_id=ada.pk, limit=20)
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))

    client.post("/admin/auth/user/", {"action": "rebuild_feeds", "_selected_action": [ada.pk]})
    drain(worker, count=1)

    assert stored(ada) == expected_feed(ada)
    body, _ = cache.page_lookup(ada.pk)
    assert body is None, "the rebuilt feed's cached page was invalidated"
    assert feed_page(user_id=ada.pk, limit=20) != stale_page
