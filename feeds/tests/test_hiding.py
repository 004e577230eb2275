"""Blocks and mutes on every path a post takes to a reader.

Each test makes a post reach the reader by one path (a stored entry, the cached first page,
a big account merged at read time, history below the stored entries, the part of a followee
the backfill did not copy, a feed merged for a returning reader, fan-out, backfill, rebuild,
the web timeline, the post by id), then hides its author, and reads again. ``block``: the
reader blocks the author; ``blocked``: the author blocks the reader; ``mute``: the reader
mutes the author. The block or mute is made through the API, and the worker's handlers are
applied only where a test says so: a read must hold from the commit on.
"""

import threading

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from consumers.handlers import HANDLERS
from eventbus.events import event_decode
from eventbus.models import OutboxMessage
from feeds import cache
from feeds.models import FeedEntry, PulledAuthor
from feeds.selectors import EntrySource, feed_entry_sources, feed_post_ids
from feeds.services import feed_backfill, feed_fanout_posts, feeds_rebuild
from follows.models import Block, Follow, Mute, Reader
from posts.models import Post
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db

KINDS = ["block", "blocked", "mute"]


@pytest.fixture
def hide(client_for, django_capture_on_commit_callbacks):
    """``hide(kind, reader, author)``: the block or mute, through the API, with what runs
    once it commits."""

    def make(kind: str, reader, author) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            if kind == "blocked":
                response = client_for(author).post("/blocks", {"user_id": reader.pk}, format="json")
            else:
                response = client_for(reader).post(f"/{kind}s", {"user_id": author.pk}, format="json")
        assert response.status_code == 201, response.content

    return make


class Outbox:
    """Applies the events the outbox holds to the feeds, as the worker would, in order."""

    def __init__(self) -> None:
        self.applied = 0

    def apply(self) -> None:
        for row in OutboxMessage.objects.filter(pk__gt=self.applied).order_by("pk"):
            event = event_decode(bytes(row.value))
            HANDLERS[event.type]([event])
            self.applied = row.pk


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


def follow_left_behind(kind: str, reader, author) -> None:
    """For a block: the reader's follow of the author as if it had outlived the block (made
    behind the API's back), so that a path joining follows must check the block itself."""
    if kind != "mute":
        Follow.objects.bulk_create([Follow(follower=reader, followee=author)], ignore_conflicts=True)


def read(client, user, **query) -> list[int]:
    response = client.get(f"/feeds/{user.pk}", query)
    assert response.status_code == 200, response.content
    return [post["id"] for post in response.json()["results"]]


def walk(client, user, limit: int = 2) -> list[int]:
    ids, cursor = [], None
    while True:
        page = client.get(
            f"/feeds/{user.pk}", {"limit": limit, **({"cursor": cursor} if cursor else {})}
        ).json()
        ids += [post["id"] for post in page["results"]]
        if not (cursor := page["next_cursor"]):
            return ids


def posted(author, content: str = "hello") -> Post:
    return Post.objects.create(author=author, content=content)


