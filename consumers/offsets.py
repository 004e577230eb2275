"""The fan-out worker's offsets kept in PostgreSQL (``AppliedOffset``), per partition.

``next_offset`` is stored in the batch's transaction, with the feed entries, so that a
batch consumed again after a crash (before its Kafka commit) is recognised and skipped.
``fetched_offset`` is stored before a batch is applied, so that a message fetched again
after an unclean stop is counted as reprocessed even if it was never applied. Both carry
the broker's id of the topic, so that offsets of an earlier topic of the same name are
told apart and forgotten.
"""

import logging
from collections.abc import Sequence
from typing import NamedTuple

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient
from django.db import connection
from django.utils import timezone

from consumers.models import AppliedOffset
from core import metrics, sql
from eventbus.topics import kafka_config, topic_id_lookup

logger = logging.getLogger(__name__)

Partition = tuple[str, int]

TABLE = AppliedOffset._meta.db_table
# In one statement: read the batch's partitions as stored, and raise their fetched_offset
# (a new row starts with it, and next_offset at 0). All parts of a statement see the same
# snapshot, so ``stored`` is what was there before. A row stored without a topic id takes
# the topic's id now; one stored with another id keeps it, so that ``forget_stale`` still
# tells it apart. {unflushed} lets the statement's own commit skip the wait for the WAL
# flush (see ``AppliedOffsets.fetched``).
MARK_FETCHED = (
    "WITH batch (g, t, p, o, i) AS (VALUES {values}), "
    "stored AS ("
    "SELECT s.topic, s.partition, s.next_offset, s.fetched_offset, s.topic_id "
    f"FROM {TABLE} AS s JOIN batch "
    "ON s.consumer_group = batch.g AND s.topic = batch.t AND s.partition = batch.p"
    "), "
    "marked AS ("
    f"INSERT INTO {TABLE} "
    "(consumer_group, topic, partition, next_offset, fetched_offset, topic_id, updated_at) "
    "SELECT g, t, p, 0, o, i, now() FROM batch {unflushed} "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET "
    f"fetched_offset = GREATEST({TABLE}.fetched_offset, EXCLUDED.fetched_offset), "
    f"topic_id = COALESCE(NULLIF({TABLE}.topic_id, ''), EXCLUDED.topic_id), "
    "updated_at = EXCLUDED.updated_at"
    ") "
    "SELECT topic, partition, next_offset, fetched_offset, topic_id FROM stored"
)
UNFLUSHED = f"WHERE {sql.UNFLUSHED}"
STORE_APPLIED = (
    f"INSERT INTO {TABLE} "
    "(consumer_group, topic, partition, next_offset, fetched_offset, topic_id, updated_at) "
    "SELECT g, t, p, o, o, i, now() FROM (VALUES {values}) AS batch (g, t, p, o, i) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET "
    f"next_offset = GREATEST({TABLE}.next_offset, EXCLUDED.next_offset), "
    f"topic_id = COALESCE(NULLIF({TABLE}.topic_id, ''), EXCLUDED.topic_id), "
    "updated_at = EXCLUDED.updated_at"
)


class Stored(NamedTuple):
    """A partition's row in AppliedOffset."""

    next_offset: int
    fetched_offset: int
    topic_id: str


