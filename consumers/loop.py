"""The fan-out consumer loop.

Each batch goes: decode, apply handlers and record dead letters in one database
transaction, invalidate cached pages, copy dead letters to the DLQ topic, then commit
offsets. Offsets are committed only after everything before them has succeeded, so a
crash anywhere means the batch is consumed again, and every step is safe to repeat.
"""

import logging
import os
import socket
import time
from collections.abc import Sequence
from itertools import groupby

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from django.db import close_old_connections, transaction
from django.db.utils import InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.deadletters import Failure, dead_letters_publish, dead_letters_record
from consumers.events import Event, PoisonMessage, UnknownEventType, event_decode
from consumers.handlers import HANDLERS
from consumers.producer import DeliveryFailed
from consumers.topics import Topic, kafka_config
from feeds.cache import pages_invalidate
from feedsite import metrics

logger = logging.getLogger(__name__)

# Failures of the services around us: wait and retry, never dead-letter.
TRANSIENT_ERRORS = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    KafkaException,
    DeliveryFailed,
)

RETRY_BACKOFF_MIN = 0.5
RETRY_BACKOFF_MAX = 30.0


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
            }
        )
    )


class FanoutWorker:
    """Consumes feed events in batches and applies them. Drive it with ``run_once``."""

    def __init__(self, *, consumer: Consumer, group_id: str, batch_size: int, batch_timeout: float) -> None:
        self.consumer = consumer
        self.group_id = group_id
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self._stopping = False

    def subscribe(self) -> None:
        self.consumer.subscribe([Topic.FEED_EVENTS.topic_name])

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
        """Consume and apply at most one batch; return how many messages it held."""
        messages = [m for m in self.consumer.consume(self.batch_size, self.batch_timeout) if _ok(m)]
        if messages:
            self._apply_with_retry(messages)
        return len(messages)

    def _apply_with_retry(self, messages: Sequence[Message]) -> None:
        backoff = RETRY_BACKOFF_MIN
        while True:
            try:
                self._apply(messages)
                return
            except TRANSIENT_ERRORS as exc:
                logger.warning("batch failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
            close_old_connections()
            self._wait(backoff)
            backoff = min(backoff * 2, RETRY_BACKOFF_MAX)
            if self._stopping:
                # Uncommitted: the group hands these messages out again.
                return

    def _wait(self, seconds: float) -> None:
        """Sleep while still polling, so that the group does not evict this member."""
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        try:
            while not self._stopping and (left := deadline - time.monotonic()) > 0:
                self.consumer.poll(min(left, 0.5))
        finally:
            self.consumer.resume(self.consumer.assignment())

    def _apply(self, messages: Sequence[Message]) -> None:
        started = time.monotonic()
        decoded: list[tuple[Message, Event]] = []
        failures: list[Failure] = []
        for message in messages:
            try:
                event = event_decode(message.value())
                if event.type not in HANDLERS:
                    raise UnknownEventType(f"no handler for {event.type!r}")
                decoded.append((message, event))
            except PoisonMessage as exc:
                failures.append(Failure.of(message, exc))

        with transaction.atomic():
            users = self._handle(decoded, failures)
            if failures:
                dead_letters_record(failures=failures, group_id=self.group_id)
        committed_at = timezone.now()

        if users:
            pages_invalidate(users)
        if failures:
            dead_letters_publish(failures=failures, group_id=self.group_id)
        self._commit(messages)

        failed = {id(f.message) for f in failures}
        for message, event in decoded:
            if id(message) not in failed:
                metrics.FANOUT_EVENTS.labels(event.type).inc()
                metrics.POST_TO_FEED_LATENCY.observe(
                    max((committed_at - event.occurred_at).total_seconds(), 0.0)
                )
        metrics.FANOUT_BATCH_DURATION.observe(time.monotonic() - started)
        logger.info(
            "batch applied: messages=%d events=%d dead_letters=%d users=%d seconds=%.3f",
            len(messages),
            len(decoded),
            len(failures),
            len(users),
            time.monotonic() - started,
        )

    def _handle(self, decoded: Sequence[tuple[Message, Event]], failures: list[Failure]) -> set[int]:
        """Run handlers over consecutive same-type runs, in order.

        A run that fails for a reason other than a service outage is retried event by
        event, each in its own savepoint, and the events that still fail become failures.
        """
        users: set[int] = set()
        for event_type, run in groupby(decoded, key=lambda pair: pair[1].type):
            run = list(run)
            handler = HANDLERS[event_type]
            try:
                with transaction.atomic():
                    users |= handler([event for _, event in run])
                continue
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                logger.exception("handler %s failed on a run of %d; isolating", event_type, len(run))
            for message, event in run:
                try:
                    with transaction.atomic():
                        users |= handler([event])
                except TRANSIENT_ERRORS:
                    raise
                except Exception as exc:
                    failures.append(Failure.of(message, exc))
        return users

    def _commit(self, messages: Sequence[Message]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            next_offsets[key] = max(next_offsets.get(key, 0), m.offset() + 1)
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
            asynchronous=False,
        )


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
