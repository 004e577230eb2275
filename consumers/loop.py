"""The fan-out consumer loop.

Each batch goes: skip what was already applied (``consumers.offsets``), decode, apply
handlers (``consumers.isolation``), then in one database transaction record the dead
letters, what the handlers changed (``effects.record``) and the partitions' next offsets;
after the commit make the changes effective (``effects.committed``: for the feeds, the
cached pages), copy dead letters to the DLQ topic, then commit the Kafka offsets.
Unpublished dead letters, and whatever the effects keep, stay in PostgreSQL until the
broker (or Redis) took them, and a worker that starts flushes what a crashed one left.

Exactly-once effect: the offsets stored with the feed entries say what was applied, so a
batch consumed again after a crash (before its Kafka commit) is recognised and skipped,
and every handler is idempotent besides.
"""

import logging
import os
import socket
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, Message, TopicPartition
from django.conf import settings
from django.db import close_old_connections, transaction

from consumers.assignment import Assignment
from consumers.breaker import DeadLetterBreaker
from consumers.deadletters import dead_letters_publish, dead_letters_publish_pending, dead_letters_record
from consumers.effects import BatchEffects, Changes
from consumers.isolation import TRANSIENT_ERRORS, events_decode, events_handle
from consumers.kept import KeptMessages, in_order, message_ok
from consumers.models import DeadLetter
from consumers.offsets import AppliedOffsets, next_offsets, offset_ranges
from core import metrics
from core.logcontext import log_context
from eventbus.topics import Topic, kafka_config

logger = logging.getLogger(__name__)

