"""The fan-out consumer loop.

Each batch goes: skip what was already applied, decode, apply handlers, record dead
letters, the users whose cached pages went stale and the partitions' next offsets in one
database transaction, invalidate cached pages, copy dead letters to the DLQ topic, then
commit the Kafka offsets. Stale pages and unpublished dead letters are kept in PostgreSQL
until Redis and the broker took them, and a worker that starts flushes what a crashed one
left.

Exactly-once effect: the offsets stored with the feed entries say what was applied, so a
batch consumed again after a crash (before its Kafka commit) is recognised and skipped,
and every handler is idempotent besides.
"""

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from itertools import groupby
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.utils import InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import RedisError

from consumers.deadletters import (
    Failure,
    dead_letters_publish,
    dead_letters_publish_pending,
    dead_letters_record,
)
from consumers.handlers import HANDLERS
from consumers.models import AppliedOffset, DeadLetter
from consumers.stalepages import stale_pages_flush, stale_pages_forget, stale_pages_record
from core import metrics
from core.logcontext import log_context
from eventbus.events import POST_CREATED, Event, PoisonMessage, UnknownEventType, event_decode
from eventbus.producer import DeliveryFailed
from eventbus.topics import Topic, kafka_config, topic_id_lookup
from feeds.cache import pages_invalidate
from feeds.services import FeedChanges, feeds_trim

logger = logging.getLogger(__name__)

# Failures of the services around us: wait and retry, never dead-letter. Every Redis error
# is one: a read-only replica during a failover, or OOM under maxmemory, passes too.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    RedisError,
    KafkaException,
    DeliveryFailed,
)

RETRY_BACKOFF_MIN = 0.5
RETRY_BACKOFF_MAX = 30.0
LAG_REFRESH_SECONDS = 5.0
# Feeds trimmed per loop iteration.
TRIM_STEP = 500

Partition = tuple[str, int]
Offsets = dict[Partition, int]


class Stored(NamedTuple):
    """A partition's row in AppliedOffset."""

    next_offset: int
    fetched_offset: int
    topic_id: str


class BreakerOpen(Exception):
    """Too many dead letters recently: stop rather than dead-letter everything."""