@pytest.fixture
def pair(make_user, client_for):
    """A reader following an author (and a friend, whose posts stay); the reader's client."""
    reader, author, friend = make_user(), make_user(), make_user()
    Follow.objects.create(follower=reader, followee=author)
    Follow.objects.create(follower=reader, followee=friend)
    return reader, author, friend, client_for(reader)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stored_entry_is_hidden_before_the_worker_removes_it(kind, pair, hide):
    reader, author, friend, client = pair
    post, kept = posted(author), posted(friend)
    feed_fanout_posts(post_ids=[post.pk, kept.pk])
    assert read(client, reader, limit=5) == [kept.pk, post.pk]

    hide(kind, reader, author)

    assert FeedEntry.objects.filter(user_id=reader.pk, post_id=post.pk).exists()
    assert read(client, reader, limit=5) == [kept.pk]
    assert walk(client, reader) == [kept.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_the_cached_first_page_is_dropped_when_the_block_or_mute_commits(kind, pair, hide):
    reader, author, friend, client = pair
    post, kept = posted(author), posted(friend)
    feed_fanout_posts(post_ids=[post.pk, kept.pk])
    assert read(client, reader) == [kept.pk, post.pk]
    assert cache.page_lookup(reader.pk)[0] is not None

    hide(kind, reader, author)

    assert read(client, reader) == [kept.pk]


@pytest.mark.parametrize("kind", ["block", "blocked"])
def test_a_block_drops_the_blocked_ones_cached_page_too(kind, pair, hide, client_for):
    reader, author, _, _ = pair
    Follow.objects.create(follower=author, followee=reader)
    mine = posted(reader)
    feed_fanout_posts(post_ids=[mine.pk])
    author_client = client_for(author)
    assert read(author_client, author) == [mine.pk]

    hide(kind, reader, author)

    assert read(author_client, author) == []


@pytest.mark.parametrize("kind", KINDS)
def test_posts_of_a_big_account_merged_at_read_time_are_hidden(kind, pair, hide):
    reader, author, friend, client = pair
    PulledAuthor.objects.create(user=author)
    post, kept = posted(author), posted(friend)
    feed_fanout_posts(post_ids=[post.pk, kept.pk])
    assert not FeedEntry.objects.filter(post_id=post.pk).exclude(user_id=author.pk).exists()
    assert read(client, reader) == [kept.pk, post.pk]

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)

    assert read(client, reader) == [kept.pk]
    assert walk(client, reader) == [kept.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_history_pulled_below_the_stored_entries_is_hidden(kind, pair, hide):
    reader, author, friend, client = pair
    old = posted(author, "old")
    newer = [posted(friend) for _ in range(3)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=reader.pk, post_id=p.pk) for p in newer])
    sources = feed_entry_sources(user_id=reader.pk, posts=[(old.pk, author.pk)])
    assert sources[old.pk] == EntrySource.HISTORY
    assert walk(client, reader) == [p.pk for p in reversed(newer)] + [old.pk]

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)

    assert walk(client, reader) == [p.pk for p in reversed(newer)]


@pytest.mark.parametrize("kind", KINDS)
def test_posts_the_backfill_did_not_copy_are_hidden(kind, pair, hide):
    reader, author, friend, client = pair
    first = posted(friend)
    uncopied = posted(author, "not copied")
    last = posted(friend)
    FeedEntry.objects.bulk_create([FeedEntry(user_id=reader.pk, post_id=p.pk) for p in (first, last)])
    Follow.objects.filter(follower=reader, followee=author).update(pull_below=last.pk)
    sources = feed_entry_sources(user_id=reader.pk, posts=[(uncopied.pk, author.pk)])
    assert sources[uncopied.pk] == EntrySource.UNCOPIED
    assert walk(client, reader) == [last.pk, uncopied.pk, first.pk]

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)
    Follow.objects.filter(follower=reader, followee=author).update(pull_below=last.pk)

    assert walk(client, reader) == [last.pk, first.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_the_feed_of_a_returning_reader_merged_at_read_time_is_hidden(kind, pair, hide):
    reader, author, friend, client = pair
    post, kept = posted(author), posted(friend)
    Reader.objects.filter(user=reader).update(feed_complete=False)
    assert read(client, reader) == [kept.pk, post.pk]

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)

    assert read(client, reader) == [kept.pk]
    assert walk(client, reader) == [kept.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_fan_out_after_the_commit_writes_no_row_also_for_a_post_already_on_its_way(kind, pair, hide):
    reader, author, _, client = pair
    on_its_way = posted(author, "event not applied yet")

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)
    later = posted(author, "after")
    feed_fanout_posts(post_ids=[on_its_way.pk, later.pk])

    assert not FeedEntry.objects.filter(user_id=reader.pk, post__author=author).exists()
    assert FeedEntry.objects.filter(user_id=author.pk, post_id=later.pk).exists()
    assert read(client, reader) == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_backfill_of_a_follow_copies_nothing_hidden(kind, make_user, client_for, hide):
    reader, author = make_user(), make_user()
    posts = [posted(author) for _ in range(3)]
    hide(kind, reader, author)
    if kind == "mute":
        response = client_for(reader).post("/follow", {"followee_id": author.pk}, format="json")
        assert response.status_code == 201
    else:
        # A follow.created event replayed after the block: the follow cannot be made anew.
        follow_left_behind(kind, reader, author)

    changes = feed_backfill(follows=[(reader.pk, author.pk)])

    assert changes.rows == 0
    assert not FeedEntry.objects.filter(user_id=reader.pk, post_id__in=[p.pk for p in posts]).exists()
    assert read(client_for(reader), reader) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_rebuild_stores_nothing_hidden(kind, pair, hide):
    reader, author, friend, client = pair
    posted(author)
    kept = posted(friend)
    hide(kind, reader, author)
    if kind != "mute":
        # As if a follow were left behind: the rebuild still leaves the pair apart.
        follow_left_behind(kind, reader, author)

    feeds_rebuild(user_ids=[reader.pk])

    assert set(FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True)) == {kept.pk}
    assert read(client, reader) == [kept.pk]


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_removes_the_stored_entries_and_reads_stay_hidden(kind, pair, hide, outbox, client_for):
    reader, author, friend, client = pair
    Follow.objects.create(follower=author, followee=reader)
    theirs, mine, kept = posted(author), posted(reader), posted(friend)
    feed_fanout_posts(post_ids=[theirs.pk, mine.pk, kept.pk])
    outbox.applied = OutboxMessage.objects.order_by("-pk").values_list("pk", flat=True).first()

    hide(kind, reader, author)
    outbox.apply()

    stored = set(FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True))
    assert stored == {mine.pk, kept.pk}
    assert read(client, reader) == [kept.pk, mine.pk]
    author_feed = set(FeedEntry.objects.filter(user_id=author.pk).values_list("post_id", flat=True))
    # A block separates both ways; a mute changes only the muter's feed.
    assert author_feed == ({theirs.pk} if kind != "mute" else {theirs.pk, mine.pk})


