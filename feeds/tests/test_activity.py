"""Fan-out to readers: only active users' feeds get rows; a user who comes back reads a
complete feed at once, merged at read time until its rebuild; idle feeds are vacuumed.
Against the real PostgreSQL and Redis, with the window and the resolution in seconds."""

import datetime
import io

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from rest_framework.authtoken.models import Token

from consumers import handlers
from core.cache_keys import reader_seen_key
from eventbus.events import FEEDS_REBUILD, POST_CREATED, PostCreated, event_build, event_decode
from eventbus.models import OutboxMessage
from feeds.models import FeedEntry, PulledAuthor
from feeds.services import feed_backfill, feed_fanout_posts, feeds_rebuild, feeds_vacuum
from feeds.tests.test_fastpath import Server
from follows.activity import reader_feed_trusted, reader_seen
from follows.models import Follow, Reader
from posts.models import Post

pytestmark = pytest.mark.django_db

WINDOW = 30


@pytest.fixture(autouse=True)
def window(settings):
    settings.FEED_ACTIVE_SECONDS = WINDOW
    settings.FEED_ACTIVITY_RESOLUTION_SECONDS = 1


def away(user, *, seconds: float = WINDOW + 5) -> None:
    """The user was last seen ``seconds`` ago, past the window."""
    Reader.objects.filter(user=user).update(seen_at=timezone.now() - datetime.timedelta(seconds=seconds))


def entries(user) -> set[int]:
    return set(FeedEntry.objects.filter(user_id=user.pk).values_list("post_id", flat=True))


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def rebuilds_queued() -> list[list[int]]:
    return [
        event_decode(bytes(m.value)).payload.user_ids
        for m in OutboxMessage.objects.order_by("id")
        if dict(m.headers).get("event_type") == FEEDS_REBUILD
    ]


def walk(client, user) -> list[int]:
    """Every post id of the user's feed, paging with the cursor until its end."""
    ids, cursor = [], None
    for _ in range(100):
        query = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        page = client.get(f"/feeds/{user.pk}", query).json()
        ids += [post["id"] for post in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the feed did not end")


def test_an_idle_follower_gets_no_rows_and_the_skipped_rows_are_counted(make_user):
    author, reader, idle, never = make_user(), make_user(), make_user(), make_user(active=False)
    away(idle)
    for fan in (reader, idle, never):
        Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="hello")
    skipped = sample("feed_fanout_rows_skipped_total")
    event = event_build(event_type=POST_CREATED, payload=PostCreated(post_id=post.pk, author_id=author.pk))

    changes = handlers.HANDLERS[POST_CREATED]([event])

    assert entries(reader) == {post.pk}
    assert entries(author) == {post.pk}
    assert entries(idle) == entries(never) == set()
    assert changes.skipped == 2
    assert sample("feed_fanout_rows_skipped_total") == skipped + 2


def test_the_big_account_cut_off_counts_active_followers(make_user, settings):
    settings.FANOUT_FOLLOWER_LIMIT = 1
    author, reader = make_user(), make_user()
    idle = [make_user() for _ in range(3)]
    for fan in (reader, *idle):
        Follow.objects.create(follower=fan, followee=author)
        if fan is not reader:
            away(fan)
    post = Post.objects.create(author=author, content="hello")

    feed_fanout_posts(post_ids=[post.pk])

    assert entries(reader) == {post.pk}, "1 active follower is within the limit: fanned out"


def test_backfill_and_rebuild_write_nothing_for_an_idle_user(make_user):
    author, idle = make_user(), make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(3)]
    Follow.objects.create(follower=idle, followee=author)
    FeedEntry.objects.create(user_id=idle.pk, post_id=posts[0].pk)
    away(idle)

    feed_backfill(follows=[(idle.pk, author.pk)])
    assert entries(idle) == {posts[0].pk}, "the backfill copied nothing"
    result = feeds_rebuild(user_ids=[idle.pk])

    assert entries(idle) == set(), "a rebuild keeps no entries of an idle user"
    assert result.removed == 1


