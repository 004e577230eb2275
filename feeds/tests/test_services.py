import threading

import pytest
from django.db import connection, transaction

from feeds.models import FeedEntry, PulledAuthor
from feeds.services import feed_backfill, feed_fanout_posts, feed_remove_posts, feed_unfollow, feeds_trim
from follows.models import Follow
from posts.models import Post
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db


def feed_pairs() -> set[tuple[int, int]]:
    return set(FeedEntry.objects.values_list("user_id", "post_id"))


def test_fanout_reaches_author_and_every_follower_but_nobody_else(make_user):
    author, fan1, fan2, stranger = make_user(), make_user(), make_user(), make_user()
    Follow.objects.create(follower=fan1, followee=author)
    Follow.objects.create(follower=fan2, followee=author)
    Follow.objects.create(follower=author, followee=stranger)
    post = Post.objects.create(author=author, content="hi")

    result = feed_fanout_posts(post_ids=[post.pk])

    assert feed_pairs() == {(author.pk, post.pk), (fan1.pk, post.pk), (fan2.pk, post.pk)}
    assert result.rows == 3
    assert result.changed == {author.pk, fan1.pk, fan2.pk}


def test_fanout_twice_changes_nothing(make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(3)]

    feed_fanout_posts(post_ids=[p.pk for p in posts])
    first = feed_pairs()
    feed_fanout_posts(post_ids=[p.pk for p in posts] * 2)

    assert feed_pairs() == first
    assert len(first) == 6


def test_fanout_of_many_authors_in_one_batch(make_user, django_assert_max_num_queries):
    authors = [make_user() for _ in range(5)]
    fans = [make_user() for _ in range(4)]
    for author in authors:
        for fan in fans[: authors.index(author)]:
            Follow.objects.create(follower=fan, followee=author)
    posts = [Post.objects.create(author=a, content="x") for a in authors]

    # Posts, follows and the insert: the query count does not grow with the batch.
    with django_assert_max_num_queries(6):
        feed_fanout_posts(post_ids=[p.pk for p in posts])

    expected = {(a.pk, p.pk) for a, p in zip(authors, posts, strict=True)}
    expected |= {(fan.pk, p.pk) for i, p in enumerate(posts) for fan in fans[:i]}
    assert feed_pairs() == expected


def test_fanout_skips_posts_that_no_longer_exist(make_user):
    author = make_user()
    kept = Post.objects.create(author=author, content="kept")
    gone = Post.objects.create(author=author, content="gone")
    gone_id = gone.pk
    gone.delete()

    result = feed_fanout_posts(post_ids=[kept.pk, gone_id])

    assert feed_pairs() == {(author.pk, kept.pk)}
    assert result.rows == 1


def test_removing_a_deleted_post_takes_it_out_of_every_feed(make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    kept, gone = (
        Post.objects.create(author=author, content="kept"),
        Post.objects.create(author=author, content="x"),
    )
    feed_fanout_posts(post_ids=[kept.pk, gone.pk])
    gone_id = gone.pk
    gone.delete()

    changes = feed_remove_posts(posts=[(gone_id, author.pk), (kept.pk, author.pk)])

    # Only the deleted post goes; a post that still exists is never removed.
    assert feed_pairs() == {(author.pk, kept.pk), (fan.pk, kept.pk)}
    assert changes.changed == {author.pk, fan.pk}


def test_unfollow_removes_only_that_authors_posts_from_that_feed(make_user):
    left, stays, fan, other_fan = make_user(), make_user(), make_user(), make_user()
    for follower, followee in [(fan, left), (fan, stays), (other_fan, left)]:
        Follow.objects.create(follower=follower, followee=followee)
    posts = [Post.objects.create(author=a, content="x") for a in (left, stays, left)]
    feed_fanout_posts(post_ids=[p.pk for p in posts])
    Follow.objects.filter(follower=fan, followee=left).delete()

    changes = feed_unfollow(follows=[(fan.pk, left.pk)])

    assert {p for u, p in feed_pairs() if u == fan.pk} == {posts[1].pk}
    assert {p for u, p in feed_pairs() if u == other_fan.pk} == {posts[0].pk, posts[2].pk}
    assert changes.changed == {fan.pk}


def test_a_late_unfollow_event_does_not_undo_a_follow_made_since(make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="x")
    feed_fanout_posts(post_ids=[post.pk])

    feed_unfollow(follows=[(fan.pk, author.pk)])  # the follow stands again

    assert (fan.pk, post.pk) in feed_pairs()


def test_backfill_copies_the_newest_posts_of_a_new_followee(make_user, settings):
    settings.FEED_BACKFILL_LIMIT = 3
    author, fan = make_user(), make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(5)]
    Follow.objects.create(follower=fan, followee=author)

    changes = feed_backfill(follows=[(fan.pk, author.pk)])

    assert feed_pairs() == {(fan.pk, p.pk) for p in posts[-3:]}
    assert changes.rows == 3
    assert changes.grown == {fan.pk: 3}
    # Again: nothing new.
    feed_backfill(follows=[(fan.pk, author.pk)])
    assert len(feed_pairs()) == 3