@pytest.mark.parametrize("kind", KINDS)
def test_the_web_timeline_hides_them(kind, pair, hide):
    reader, author, friend, _ = pair
    post = posted(author, "words of the hidden author")
    kept = posted(friend, "words of a friend")
    feed_fanout_posts(post_ids=[post.pk, kept.pk])
    browser = Client()
    browser.force_login(reader)
    assert post.content in browser.get("/").content.decode()

    hide(kind, reader, author)

    page = browser.get("/").content.decode()
    assert post.content not in page
    assert kept.content in page


@pytest.mark.parametrize("kind", KINDS)
def test_a_post_by_id(kind, pair, hide, client_for):
    reader, author, _, client = pair
    theirs, mine = posted(author), posted(reader)
    hide(kind, reader, author)

    if kind == "mute":
        # A mute keeps the author's posts out of the home feed, nothing more.
        assert client.get(f"/posts/{theirs.pk}").status_code == 200
        return
    # A block separates both ways: neither reads the other's posts; a 404, as for no post.
    for who, post in [(reader, theirs), (author, mine)]:
        response = client_for(who).get(f"/posts/{post.pk}")
        assert response.status_code == 404
        assert response.json() == {"detail": "No post with this id."}
    assert client_for(author).get(f"/posts/{theirs.pk}").status_code == 200


def test_unmuting_brings_back_every_post_in_order_once_before_and_after_the_worker(
    pair, hide, outbox, django_capture_on_commit_callbacks
):
    reader, author, friend, client = pair
    before = posted(author, "before the mute")
    feed_fanout_posts(post_ids=[before.pk])
    hide("mute", reader, author)
    outbox.apply()
    during = []
    for i in range(3):
        during.append(posted(author, f"during {i}"))
        feed_fanout_posts(post_ids=[during[-1].pk])
        feed_fanout_posts(post_ids=[posted(friend).pk])
    assert not FeedEntry.objects.filter(user_id=reader.pk, post__author=author).exists()
    friends = list(Post.objects.filter(author=friend).order_by("-pk").values_list("pk", flat=True))
    expected = sorted([before.pk, *(p.pk for p in during), *friends], reverse=True)
    read(client, reader)

    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/mutes/{author.pk}").status_code == 204

    assert read(client, reader) == expected
    assert walk(client, reader) == expected
    outbox.apply()
    # The worker copied back what the mute kept out (what lies below the oldest stored
    # entry is read from history).
    stored = set(FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True))
    assert {p.pk for p in during} <= stored
    assert read(client, reader) == expected
    assert walk(client, reader) == expected