def test_every_api_request_keeps_a_reader_active_with_one_write_per_resolution(
    make_user, client_for, settings
):
    settings.FEED_ACTIVITY_RESOLUTION_SECONDS = 5
    reader = make_user()
    away(reader, seconds=10)  # seen, within the window, past the resolution
    client = client_for(reader)

    client.get(f"/feeds/{reader.pk}")
    first = Reader.objects.get(user=reader).seen_at
    client.get(f"/feeds/{reader.pk}")
    client.post("/posts", {"content": "hi"}, format="json")

    assert timezone.now() - first < datetime.timedelta(seconds=5)
    assert Reader.objects.get(user=reader).seen_at == first, "no second write within the resolution"


def test_a_reader_of_cached_pages_only_stays_active(make_user, settings):
    settings.FEED_ACTIVITY_RESOLUTION_SECONDS = 5
    reader = make_user()
    token = Token.objects.create(user=reader).key
    server = Server()
    assert not server.get(f"/feeds/{reader.pk}", token=token).fast  # fills the page cache
    assert server.get(f"/feeds/{reader.pk}", token=token).fast
    away(reader, seconds=10)  # within the window, past the resolution
    # The marker expires after the resolution: the next read goes the slow way once.
    get_redis_connection("default").delete(reader_seen_key(reader.pk))

    recorded = server.get(f"/feeds/{reader.pk}", token=token)
    hit = server.get(f"/feeds/{reader.pk}", token=token)

    assert not recorded.fast
    assert timezone.now() - Reader.objects.get(user=reader).seen_at < datetime.timedelta(seconds=5)
    assert hit.fast, "and the next read is a hit again"


def test_signing_in_on_the_web_records_the_user(make_user, client):
    user = make_user()  # password pw-Secret-123
    away(user)

    client.post("/signin", {"username": user.get_username(), "password": "pw-Secret-123"})

    assert timezone.now() - Reader.objects.get(user=user).seen_at < datetime.timedelta(seconds=5)


@pytest.fixture
def returning(make_user):
    """A reader who follows two authors and was away past the window: their stored feed
    holds one old post, and fan-out skipped what the authors wrote since."""
    ada, bob, reader = make_user("ada"), make_user("bob"), make_user("reader")
    Follow.objects.create(follower=reader, followee=ada)
    Follow.objects.create(follower=reader, followee=bob)
    old = Post.objects.create(author=ada, content="before")
    feed_fanout_posts(post_ids=[old.pk])
    away(reader)
    during = [Post.objects.create(author=(ada, bob)[i % 2], content=f"away {i}") for i in range(7)]
    feed_fanout_posts(post_ids=[p.pk for p in during])
    own = Post.objects.create(author=reader, content="mine")
    assert entries(reader) == {old.pk}
    return reader, [own.pk, *reversed([p.pk for p in during]), old.pk]


def test_a_returning_users_first_read_and_every_page_after_it_are_complete_and_in_order(
    returning, client_for
):
    reader, expected = returning
    client = client_for(reader)

    first = client.get(f"/feeds/{reader.pk}").json()

    assert [p["id"] for p in first["results"]] == expected
    assert walk(client, reader) == expected
    assert rebuilds_queued() == [[reader.pk]], "coming back queued the rebuild of their feed"
    assert not reader_feed_trusted(user_id=reader.pk)


def test_a_returning_users_first_page_through_the_fast_path_and_web_timeline_are_complete(
    returning, client, settings
):
    settings.FEED_ACTIVITY_RESOLUTION_SECONDS = 3600
    reader, expected = returning
    token = Token.objects.create(user=reader).key
    server = Server()

    first = server.get(f"/feeds/{reader.pk}", token=token)
    again = server.get(f"/feeds/{reader.pk}", token=token)
    client.force_login(reader)
    html = client.get("/").content.decode()

    assert [p["id"] for p in first.json()["results"]] == expected
    assert [p["id"] for p in again.json()["results"]] == expected
    contents = Post.objects.in_bulk(expected)
    positions = [html.index(f'<p class="content">{contents[post_id].content}</p>') for post_id in expected]
    assert positions == sorted(positions), "the web timeline shows every post, newest first"


