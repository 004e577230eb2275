"""The transactional outbox: an event is stored in the transaction of the change it
announces, so a committed change always has its event, and a rolled-back one never does.

The relay (``run_outbox_relay``) is the only publisher. It looks for unsent rows every
``OUTBOX_RELAY_INTERVAL_MS`` while idle and straight away while it finds some, publishes
them in id order, waits for the broker's acknowledgements and marks the batch sent in one
UPDATE, then prunes sent rows after ``OUTBOX_RETENTION_SECONDS``. The API process does no
producer work at all: a post costs it two INSERTs and a commit.

Why polling and not LISTEN/NOTIFY: PostgreSQL serialises the commits of transactions
that NOTIFY (a database-wide lock held until the commit is flushed), which would undo the
group commit that concurrent posts share. An idle poll is one indexed query.

A row may be published twice (a relay that dies between the acknowledgement and the
mark publishes it again on restart); consumers are idempotent.
"""

import datetime
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, Message
from django.db import close_old_connections, connection, transaction
from django.db.models import Count, Min
from django.utils import timezone
from psycopg.types.json import Jsonb

from core import metrics, sql
from eventbus.events import Event, event_encode
from eventbus.models import OutboxMessage
from eventbus.producer import Deliveries, message_publish, producer_after_reports, producer_flush
from eventbus.topics import Topic

logger = logging.getLogger(__name__)

# Any constant unique to this project: only one relay publishes at a time.
RELAY_LOCK_ID = 0x6665656473
RELAY_LOCK = f"SELECT pg_try_advisory_xact_lock(%s) WHERE {sql.UNFLUSHED}"
UNSENT_EXIST = f"SELECT 1 FROM {OutboxMessage._meta.db_table} WHERE sent_at IS NULL LIMIT 1"


# The row of an event, written as one plain INSERT: every post writes one, and nothing
# reads the new row back, so it goes without the ORM's model instance, signals and RETURNING.
_ENQUEUE = (
    f'INSERT INTO "{OutboxMessage._meta.db_table}" (topic, key, value, headers, created_at)'
    " VALUES (%s, %s, %s, %s, %s)"
)


def outbox_enqueue(*, event: Event, key: str) -> None:
    """Store ``event`` for publication when the current transaction commits."""
    if not connection.in_atomic_block:
        raise RuntimeError("outbox_enqueue must run inside the transaction of the change")
    headers = [["event_type", event.type], ["event_id", str(event.event_id)]]
    with connection.cursor() as cursor:
        cursor.execute(
            _ENQUEUE,
            [Topic.FEED_EVENTS.topic_name, key, event_encode(event), Jsonb(headers), timezone.now()],
        )


def outbox_publish(*, rows: Sequence[OutboxMessage]) -> Deliveries:
    """Queue ``rows`` on the producer; each is marked sent when its delivery is reported."""
    deliveries = Deliveries(expected=len(rows))
    for row in rows:
        headers = [(name, value) for name, value in row.headers]
        event_type = dict(row.headers).get("event_type", "")
        message_publish(
            topic=row.topic,
            key=row.key,
            value=bytes(row.value),
            headers=headers,
            on_delivery=partial(_report, row.pk, event_type, deliveries),
        )
    return deliveries


def _report(
    row_id: int, event_type: str, deliveries: Deliveries, err: KafkaError | None, msg: Message
) -> None:
    if err is not None:
        metrics.EVENTS_PUBLISH_FAILED.labels(msg.topic(), event_type).inc()
        logger.warning("outbox row %d not delivered: %s", row_id, err)
        deliveries.fail(err)
        return
    with _delivered_lock:
        _delivered.append(
            _Delivered(row_id, msg.topic(), msg.partition(), msg.offset(), event_type, deliveries)
        )


@dataclass(frozen=True)
class _Delivered:
    row_id: int
    topic: str
    partition: int
    offset: int
    event_type: str
    deliveries: Deliveries


# Marks delivered rows sent, with where the broker put each message, in one statement.
MARK_SENT = (
    f'UPDATE "{OutboxMessage._meta.db_table}" AS o SET sent_at = %s,'
    " sent_partition = d.sent_partition, sent_offset = d.sent_offset"
    " FROM unnest(%s::bigint[], %s::integer[], %s::bigint[]) AS d (id, sent_partition, sent_offset)"
    " WHERE o.id = d.id AND o.sent_at IS NULL"
)

# Rows the broker acknowledged, not yet marked sent. Reports may be served on any thread
# that polls; whichever runs outbox_mark_delivered next marks them.
_delivered: list[_Delivered] = []
_delivered_lock = threading.Lock()


