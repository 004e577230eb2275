"""Feed behaviour through the real event path: API, outbox, broker, worker, cache."""

import pytest

from eventbus.models import OutboxMessage
from feeds.models import FeedEntry, PulledAuthor
from feeds.services import feeds_trim
from follows.models import Follow
from tests.helpers import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.broker]


@pytest.fixture
def settle(worker):
    """Run the worker until it has consumed every event the outbox holds."""
    consumed = 0

    def run() -> None:
        nonlocal consumed
        events = OutboxMessage.objects.count()
        drain(worker, events - consumed)
        consumed = events

    return run


@pytest.fixture
def people(make_user, client_for):
    """``people(n)``: n users with API clients."""

    def make(n: int) -> list[tuple]:
        users = [make_user() for _ in range(n)]
        return [(user, client_for(user)) for user in users]

    return make


def feed_ids(client, user, **query) -> list[int]:
    response = client.get(f"/feeds/{user.pk}", query)
    assert response.status_code == 200, response.content
    return [post["id"] for post in response.json()["results"]]


def walk(client, user, limit: int) -> list[int]:
    ids, cursor = [], None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/feeds/{user.pk}", query).json()
        ids += [post["id"] for post in page["results"]]
        if not (cursor := page["next_cursor"]):
            return ids


def create_post(client, content: str = "hello") -> int:
    response = client.post("/posts", {"content": content}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def follow(client, followee) -> None:
    assert client.post("/follow", {"followee_id": followee.pk}, format="json").status_code == 201


def rows_of(post_id: int) -> int:
    return FeedEntry.objects.filter(post_id=post_id).count()


def test_a_deleted_post_leaves_every_feed_and_every_cached_page(people, settle):
    (author, author_client), (fan, fan_client), (_, other_client) = people(3)
    follow(fan_client, author)
    kept, doomed = create_post(author_client, "kept"), create_post(author_client, "doomed")
    settle()
    assert feed_ids(fan_client, fan) == [doomed, kept]  # now cached
    assert feed_ids(author_client, author) == [doomed, kept]

    assert other_client.delete(f"/posts/{doomed}").status_code == 403
    assert author_client.delete(f"/posts/{doomed}").status_code == 204
    assert author_client.delete(f"/posts/{doomed}").status_code == 404
    assert author_client.get(f"/posts/{doomed}").status_code == 404
    settle()

    assert rows_of(doomed) == 0
    assert feed_ids(fan_client, fan) == [kept]
    assert feed_ids(author_client, author) == [kept]
    assert rows_of(kept) == 2


def test_a_delete_right_after_the_create_wins(people, settle):
    (author, author_client), (fan, fan_client) = people(2)
    follow(fan_client, author)
    settle()
    posts = [create_post(author_client, str(i)) for i in range(20)]
    for post_id in posts[::2]:
        assert author_client.delete(f"/posts/{post_id}").status_code == 204

    settle()  # both events of each post, in order, in the same partition

    assert FeedEntry.objects.filter(post_id__in=posts[::2]).count() == 0
    assert feed_ids(fan_client, fan) == sorted(posts[1::2], reverse=True)


def test_unfollow_takes_the_followees_posts_out_of_the_feed(people, settle):
    (left, left_client), (stays, stays_client), (fan, fan_client) = people(3)
    follow(fan_client, left)
    follow(fan_client, stays)
    gone, kept = create_post(left_client), create_post(stays_client)
    settle()
    assert feed_ids(fan_client, fan) == [kept, gone]

    assert fan_client.delete(f"/follow/{left.pk}").status_code == 204
    assert fan_client.delete(f"/follow/{left.pk}").status_code == 404
    assert fan_client.delete(f"/follow/{fan.pk}").status_code == 404
    settle()

    assert feed_ids(fan_client, fan) == [kept]
    assert not FeedEntry.objects.filter(user_id=fan.pk, post_id=gone).exists()
    assert not Follow.objects.filter(follower=fan, followee=left).exists()


def test_a_new_follow_backfills_the_followees_newest_posts(people, settle, settings):
    settings.FEED_BACKFILL_LIMIT = 5
    (author, author_client), (fan, fan_client) = people(2)
    posts = [create_post(author_client, str(i)) for i in range(8)]
    settle()
    assert feed_ids(fan_client, fan) == []  # cached, empty

    follow(fan_client, author)
    settle()

    assert set(FeedEntry.objects.filter(user_id=fan.pk).values_list("post_id", flat=True)) == set(posts[-5:])
    # Older posts than the backfill copied are read from the author's posts.
    assert walk(fan_client, fan, limit=3) == sorted(posts, reverse=True)


def test_a_big_accounts_posts_reach_every_follower_without_feed_rows(people, settle, settings):
    settings.FANOUT_FOLLOWER_LIMIT = 3
    (star, star_client), *fans = people(5)
    (friend, friend_client) = people(1)[0]
    for _, client in fans:
        follow(client, star)
    follow(fans[0][1], friend)
    friend_post = create_post(friend_client)
    settle()
    for user, client in fans:
        assert feed_ids(client, user) == ([friend_post] if user == fans[0][0] else [])  # cached

    star_posts = [create_post(star_client, str(i)) for i in range(3)]
    settle()

    assert sum(rows_of(p) for p in star_posts) == 0
    assert PulledAuthor.objects.filter(user=star).exists()
    # Every follower's cached first page was refreshed; the author sees their posts too.
    for user, client in [(star, star_client), *fans]:
        expected = sorted(star_posts + ([friend_post] if user == fans[0][0] else []), reverse=True)
        assert feed_ids(client, user) == expected
    # Deleting one of them refreshes the followers' pages too.
    assert star_client.delete(f"/posts/{star_posts[1]}").status_code == 204
    settle()
    assert feed_ids(fans[1][1], fans[1][0]) == [star_posts[2], star_posts[0]]


def test_the_worker_trims_feeds_and_history_continues_past_them(people, settle, settings):
    settings.FEED_MAX_ENTRIES = 5
    (author, author_client), (fan, fan_client) = people(2)
    follow(fan_client, author)
    posts = [create_post(author_client, str(i)) for i in range(13)]
    settle()

    assert FeedEntry.objects.filter(user_id=fan.pk).count() == 5
    assert walk(fan_client, fan, limit=4) == sorted(posts, reverse=True)
    assert walk(fan_client, fan, limit=20) == sorted(posts, reverse=True)


@pytest.mark.parametrize("trimmed", [False, True], ids=["untrimmed", "trimmed"])
def test_paging_reaches_every_post_of_a_new_followee_once_in_order(people, settle, settings, trimmed):
    settings.FEED_BACKFILL_LIMIT = 4
    settings.FEED_MAX_ENTRIES = 8 if trimmed else 800
    (reader, reader_client), (friend, friend_client), (newcomer, newcomer_client) = people(3)
    follow(reader_client, friend)
    posts = []
    for i in range(10):  # the newcomer's history interleaves with the friend's
        posts += [create_post(friend_client, f"friend {i}"), create_post(newcomer_client, f"newcomer {i}")]
    newer = [create_post(friend_client, f"newer {i}") for i in range(8)]
    posts += newer
    posts.append(create_post(reader_client, "own"))
    settle()
    if trimmed:
        # Only the friend's newest posts are stored; deletes leave room, so the backfill
        # below is not trimmed away again.
        assert FeedEntry.objects.filter(user_id=reader.pk).count() == 8
        for post_id in newer[:4]:
            assert friend_client.delete(f"/posts/{post_id}").status_code == 204
            posts.remove(post_id)
        settle()

    follow(reader_client, newcomer)
    settle()

    expected = sorted(posts, reverse=True)
    assert walk(reader_client, reader, limit=3) == expected
    assert walk(reader_client, reader, limit=20) == expected
    # Trimming later keeps every post reachable.
    settings.FEED_MAX_ENTRIES = 5
    feeds_trim(user_ids=[reader.pk])
    assert walk(reader_client, reader, limit=3) == expected


def test_a_block_and_a_mute_through_the_worker_and_an_unmute_bringing_every_post_back(people, settle):
    """Through the relay, the broker and the worker: reads hide at once, the worker removes
    the stored entries and writes none for later posts, and an unmute brings back every
    post of the muted account, those of the mute included, once, in order."""
    (reader, rc), (blocked, bc), (muted, mc) = people(3)
    follow(rc, blocked)
    follow(rc, muted)
    follow(bc, reader)
    settle()
    early = [create_post(bc, "blocked, early"), create_post(mc, "muted, early"), create_post(rc, "mine")]
    settle()
    assert feed_ids(rc, reader) == sorted(early, reverse=True)

    assert rc.post("/blocks", {"user_id": blocked.pk}, format="json").status_code == 201
    assert rc.post("/mutes", {"user_id": muted.pk}, format="json").status_code == 201
    assert feed_ids(rc, reader) == [early[2]]
    settle()

    assert set(FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True)) == {early[2]}
    assert not FeedEntry.objects.filter(user_id=blocked.pk, post_id=early[2]).exists()
    assert Follow.objects.filter(follower=reader, followee=muted).exists()
    during = [create_post(mc, f"muted, during {i}") for i in range(3)] + [create_post(bc, "blocked, later")]
    settle()
    assert not FeedEntry.objects.filter(user_id=reader.pk, post_id__in=during).exists()
    assert feed_ids(rc, reader) == [early[2]]

    assert rc.delete(f"/mutes/{muted.pk}").status_code == 204
    expected = sorted([early[1], early[2], *during[:3]], reverse=True)
    assert walk(rc, reader, 2) == expected
    settle()
    assert walk(rc, reader, 2) == expected
    assert feed_ids(rc, reader) == expected
    assert set(during[:3]) <= set(
        FeedEntry.objects.filter(user_id=reader.pk).values_list("post_id", flat=True)
    )