def test_the_rebuild_fills_the_stored_feed_and_fan_out_reaches_the_user_again(returning, client_for):
    reader, expected = returning
    client = client_for(reader)
    client.get(f"/feeds/{reader.pk}")
    # A post while the rebuild is queued: fan-out writes it, the reader being active again.
    meanwhile = Post.objects.create(author=reader.following.first().followee, content="meanwhile")
    feed_fanout_posts(post_ids=[meanwhile.pk])

    feeds_rebuild(user_ids=rebuilds_queued()[0])
    later = Post.objects.create(author=reader.following.first().followee, content="later")
    feed_fanout_posts(post_ids=[later.pk])

    assert reader_feed_trusted(user_id=reader.pk)
    assert entries(reader) == {later.pk, meanwhile.pk, *expected}
    assert walk(client, reader) == sorted({later.pk, meanwhile.pk, *expected}, reverse=True)


def test_a_return_queues_one_rebuild_however_often_the_user_is_seen_before_it_runs(make_user):
    reader = make_user()
    away(reader)

    assert reader_seen(user_id=reader.pk) is True
    assert reader_seen(user_id=reader.pk) is False, "within the resolution: nothing written"
    away(reader, seconds=2)  # past the resolution, within the window, the rebuild not run
    assert reader_seen(user_id=reader.pk) is False

    assert rebuilds_queued() == [[reader.pk]]
    assert not reader_feed_trusted(user_id=reader.pk)


@pytest.mark.django_db(transaction=True)  # the return commits before the read goes on, as in production
def test_a_page_cached_before_a_user_went_away_is_not_served_when_they_come_back(make_user, settings):
    settings.FEED_ACTIVITY_RESOLUTION_SECONDS = 5
    author, reader = make_user(), make_user()
    Follow.objects.create(follower=reader, followee=author)
    token = Token.objects.create(user=reader).key
    server = Server()
    server.get(f"/feeds/{reader.pk}", token=token)  # cached while active
    away(reader)
    missed = Post.objects.create(author=author, content="while away")
    feed_fanout_posts(post_ids=[missed.pk])  # skipped: the cached page is not made stale
    get_redis_connection("default").delete(reader_seen_key(reader.pk))  # their marker expired

    back = server.get(f"/feeds/{reader.pk}", token=token)
    again = server.get(f"/feeds/{reader.pk}", token=token)

    assert entries(reader) == set(), "fan-out skipped the reader"
    assert [p["id"] for p in back.json()["results"]] == [missed.pk]
    assert [p["id"] for p in again.json()["results"]] == [missed.pk]


def test_the_big_account_cut_off_pulls_an_author_with_more_active_followers(make_user, settings):
    settings.FANOUT_FOLLOWER_LIMIT = 1
    author, fans = make_user(), [make_user(), make_user()]
    for fan in fans:
        Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="hello")

    feed_fanout_posts(post_ids=[post.pk])

    assert PulledAuthor.objects.filter(user=author).exists()
    assert entries(fans[0]) == entries(fans[1]) == set()


def test_vacuum_feeds_removes_the_idle_feeds_and_nothing_else(make_user):
    author, active, idle = make_user(), make_user(), make_user()
    for fan in (active, idle):
        Follow.objects.create(follower=fan, followee=author)
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(4)]
    feed_fanout_posts(post_ids=[p.pk for p in posts])
    away(idle)
    before = {user: entries(user) for user in (author, active)}
    out = io.StringIO()

    call_command("vacuum_feeds", "--batch-size", "1", stdout=out)

    assert entries(idle) == set()
    assert {user: entries(user) for user in (author, active)} == before
    assert out.getvalue().strip() == "Removed 4 entries from the feeds of 1 idle users."
    assert not Reader.objects.get(user=idle).feed_complete
    assert feeds_vacuum(users=10).users == 0, "a second run finds nothing"
