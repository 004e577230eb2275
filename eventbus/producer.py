"""The process-wide Kafka producer.

One producer per process, created on first use so that no librdkafka client crosses a
gunicorn fork: a child that inherits the parent's object sees a different pid and builds
its own. Outstanding messages are flushed at interpreter exit.
"""

import atexit
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer
from django.conf import settings

from eventbus.topics import kafka_config

logger = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str | bytes]]
DeliveryCallback = Callable[[KafkaError | None, Message], None]

# Reentrant: a flush under it serves delivery reports, which may retire the producer.
_lock = threading.RLock()
_producer: Producer | None = None
_producer_pid: int | None = None
# Run on the thread that served delivery reports, after each poll or flush that may have
# served some: a report callback can queue its work and do it once per batch.
_after_reports: list[Callable[[], None]] = []


def producer_after_reports(hook: Callable[[], None]) -> None:
    """Call ``hook`` after every poll or flush that may have served delivery reports, on the
    thread that served them."""
    if hook not in _after_reports:
        _after_reports.append(hook)


def _reports_served() -> None:
    for hook in _after_reports:
        try:
            hook()
        except Exception:
            logger.exception("delivery report hook failed")


def producer_get() -> Producer:
    global _producer, _producer_pid
    pid = os.getpid()
    if _producer is not None and _producer_pid == pid:
        return _producer
    with _lock:
        if _producer is None or _producer_pid != pid:
            _producer = Producer(
                kafka_config(
                    **{
                        "enable.idempotence": True,
                        "acks": "all",
                        "linger.ms": settings.KAFKA_PRODUCER_LINGER_MS,
                        "message.timeout.ms": settings.KAFKA_MESSAGE_TIMEOUT_MS,
                        "client.id": f"feedsite-{pid}",
                    }
                )
            )
            if _producer_pid is None:
                atexit.register(producer_flush)
            _producer_pid = pid
    return _producer


def producer_flush(timeout: float | None = None) -> int:
    """Wait for outstanding deliveries; return how many are still undelivered."""
    if _producer is None or _producer_pid != os.getpid():
        return 0
    if timeout is None:
        timeout = settings.KAFKA_PRODUCER_FLUSH_TIMEOUT
    remaining = _producer.flush(timeout)
    _reports_served()
    if remaining:
        logger.error("%d Kafka messages were not delivered before the flush timeout", remaining)
    return remaining


def producer_reset() -> None:
    """Drop the producer so the next use builds one from current settings."""
    global _producer, _producer_pid
    with _lock:
        if _producer is not None and _producer_pid == os.getpid():
            _producer.flush(1)
            _reports_served()
        _producer = None


def _unusable(err: KafkaError) -> bool:
    """Whether a producer that reported ``err`` can never deliver again.

    A broker that lost track of an idempotent producer (after a long enough outage, or a
    restart) fences it: every later message is refused with PRODUCER_FENCED, which
    librdkafka does not flag as fatal. A new producer gets a new producer id and delivers.
    """
    return err.fatal() or err.code() == KafkaError.PRODUCER_FENCED


def _retire(producer: Producer, err: KafkaError) -> None:
    """Drop ``producer`` if it is still the process's: the next use builds a new one. What
    it still holds is reported undelivered or never; the outbox relay publishes those rows."""
    global _producer
    with _lock:
        if _producer is producer:
            _producer = None
            logger.error("Kafka producer unusable (%s); a new one takes over", err)


def message_publish(
    *,
    topic: str,
    key: str | bytes | None,
    value: bytes | None,
    headers: Headers | None = None,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    """Queue one message; delivery is reported to ``on_delivery`` from a later poll."""
    producer = producer_get()

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None and _unusable(err):
            _retire(producer, err)
        if on_delivery is not None:
            on_delivery(err, msg)

    try:
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
    except BufferError:
        # The local queue is full: serve delivery reports to make room, then try once more.
        producer.poll(1.0)
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
    producer.poll(0)
    _reports_served()


class DeliveryFailed(Exception):
    """The broker did not acknowledge every message in time."""


@dataclass
class Deliveries:
    """The delivery reports of one publish call.

    Reports may be served on another thread that polls the same producer, so a caller
    that needs the outcome waits for it rather than assuming ``flush`` ran the callbacks.
    """

    expected: int
    acked: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.expected == 0:
            self._done.set()

    def ack(self, item: object) -> None:
        self.acked.append(item)
        self._check()

    def fail(self, error: object) -> None:
        self.failed.append(error)
        self._check()

    def _check(self) -> None:
        if len(self.acked) + len(self.failed) >= self.expected:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """Whether every report arrived within ``timeout`` seconds."""
        return self._done.wait(timeout)


def messages_publish_confirmed(messages: Sequence[dict], *, timeout: float | None = None) -> None:
    """Publish ``messages`` (keyword arguments of message_publish) and wait for the broker.

    Returns once every message is acknowledged; raises DeliveryFailed otherwise.
    """
    if timeout is None:
        timeout = settings.KAFKA_PRODUCER_FLUSH_TIMEOUT
    deliveries = Deliveries(expected=len(messages))

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            deliveries.ack(msg)
        else:
            deliveries.fail(err)

    for message in messages:
        message_publish(**message, on_delivery=report)
    producer_flush(timeout)
    deliveries.wait(timeout)
    missing = len(messages) - len(deliveries.acked)
    if missing:
        first = deliveries.failed[0] if deliveries.failed else "no delivery report"
        raise DeliveryFailed(f"{missing} of {len(messages)} not delivered: {first}")
