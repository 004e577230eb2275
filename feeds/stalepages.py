"""Stale cached pages recorded in PostgreSQL until Redis has taken their new generations.

The fan-out worker records the users of a batch in the batch's own transaction and
forgets them once ``pages_invalidate`` succeeded; a worker that starts invalidates
whatever a crashed one left behind. Invalidating twice costs a page render, nothing else.
"""

from collections.abc import Iterable, Sequence

from django.db import connection

from core import sql
from feeds.cache import pages_invalidate
from feeds.models import StalePages

# Rows read per round when invalidating what earlier workers left.
FLUSH_CHUNK = 200


def stale_pages_record(*, user_ids: Iterable[int]) -> int:
    """Record these users' pages as stale, in the caller's transaction; return the row id."""
    # One array literal: adapting a list element by element (the ORM, or psycopg's list
    # dumper) took 17-50 ms for 10,000 users; with the literal the insert and commit take
    # 5-10 ms (the column is stored uncompressed, see the migration).
    literal = "{" + ",".join(map(str, user_ids)) + "}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {StalePages._meta.db_table} (user_ids, created_at) "
            "VALUES (%s::bigint[], now()) RETURNING id",
            [literal],
        )
        return cursor.fetchone()[0]


def stale_pages_forget(*, ids: Sequence[int]) -> None:
    """Drop rows whose pages were invalidated.

    Outside a transaction (after each batch) it commits without waiting for the WAL flush,
    which would cost the worker a disk sync per batch on top of the batch's own: a forget
    lost to a crash of PostgreSQL only invalidates those pages once more.
    """
    unflushed = "" if connection.in_atomic_block else f" AND {sql.UNFLUSHED}"
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {StalePages._meta.db_table} WHERE id = ANY(%s){unflushed}", [list(ids)])


def stale_pages_flush() -> int:
    """Invalidate the pages of every row recorded so far, then drop the rows.

    Rows that other workers record meanwhile are left to them. Raises RedisError, or a
    database error, with the rows not yet flushed kept. Returns how many users it took.
    """
    last = StalePages.objects.order_by("-pk").values_list("pk", flat=True).first()
    users = 0
    while last is not None:
        rows = list(
            StalePages.objects.filter(pk__lte=last).order_by("pk").values_list("pk", "user_ids")[:FLUSH_CHUNK]
        )
        if not rows:
            break
        stale = {user for _, user_ids in rows for user in user_ids}
        pages_invalidate(stale)
        stale_pages_forget(ids=[pk for pk, _ in rows])
        users += len(stale)
    return users
