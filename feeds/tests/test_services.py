import pytest

from feeds.models import FeedEntry
from feeds.services import feed_fanout_posts
from follows.models import Follow
from posts.models import Post

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
