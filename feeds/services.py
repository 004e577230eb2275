"""Writes to the precomputed feeds, one function per kind of change.

Every function is idempotent and decides from the current state of posts and follows, not
from the event that triggered it, so a replayed or late event cannot undo a newer change.

Locking: a function that copies an author's posts into feeds (fan-out, backfill) takes a
shared advisory lock on the author for its transaction; one that removes them (delete,
unfollow) takes an exclusive one. So a removal waits for copies in flight, and its
DELETE then sees every row they wrote. A rebuild copies from every account a user
follows, so it locks the feed's owner instead, and an unfollow waits for that lock too.
"""

import datetime
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min

from feeds.models import FeedEntry, PulledAuthor
from follows.activity import written_since
from follows.models import Follow, Reader
from follows.selectors import feed_shows_sql
from posts.models import Post

INSERT_BATCH_SIZE = 5000
TRIM_BATCH_SIZE = 1000
# First keys of the two-key advisory locks on authors and on feeds; any constants unique
# to this project.
AUTHOR_LOCK_CLASS = 0x6665
FEED_LOCK_CLASS = 0x6666


@dataclass
class FeedChanges:
    """What a write did: rows written, and whose feeds changed or grew."""

    rows: int = 0
    # Rows fan-out did not write because the follower is not active.
    skipped: int = 0
    # Cached pages of these users are stale.
    changed: set[int] = field(default_factory=set)
    # These feeds gained entries, at most this many each, and may need trimming to
    # FEED_MAX_ENTRIES.
    grown: Counter[int] = field(default_factory=Counter)
    # When the posts fanned out were created (their events' occurred_at), for the
    # post-to-feed latency.
    posted_at: list[datetime.datetime] = field(default_factory=list)

    def __ior__(self, other: "FeedChanges") -> "FeedChanges":
        self.rows += other.rows
        self.skipped += other.skipped
        self.changed |= other.changed
        self.grown.update(other.grown)
        self.posted_at += other.posted_at
        return self

    def log_fields(self) -> dict[str, int]:
        """What the batch log line says about these changes."""
        return {"feeds_changed": len(self.changed), "rows": self.rows}


def _lock(ids: Iterable[int], *, exclusive: bool, lock_class: int = AUTHOR_LOCK_CLASS) -> None:
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        # Sorted, in one statement: two workers locking overlapping sets cannot deadlock.
        cursor.execute(
            f"SELECT {function}(%s, (a %% 2147483647)::integer) "
            "FROM (SELECT DISTINCT unnest(%s::bigint[]) AS a ORDER BY 1) AS ids",
            [lock_class, sorted(set(ids))],
        )


def _lock_authors(author_ids: Iterable[int], *, exclusive: bool) -> None:
    _lock(author_ids, exclusive=exclusive)


def _lock_feeds(user_ids: Iterable[int]) -> None:
    _lock(user_ids, exclusive=True, lock_class=FEED_LOCK_CLASS)


def _followers_of(author_ids: Iterable[int]) -> dict[int, list[int]]:
    followers: dict[int, list[int]] = defaultdict(list)
    rows = Follow.objects.filter(followee_id__in=set(author_ids)).values_list("followee_id", "follower_id")
    for followee_id, follower_id in rows:
        followers[followee_id].append(follower_id)
    return followers


