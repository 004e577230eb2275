"""Feed reads: stored entries, merged with what is not stored.

A feed is every post of the accounts a user follows and of the user, newest first. Three
sources make it up:

- stored entries, written by fan-out on write and trimmed to FEED_MAX_ENTRIES;
- posts of followed *pulled* authors (too many followers to fan out), merged at read time;
- posts of a followee older than what the backfill copied on follow (the follow's
  ``pull_below``), pulled from the posts index;
- below the oldest stored entry, the posts of every followed author, pulled from the
  posts index, so that history does not end where the stored entries do.

Every source leaves out the posts of accounts the user blocks, is blocked by or mutes
(``follows.selectors.feed_shows_sql``, index probes per post or per followee), from the
moment the block or mute commits: the worker removes their stored entries later.

While a user's stored feed is not trusted (they came back after FEED_ACTIVE_SECONDS away,
and its rebuild has not committed yet; ``follows.activity``), the stored entries are left
out and the last source covers the whole feed.

Each page is the newest ``limit`` posts older than the cursor across these sources, so
paging with the last id as cursor yields every post once, in order, while new posts
arrive above it.
"""

import enum
from collections.abc import Sequence

from django.contrib.auth import get_user_model
from django.db import connection

from feeds.models import FeedEntry, PulledAuthor
from follows.activity import reader_feed_trusted
from follows.models import Follow
from follows.selectors import feed_shows_sql
from posts.models import Post

User = get_user_model()

# Above every post id: bigint's largest value.
NEWEST = 2**63 - 1

# Posts not hidden from their reader: a stored entry's (f.user_id, p.author_id), a scanned
# post's (the reader as a parameter), a followee's (f.follower_id, f.followee_id). Stored
# entries leave the planner free: walking the feed's key backwards to its LIMIT it probes
# per entry anyway, and the fence's estimate would make it hash the posts table instead.
_SHOWN_ENTRY = feed_shows_sql("f.user_id", "p.author_id")
_SHOWN_SCANNED = feed_shows_sql("%(user)s", "p.author_id", per_row=True)
_SHOWN_FOLLOWEE = feed_shows_sql("f.follower_id", "f.followee_id", per_row=True)


def _stored_ids(user_id: int, *, before: int, count: int) -> list[int]:
    """The newest stored entries of a feed whose posts still exist (deletes are eventual)
    and are not hidden (the worker removes hidden ones after the block or mute commits)."""
    with connection.cursor() as cursor:
        # A backward scan of the (user_id, post_id) primary key, stopping at ``count``.
        cursor.execute(
            f"SELECT f.post_id FROM {FeedEntry._meta.db_table} AS f "
            f"JOIN {Post._meta.db_table} AS p ON p.id = f.post_id "
            f"WHERE f.user_id = %s AND f.post_id < %s AND {_SHOWN_ENTRY} "
            "ORDER BY f.post_id DESC LIMIT %s",
            [user_id, before, count],
        )
        return [post_id for (post_id,) in cursor.fetchall()]


def _newest_ids_by(author_ids: list[int], *, before: int, count: int) -> list[int]:
    """The newest ``count`` post ids of these authors below ``before``: one short index
    scan per author (post_author_newest), merged."""
    if not author_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.id FROM unnest(%s::bigint[]) AS a (id) CROSS JOIN LATERAL ("
            f"  SELECT id FROM {Post._meta.db_table} WHERE author_id = a.id AND id < %s"
            "   ORDER BY id DESC LIMIT %s"
            ") AS p ORDER BY p.id DESC LIMIT %s",
            [author_ids, before, count, count],
        )
        return [post_id for (post_id,) in cursor.fetchall()]


# A user following more accounts than this has their history pulled by a scan of the
# newest posts first (see _followed_newest_ids).
PULL_SCAN_FOLLOWEES = 100
# Posts that scan reads at most before it gives up and scans per followee.
PULL_SCAN_ROWS = 10_000


