"""The dead-letter queue: poison messages kept on a Kafka topic and as DeadLetter rows."""

import datetime
import traceback as traceback_module
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message
from django.db import transaction
from django.utils import timezone

from consumers.models import DeadLetter
from consumers.producer import messages_publish_confirmed
from consumers.topics import Topic
from feedsite import metrics

# Headers the DLQ adds to a dead-lettered message; a replay strips them again.
HEADER_PREFIX = "dlq."


@dataclass(frozen=True)
class Failure:
    """A consumed message and why it could not be processed."""

    message: Message
    error: BaseException
    failed_at: datetime.datetime

    @classmethod
    def of(cls, message: Message, error: BaseException) -> "Failure":
        return cls(message=message, error=error, failed_at=timezone.now())

    @property
    def error_class(self) -> str:
        return type(self.error).__name__

    @property
    def traceback(self) -> str:
        return "".join(traceback_module.format_exception(self.error))


def _header_text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="backslashreplace")


def dead_letters_record(*, failures: Sequence[Failure], group_id: str) -> None:
    """Store the failures as DeadLetter rows; a message seen before is not stored twice."""
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                topic=f.message.topic(),
                partition=f.message.partition(),
                offset=f.message.offset(),
                key=f.message.key(),
                value=f.message.value(),
                headers=[[k, _header_text(v)] for k, v in (f.message.headers() or [])],
                error_class=f.error_class,
                error_message=str(f.error),
                traceback=f.traceback,
                consumer_group=group_id,
                failed_at=f.failed_at,
            )
            for f in failures
        ],
        ignore_conflicts=True,
    )


def dead_letters_publish(*, failures: Sequence[Failure], group_id: str) -> None:
    """Copy the failed messages to the DLQ topic and wait until the broker has them all."""
    topic = Topic.FEED_EVENTS_DLQ.topic_name
    messages = []
    for f in failures:
        _, timestamp = f.message.timestamp()
        headers = list(f.message.headers() or [])
        headers += [
            (f"{HEADER_PREFIX}original.topic", f.message.topic()),
            (f"{HEADER_PREFIX}original.partition", str(f.message.partition())),
            (f"{HEADER_PREFIX}original.offset", str(f.message.offset())),
            (f"{HEADER_PREFIX}original.timestamp", str(timestamp)),
            (f"{HEADER_PREFIX}consumer.group", group_id),
            (f"{HEADER_PREFIX}error.class", f.error_class),
            (f"{HEADER_PREFIX}error.message", str(f.error)[:1000]),
            (f"{HEADER_PREFIX}error.traceback", f.traceback[-4000:]),
            (f"{HEADER_PREFIX}failed_at", f.failed_at.isoformat()),
        ]
        messages.append(
            {"topic": topic, "key": f.message.key(), "value": f.message.value(), "headers": headers}
        )
    messages_publish_confirmed(messages)
    for f in failures:
        metrics.DEAD_LETTERS.labels(f.error_class).inc()


def dead_letters_replay(*, dead_letters: Sequence[DeadLetter]) -> int:
    """Republish to the original topics; mark the rows replayed once the broker has them all."""
    messages = [
        {
            "topic": dl.topic,
            "key": None if dl.key is None else bytes(dl.key),
            "value": None if dl.value is None else bytes(dl.value),
            "headers": [(name, value) for name, value in dl.headers if not name.startswith(HEADER_PREFIX)],
        }
        for dl in dead_letters
    ]
    messages_publish_confirmed(messages)
    return _status_set(dead_letters, DeadLetter.Status.REPLAYED)


def dead_letters_discard(*, dead_letters: Sequence[DeadLetter]) -> int:
    return _status_set(dead_letters, DeadLetter.Status.DISCARDED)


@transaction.atomic
def _status_set(dead_letters: Sequence[DeadLetter], status: str) -> int:
    return DeadLetter.objects.filter(pk__in=[dl.pk for dl in dead_letters]).update(
        status=status, status_changed_at=timezone.now()
    )