RETRY_BACKOFF_MIN = 0.5
RETRY_BACKOFF_MAX = 30.0
LAG_REFRESH_SECONDS = 5.0


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
    """Consumes feed events in batches and applies them. Drive it with ``run_once``.

    ``effects`` is told what each batch's handlers changed (``feeds.effects.FeedEffects``).
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        group_id: str,
        batch_size: int,
        batch_timeout: float,
        effects: BatchEffects,
        max_retries: int = 3,
        breaker: DeadLetterBreaker | None = None,
        stall_seconds: float = 60.0,
    ) -> None:
        self.consumer = consumer
        self.group_id = group_id
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.effects = effects
        self.max_retries = max_retries
        self.breaker = breaker or DeadLetterBreaker(max_ratio=1.0, window=1)
        self.offsets = AppliedOffsets(group_id=group_id)
        self._stopping = False
        self.assignment = Assignment(consumer, stall_seconds=stall_seconds)
        # Fetched but not yet applied: applied first in the next batch.
        self.kept = KeptMessages(self.assignment)
        self._lag_refreshed = 0.0
        # Committed but not yet on the DLQ topic: a retry skips the applied messages, so
        # it would otherwise never publish them. Their rows cover a crash (see _recover).
        self._unpublished: list[DeadLetter] = []
        self._recovered = False

    def subscribe(self) -> None:
        self.consumer.subscribe(
            [Topic.FEED_EVENTS.topic_name],
            on_assign=self.assignment.on_assign,
            on_revoke=self.assignment.on_revoke,
            on_lost=self.assignment.on_revoke,
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
        messages = self._consume()
        if kept := self.kept.take():
            messages = in_order([*kept, *messages])
        if messages:
            self._apply_with_retry(messages)
        self.effects.tick()
        if time.monotonic() - self._lag_refreshed > LAG_REFRESH_SECONDS:
            self.assignment.observe()
            self._lag_refreshed = time.monotonic()
        return len(messages)

    def _consume(self) -> list[Message]:
        """The next batch: what has arrived, up to ``batch_size`` messages.

        Waits up to ``batch_timeout`` for a first message, then takes what is already
        fetched and keeps taking while more keeps arriving, for at most ``batch_timeout``
        in all, but never waits to fill the batch: an event on a quiet topic is applied
        at once, and a backlog (which builds up while a batch is applied) still makes
        large batches.
        """
        deadline = time.monotonic() + self.batch_timeout
        messages = self.consumer.consume(self.batch_size, 0) or self.consumer.consume(1, self.batch_timeout)
        while messages and len(messages) < self.batch_size and time.monotonic() < deadline:
            more = self.consumer.consume(self.batch_size - len(messages), 0)
            if not more:
                break
            messages += more
        messages = [m for m in messages if message_ok(m)]
        self.assignment.fetched(messages)
        return messages

    def _recover(self) -> None:
        """Flush what a worker that died left behind: the effects' and unpublished dead letters.

        Tried again on the next call while a service is down; batches go on meanwhile.
        """
        try:
            done = self.effects.recover()
            done["dead_letters_published"] = dead_letters_publish_pending(group_id=self.group_id)
        except TRANSIENT_ERRORS as exc:
            logger.warning("recovery failed (%s: %s); will retry", type(exc).__name__, exc)
            close_old_connections()
            return
        self._recovered = True
        if any(done.values()):
            logger.info("recovered", extra=done)

    def _apply_with_retry(self, messages: Sequence[Message]) -> None:
        """Apply the batch, waiting out service outages, until it is applied, or until a
        rebalance took all its partitions and what an applied part of it left to do after
        its commit (pages to invalidate, dead letters to publish) is done."""
        backoff = RETRY_BACKOFF_MIN
        while True:
            try:
                if messages:
                    self._apply(messages)
                else:
                    self._after_commit()
                return
            except TRANSIENT_ERRORS as exc:
                metrics.FANOUT_RETRIES.labels("unavailable").inc()
                logger.warning("batch failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
            close_old_connections()
            self.kept.wait(backoff, stopping=lambda: self._stopping)
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)
            if self._stopping:
                # Kept, ahead of what the wait fetched: nothing is committed past them. If
                # the loop ends here instead, they are uncommitted, and handed out again.
                self.kept.keep(messages)
                return
            # A rebalance while waiting may have given some partitions to another worker.
            owned = self.assignment.owned()
            messages = [m for m in messages if (m.topic(), m.partition()) in owned]

    def _apply(self, messages: Sequence[Message]) -> None:
        batch = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in offset_ranges(messages).items())
        with log_context(batch=batch, batch_size=len(messages)):
            self._apply_batch(messages)

    def _apply_batch(self, messages: Sequence[Message]) -> None:
        """Apply a batch exactly once in effect, then commit its Kafka offsets.

        The handlers' writes, the dead letters, the effects' record and the applied
        offsets commit in one transaction; what follows it is kept (dead letters, the
        effects' own state) until it succeeded, since a retry skips the applied messages.
        """
        started = time.monotonic()
        fresh = self.offsets.fetched(messages)
        decoded, failures = events_decode(fresh)
        dead_letters: list[DeadLetter] = []
        with transaction.atomic():
            changes = events_handle(
                decoded, changes=self.effects.changes(), failures=failures, max_retries=self.max_retries
            )
            self.breaker.check(total=len(fresh), dead=len(failures))
            if failures:
                dead_letters = dead_letters_record(failures=failures, group_id=self.group_id)
            self.effects.record(changes)
            self.offsets.store_applied(messages)
        self._unpublished += dead_letters
        self._after_commit(changes)
        self._commit(messages)
        self.breaker.record(total=len(fresh), dead=len(failures))

        failed = {id(f.message) for f in failures}
        applied = [event for m, event in decoded if id(m) not in failed]
        for event in applied:
            metrics.FANOUT_EVENTS.labels(event.type).inc()
        elapsed = time.monotonic() - started
        metrics.FANOUT_BATCH_DURATION.observe(elapsed)
        logger.info(
            "batch applied",
            extra={
                "applied": len(applied),
                "skipped": len(messages) - len(fresh),
                "dead_letters": len(failures),
                **changes.log_fields(),
                "seconds": round(elapsed, 3),
            },
        )

    def _after_commit(self, changes: Changes | None = None) -> None:
        """Make a committed batch's changes effective and publish its dead letters; raises a
        transient error with both kept, for the next call."""
        self.effects.committed(self.effects.changes() if changes is None else changes)
        if self._unpublished:
            dead_letters_publish(dead_letters=self._unpublished)
            self._unpublished = []

    def _commit(self, messages: Sequence[Message]) -> None:
        """Commit Kafka offsets, only for partitions this worker still owns."""
        owned = self.assignment.owned()
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(messages).items() if (t, p) in owned]
        if len(offsets) < len({(m.topic(), m.partition()) for m in messages}):
            logger.info("not committing offsets of partitions revoked during the batch")
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=False)