def _follower_counts(author_ids: Iterable[int], *, since: datetime.datetime) -> dict[int, tuple[int, int]]:
    """Each author's followers: (all of them, the active ones, counted up to one more than
    FANOUT_FOLLOWER_LIMIT: past it the author is pulled, however many more there are). The
    first is an index-only count; the second probes the readers of at most that many."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.id, (SELECT count(*) FROM {Follow._meta.db_table} AS f WHERE f.followee_id = a.id),"
            f" (SELECT count(*) FROM (SELECT 1 FROM {Follow._meta.db_table} AS f"
            f"  JOIN {Reader._meta.db_table} AS r ON r.user_id = f.follower_id AND r.seen_at > %s"
            "   WHERE f.followee_id = a.id LIMIT %s) AS x)"
            " FROM unnest(%s::bigint[]) AS a (id)",
            [since, settings.FANOUT_FOLLOWER_LIMIT + 1, sorted(set(author_ids))],
        )
        return {author: (total, active) for author, total, active in cursor.fetchall()}


def _active(user_ids: Iterable[int], *, since: datetime.datetime) -> set[int]:
    return set(
        Reader.objects.filter(user_id__in=set(user_ids), seen_at__gt=since).values_list("user_id", flat=True)
    )


# Joins the worker's transaction, whose handler savepoint already isolates a failure.
@transaction.atomic(savepoint=False)
def feed_fanout_posts(*, post_ids: Iterable[int]) -> FeedChanges:
    """Add each post to its author's and every follower's feed (fan-out on write).

    The rows are made and written by PostgreSQL in one ``INSERT ... SELECT ... ON
    CONFLICT DO NOTHING`` joining posts to follows, so no row passes through Python
    (docs/ARCHITECTURE.md, The fan-out batch, has the numbers: bulk_create spent 18 µs of
    Python per row). Entries already present are left alone, so a replay writes nothing;
    the feeds that did gain a row are the ones whose cached pages are stale.

    Followers who mute the author, or block or are blocked by them, get no row
    (``follows.selectors.feed_shows_sql``). Only active followers get rows
    (``follows.activity``): an idle one's feed is merged at read time when they come back;
    the rows not written are counted in ``skipped``. An author with more than
    FANOUT_FOLLOWER_LIMIT active followers gets no rows at all: they are marked as pulled,
    their followers' feeds merge their posts at read time, and only those followers'
    cached pages are made stale. Posts that no longer exist are skipped.
    """
    authors = dict(Post.objects.filter(pk__in=set(post_ids)).values_list("pk", "author_id"))
    if not authors:
        return FeedChanges()
    _lock_authors(authors.values(), exclusive=False)
    since = written_since()
    # Once pulled, always pulled (the mark stays); the others are counted.
    pulled = set(
        PulledAuthor.objects.filter(user_id__in=set(authors.values())).values_list("user_id", flat=True)
    )
    counts = _follower_counts(set(authors.values()) - pulled, since=since)
    pulled |= {a for a, (_, active) in counts.items() if active > settings.FANOUT_FOLLOWER_LIMIT}
    changes = FeedChanges()
    if pulled:
        PulledAuthor.objects.bulk_create([PulledAuthor(user_id=a) for a in pulled], ignore_conflicts=True)
        for followers in _followers_of(pulled).values():
            changes.changed.update(followers)
        changes.changed.update(pulled)

    fanned = sorted(post_id for post_id, author_id in authors.items() if author_id not in pulled)
    if fanned:
        with connection.cursor() as cursor:
            # The author's own row is unconditional: posting made them active.
            cursor.execute(
                f"INSERT INTO {FeedEntry._meta.db_table} (user_id, post_id)"
                f" SELECT f.follower_id, p.id FROM {Post._meta.db_table} AS p"
                f" JOIN {Follow._meta.db_table} AS f ON f.followee_id = p.author_id"
                f" JOIN {Reader._meta.db_table} AS r ON r.user_id = f.follower_id AND r.seen_at > %s"
                f" WHERE p.id = ANY(%s) AND {feed_shows_sql('f.follower_id', 'p.author_id')}"
                f" UNION ALL SELECT p.author_id, p.id FROM {Post._meta.db_table} AS p WHERE p.id = ANY(%s)"
                " ON CONFLICT DO NOTHING RETURNING user_id",
                [since, fanned, fanned],
            )
            written = [user_id for (user_id,) in cursor.fetchall()]
        changes.skipped = sum(
            total - active for total, active in (counts.get(authors[post_id], (0, 0)) for post_id in fanned)
        )
        changes.rows = len(written)
        changes.grown.update(written)
        changes.changed.update(written)
    return changes


@transaction.atomic(savepoint=False)
def feed_remove_posts(*, posts: Iterable[tuple[int, int]]) -> FeedChanges:
    """Remove deleted posts, given as (post_id, author_id), from every feed.

    A post that still exists is left alone.
    """
    posts = dict(posts)
    existing = set(Post.objects.filter(pk__in=posts.keys()).values_list("pk", flat=True))
    gone = {post_id: author_id for post_id, author_id in posts.items() if post_id not in existing}
    if not gone:
        return FeedChanges()
    _lock_authors(gone.values(), exclusive=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {FeedEntry._meta.db_table} WHERE post_id = ANY(%s) RETURNING user_id",
            [list(gone)],
        )
        changes = FeedChanges(changed={user_id for (user_id,) in cursor.fetchall()})
    changes.changed.update(gone.values())
    # Posts of pulled authors sit in their followers' pages without any row.
    pulled = PulledAuthor.objects.filter(user_id__in=set(gone.values())).values_list("user_id", flat=True)
    for audience in _followers_of(pulled).values():
        changes.changed.update(audience)
    return changes


def _following(pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    pairs = set(pairs)
    follows = Follow.objects.filter(
        follower_id__in={f for f, _ in pairs}, followee_id__in={e for _, e in pairs}
    ).values_list("follower_id", "followee_id")
    return set(follows) & pairs


def _shown(pairs: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (user, author) pairs whose posts may be in the user's feed: not hidden by a block
    either way or a mute."""
    pairs = sorted(set(pairs))
    if not pairs:
        return set()
    users, authors = zip(*pairs, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.u, s.a FROM unnest(%s::bigint[], %s::bigint[]) AS s (u, a)"
            f" WHERE {feed_shows_sql('s.u', 's.a')}",
            [list(users), list(authors)],
        )
        return set(cursor.fetchall())