def _followed_newest_ids(user_id: int, *, before: int, count: int) -> list[int]:
    """The newest ``count`` post ids below ``before`` of the user and the accounts they follow.

    One index scan per followee costs in proportion to the followees (20,000 took up to
    0.9 s; docs/ARCHITECTURE.md, Bounded storage, endless history). So with more than
    PULL_SCAN_FOLLOWEES, this first walks the newest PULL_SCAN_ROWS posts below ``before``
    by id, probing the follows index for each post's author, and stops at ``count`` hits.
    When the followees post often enough to fill the page there, the usual case with many
    followees, the cost does not depend on their number. Followees too quiet for that fall
    back to the scan per followee, which FOLLOW_LIMIT bounds.
    """
    ids = _newest_ids_by([user_id], before=before, count=count)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT FROM {Follow._meta.db_table}"
            " WHERE follower_id = %s LIMIT %s) AS f",
            [user_id, PULL_SCAN_FOLLOWEES + 1],
        )
        (followees,) = cursor.fetchone()
        if followees > PULL_SCAN_FOLLOWEES:
            cursor.execute(
                f"SELECT p.id FROM (SELECT id, author_id FROM {Post._meta.db_table}"
                "  WHERE id < %(before)s ORDER BY id DESC LIMIT %(rows)s"
                f") AS p WHERE EXISTS (SELECT 1 FROM {Follow._meta.db_table} AS f"
                "  WHERE f.follower_id = %(user)s AND f.followee_id = p.author_id"
                f") AND {_SHOWN_SCANNED} ORDER BY p.id DESC LIMIT %(count)s",
                {"before": before, "rows": PULL_SCAN_ROWS, "user": user_id, "count": count},
            )
            scanned = [post_id for (post_id,) in cursor.fetchall()]
            if len(scanned) == count:
                return sorted({*ids, *scanned}, reverse=True)[:count]
        cursor.execute(
            f"SELECT p.id FROM {Follow._meta.db_table} AS f CROSS JOIN LATERAL ("
            f"  SELECT id FROM {Post._meta.db_table} WHERE author_id = f.followee_id AND id < %(before)s"
            "   ORDER BY id DESC LIMIT %(count)s"
            f") AS p WHERE f.follower_id = %(user)s AND {_SHOWN_FOLLOWEE}"
            " ORDER BY p.id DESC LIMIT %(count)s",
            {"before": before, "user": user_id, "count": count},
        )
        return sorted({*ids, *(post_id for (post_id,) in cursor.fetchall())}, reverse=True)[:count]


def _uncopied_ids(user_id: int, *, before: int, bottom: int, count: int) -> list[int]:
    """The newest ``count`` post ids in [bottom, before) of followees whose older posts the
    backfill did not copy (below the follow's ``pull_below``): one short index scan per
    such followee whose gap reaches above ``bottom`` (follow_pull_below, post_author_newest)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id FROM {Follow._meta.db_table} AS f CROSS JOIN LATERAL ("
            f"  SELECT id FROM {Post._meta.db_table} WHERE author_id = f.followee_id"
            "   AND id < LEAST(f.pull_below, %(before)s) AND id >= %(bottom)s"
            "   ORDER BY id DESC LIMIT %(count)s"
            ") AS p WHERE f.follower_id = %(user)s AND f.pull_below > %(bottom)s"
            f" AND {_SHOWN_FOLLOWEE} ORDER BY p.id DESC LIMIT %(count)s",
            {"user": user_id, "before": before, "bottom": bottom, "count": count},
        )
        return [post_id for (post_id,) in cursor.fetchall()]


def _pulled_authors_of(user_id: int) -> list[int]:
    """The pulled authors among the user and the accounts they follow and do not hide."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pa.user_id FROM {PulledAuthor._meta.db_table} AS pa WHERE pa.user_id = %(user)s"
            f" UNION SELECT pa.user_id FROM {Follow._meta.db_table} AS f"
            f" JOIN {PulledAuthor._meta.db_table} AS pa ON pa.user_id = f.followee_id"
            f" WHERE f.follower_id = %(user)s AND {_SHOWN_FOLLOWEE}",
            {"user": user_id},
        )
        return [author_id for (author_id,) in cursor.fetchall()]


def feed_post_ids(
    *,
    user_id: int,
    count: int,
    before_post_id: int | None = None,
    with_own_posts: bool = False,
    stored: bool = True,
) -> list[int]:
    """The ids of the newest ``count`` posts of a user's feed below ``before_post_id``.

    With ``with_own_posts``, the user's own posts are also read from the posts index (one
    short scan of post_author_newest), so a post they just wrote is there before the
    worker has copied it into their feed: the web timeline shows it at once. Without
    ``stored``, the stored entries are not used: the whole feed is merged from the posts
    index, as for a user who comes back (``reader_feed_trusted``).
    """
    before = before_post_id or NEWEST
    stored = _stored_ids(user_id, before=before, count=count) if stored else []
    merged = _pulled_authors_of(user_id)
    if with_own_posts and user_id not in merged:
        merged.append(user_id)
    ids = set(stored) | set(_newest_ids_by(merged, before=before, count=count))
    if stored:
        # The page ends at or above stored[-1] when the stored entries fill it.
        ids |= set(_uncopied_ids(user_id, before=before, bottom=stored[-1], count=count))
    if len(stored) < count:
        # The stored entries end here: the rest of the history is pulled.
        floor = stored[-1] if stored else before
        ids |= set(_followed_newest_ids(user_id, before=floor, count=count))
    return sorted(ids, reverse=True)[:count]