def outbox_mark_delivered() -> None:
    """Mark sent, in one UPDATE, every row whose delivery was reported since the last call.

    The producer calls it after each poll or flush, on the thread that served the reports:
    the relay, inside its batch's transaction, so that the marks commit with the batch. A
    row counts as published only once marked.
    """
    with _delivered_lock:
        if not _delivered:
            return
        delivered = _delivered.copy()
        _delivered.clear()
    try:
        ids, partitions, offsets = (
            [getattr(d, name) for d in delivered] for name in ("row_id", "partition", "offset")
        )
        with connection.cursor() as cursor:
            cursor.execute(MARK_SENT, [timezone.now(), ids, partitions, offsets])
    except Exception as exc:
        # Delivered but not marked: the relay will publish them again, which is harmless.
        logger.exception("%d outbox rows delivered but not marked sent", len(delivered))
        # Reports may run on a long-lived thread: drop its connection if it broke, so the
        # next mark reconnects (never inside a transaction, such as the relay's).
        if not connection.in_atomic_block:
            close_old_connections()
        for d in delivered:
            d.deliveries.fail(exc)
        return
    for d in delivered:
        metrics.EVENTS_PUBLISHED.labels(d.topic, d.event_type).inc()
        d.deliveries.ack(d.row_id)


producer_after_reports(outbox_mark_delivered)


@dataclass
class RelayResult:
    published: int = 0
    failed: int = 0
    pruned: int = 0
    locked_out: bool = False


class OutboxRelay:
    """Publishes unsent outbox rows, oldest first. Drive it with ``run_once``."""

    # Seconds between the upkeep queries (pruning, the backlog gauges), which need not run
    # on every batch of a relay that looks for work every few milliseconds.
    UPKEEP_SECONDS = 1.0

    def __init__(self, *, batch_size: int, retention: datetime.timedelta, flush_timeout: float) -> None:
        self.batch_size = batch_size
        self.retention = retention
        self.flush_timeout = flush_timeout
        self._upkeep_due = 0.0

    def run_once(self) -> RelayResult:
        """Publish one batch of unsent rows, and now and then prune old sent rows.

        The batch runs in one transaction holding an advisory lock, so that a second
        relay waits instead of publishing the same rows out of order; the sent marks
        written by the delivery reports commit with it. While nothing is unsent, it costs
        one indexed query and no transaction.
        """
        result = RelayResult()
        if self._unsent_exist():
            with transaction.atomic():
                with connection.cursor() as cursor:
                    # The batch commits without waiting for the WAL flush: a mark lost to a
                    # crash of PostgreSQL only publishes its row again, which consumers
                    # ignore, and a disk sync per batch would delay every event.
                    cursor.execute(RELAY_LOCK, [RELAY_LOCK_ID])
                    if not cursor.fetchone()[0]:
                        result.locked_out = True
                        return result
                unsent = OutboxMessage.objects.filter(sent_at__isnull=True).order_by("pk")
                rows = list(unsent[: self.batch_size])
                if rows:
                    deliveries = outbox_publish(rows=rows)
                    producer_flush(self.flush_timeout)
                    deliveries.wait(self.flush_timeout)
                    result.published = len(deliveries.acked)
                    result.failed = len(rows) - len(deliveries.acked)
            metrics.OUTBOX_RELAYED.inc(result.published)
        if time.monotonic() >= self._upkeep_due:
            result.pruned, _ = OutboxMessage.objects.filter(
                sent_at__lt=timezone.now() - self.retention
            ).delete()
            self.observe_backlog()
            self._upkeep_due = time.monotonic() + self.UPKEEP_SECONDS
        return result

    @staticmethod
    def _unsent_exist() -> bool:
        # Plain SQL: it runs a hundred times a second on an idle system, where the ORM
        # compiling the same query each time cost the relay most of its CPU.
        with connection.cursor() as cursor:
            cursor.execute(UNSENT_EXIST)
            return cursor.fetchone() is not None

    @staticmethod
    def observe_backlog() -> None:
        backlog = OutboxMessage.objects.filter(sent_at__isnull=True).aggregate(
            count=Count("pk"), oldest=Min("created_at")
        )
        metrics.OUTBOX_BACKLOG.set(backlog["count"])
        age = (timezone.now() - backlog["oldest"]).total_seconds() if backlog["oldest"] else 0.0
        metrics.OUTBOX_OLDEST_AGE.set(max(age, 0.0))


def relay_loop(relay: OutboxRelay, *, idle: float, backoff_max: float, stopping) -> None:
    """Run ``relay`` until ``stopping()`` is true: at once again after a full batch, after
    ``idle`` seconds otherwise, and backing off while publishing fails."""
    backoff = max(idle, 0.1)
    healthy_until = 0.0
    try:
        while not stopping():
            # Like a request: work on a healthy connection (PostgreSQL may have restarted).
            # Checked once a second, not per poll: the check is a query of its own.
            if time.monotonic() >= healthy_until:
                close_old_connections()
                healthy_until = time.monotonic() + 1.0
            try:
                result = relay.run_once()
            except Exception:
                logger.exception("outbox relay batch failed")
                result = RelayResult(failed=1)
                healthy_until = 0.0
            if result.failed:
                logger.warning("outbox relay: %d not delivered; retrying in %.1fs", result.failed, backoff)
                pause, backoff = backoff, min(backoff * 2, backoff_max)
            else:
                backoff = max(idle, 0.1)
                pause = 0.0 if result.published == relay.batch_size else idle
            if result.pruned:
                logger.info("outbox relay pruned", extra={"pruned": result.pruned})
            deadline = time.monotonic() + pause
            while not stopping() and (left := deadline - time.monotonic()) > 0:
                time.sleep(min(0.1, left))
    finally:
        # The loop may run on a thread of its own (the tests' relay).
        connection.close()