@transaction.atomic(savepoint=False)
def feed_backfill(*, follows: Iterable[tuple[int, int]]) -> FeedChanges:
    """Copy the newest FEED_BACKFILL_LIMIT posts of each followee, given as (follower_id,
    followee_id), into the follower's feed, if the follow still stands.

    Reads rely on this: for every followee, every post at or above the feed's oldest
    stored entry is stored, unless older than the follow's ``pull_below``, where reads
    pull it from the posts index instead (as they do below the oldest stored entry).
    So the copy never goes below the feed's oldest entry: rows there would hide posts of
    other followees that trimming removed. When the limit cuts the copy short, the
    follow's ``pull_below`` is set to the oldest post copied; otherwise it is cleared.

    Pulled authors are skipped: their posts are merged at read time anyway (and the
    follow's ``pull_below`` cleared). So are followers who are not active: their feeds are
    rebuilt when they come back, and follows hidden by a block or a mute.
    """
    follows = set(follows)
    current = _shown(_following(follows))
    active = _active({follower for follower, _ in current}, since=written_since())
    current = {(follower, followee) for follower, followee in current if follower in active}
    changes = FeedChanges(changed={follower for follower, _ in follows})
    if not current:
        return changes
    _lock_authors({followee for _, followee in current}, exclusive=False)
    pulled = set(
        PulledAuthor.objects.filter(user_id__in={e for _, e in current}).values_list("user_id", flat=True)
    )
    limit = settings.FEED_BACKFILL_LIMIT
    rows, floors = [], []
    for follower, followee in sorted(current):
        if followee in pulled:
            floors.append((follower, followee, None))
            continue
        oldest = FeedEntry.objects.filter(user_id=follower).aggregate(oldest=Min("post_id"))["oldest"]
        posts = Post.objects.filter(author_id=followee)
        if oldest is not None:
            posts = posts.filter(pk__gte=oldest)
        newest = list(posts.order_by("-pk").values_list("pk", flat=True)[: limit + 1])
        copied = newest[:limit]
        rows.extend(FeedEntry(user_id=follower, post_id=post_id) for post_id in copied)
        floor = None
        if len(newest) > limit:
            # Cut short by the limit (with a zero limit, nothing is copied).
            floor = copied[-1] if copied else newest[0] + 1
        floors.append((follower, followee, floor))
        changes.grown[follower] += len(copied)
    FeedEntry.objects.bulk_create(rows, ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE)
    if floors:
        followers, followees, values = zip(*floors, strict=True)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Follow._meta.db_table} AS f SET pull_below = b.floor"
                " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS b (follower, followee, floor)"
                " WHERE f.follower_id = b.follower AND f.followee_id = b.followee",
                [list(followers), list(followees), list(values)],
            )
    changes.rows = len(rows)
    return changes


@transaction.atomic(savepoint=False)
def feed_unfollow(*, follows: Iterable[tuple[int, int]]) -> FeedChanges:
    """Remove each followee's posts, given as (follower_id, followee_id), from the
    follower's feed, unless by now the follower follows them (again) and hides them not.

    The worker applies unfollows, blocks (both ways round) and mutes with it."""
    follows = set(follows)
    changes = FeedChanges(changed={follower for follower, _ in follows})
    ended = follows - _shown(_following(follows))
    if not ended:
        return changes
    _lock_authors({followee for _, followee in ended}, exclusive=True)
    _lock_feeds({follower for follower, _ in ended})
    followers, followees = zip(*sorted(ended), strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {FeedEntry._meta.db_table} AS f "
            f"USING {Post._meta.db_table} AS p, "
            "unnest(%s::bigint[], %s::bigint[]) AS ended (follower, followee) "
            "WHERE f.user_id = ended.follower AND p.id = f.post_id AND p.author_id = ended.followee",
            [list(followers), list(followees)],
        )
    return changes