def test_unblocking_ends_the_block_and_nothing_more(pair, hide, outbox):
    reader, author, _, client = pair
    post = posted(author)
    feed_fanout_posts(post_ids=[post.pk])
    hide("block", reader, author)
    outbox.apply()

    assert client.delete(f"/blocks/{author.pk}").status_code == 204
    outbox.apply()

    assert not Follow.objects.filter(follower=reader, followee=author).exists()
    assert read(client, reader) == []
    later = posted(author)
    feed_fanout_posts(post_ids=[later.pk])
    assert read(client, reader) == []


@pytest.mark.django_db(transaction=True)
def test_posts_written_while_the_block_commits_never_show_afterwards(make_user, client_for, outbox):
    """The author posts, and the worker fans out, in a loop while the reader blocks them:
    from the block's answer on, no read shows a post of the author, and once the worker has
    applied every event no entry of theirs is stored in the reader's feed."""
    reader, author = make_user(), make_user()
    Follow.objects.create(follower=reader, followee=author)
    client = client_for(reader)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                post = posted(author, "racing")
                feed_fanout_posts(post_ids=[post.pk])
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_for(
            lambda: FeedEntry.objects.filter(user_id=reader.pk).count() >= 3,
            timeout=10,
            what="posts fanned out",
        )
        response = client.post("/blocks", {"user_id": author.pk}, format="json")
        assert response.status_code == 201
        for _ in range(20):
            assert read(client, reader) == []
            assert read(client, reader, limit=50) == []
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert errors == []
    assert Post.objects.filter(author=author).count() >= 3
    outbox.apply()
    assert not FeedEntry.objects.filter(user_id=reader.pk).exists()
    assert read(client, reader) == []


def _relation_scans(node: dict) -> list[dict]:
    found = [node] if node.get("Relation Name") in (Block._meta.db_table, Mute._meta.db_table) else []
    for child in node.get("Plans", []):
        found += _relation_scans(child)
    return found


def test_a_read_probes_blocks_and_mutes_per_post_or_followee_however_many_the_reader_has(make_user):
    """The bound on a read's cost: every scan of the blocks and mutes a read makes returns at
    most one row per loop, a probe of a pair, never the reader's thousands (a hash of them
    would grow with their number). Checked on the plans, as PostgreSQL runs them, of a
    first page and of a page pulled from history, for a reader at 3,000 of each."""
    reader = make_user()
    followees = [make_user() for _ in range(30)]
    Follow.objects.bulk_create([Follow(follower=reader, followee=f) for f in followees])
    posts = Post.objects.bulk_create([Post(author=followees[i % 30], content="x") for i in range(600)])
    FeedEntry.objects.bulk_create([FeedEntry(user_id=reader.pk, post_id=p.pk) for p in posts[-100:]])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO auth_user (password, username, is_superuser, first_name, last_name, email,"
            " is_staff, is_active, date_joined) SELECT '!', 'hidden' || g, false, '', '', '', false, true,"
            " now() FROM generate_series(1, 6000) AS g RETURNING id"
        )
        others = [user_id for (user_id,) in cursor.fetchall()]
        for model, targets in [(Block, others[:3000]), (Mute, others[3000:])]:
            cursor.execute(
                f"INSERT INTO {model._meta.db_table} (user_id, target_id, created_at)"
                " SELECT %s, t, now() FROM unnest(%s::bigint[]) AS t",
                [reader.pk, targets],
            )
        cursor.execute("ANALYZE")
    with CaptureQueriesContext(connection) as queries:
        feed_post_ids(user_id=reader.pk, count=21)
        feed_post_ids(user_id=reader.pk, count=21, before_post_id=posts[-100].pk)
    checked = 0
    for query in queries.captured_queries:
        if Block._meta.db_table not in query["sql"]:
            continue
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query['sql']}")
            [(plan,)] = cursor.fetchone()
        scans = _relation_scans(plan["Plan"])
        assert scans, query["sql"]
        for scan in scans:
            assert scan["Actual Rows"] <= 1, (scan["Node Type"], scan["Actual Rows"], query["sql"])
        checked += 1
    # The stored entries, the big accounts, the uncopied posts and the history.
    assert checked >= 4


