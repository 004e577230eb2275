import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.cursor import cursor_decode
from feeds.models import FeedEntry, PulledAuthor
from feeds.pages import feed_page
from feeds.selectors import NEWEST, _stored_ids, feed_page_posts
from feeds.services import feeds_trim
from follows.models import Follow
from posts.models import Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def feed_of(make_user):
    """A user whose feed holds ``n`` posts by several authors; returns (user, ids newest first)."""

    def make(n: int):
        reader = make_user()
        authors = [reader, make_user(), make_user()]
        posts = [Post.objects.create(author=authors[i % 3], content=f"post {i}") for i in range(n)]
        FeedEntry.objects.bulk_create([FeedEntry(user_id=reader.pk, post_id=p.pk) for p in posts])
        return reader, [p.pk for p in reversed(posts)]

    return make


def walk(user_id: int, limit: int) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = json.loads(feed_page(user_id=user_id, limit=limit, before_post_id=cursor))
        pages.append([post["id"] for post in page["results"]])
        if page["next_cursor"] is None:
            return pages
        cursor = cursor_decode(page["next_cursor"])


@pytest.mark.parametrize(("n", "limit"), [(0, 5), (1, 5), (5, 5), (23, 5), (23, 100), (7, 1)])
def test_paging_walks_the_whole_feed_newest_first_without_gaps_or_repeats(feed_of, n, limit):
    reader, newest_first = feed_of(n)

    pages = walk(reader.pk, limit)

    assert [post_id for page in pages for post_id in page] == newest_first
    assert all(len(page) == limit for page in pages[:-1])
    assert len(pages[-1]) <= limit


def test_page_shows_posts_as_the_api_does(make_user):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="hello")
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)

    page = json.loads(feed_page(user_id=ada.pk, limit=20))

    assert page["results"] == [
        {
            "id": post.pk,
            "author_id": ada.pk,
            "author": "ada",
            "content": "hello",
            "created_at": post.created_at.isoformat().replace("+00:00", "Z"),
        }
    ]


def test_unknown_user_raises(db):
    with pytest.raises(get_user_model().DoesNotExist):
        feed_page(user_id=987654, limit=20)