def feeds_trim(*, user_ids: Iterable[int]) -> int:
    """Delete all but the newest FEED_MAX_ENTRIES entries of each feed; return how many.

    Older posts stay reachable: reads continue past the stored entries by pulling from
    the followed authors' posts.
    """
    return feeds_trim_measured(user_ids=user_ids)[0]


def feeds_trim_measured(*, user_ids: Iterable[int]) -> tuple[int, dict[int, int]]:
    """feeds_trim, which also returns each feed's size once trimmed.

    A feed's size is counted up to the bound (one short index scan, which finding where to
    cut takes anyway); only feeds above it are cut.
    """
    user_ids = sorted(set(user_ids))
    deleted = 0
    sizes: dict[int, int] = {}
    table = FeedEntry._meta.db_table
    for start in range(0, len(user_ids), TRIM_BATCH_SIZE):
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH sizes AS ("
                "  SELECT u.id AS user_id, ("
                f"    SELECT count(*) FROM (SELECT 1 FROM {table} AS e WHERE e.user_id = u.id"
                "     LIMIT %(over)s) AS x"
                "  ) AS size FROM unnest(%(users)s::bigint[]) AS u (id)"
                # MATERIALIZED: each feed's cutoff found once. Inlined, the planner may fold it
                # into the DELETE's join filter, where it runs for every entry it joins (on
                # the partitioned table, over every partition).
                "), cutoffs AS MATERIALIZED ("
                "  SELECT s.user_id, ("
                f"    SELECT e.post_id FROM {table} AS e WHERE e.user_id = s.user_id"
                "     ORDER BY e.post_id DESC OFFSET %(max)s LIMIT 1"
                "  ) AS cutoff FROM sizes AS s WHERE s.size > %(max)s"
                "), deleted AS ("
                f"  DELETE FROM {table} AS f USING cutoffs AS c"
                "   WHERE f.user_id = c.user_id AND f.post_id <= c.cutoff RETURNING 1"
                ") SELECT s.user_id, LEAST(s.size, %(max)s), (SELECT count(*) FROM deleted) FROM sizes AS s",
                {
                    "max": settings.FEED_MAX_ENTRIES,
                    "over": settings.FEED_MAX_ENTRIES + 1,
                    "users": user_ids[start : start + TRIM_BATCH_SIZE],
                },
            )
            rows = cursor.fetchall()
        sizes.update((user_id, size) for user_id, size, _ in rows)
        deleted += rows[0][2] if rows else 0
    return deleted, sizes


# The entries a feed should hold: for an active user, the newest FEED_MAX_ENTRIES posts of
# its owner and of the accounts they follow and do not hide (block, mute), except pulled
# authors, whose posts are merged at read time; for any other user, none.
# One short index scan (post_author_newest) per author, merged per user.
REBUILD_TARGET = f"""
    target AS (
        SELECT u.id AS user_id, t.post_id FROM unnest(%(active)s::bigint[]) AS u (id)
        CROSS JOIN LATERAL (
            SELECT p.id AS post_id FROM (
                SELECT u.id AS author_id
                UNION SELECT f.followee_id FROM {Follow._meta.db_table} AS f WHERE f.follower_id = u.id
                AND {feed_shows_sql("f.follower_id", "f.followee_id")}
            ) AS a
            CROSS JOIN LATERAL (
                SELECT id FROM {Post._meta.db_table} WHERE author_id = a.author_id
                ORDER BY id DESC LIMIT %(entries)s
            ) AS p
            WHERE NOT EXISTS (
                SELECT 1 FROM {PulledAuthor._meta.db_table} AS pa WHERE pa.user_id = a.author_id
            )
            ORDER BY p.id DESC LIMIT %(entries)s
        ) AS t
    )"""


@dataclass
class RebuildResult:
    """Entries a rebuild added and removed, and the feeds it changed."""

    added: int = 0
    removed: int = 0
    changed: set[int] = field(default_factory=set)


