"""The feed table's layout: one heap, or PostgreSQL hash partitions on ``user_id``.

Every query names ``feeds_feedentry`` and works on either layout: a partitioned table keeps
the name, the columns, the primary key (user_id, post_id), the index on post_id and the
foreign key to the user table, and PostgreSQL routes each row to its partition. A read of
one user's feed touches one partition; a post's deletion probes the post_id index of each.

``feed_table_convert`` moves the rows from one layout to the other in the caller's
transaction (the migration that partitions the table, ``manage.py partition_feeds``):

- while it copies, the old table is locked SHARE: reads go on, writes (fan-out, rebuilds,
  trims, an account's deletion) wait;
- then it drops the old table and renames the new one into place, holding ACCESS EXCLUSIVE
  until the transaction commits: reads wait too, for the renames only.
"""

import logging
import time
from dataclasses import dataclass

from django.db import connection, transaction

logger = logging.getLogger(__name__)

TABLE = "feeds_feedentry"
NEW = f"{TABLE}_new"
COLUMNS = {"user_id", "post_id"}


@dataclass(frozen=True)
class Conversion:
    before: int  # partitions before (0: one heap)
    after: int
    rows: int
    # Seconds writes waited (the copy, SHARE lock), and reads too (the swap, ACCESS EXCLUSIVE).
    copy_seconds: float
    swap_seconds: float

    def __str__(self) -> str:
        layout = f"{self.after} hash partitions" if self.after else "one table"
        return (
            f"{TABLE}: {layout} (was {self.before or 'one table'}); {self.rows} rows copied; "
            f"writes waited {self.copy_seconds:.1f}s, reads {self.swap_seconds:.2f}s"
        )


def feed_partitions() -> int:
    """The number of hash partitions of the feed table, 0 when it is one plain table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relkind = 'p', (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) "
            "FROM pg_class c WHERE c.oid = %s::regclass",
            [TABLE],
        )
        partitioned, count = cursor.fetchone()
    return count if partitioned else 0


def partition_name(partitions: int, remainder: int) -> str:
    """Each layout's partitions have their own names, so that a table of 16 can be
    rebuilt as one of 32 while the old partitions still exist."""
    return f"{TABLE}_{partitions}_{remainder:02d}"


def _names() -> tuple[str, str, str]:
    """The names of the table's primary key, foreign key and post_id index, kept across
    conversions (Django named them in the first migrations)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [TABLE],
        )
        columns = {name for (name,) in cursor.fetchall()}
        cursor.execute(
            "SELECT contype, conname FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('p', 'f')",
            [TABLE],
        )
        constraints = dict(cursor.fetchall())
        cursor.execute(
            "SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = %s::regclass "
            "AND NOT i.indisprimary",
            [TABLE],
        )
        indexes = [name for (name,) in cursor.fetchall()]
    if columns != COLUMNS or set(constraints) != {"p", "f"} or len(indexes) != 1:
        # A later schema change the conversion does not know: copying would drop it.
        raise RuntimeError(
            f"{TABLE} has columns {sorted(columns)}, constraints {constraints} and indexes {indexes}; "
            "feed_table_convert knows only (user_id, post_id), its primary key, foreign key and post_id index"
        )
    return constraints["p"], constraints["f"], indexes[0]


def feed_table_convert(partitions: int, *, user_table: str) -> Conversion:
    """Rebuild the feed table as ``partitions`` hash partitions on user_id (0: one plain
    table) with the same rows, in the caller's transaction; nothing when it already has
    that layout. ``user_table`` is the table the user_id foreign key points to."""
    if partitions < 0:
        raise ValueError(f"partitions must be 0 (one table) or more, not {partitions}")
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError("feed_table_convert runs inside a transaction")
    before = feed_partitions()
    if before == partitions:
        return Conversion(before=before, after=partitions, rows=0, copy_seconds=0.0, swap_seconds=0.0)
    pkey, fkey, post_index = _names()
    q = connection.ops.quote_name
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN SHARE MODE")
        layout = " PARTITION BY HASH (user_id)" if partitions else ""
        cursor.execute(f"CREATE TABLE {NEW} (LIKE {TABLE} INCLUDING DEFAULTS){layout}")
        for remainder in range(partitions):
            cursor.execute(
                f"CREATE TABLE {partition_name(partitions, remainder)} PARTITION OF {NEW} "
                f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
            )
        cursor.execute(f"INSERT INTO {NEW} (user_id, post_id) SELECT user_id, post_id FROM {TABLE}")
        rows = cursor.rowcount
        # Indexes and the foreign key after the copy: one sorted build instead of a row at a time.
        cursor.execute(f"ALTER TABLE {NEW} ADD CONSTRAINT {NEW}_pkey PRIMARY KEY (user_id, post_id)")
        cursor.execute(f"CREATE INDEX {NEW}_post_id ON {NEW} (post_id)")
        cursor.execute(
            f"ALTER TABLE {NEW} ADD CONSTRAINT {NEW}_user_fk FOREIGN KEY (user_id) "
            f"REFERENCES {q(user_table)} (id) DEFERRABLE INITIALLY DEFERRED"
        )
        cursor.execute(f"ANALYZE {NEW}")
        swapping = time.monotonic()
        cursor.execute(f"DROP TABLE {TABLE}")
        cursor.execute(f"ALTER TABLE {NEW} RENAME TO {TABLE}")
        cursor.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {NEW}_pkey TO {q(pkey)}")
        cursor.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {NEW}_user_fk TO {q(fkey)}")
        cursor.execute(f"ALTER INDEX {NEW}_post_id RENAME TO {q(post_index)}")
    done = time.monotonic()
    conversion = Conversion(
        before=before,
        after=partitions,
        rows=rows,
        copy_seconds=swapping - started,
        swap_seconds=done - swapping,
    )
    logger.info("%s", conversion)
    return conversion
