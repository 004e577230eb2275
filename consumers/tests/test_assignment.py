"""The worker's partitions against the real broker: what a pause survives, what the worker
resumes, and the guard against an owned partition that is no longer fetched from."""

import logging
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import REGISTRY

from consumers.assignment import Assignment
from eventbus.topics import kafka_config

pytestmark = pytest.mark.broker


@pytest.fixture
def consumer(settings) -> Iterator[Consumer]:
    consumer = Consumer(
        kafka_config(
            **{
                "group.id": settings.FANOUT_GROUP_ID,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
    )
    yield consumer
    consumer.close()


def publish(settings, partition: int, count: int) -> None:
    producer = Producer(kafka_config())
    for _ in range(count):
        producer.produce(settings.FEED_EVENTS_TOPIC, value=b"{}", partition=partition)
    assert producer.flush(10) == 0


def fetch(consumer: Consumer, *, seconds: float, count: int | None = None) -> list:
    """The messages the consumer hands out within ``seconds``, or until ``count`` came."""
    messages, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and (count is None or len(messages) < count):
        wanted = 10 if count is None else count - len(messages)
        messages += [m for m in consumer.consume(wanted, min(left, 0.2)) if m.error() is None]
    return messages


def stalled(settings, partition: int) -> float:
    """The partition's stalled gauge; it must have been observed."""
    labels = {"topic": settings.FEED_EVENTS_TOPIC, "partition": str(partition)}
    value = REGISTRY.get_sample_value("feed_fanout_partition_stalled_seconds", labels)
    assert value is not None, f"partition {partition} was not observed"
    return value


def test_a_partition_revoked_during_a_wait_is_fetched_from_once_assigned_back(settings, consumer):
    tp = TopicPartition(settings.FEED_EVENTS_TOPIC, 0)
    publish(settings, 0, 3)
    assignment = Assignment(consumer, stall_seconds=60)
    assignment.on_assign(consumer, [tp])

    with assignment.all_paused():
        assignment.on_revoke(consumer, [tp])
    # Assigned back without the callback's own resume: only the revocation's resume counts.
    consumer.incremental_assign([TopicPartition(settings.FEED_EVENTS_TOPIC, 0)])

    assert len(fetch(consumer, seconds=10, count=3)) == 3


def test_a_partition_assigned_during_a_wait_is_paused_until_it_ends(settings, consumer):
    publish(settings, 1, 2)
    assignment = Assignment(consumer, stall_seconds=60)

    with assignment.all_paused():
        assignment.on_assign(consumer, [TopicPartition(settings.FEED_EVENTS_TOPIC, 1)])
        during = fetch(consumer, seconds=2)
    after = fetch(consumer, seconds=10, count=2)

    assert during == []
    assert len(after) == 2


def test_a_partition_assigned_with_a_pause_left_from_before_is_resumed(settings, consumer):
    tp = TopicPartition(settings.FEED_EVENTS_TOPIC, 2)
    publish(settings, 2, 2)
    consumer.incremental_assign([tp])
    consumer.pause([tp])
    consumer.incremental_unassign([tp])

    Assignment(consumer, stall_seconds=60).on_assign(consumer, [tp])

    assert len(fetch(consumer, seconds=10, count=2)) == 2


def test_an_owned_partition_not_fetched_from_with_messages_left_is_reported(settings, consumer, caplog):
    stuck, quiet = (TopicPartition(settings.FEED_EVENTS_TOPIC, p) for p in (0, 1))
    assignment = Assignment(consumer, stall_seconds=0)
    assignment.on_assign(consumer, [stuck, quiet])
    # A pause nobody asked for: the fault the guard is for.
    consumer.pause([TopicPartition(settings.FEED_EVENTS_TOPIC, 0)])
    publish(settings, 0, 4)

    with caplog.at_level(logging.WARNING, logger="consumers.assignment"):
        assignment.observe()

    assert stalled(settings, 0) > 0
    assert stalled(settings, 1) == 0, "a partition with nothing on it is idle, not stalled"
    assert "partition 0 is owned but handed out no message" in caplog.text


def test_a_partition_with_messages_left_is_not_reported_for_a_wait_on_purpose(settings, consumer):
    tps = [TopicPartition(settings.FEED_EVENTS_TOPIC, p) for p in (0, 1)]
    assignment = Assignment(consumer, stall_seconds=60)
    assignment.on_assign(consumer, tps)
    publish(settings, 0, 2)
    # Owned for longer than stall_seconds, all of it paused for a retry wait.
    assignment._fetched = {key: time.monotonic() - 120 for key in assignment._fetched}
    with assignment.all_paused():
        pass

    assignment.observe()

    assert (stalled(settings, 0), stalled(settings, 1)) == (0, 0)


def test_a_partition_fetched_from_lately_is_not_reported(settings, consumer):
    tp = TopicPartition(settings.FEED_EVENTS_TOPIC, 0)
    assignment = Assignment(consumer, stall_seconds=60)
    assignment.on_assign(consumer, [tp])
    publish(settings, 0, 3)
    assignment._fetched = {key: time.monotonic() - 120 for key in assignment._fetched}
    assignment.fetched(fetch(consumer, seconds=10, count=1))  # one of three: two are left

    assignment.observe()

    assert stalled(settings, 0) == 0