@transaction.atomic
def feeds_rebuild(*, user_ids: Iterable[int], dry_run: bool = False) -> RebuildResult:
    """Recompute the stored entries of these users' feeds from posts and follows.

    Missing entries are added and entries that do not belong (an unfollowed author, a
    deleted post, beyond FEED_MAX_ENTRIES, or any entry of a user who is not active) are
    removed, in one statement of one
    transaction: readers see the old feed until the new one commits, never an empty one.
    Fan-outs may run meanwhile; an entry one of them commits later is kept. Running it
    again changes nothing. With ``dry_run`` nothing is written. Cached pages are not
    invalidated here: that is for the caller, once this has committed.
    """
    users = sorted(set(user_ids))
    if not users:
        return RebuildResult()
    active = sorted(_active(users, since=written_since()))
    params = {"users": users, "active": active, "entries": settings.FEED_MAX_ENTRIES}
    if dry_run:
        sql = f"""WITH {REBUILD_TARGET},
            current AS (SELECT f.user_id, f.post_id FROM {FeedEntry._meta.db_table} AS f
                        WHERE f.user_id = ANY(%(users)s)),
            added AS (SELECT t.user_id FROM target AS t
                      WHERE NOT EXISTS (SELECT 1 FROM current AS c
                                        WHERE c.user_id = t.user_id AND c.post_id = t.post_id)),
            removed AS (SELECT c.user_id FROM current AS c
                        WHERE NOT EXISTS (SELECT 1 FROM target AS t
                                          WHERE t.user_id = c.user_id AND t.post_id = c.post_id))"""
    else:
        _lock_feeds(users)
        sql = f"""WITH {REBUILD_TARGET},
            added AS (
                INSERT INTO {FeedEntry._meta.db_table} (user_id, post_id)
                SELECT user_id, post_id FROM target ON CONFLICT DO NOTHING RETURNING user_id
            ),
            removed AS (
                DELETE FROM {FeedEntry._meta.db_table} AS f WHERE f.user_id = ANY(%(users)s)
                AND NOT EXISTS (
                    SELECT 1 FROM target AS t WHERE t.user_id = f.user_id AND t.post_id = f.post_id
                )
                RETURNING f.user_id
            ),
            -- The stored feed now holds every post of the followees above its oldest
            -- entry: no follow needs reads to pull what its backfill (or an unmute) left
            -- out. In this statement, so that it sees the follows the target was made of.
            cleared AS (
                UPDATE {Follow._meta.db_table} AS f SET pull_below = NULL
                WHERE f.follower_id = ANY(%(active)s) AND f.pull_below IS NOT NULL
                AND {feed_shows_sql("f.follower_id", "f.followee_id")}
                RETURNING 1
            )"""
    sql += """
        SELECT 'added', user_id, count(*) FROM added GROUP BY user_id
        UNION ALL SELECT 'removed', user_id, count(*) FROM removed GROUP BY user_id"""
    result = RebuildResult()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, user_id, count in cursor.fetchall():
            setattr(result, kind, getattr(result, kind) + count)
            result.changed.add(user_id)
    if not dry_run:
        # From this commit on, reads trust these feeds again: the rebuild holds everything
        # up to its snapshot, and fan-out has written to the active users since they came
        # back, before it.
        Reader.objects.filter(user_id__in=active, feed_complete=False).update(feed_complete=True)
    return result


@dataclass
class VacuumResult:
    """Idle users whose stored feeds a vacuum step dropped, and the entries it deleted."""

    users: int = 0
    entries: int = 0


# One step: idle users whose entries are still stored (the reader_stored_idle index), their
# entries deleted and their feeds marked as no longer stored, in one statement. A user who
# is being recorded as seen at this moment holds their row: skipped, and active again.
_VACUUM = f"""
    WITH idle AS (
        SELECT user_id FROM {Reader._meta.db_table}
        WHERE feed_complete AND seen_at <= %(since)s
        ORDER BY seen_at LIMIT %(users)s FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE {Reader._meta.db_table} AS r SET feed_complete = false
        FROM idle WHERE r.user_id = idle.user_id RETURNING r.user_id
    ), deleted AS (
        DELETE FROM {FeedEntry._meta.db_table} AS f USING idle
        WHERE f.user_id = idle.user_id RETURNING 1
    )
    SELECT (SELECT count(*) FROM marked), (SELECT count(*) FROM deleted)
"""


@transaction.atomic
def feeds_vacuum(*, users: int) -> VacuumResult:
    """Delete the stored entries of up to ``users`` users inactive past FEED_ACTIVE_SECONDS:
    storage follows readers, not accounts. Should they come back, their feed is merged at
    read time until it is rebuilt (``follows.activity``). Their cached pages need nothing:
    they hold whole feeds, and expire within FEED_CACHE_TTL."""
    with connection.cursor() as cursor:
        cursor.execute(_VACUUM, {"since": written_since(), "users": users})
        [(vacuumed, deleted)] = cursor.fetchall()
    return VacuumResult(users=vacuumed, entries=deleted)