def test_backfill_marks_where_its_copy_of_a_followee_ends(make_user, settings):
    settings.FEED_BACKFILL_LIMIT = 3
    long, short, fan = make_user(), make_user(), make_user()
    long_posts = [Post.objects.create(author=long, content=str(i)).pk for i in range(5)]
    short_posts = [Post.objects.create(author=short, content=str(i)).pk for i in range(2)]
    Follow.objects.create(follower=fan, followee=long)
    Follow.objects.create(follower=fan, followee=short)

    feed_backfill(follows=[(fan.pk, long.pk), (fan.pk, short.pk)])

    assert feed_pairs() == {(fan.pk, p) for p in long_posts[-3:] + short_posts}
    floors = dict(Follow.objects.filter(follower=fan).values_list("followee_id", "pull_below"))
    assert floors == {long.pk: long_posts[-3], short.pk: None}


def test_backfill_copies_nothing_below_the_oldest_stored_entry(make_user, settings):
    # Below it, other followees' posts may have been trimmed; reads pull everything there.
    author, friend, fan = make_user(), make_user(), make_user()
    old = [Post.objects.create(author=author, content=str(i)).pk for i in range(3)]
    stored = Post.objects.create(author=friend, content="stored").pk
    new = Post.objects.create(author=author, content="new").pk
    FeedEntry.objects.create(user_id=fan.pk, post_id=stored)
    Follow.objects.create(follower=fan, followee=author)

    feed_backfill(follows=[(fan.pk, author.pk)])

    assert feed_pairs() == {(fan.pk, stored), (fan.pk, new)}
    assert not FeedEntry.objects.filter(post_id__in=old).exists()
    assert Follow.objects.get(follower=fan, followee=author).pull_below is None


def test_backfill_of_a_follow_that_has_ended_copies_nothing(make_user):
    author, fan = make_user(), make_user()
    Post.objects.create(author=author, content="x")

    changes = feed_backfill(follows=[(fan.pk, author.pk)])

    assert feed_pairs() == set()
    assert changes.rows == 0


def test_an_author_above_the_follower_limit_is_pulled_not_fanned_out(make_user, settings):
    settings.FANOUT_FOLLOWER_LIMIT = 2
    star, small = make_user(), make_user()
    fans = [make_user() for _ in range(3)]
    for fan in fans:
        Follow.objects.create(follower=fan, followee=star)
    Follow.objects.create(follower=fans[0], followee=small)
    star_post, small_post = (
        Post.objects.create(author=star, content="x"),
        Post.objects.create(author=small, content="y"),
    )

    changes = feed_fanout_posts(post_ids=[star_post.pk, small_post.pk])

    assert feed_pairs() == {(small.pk, small_post.pk), (fans[0].pk, small_post.pk)}
    assert set(PulledAuthor.objects.values_list("user_id", flat=True)) == {star.pk}
    # Every follower's cached page must be refreshed, though no row was written for them.
    assert changes.changed == {star.pk, small.pk, *(f.pk for f in fans)}
    assert changes.grown == {small.pk: 1, fans[0].pk: 1}


def test_trim_keeps_the_newest_entries_of_each_feed(make_user, settings):
    settings.FEED_MAX_ENTRIES = 4
    author, fan, quiet = make_user(), make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(7)]
    feed_fanout_posts(post_ids=[p.pk for p in posts])
    Post.objects.create(author=quiet, content="one")

    deleted = feeds_trim(user_ids=[author.pk, fan.pk, quiet.pk])

    newest = {p.pk for p in posts[-4:]}
    assert feed_pairs() == {(u, p) for u in (author.pk, fan.pk) for p in newest}
    assert deleted == 6
    assert feeds_trim(user_ids=[author.pk, fan.pk]) == 0


@pytest.mark.django_db(transaction=True)
def test_an_unfollow_waits_for_a_fanout_in_flight_and_then_removes_its_rows(make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="x")
    fanned_out, commit = threading.Event(), threading.Event()
    errors = []

    def in_thread(work):
        def run():
            try:
                work()
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def fanout_that_commits_late():
        with transaction.atomic():
            feed_fanout_posts(post_ids=[post.pk])  # read the follow, wrote the row
            fanned_out.set()
            assert commit.wait(30)

    fanout = in_thread(fanout_that_commits_late)
    assert fanned_out.wait(30)
    Follow.objects.filter(follower=fan, followee=author).delete()
    unfollow = in_thread(lambda: feed_unfollow(follows=[(fan.pk, author.pk)]))

    def unfollow_waits_on_the_author_lock():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return cursor.fetchone()[0] == 1

    wait_for(unfollow_waits_on_the_author_lock, timeout=30, what="the unfollow to wait for the lock")
    commit.set()
    fanout.join(30)
    unfollow.join(30)

    assert errors == []
    assert feed_pairs() == {(author.pk, post.pk)}