def test_newest_first_read_is_one_backward_scan_of_the_primary_key(feed_of):
    reader, _ = feed_of(30)
    with CaptureQueriesContext(connection) as queries:
        _stored_ids(reader.pk, before=NEWEST, count=21)
    [query] = queries.captured_queries

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN {query['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    # The primary key of the one partition that holds the reader's feed.
    scans = re.findall(r"Index Only Scan Backward using (feeds_feedentry_\d+_\d\d)_pkey", plan)
    assert len(scans) == 1, plan
    assert "Sort" not in plan


def post_by(author, n: int = 1) -> list[int]:
    return [Post.objects.create(author=author, content="x").pk for _ in range(n)]


def store(user, post_ids) -> None:
    FeedEntry.objects.bulk_create([FeedEntry(user_id=user.pk, post_id=p) for p in post_ids])


def test_posts_of_pulled_authors_are_merged_into_the_stored_feed(make_user):
    reader, star, friend, stranger = make_user(), make_user(), make_user(), make_user()
    Follow.objects.create(follower=reader, followee=star)
    Follow.objects.create(follower=reader, followee=friend)
    PulledAuthor.objects.create(user=star)
    expected = []
    for _ in range(12):  # interleaved: a star post, then a friend's post with its feed row
        expected += post_by(star)
        friend_post = post_by(friend)
        store(reader, friend_post)
        expected += friend_post
        post_by(stranger)

    pages = walk(reader.pk, limit=5)

    assert [post_id for page in pages for post_id in page] == sorted(expected, reverse=True)
    assert all(len(page) == 5 for page in pages[:-1])


def test_paging_continues_past_the_stored_entries_until_history_ends(make_user):
    reader, friend, other, stranger = make_user(), make_user(), make_user(), make_user()
    Follow.objects.create(follower=reader, followee=friend)
    Follow.objects.create(follower=reader, followee=other)
    history = []
    for author in [friend, other, reader, stranger] * 8:
        ids = post_by(author)
        if author != stranger:
            history += ids
    store(reader, sorted(history)[-6:])  # what is left after trimming to 6

    pages = walk(reader.pk, limit=4)

    assert [post_id for page in pages for post_id in page] == sorted(history, reverse=True)
    assert all(len(page) == 4 for page in pages[:-1])


def test_paging_is_stable_while_posts_arrive_and_feeds_are_trimmed(make_user, settings):
    reader, friend = make_user(), make_user()
    Follow.objects.create(follower=reader, followee=friend)
    before = post_by(friend, 15)
    store(reader, before)

    seen, cursor = [], None
    while True:
        page = json.loads(feed_page(user_id=reader.pk, limit=4, before_post_id=cursor))
        seen += [post["id"] for post in page["results"]]
        if page["next_cursor"] is None:
            break
        cursor = cursor_decode(page["next_cursor"])
        # Between pages: new posts land on top and the stored feed is trimmed.
        store(reader, post_by(friend, 3))
        settings.FEED_MAX_ENTRIES = 5
        feeds_trim(user_ids=[reader.pk])

    assert seen == sorted(before, reverse=True)


@pytest.fixture
def busy_and_quiet(make_user):
    """A reader following many accounts: most post often, one posted only long ago."""

    def make():
        reader, stranger, quiet = make_user(), make_user(), make_user()
        busy = [make_user() for _ in range(5)]
        for author in [quiet, *busy]:
            Follow.objects.create(follower=reader, followee=author)
        history = post_by(quiet) + post_by(reader)
        for _ in range(6):
            post_by(stranger, 3)
            for author in busy:
                history += post_by(author)
        return reader, sorted(history, reverse=True)

    return make


def lateral_scans(queries) -> list[str]:
    return [q["sql"] for q in queries if "LATERAL" in q["sql"]]


@pytest.mark.parametrize("limit", [1, 4, 7, 40])
def test_many_followees_are_pulled_in_order_from_the_newest_posts(busy_and_quiet, monkeypatch, limit):
    monkeypatch.setattr("feeds.selectors.PULL_SCAN_FOLLOWEES", 3)
    monkeypatch.setattr("feeds.selectors.PULL_SCAN_ROWS", 12)
    reader, history = busy_and_quiet()

    with CaptureQueriesContext(connection) as queries:
        pages = walk(reader.pk, limit=limit)

    assert [post_id for page in pages for post_id in page] == history
    assert all(len(page) == limit for page in pages[:-1])
    # The quiet followee's old post is found by the scan per followee, once the newest
    # posts no longer fill a page.
    assert any("follows_follow" in sql for sql in lateral_scans(queries))


def test_a_page_of_busy_followees_is_found_without_one_scan_per_followee(busy_and_quiet, monkeypatch):
    monkeypatch.setattr("feeds.selectors.PULL_SCAN_FOLLOWEES", 3)
    reader, history = busy_and_quiet()

    with CaptureQueriesContext(connection) as queries:
        page = json.loads(feed_page(user_id=reader.pk, limit=5))

    assert [post["id"] for post in page["results"]] == history[:5]
    # The only scan by author is of the reader's own posts.
    scans = lateral_scans(queries)
    assert scans
    assert all(f"'{{{reader.pk}}}'" in sql for sql in scans)


def test_with_own_posts_a_reader_sees_a_post_of_theirs_the_worker_has_not_applied(feed_of):
    reader, newest_first = feed_of(6)
    # Written after the stored entries; no worker has copied it into the feed.
    mine = Post.objects.create(author=reader, content="just now")

    posts, has_more = feed_page_posts(user_id=reader.pk, limit=3, with_own_posts=True)
    without, _ = feed_page_posts(user_id=reader.pk, limit=3)

    assert [p.pk for p in posts] == [mine.pk, *newest_first[:2]]
    assert has_more
    assert mine.pk not in [p.pk for p in without]


def test_with_own_posts_paging_still_yields_every_post_once(feed_of):
    reader, newest_first = feed_of(7)
    mine = [Post.objects.create(author=reader, content=f"unapplied {i}").pk for i in range(3)]

    seen, before = [], None
    while True:
        posts, has_more = feed_page_posts(
            user_id=reader.pk, limit=2, before_post_id=before, with_own_posts=True
        )
        seen += [p.pk for p in posts]
        if not has_more:
            break
        before = posts[-1].pk

    assert seen == [*reversed(mine), *newest_first]