def feed_posts(
    *,
    user_id: int,
    limit: int,
    before_post_id: int | None = None,
    with_own_posts: bool = False,
    stored: bool | None = None,
) -> list[Post]:
    """Up to ``limit`` posts of a user's feed, newest first, older than ``before_post_id``:
    from the stored entries and what is merged with them while the user's stored feed is
    trusted (``stored``, looked up when None), otherwise all merged at read time."""
    ids = feed_post_ids(
        user_id=user_id,
        count=limit,
        before_post_id=before_post_id,
        with_own_posts=with_own_posts,
        stored=reader_feed_trusted(user_id=user_id) if stored is None else stored,
    )
    return list(Post.objects.filter(pk__in=ids).select_related("author").order_by("-pk"))


def feed_page_posts(
    *,
    user_id: int,
    limit: int,
    before_post_id: int | None = None,
    with_own_posts: bool = False,
    stored: bool | None = None,
) -> tuple[list[Post], bool]:
    """One page of a user's feed: up to ``limit`` posts, newest first, older than
    ``before_post_id``, and whether older posts follow (``with_own_posts``: see
    feed_post_ids). Raises User.DoesNotExist for an unknown user."""
    posts = feed_posts(
        user_id=user_id,
        limit=limit + 1,
        before_post_id=before_post_id,
        with_own_posts=with_own_posts,
        stored=stored,
    )
    if not posts and not User.objects.filter(pk=user_id).exists():
        raise User.DoesNotExist(user_id)
    return posts[:limit], len(posts) > limit


class EntrySource(enum.StrEnum):
    """Where a read found a post of a feed (see the module's docstring)."""

    STORED = "stored entry"
    AWAY = "merged: the reader's stored feed is not used until it is rebuilt"
    PULLED_AUTHOR = "merged from a big account"
    UNCOPIED = "pulled: older than the follow's backfill copied"
    HISTORY = "pulled from history, below the oldest stored entry"


def feed_entry_sources(*, user_id: int, posts: Sequence[tuple[int, int]]) -> dict[int, EntrySource]:
    """For posts of a user's feed, given as (post_id, author_id), the source a read took
    each from, by post id, in the order ``feed_post_ids`` merges them."""
    if not reader_feed_trusted(user_id=user_id):
        return {post_id: EntrySource.AWAY for post_id, _ in posts}
    post_ids = [post_id for post_id, _ in posts]
    authors = {author_id for _, author_id in posts}
    stored = set(
        FeedEntry.objects.filter(user_id=user_id, post_id__in=post_ids).values_list("post_id", flat=True)
    )
    pulled = set(PulledAuthor.objects.filter(user_id__in=authors).values_list("user_id", flat=True))
    pull_below = dict(
        Follow.objects.filter(
            follower_id=user_id, followee_id__in=authors, pull_below__isnull=False
        ).values_list("followee_id", "pull_below")
    )
    oldest = (
        FeedEntry.objects.filter(user_id=user_id)
        .order_by("post_id")
        .values_list("post_id", flat=True)
        .first()
    )
    sources = {}
    for post_id, author_id in posts:
        if post_id in stored:
            sources[post_id] = EntrySource.STORED
        elif author_id in pulled:
            sources[post_id] = EntrySource.PULLED_AUTHOR
        elif oldest is None or post_id < oldest:
            sources[post_id] = EntrySource.HISTORY
        elif author_id in pull_below and post_id < pull_below[author_id]:
            sources[post_id] = EntrySource.UNCOPIED
        else:
            sources[post_id] = EntrySource.HISTORY
    return sources


def feed_reaches_post(*, user_id: int, post_id: int) -> bool:
    """Whether paging through the user's feed comes to this post: the read the API makes
    for a page whose cursor lies just above it."""
    trusted = reader_feed_trusted(user_id=user_id)
    return feed_post_ids(user_id=user_id, count=1, before_post_id=post_id + 1, stored=trusted) == [post_id]