def test_the_cache_is_held_from_inside_the_transaction_until_a_fresh_generation_replaces_it(
    pair, django_capture_on_commit_callbacks
):
    """No page rendered before the commit is served after it: inside the block's
    transaction the users' cache is held (nothing stored, nothing served), and the commit
    gives it a fresh generation."""
    from django.db import transaction

    from follows.services import block_create

    reader, author, friend, client = pair
    feed_fanout_posts(post_ids=[posted(author).pk, posted(friend).pk])
    read(client, reader)
    assert cache.page_lookup(reader.pk)[0] is not None
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        block_create(user=reader, target_id=author.pk)
        for user in (reader, author):
            assert cache.page_lookup(user.pk) == (None, b"")
            cache.page_store(user.pk, generation=cache.HOLD, body=b"rendered before the commit")
            assert cache.page_lookup(user.pk) == (None, b"")
    body, generation = cache.page_lookup(reader.pk)
    assert body is None
    assert generation not in (b"", cache.HOLD)


def test_a_refused_invalidation_after_the_commit_leaves_the_cache_held(pair, hide, monkeypatch):
    from redis.exceptions import RedisError

    reader, author, friend, client = pair
    kept = posted(friend)
    feed_fanout_posts(post_ids=[posted(author).pk, kept.pk])
    read(client, reader)

    def refused(user_ids):
        raise RedisError("refused")

    monkeypatch.setattr(cache, "pages_invalidate", refused)
    hide("mute", reader, author)

    assert cache.page_lookup(reader.pk) == (None, b"")
    assert read(client, reader) == [kept.pk]
    assert cache.page_lookup(reader.pk) == (None, b"")


@pytest.mark.parametrize("kind", KINDS)
def test_history_of_a_reader_following_many_is_hidden_too(kind, make_user, hide, client_for, settings):
    """Past PULL_SCAN_FOLLOWEES followees, history is found by scanning the newest posts
    and probing the reader's follows for each author: that scan checks blocks and mutes too."""
    from feeds.selectors import PULL_SCAN_FOLLOWEES

    reader, author = make_user(), make_user()
    others = [make_user() for _ in range(PULL_SCAN_FOLLOWEES)]
    Follow.objects.bulk_create([Follow(follower=reader, followee=u) for u in [author, *others]])
    posts = Post.objects.bulk_create(
        [Post(author=author if i % 3 == 0 else others[i % len(others)], content="x") for i in range(60)]
    )
    hidden = {p.pk for p in posts if p.author_id == author.pk}
    client = client_for(reader)
    assert hidden <= set(walk(client, reader, limit=20))

    hide(kind, reader, author)
    follow_left_behind(kind, reader, author)

    assert walk(client, reader, limit=20) == sorted({p.pk for p in posts} - hidden, reverse=True)


def test_a_rebuild_ends_the_pull_an_unmute_left_for_an_idle_reader(
    pair, hide, outbox, django_capture_on_commit_callbacks
):
    """An unmute makes reads pull the account's posts until the worker copies them back;
    for a reader who is not active the copy never comes, so the rebuild on their return
    ends the pull, or every read would scan that account's posts for good."""
    from django.utils import timezone

    reader, author, friend, client = pair
    posts = [posted(author), posted(friend), posted(author)]
    hide("mute", reader, author)
    outbox.apply()
    Reader.objects.filter(user=reader).update(seen_at=timezone.now() - timezone.timedelta(days=400))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(f"/mutes/{author.pk}").status_code == 204
    outbox.apply()
    follow = Follow.objects.get(follower=reader, followee=author)
    assert follow.pull_below is not None

    Reader.objects.filter(user=reader).update(seen_at=timezone.now())
    feeds_rebuild(user_ids=[reader.pk])

    follow.refresh_from_db()
    assert follow.pull_below is None
    assert set(FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True)) == {
        p.pk for p in posts
    }
    assert walk(client, reader) == sorted((p.pk for p in posts), reverse=True)
