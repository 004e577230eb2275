"""The dead-letter queue: poison messages kept on a Kafka topic and as DeadLetter rows."""

import datetime
import traceback as traceback_module
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from consumers.models import DeadLetter
from core import metrics
from eventbus.producer import messages_publish_confirmed
from eventbus.topics import Topic

# Headers the DLQ adds to a dead-lettered message; a replay strips them again.
HEADER_PREFIX = "dlq."
# Added by a replay: the id of the dead letter replayed, so that a replay that fails again
# is linked to it (DeadLetter.replay_of).
REPLAY_OF_HEADER = f"{HEADER_PREFIX}replay_of"


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


def dead_letters_record(*, failures: Sequence[Failure], group_id: str) -> list[DeadLetter]:
    """Store the failures as DeadLetter rows; a message seen before is not stored twice.

    Returns the dead letters (unsaved instances) for ``dead_letters_publish``.
    """
    dead_letters = [
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
            original_timestamp=f.message.timestamp()[1],
        )
        for f in failures
    ]
    _link_replays(dead_letters)
    DeadLetter.objects.bulk_create(dead_letters, ignore_conflicts=True)
    return dead_letters


def _link_replays(dead_letters: Sequence[DeadLetter]) -> None:
    """Link each dead letter that is a failed replay to the dead letter replayed, if it
    still exists."""
    replayed = []
    for dl in dead_letters:
        value = dict(dl.headers).get(REPLAY_OF_HEADER, "")
        if value.isdigit() and len(value) < 19:
            replayed.append((dl, int(value)))
    if not replayed:
        return
    existing = set(DeadLetter.objects.filter(pk__in={pk for _, pk in replayed}).values_list("pk", flat=True))
    for dl, replay_of in replayed:
        if replay_of in existing:
            dl.replay_of_id = replay_of


def _dlq_message(dl: DeadLetter) -> dict:
    headers = [(name, value) for name, value in dl.headers]
    headers += [
        (f"{HEADER_PREFIX}original.topic", dl.topic),
        (f"{HEADER_PREFIX}original.partition", str(dl.partition)),
        (f"{HEADER_PREFIX}original.offset", str(dl.offset)),
        (f"{HEADER_PREFIX}original.timestamp", str(dl.original_timestamp)),
        (f"{HEADER_PREFIX}consumer.group", dl.consumer_group),
        (f"{HEADER_PREFIX}error.class", dl.error_class),
        (f"{HEADER_PREFIX}error.message", dl.error_message[:1000]),
        (f"{HEADER_PREFIX}error.traceback", dl.traceback[-4000:]),
        (f"{HEADER_PREFIX}failed_at", dl.failed_at.isoformat()),
    ]
    return {
        "topic": Topic.FEED_EVENTS_DLQ.topic_name,
        "key": None if dl.key is None else bytes(dl.key),
        "value": None if dl.value is None else bytes(dl.value),
        "headers": headers,
    }


def dead_letters_publish(*, dead_letters: Sequence[DeadLetter]) -> None:
    """Copy the dead letters to the DLQ topic, wait until the broker has them all, then mark
    their rows published.

    Raises DeliveryFailed with nothing marked: the caller keeps them and tries again. A
    copy may then reach the topic twice; the DLQ is at-least-once.
    """
    messages_publish_confirmed([_dlq_message(dl) for dl in dead_letters])
    which = Q()
    for dl in dead_letters:
        which |= Q(consumer_group=dl.consumer_group, topic=dl.topic, partition=dl.partition, offset=dl.offset)
    DeadLetter.objects.filter(which, published_at__isnull=True).update(published_at=timezone.now())
    for dl in dead_letters:
        metrics.DEAD_LETTERS.labels(dl.error_class).inc()


# Unpublished dead letters copied per round by dead_letters_publish_pending.
PUBLISH_CHUNK = 100


def dead_letters_publish_pending(*, group_id: str) -> int:
    """Publish the group's dead letters that never reached the DLQ topic (a worker died
    between its commit and the broker's acknowledgement); return how many."""
    published = 0
    while dead_letters := list(
        DeadLetter.objects.filter(consumer_group=group_id, published_at__isnull=True).order_by("pk")[
            :PUBLISH_CHUNK
        ]
    ):
        dead_letters_publish(dead_letters=dead_letters)
        published += len(dead_letters)
    return published


def dead_letters_replay(*, dead_letters: Sequence[DeadLetter]) -> int:
    """Republish to the original topics, each message naming its dead letter in a
    ``dlq.replay_of`` header; mark the rows replayed once the broker has them all."""
    messages = [
        {
            "topic": dl.topic,
            "key": None if dl.key is None else bytes(dl.key),
            "value": None if dl.value is None else bytes(dl.value),
            "headers": [
                *((name, value) for name, value in dl.headers if not name.startswith(HEADER_PREFIX)),
                (REPLAY_OF_HEADER, str(dl.pk)),
            ],
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
