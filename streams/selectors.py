"""What a home-feed stream reads: the new posts of a window of transactions, a returning
client's posts since its position, the posts' JSON, and whether credentials still hold.

New posts are ordered by ``Post.added``, the id of the transaction that wrote them, not by
post id: ids are drawn before commit, so a post with a lower id can commit after one with
a higher id has been sent. ``pg_current_snapshot()``'s xmin is the oldest transaction still
running; every post of a transaction below it has committed or never will. So a window
[low, xmin) is final once read, and the windows read one after the other cover every post
exactly once, whatever the commit order.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from rest_framework.authtoken.models import Token

from follows.models import Follow
from follows.selectors import feed_shows_sql
from posts.models import Post
from posts.serializers import post_json
from streams.positions import Position

User = get_user_model()

_SHOWN_PAIR = feed_shows_sql("f.follower_id", "f.followee_id")
_SHOWN_FOLLOWEE = feed_shows_sql("f.follower_id", "f.followee_id", per_row=True)


@dataclass(frozen=True)
class Horizon:
    """``low``: every transaction below it has ended; ``high``: none at or above it has begun."""

    low: int
    high: int


def stream_horizon() -> Horizon:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
            " FROM pg_current_snapshot() AS s"
        )
        low, high = cursor.fetchone()
    return Horizon(low=low, high=high)


def stream_start() -> Position:
    """A position before every post whose transaction has not ended yet: a page read after
    this, opening its stream with it (``since``), misses nothing written meanwhile (it may
    be sent a post the page already shows, which it knows by id)."""
    return Position(stream_horizon().low, 0)


def stream_window(*, low: int, below: int, after: Position, limit: int) -> list[tuple[int, int, int]]:
    """(added, post id, author id) of up to ``limit`` posts added in [low, below) after
    ``after``, in the order they were added. Read ``below`` from stream_horizon() first,
    in another statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT added, id, author_id FROM {Post._meta.db_table}"
            " WHERE added >= %(low)s AND added < %(below)s AND (added, id) > (%(added)s, %(post)s)"
            " ORDER BY added, id LIMIT %(limit)s",
            {
                "low": max(low, after.added),
                "below": below,
                "added": after.added,
                "post": after.post_id,
                "limit": limit,
            },
        )
        return cursor.fetchall()


def stream_readers(*, author_ids: list[int], user_ids: list[int]) -> dict[int, list[int]]:
    """Of ``user_ids``, whose home feeds the posts of each of ``author_ids`` reach: the
    author's own, and the followers' who do not hide the author."""
    readers: dict[int, list[int]] = {author: [author] for author in set(author_ids) & set(user_ids)}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT f.followee_id, f.follower_id FROM {Follow._meta.db_table} AS f"
            " WHERE f.followee_id = ANY(%(authors)s) AND f.follower_id = ANY(%(users)s)"
            f" AND {_SHOWN_PAIR}",
            {"authors": author_ids, "users": user_ids},
        )
        for author, reader in cursor.fetchall():
            readers.setdefault(author, []).append(reader)
    return readers


def stream_replay(*, user_id: int, after: Position, below: int, limit: int) -> list[tuple[int, int]]:
    """(added, post id) of up to ``limit`` posts of the user's home feed after ``after`` and
    added below ``below``, in the order they were added: one short scan of
    post_author_added per followee, as history is pulled."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT x.added, x.id FROM ("
            "  SELECT %(user)s::bigint AS author_id"
            f"  UNION ALL SELECT f.followee_id FROM {Follow._meta.db_table} AS f"
            f"  WHERE f.follower_id = %(user)s AND {_SHOWN_FOLLOWEE}"
            ") AS a CROSS JOIN LATERAL ("
            f"  SELECT p.added, p.id FROM {Post._meta.db_table} AS p"
            "   WHERE p.author_id = a.author_id AND p.added >= %(added)s AND p.added < %(below)s"
            "   AND (p.added, p.id) > (%(added)s, %(post)s)"
            "   ORDER BY p.added, p.id LIMIT %(limit)s"
            ") AS x ORDER BY x.added, x.id LIMIT %(limit)s",
            {"user": user_id, "added": after.added, "post": after.post_id, "below": below, "limit": limit},
        )
        return cursor.fetchall()


def stream_followers_among(*, author_id: int, user_ids: list[int]) -> list[int]:
    """Which of ``user_ids`` have the author's posts in their home feed (a deleted post's
    ``delete`` event goes to them)."""
    return stream_readers(author_ids=[author_id], user_ids=user_ids).get(author_id, [])


def stream_posts_json(post_ids: list[int]) -> dict[int, dict]:
    """The posts as the feed shows them (``post_json``), by id; deleted ones are left out."""
    posts = (
        Post.objects.filter(pk__in=post_ids)
        .select_related("author")
        .only("id", "author_id", "content", "created_at", "author__username")
    )
    return {post.pk: post_json(post) for post in posts}


@dataclass(frozen=True)
class Revoked:
    """Of the credentials asked about: the tokens and sessions that no longer exist (or
    expired), the (user, password hash) pairs whose user is gone, inactive or has another
    password now, and the users reading another's feed who are no longer staff."""

    tokens: set[str]
    sessions: set[str]
    users: set[tuple[int, str]]
    staff: set[int]


def stream_credentials_revoked(
    *, tokens: set[str], sessions: set[str], users: set[tuple[int, str]], staff: set[int]
) -> Revoked:
    """One statement for every open stream of a process, returning only what no longer
    holds: usually nothing, so the check costs little more than its round trip."""
    user_ids, passwords = zip(*users, strict=True) if users else ((), ())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 't', k, NULL::bigint FROM unnest(%(tokens)s::text[]) AS k"
            f" WHERE NOT EXISTS (SELECT 1 FROM {Token._meta.db_table} AS t WHERE t.key = k)"
            " UNION ALL SELECT 's', k, NULL FROM unnest(%(sessions)s::text[]) AS k"
            f" WHERE NOT EXISTS (SELECT 1 FROM {Session._meta.db_table} AS s"
            "  WHERE s.session_key = k AND s.expire_date > now())"
            " UNION ALL SELECT 'u', c.password, c.id FROM unnest(%(ids)s::bigint[], %(passwords)s::text[])"
            " AS c (id, password)"
            f" WHERE NOT EXISTS (SELECT 1 FROM {User._meta.db_table} AS u"
            "  WHERE u.id = c.id AND u.is_active AND u.password = c.password)"
            " UNION ALL SELECT 'x', NULL, c FROM unnest(%(staff)s::bigint[]) AS c"
            f" WHERE NOT EXISTS (SELECT 1 FROM {User._meta.db_table} AS u WHERE u.id = c AND u.is_staff)",
            {
                "tokens": list(tokens),
                "sessions": list(sessions),
                "ids": list(user_ids),
                "passwords": list(passwords),
                "staff": list(staff),
            },
        )
        rows = cursor.fetchall()
    return Revoked(
        tokens={key for kind, key, _ in rows if kind == "t"},
        sessions={key for kind, key, _ in rows if kind == "s"},
        users={(user_id, password) for kind, password, user_id in rows if kind == "u"},
        staff={user_id for kind, _, user_id in rows if kind == "x"},
    )
