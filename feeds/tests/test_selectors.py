import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from feeds.cursor import cursor_decode
from feeds.models import FeedEntry
from feeds.selectors import feed_page
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
    queryset = FeedEntry.objects.filter(user_id=reader.pk, post_id__lt=10**12).order_by("-post_id")[:20]
    sql, params = queryset.values("post_id").query.sql_with_params()

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "Index Only Scan Backward using feeds_feedentry_pkey" in plan
    assert "Sort" not in plan