class DeadLetterBreaker:
    """Trips when dead letters exceed ``max_ratio`` of the last ``window`` messages."""

    def __init__(self, *, max_ratio: float, window: int) -> None:
        self.max_ratio = max_ratio
        self.window = window
        self._recent: deque[bool] = deque(maxlen=window)

    def check(self, *, total: int, dead: int) -> None:
        """Raise BreakerOpen if a batch of ``total`` with ``dead`` letters would trip it."""
        if not dead:
            return
        recent = [*self._recent, *([False] * (total - dead)), *([True] * dead)][-self.window :]
        ratio = sum(recent) / len(recent)
        if len(recent) >= max(1, self.window // 10) and ratio > self.max_ratio:
            metrics.FANOUT_BREAKER_OPEN.set(1)
            raise BreakerOpen(
                f"{sum(recent)} of the last {len(recent)} messages would be dead letters "
                f"(limit {self.max_ratio:.0%})"
            )

    def record(self, *, total: int, dead: int) -> None:
        self._recent.extend([False] * (total - dead) + [True] * dead)


def consumer_build(*, group_id: str, session_timeout_ms: int) -> Consumer:
    return Consumer(
        kafka_config(
            **{
                "group.id": group_id,
                "client.id": f"fanout-{socket.gethostname()}-{os.getpid()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_timeout_ms,
                # Kafka's guidance: heartbeat at most a third of the session timeout.
                "heartbeat.interval.ms": max(session_timeout_ms // 3, 100),
                "fetch.wait.max.ms": settings.FANOUT_FETCH_WAIT_MS,
            }
        )
    )


class FanoutWorker:
    """Consumes feed events in batches and applies them. Drive it with ``run_once``."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        group_id: str,
        batch_size: int,
        batch_timeout: float,
        max_retries: int = 3,
        breaker: DeadLetterBreaker | None = None,
        trim_interval: float = 0.0,
    ) -> None:
        self.consumer = consumer
        self.group_id = group_id
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_retries = max_retries
        self.breaker = breaker or DeadLetterBreaker(max_ratio=1.0, window=1)
        self._stopping = False
        # Fetched but not yet applied: applied first in the next batch.
        self._pending: list[Message] = []
        self._admin: AdminClient | None = None
        self._topic_ids: dict[str, str] = {}
        self._lag_refreshed = 0.0
        self.trim_interval = trim_interval
        self._untrimmed: set[int] = set()
        self._trimming: list[int] = []
        self._stale: set[int] = set()
        self._stale_rows: list[int] = []
        self._unpublished: list[DeadLetter] = []
        self._recovered = False
        self._trimmed_at = time.monotonic()

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [Topic.FEED_EVENTS.topic_name],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback (cooperative: ``partitions`` are the ones added)."""
        consumer.incremental_assign(partitions)
        self._assignment_changed("assigned", partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback for partitions revoked or lost."""
        consumer.incremental_unassign(partitions)
        self._assignment_changed("revoked", partitions)

    def _assignment_changed(self, change: str, partitions: list[TopicPartition]) -> None:
        owned = self._owned()
        metrics.FANOUT_ASSIGNED_PARTITIONS.set(len(owned))
        if partitions:
            logger.info(
                "partitions %s: %s; now owns %s",
                change,
                sorted(tp.partition for tp in partitions),
                sorted(p for _, p in owned),
            )

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping = True

    def run(self) -> None:
        self.subscribe()
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.consumer.close()

    def run_once(self) -> int:
        """Consume and apply at most one batch; return how many messages it held.

        Messages kept from an earlier call (fetched during a retry wait, or held when a
        stop interrupted a retry) come first, so that no offset is committed past them.
        """
        if not self._recovered:
            self._recover()
        messages = [m for m in self.consumer.consume(self.batch_size, self.batch_timeout) if _ok(m)]
        if pending := self._take_pending():
            messages = _in_order([*pending, *messages])
        if messages:
            self._apply_with_retry(messages)
        if self._trimming or (self._untrimmed and time.monotonic() - self._trimmed_at >= self.trim_interval):
            self._trim()
        if time.monotonic() - self._lag_refreshed > LAG_REFRESH_SECONDS:
            self._observe_lag()
        return len(messages)

    def _recover(self) -> None:
        """Flush what a worker that died left behind: stale pages and unpublished dead letters.

        Tried again on the next call while a service is down; batches go on meanwhile.
        """
        try:
            users = stale_pages_flush()
            published = dead_letters_publish_pending(group_id=self.group_id)
        except TRANSIENT_ERRORS as exc:
            logger.warning("recovery failed (%s: %s); will retry", type(exc).__name__, exc)
            close_old_connections()
            return
        self._recovered = True
        if users or published:
            logger.info("recovered", extra={"pages_invalidated": users, "dead_letters_published": published})

    def _take_pending(self) -> list[Message]:
        """The kept messages of partitions still owned (a revoked one is another's now)."""
        if not self._pending:
            return []
        owned = self._owned()
        pending, self._pending = self._pending, []
        return [m for m in pending if (m.topic(), m.partition()) in owned]

    def _apply_with_retry(self, messages: Sequence[Message]) -> None:
        backoff = RETRY_BACKOFF_MIN
        while True:
            try:
                self._apply(messages)
                return
            except TRANSIENT_ERRORS as exc:
                metrics.FANOUT_RETRIES.labels("unavailable").inc()
                logger.warning("batch failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
            close_old_connections()
            self._wait(backoff)
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)
            if self._stopping:
                # Kept, ahead of what the wait fetched: nothing is committed past them. If
                # the loop ends here instead, they are uncommitted, and handed out again.
                self._pending = [*messages, *self._pending]
                return
            # A rebalance while waiting may have given some partitions to another worker.
            owned = self._owned()
            messages = [m for m in messages if (m.topic(), m.partition()) in owned]
            if not messages:
                return

    def _wait(self, seconds: float) -> None:
        """Sleep while still polling, so that the group does not evict this member.

        The assigned partitions are paused, but a rebalance meanwhile can assign more, and
        poll then returns their messages: each is kept for the next batch, and its
        partition paused until the wait ends. Pausing drops what was fetched ahead, and
        resuming fetches again from the message after the last one returned, so nothing
        is skipped.
        """
        self.consumer.pause(self.consumer.assignment())
        deadline = time.monotonic() + seconds
        try:
            while not self._stopping and (left := deadline - time.monotonic()) > 0:
                message = self.consumer.poll(min(left, 0.5))
                if message is not None and _ok(message):
                    self._pending.append(message)
                    self.consumer.pause([TopicPartition(message.topic(), message.partition())])
                    logger.info(
                        "kept a message fetched while waiting; pausing its partition",
                        extra={"partition": message.partition(), "offset": message.offset()},
                    )
        finally:
            self.consumer.resume(self.consumer.assignment())

    def _apply(self, messages: Sequence[Message]) -> None:
        batch = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in _ranges(messages).items())
        with log_context(batch=batch, batch_size=len(messages)):
            self._apply_batch(messages)

    def _apply_batch(self, messages: Sequence[Message]) -> None:
        started = time.monotonic()
        stored = self._stored_offsets(messages)
        self._forget_stale_offsets(messages, stored)
        self._store_offsets(messages, column="fetched_offset")
        applied_to = {key: row.next_offset for key, row in stored.items()}
        fetched_to = {key: row.fetched_offset for key, row in stored.items()}
        fresh = [m for m in messages if m.offset() >= applied_to.get((m.topic(), m.partition()), 0)]
        refetched = [m for m in fresh if m.offset() < fetched_to.get((m.topic(), m.partition()), 0)]
        if len(fresh) < len(messages):
            metrics.FANOUT_REPROCESSED.labels("applied").inc(len(messages) - len(fresh))
        if refetched:
            metrics.FANOUT_REPROCESSED.labels("unapplied").inc(len(refetched))

        decoded: list[tuple[Message, Event]] = []
        failures: list[Failure] = []
        for message in fresh:
            try:
                event = event_decode(message.value())
                if event.type not in HANDLERS:
                    raise UnknownEventType(f"no handler for {event.type!r}")
                decoded.append((message, event))
            except PoisonMessage as exc:
                logger.warning(
                    "undecodable event: %s",
                    exc,
                    extra={"partition": message.partition(), "offset": message.offset()},
                )
                failures.append(Failure.of(message, exc))

        dead_letters: list[DeadLetter] = []
        stale_row = None
        with transaction.atomic():
            changes = self._handle(decoded, failures)
            self.breaker.check(total=len(fresh), dead=len(failures))
            if failures:
                dead_letters = dead_letters_record(failures=failures, group_id=self.group_id)
            if changes.changed:
                stale_row = stale_pages_record(user_ids=changes.changed)
            self._store_offsets(messages, column="next_offset")
        committed_at = timezone.now()

        # Kept until Redis and the broker took them: a retry after a failure skips the
        # applied messages, so it would otherwise never invalidate these pages nor publish
        # these dead letters. Their rows cover a crash meanwhile (see _recover).
        self._stale |= changes.changed
        self._stale_rows += [stale_row] if stale_row else []
        self._unpublished += dead_letters
        if self._stale:
            pages_invalidate(self._stale)
            self._stale = set()
        if self._stale_rows:
            stale_pages_forget(ids=self._stale_rows)
            self._stale_rows = []
        self._untrimmed |= changes.grown
        if self._unpublished:
            dead_letters_publish(dead_letters=self._unpublished)
            self._unpublished = []
        self._commit(messages)
        self.breaker.record(total=len(fresh), dead=len(failures))

        failed = {id(f.message) for f in failures}
        applied = [(m, event) for m, event in decoded if id(m) not in failed]
        for _, event in applied:
            metrics.FANOUT_EVENTS.labels(event.type).inc()
            if event.type == POST_CREATED:
                latency = (committed_at - event.occurred_at).total_seconds()
                metrics.POST_TO_FEED_LATENCY.observe(max(latency, 0.0))
        elapsed = time.monotonic() - started
        metrics.FANOUT_BATCH_DURATION.observe(elapsed)
        logger.info(
            "batch applied",
            extra={
                "applied": len(applied),
                "skipped": len(messages) - len(fresh),
                "dead_letters": len(failures),
                "feeds_changed": len(changes.changed),
                "rows": changes.rows,
                "seconds": round(elapsed, 3),
            },
        )

    def _handle(self, decoded: Sequence[tuple[Message, Event]], failures: list[Failure]) -> FeedChanges:
        """Run handlers over consecutive same-type runs, in order.

        A run that fails for a reason other than a service outage is retried event by
        event, each in its own savepoint and up to ``max_retries`` times; an event that
        still fails becomes a failure for the dead-letter queue.
        """
        changes = FeedChanges()
        for event_type, run in groupby(decoded, key=lambda pair: pair[1].type):
            run = list(run)
            handler = HANDLERS[event_type]
            try:
                with transaction.atomic():
                    changes |= handler([event for _, event in run])
                continue
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                logger.exception("handler %s failed on a run of %d; isolating", event_type, len(run))
            for message, event in run:
                with log_context(
                    event_id=str(event.event_id), event_type=event.type, offset=message.offset()
                ):
                    for attempt in range(1, self.max_retries + 1):
                        try:
                            with transaction.atomic():
                                changes |= handler([event])
                            break
                        except TRANSIENT_ERRORS:
                            raise
                        except Exception as exc:
                            metrics.FANOUT_RETRIES.labels("handler").inc()
                            if attempt == self.max_retries:
                                logger.warning(
                                    "event dead-lettered after %d attempts: %s: %s",
                                    attempt,
                                    type(exc).__name__,
                                    exc,
                                    extra={"partition": message.partition()},
                                )
                                failures.append(Failure.of(message, exc))
        return changes

    def _trim(self) -> None:
        """Trim the feeds that grew since the last round back to FEED_MAX_ENTRIES.

        A round takes the feeds that grew, then trims TRIM_STEP of them per call, so that a
        round over many feeds does not hold up fan-out for seconds. Trimming is idempotent
        and may lag: a feed that was not trimmed before a crash is trimmed when it grows again.
        """
        if not self._trimming:
            self._trimmed_at = time.monotonic()
            self._trimming, self._untrimmed = sorted(self._untrimmed), set()
        users, self._trimming = self._trimming[:TRIM_STEP], self._trimming[TRIM_STEP:]
        started = time.monotonic()
        try:
            deleted = feeds_trim(user_ids=users)
        except TRANSIENT_ERRORS as exc:
            logger.warning("feed trim failed (%s: %s); will retry", type(exc).__name__, exc)
            self._untrimmed.update(users)
            close_old_connections()
            return
        metrics.FEED_TRIMMED.inc(deleted)
        logger.info(
            "feeds trimmed",
            extra={"feeds": len(users), "deleted": deleted, "seconds": round(time.monotonic() - started, 3)},
        )

    def _stored_offsets(self, messages: Sequence[Message]) -> dict[Partition, Stored]:
        """The rows stored for the batch's partitions."""
        partitions = {(m.topic(), m.partition()) for m in messages}
        rows = AppliedOffset.objects.filter(
            consumer_group=self.group_id,
            topic__in={t for t, _ in partitions},
            partition__in={p for _, p in partitions},
        ).values_list("topic", "partition", "next_offset", "fetched_offset", "topic_id")
        return {(t, p): Stored(n, f, i) for t, p, n, f, i in rows if (t, p) in partitions}

    def _forget_stale_offsets(self, messages: Sequence[Message], stored: dict[Partition, Stored]) -> None:
        """Forget, in ``stored`` and in the table, offsets stored for an earlier topic of
        the same name.

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
        for topic in sorted({t for t, _ in skipping}):
            current = self._topic_id(topic, fresh=True)
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
                AppliedOffset.objects.filter(
                    consumer_group=self.group_id, topic=topic, partition__in=[p for _, p in stale]
                ).update(next_offset=0, fetched_offset=0, topic_id=current, updated_at=timezone.now())

    def _topic_id(self, topic: str, *, fresh: bool = False) -> str:
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

    def _store_offsets(self, messages: Sequence[Message], *, column: str) -> None:
        """Raise ``column`` (next_offset or fetched_offset) to each partition's next offset.

        A row stored without a topic id takes the topic's id now; one stored with another
        id keeps it, so that ``_forget_stale_offsets`` still tells it apart.
        """
        assert column in {"next_offset", "fetched_offset"}
        table = AppliedOffset._meta.db_table
        rows = [(self.group_id, t, p, o, self._topic_id(t)) for (t, p), o in _next_offsets(messages).items()]
        values = ", ".join(["(%s, %s, %s::integer, %s::bigint, %s)"] * len(rows))
        # A new row starts with both offsets at what is known: fetched, and maybe applied.
        applied = "o" if column == "next_offset" else "0"
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} "
                "(consumer_group, topic, partition, next_offset, fetched_offset, topic_id, updated_at) "
                f"SELECT g, t, p, {applied}, o, i, now() "
                f"FROM (VALUES {values}) AS batch (g, t, p, o, i) "
                "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET "
                f"{column} = GREATEST({table}.{column}, EXCLUDED.{column}), "
                f"topic_id = COALESCE(NULLIF({table}.topic_id, ''), EXCLUDED.topic_id), "
                "updated_at = EXCLUDED.updated_at",
                [value for row in rows for value in row],
            )

    def _owned(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def _commit(self, messages: Sequence[Message]) -> None:
        """Commit Kafka offsets, only for partitions this worker still owns."""
        owned = self._owned()
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in _next_offsets(messages).items() if (t, p) in owned
        ]
        if len(offsets) < len({(m.topic(), m.partition()) for m in messages}):
            logger.info("not committing offsets of partitions revoked during the batch")
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def _observe_lag(self) -> None:
        self._lag_refreshed = time.monotonic()
        try:
            assignment = self.consumer.assignment()
            for tp in self.consumer.position(assignment):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))
        except KafkaException as exc:
            logger.debug("lag not observed: %s", exc)


def _next_offsets(messages: Sequence[Message]) -> dict[Partition, int]:
    next_offsets: dict[Partition, int] = {}
    for m in messages:
        key = (m.topic(), m.partition())
        next_offsets[key] = max(next_offsets.get(key, 0), m.offset() + 1)
    return next_offsets


def _in_order(messages: Sequence[Message]) -> list[Message]:
    """The messages in offset order per partition, without repeats (a partition revoked and
    assigned back is fetched again from its committed offset)."""
    unique = {(m.topic(), m.partition(), m.offset()): m for m in reversed(messages)}
    return [unique[key] for key in sorted(unique)]


def _ranges(messages: Sequence[Message]) -> dict[int, tuple[int, int]]:
    ranges: dict[int, tuple[int, int]] = {}
    for m in messages:
        lo, hi = ranges.get(m.partition(), (m.offset(), m.offset()))
        ranges[m.partition()] = (min(lo, m.offset()), max(hi, m.offset()))
    return ranges


def _ok(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal():
        raise KafkaException(error)
    logger.warning("consumer error: %s", error)
    return False