def next_offsets(messages: Sequence[Message]) -> dict[Partition, int]:
    """Per partition, the offset after the last of ``messages``."""
    offsets: dict[Partition, int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        offsets[key] = max(offsets.get(key, 0), m.offset() + 1)
    return offsets


class AppliedOffsets:
    """A consumer group's stored offsets, and the topic ids they are checked against."""

    def __init__(self, *, group_id: str) -> None:
        self.group_id = group_id
        self._admin: AdminClient | None = None
        self._topic_ids: dict[str, str] = {}

    def fetched(self, messages: Sequence[Message]) -> list[Message]:
        """Store that ``messages`` were fetched; return those not applied yet.

        Counted as reprocessed: the messages applied before (skipped), and those fetched
        before but not applied (by a worker that stopped uncleanly).

        The fetched offsets are committed on their own, before the batch is applied, or a
        batch that dies while being applied would take them with it, and its messages,
        fetched again, would not count as unapplied: so a batch writes AppliedOffset twice,
        but reads and marks in one statement. Outside a transaction that statement commits
        without waiting for the WAL flush: what it stores only feeds a metric, and a later
        commit (the batch's own) flushes it anyway; a crash of PostgreSQL in between can
        only undercount ``unapplied``.
        """
        stored = self.mark_fetched(messages)
        if self.forget_stale(messages, stored):
            # Forgetting reset their fetched offsets too: mark them again.
            self.mark_fetched(messages)
        applied_to = {key: row.next_offset for key, row in stored.items()}
        fetched_to = {key: row.fetched_offset for key, row in stored.items()}
        fresh = [m for m in messages if m.offset() >= applied_to.get((m.topic(), m.partition()), 0)]
        refetched = [m for m in fresh if m.offset() < fetched_to.get((m.topic(), m.partition()), 0)]
        if len(fresh) < len(messages):
            metrics.FANOUT_REPROCESSED.labels("applied").inc(len(messages) - len(fresh))
        if refetched:
            metrics.FANOUT_REPROCESSED.labels("unapplied").inc(len(refetched))
        return fresh

    def mark_fetched(self, messages: Sequence[Message]) -> dict[Partition, Stored]:
        """Raise each partition's ``fetched_offset`` to the offset after ``messages``;
        return the partitions' rows as they were stored before."""
        unflushed = "" if connection.in_atomic_block else UNFLUSHED
        statement = MARK_FETCHED.replace("{unflushed}", unflushed)
        with connection.cursor() as cursor:
            cursor.execute(*self._values(statement, messages))
            rows = cursor.fetchall()
        return {(t, p): Stored(n, f, i) for t, p, n, f, i in rows}

    def forget_stale(self, messages: Sequence[Message], stored: dict[Partition, Stored]) -> bool:
        """Forget, in ``stored`` and in the table, offsets stored for an earlier topic of
        the same name; return whether any were.

        A topic deleted and created again (a broker that lost its data, a migration, by
        hand) starts from offset 0, so offsets of its predecessor would skip its first
        events as already applied. A batch that would skip something asks the broker for
        the topic's id first (one metadata request, only then) and compares it with the
        id stored with the offsets. Rows stored without an id (before ids were kept, or
        from a broker that has none) cannot be checked, and are trusted.
        """
        skipping = {
            key
            for m in messages
            if (key := (m.topic(), m.partition())) in stored and m.offset() < stored[key].next_offset
        }
        forgotten = False
        for topic in sorted({t for t, _ in skipping}):
            current = self.topic_id(topic, fresh=True)
            stale = sorted(
                key
                for key, row in stored.items()
                if key[0] == topic and current and row.topic_id and row.topic_id != current
            )
            for key in stale:
                metrics.FANOUT_STALE_OFFSETS.inc()
                logger.warning(
                    "offsets stored for an earlier topic %s (id %s, now %s) forgotten; next_offset was %d",
                    topic,
                    stored[key].topic_id,
                    current,
                    stored[key].next_offset,
                    extra={"partition": key[1]},
                )
                del stored[key]
            if stale:
                forgotten = True
                AppliedOffset.objects.filter(
                    consumer_group=self.group_id, topic=topic, partition__in=[p for _, p in stale]
                ).update(next_offset=0, fetched_offset=0, topic_id=current, updated_at=timezone.now())
        return forgotten

    def store_applied(self, messages: Sequence[Message]) -> None:
        """Raise each partition's ``next_offset`` to the offset after ``messages``; call it
        in the transaction that applies them."""
        with connection.cursor() as cursor:
            cursor.execute(*self._values(STORE_APPLIED, messages))

    def _values(self, statement: str, messages: Sequence[Message]) -> tuple[str, list[object]]:
        """``statement`` with its {values} filled for the partitions of ``messages``, and
        its parameters."""
        rows = [(self.group_id, t, p, o, self.topic_id(t)) for (t, p), o in next_offsets(messages).items()]
        values = ", ".join(["(%s, %s, %s::integer, %s::bigint, %s)"] * len(rows))
        return statement.replace("{values}", values), [value for row in rows for value in row]

    def topic_id(self, topic: str, *, fresh: bool = False) -> str:
        """The broker's id of ``topic``, as last looked up ("" if the broker has none)."""
        if fresh or topic not in self._topic_ids:
            if self._admin is None:
                self._admin = AdminClient(kafka_config())
            topic_id = topic_id_lookup(topic, admin=self._admin)
            if not topic_id and topic not in self._topic_ids:
                logger.warning(
                    "the broker reports no id for topic %s: offsets stored for a topic deleted "
                    "and created again under its name cannot be told apart",
                    topic,
                )
            self._topic_ids[topic] = topic_id
        return self._topic_ids[topic]


def offset_ranges(messages: Sequence[Message]) -> dict[int, tuple[int, int]]:
    """The lowest and highest offset of ``messages`` per partition."""
    ranges: dict[int, tuple[int, int]] = {}
    for m in messages:
        lo, hi = ranges.get(m.partition(), (m.offset(), m.offset()))
        ranges[m.partition()] = (min(lo, m.offset()), max(hi, m.offset()))
    return ranges
