"""The fan-out worker's effects on the feeds: trimming what may exceed the bound, only that."""

from collections import Counter

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from feeds.effects import FeedEffects
from feeds.models import FeedEntry
from feeds.services import FeedChanges
from posts.models import Post

pytestmark = pytest.mark.django_db(transaction=True)


def grow(effects: FeedEffects, user, author, count: int) -> None:
    """``count`` new entries in ``user``'s feed, as a committed batch reports them."""
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(count)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=user.pk, post_id=p.pk) for p in posts])
    effects.committed(FeedChanges(rows=count, grown=Counter({user.pk: count})))


def trims(effects: FeedEffects) -> int:
    """How many trim statements one tick of the worker's loop ran."""
    with CaptureQueriesContext(connection) as queries:
        effects.tick()
    return sum("DELETE" in q["sql"] and FeedEntry._meta.db_table in q["sql"] for q in queries)


def test_a_feed_is_trimmed_again_only_once_it_may_exceed_the_bound(make_user, settings):
    settings.FEED_MAX_ENTRIES = 10
    reader, author = make_user(), make_user()
    effects = FeedEffects(trim_interval=0)

    grow(effects, reader, author, 3)
    assert trims(effects) == 1, "a feed of unknown size is trimmed when it grows"

    grow(effects, reader, author, 5)
    assert trims(effects) == 0, "3 + 5 entries fit in 10: nothing to trim"

    grow(effects, reader, author, 5)
    assert trims(effects) == 1
    assert FeedEntry.objects.filter(user_id=reader.pk).count() == 10

    grow(effects, reader, author, 1)
    assert trims(effects) == 1, "a full feed is trimmed whenever it grows"
    assert FeedEntry.objects.filter(user_id=reader.pk).count() == 10


def test_known_sizes_are_forgotten_after_a_while(make_user, settings, monkeypatch):
    settings.FEED_MAX_ENTRIES = 10
    reader, author = make_user(), make_user()
    effects = FeedEffects(trim_interval=0)
    grow(effects, reader, author, 3)
    trims(effects)

    # Another worker may have filled the feed meanwhile: what this one knows expires.
    monkeypatch.setattr(effects, "SIZES_KEPT_SECONDS", 0.0)
    grow(effects, reader, author, 1)
    assert trims(effects) == 1
