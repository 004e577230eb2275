"""Messages the fan-out worker fetched but has not applied yet, kept for its next batch.

A retry waits while still polling (so that the group keeps the worker), with every owned
partition paused (``consumers.assignment``); a stop during a retry holds the batch it was
retrying. Kept messages are applied first in the next batch, so that no Kafka offset is
committed past them.
"""

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumers.assignment import Assignment

logger = logging.getLogger(__name__)


class KeptMessages:
    """The messages kept for the next batch of one consumer."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self._messages: list[Message] = []

    def keep(self, messages: Sequence[Message]) -> None:
        """Keep ``messages`` ahead of those kept already (fetched after them)."""
        self._messages = [*messages, *self._messages]

    def take(self) -> list[Message]:
        """The kept messages of partitions still owned (a revoked one is another's now)."""
        if not self._messages:
            return []
        owned = self.assignment.owned()
        kept, self._messages = self._messages, []
        return [m for m in kept if (m.topic(), m.partition()) in owned]

    def wait(self, seconds: float, *, stopping: Callable[[], bool]) -> None:
        """Sleep while still polling, so that the group does not evict this member.

        Every owned partition is paused for the wait, and so is one assigned meanwhile;
        pausing drops what was fetched ahead, and resuming fetches again from the message
        after the last one returned, so nothing is skipped. Should poll still return a
        message, it is kept for the next batch and its partition paused.
        """
        consumer = self.assignment.consumer
        deadline = time.monotonic() + seconds
        with self.assignment.all_paused():
            while not stopping() and (left := deadline - time.monotonic()) > 0:
                message = consumer.poll(min(left, 0.5))
                if message is not None and message_ok(message):
                    self._messages.append(message)
                    self.assignment.pause([TopicPartition(message.topic(), message.partition())])
                    logger.info(
                        "kept a message fetched while waiting; pausing its partition",
                        extra={"partition": message.partition(), "offset": message.offset()},
                    )


def in_order(messages: Sequence[Message]) -> list[Message]:
    """The messages in offset order per partition, without repeats (a partition revoked and
    assigned back is fetched again from its committed offset)."""
    unique = {(m.topic(), m.partition(), m.offset()): m for m in reversed(messages)}
    return [unique[key] for key in sorted(unique)]


def message_ok(message: Message) -> bool:
    """Whether ``message`` carries an event; a fatal consumer error raises KafkaException."""
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal():
        raise KafkaException(error)
    logger.warning("consumer error: %s", error)
    return False
