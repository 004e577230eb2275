"""Kafka topics and client configuration: the only place that knows topic names."""

import enum
import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

logger = logging.getLogger(__name__)


class Topic(enum.Enum):
    """Each member's value is the setting that names the topic."""

    FEED_EVENTS = "FEED_EVENTS_TOPIC"
    FEED_EVENTS_DLQ = "FEED_EVENTS_DLQ_TOPIC"

    @property
    def topic_name(self) -> str:
        return getattr(settings, self.value)


def kafka_config(**overrides: Any) -> dict[str, Any]:
    """librdkafka properties shared by every client, with ``overrides`` on top."""
    config: dict[str, Any] = {"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS}
    config.update(settings.KAFKA_CLIENT_CONFIG)
    config.update(overrides)
    return config


def topics_ensure(*, timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient(kafka_config())
    wanted = [
        NewTopic(
            Topic.FEED_EVENTS.topic_name,
            num_partitions=settings.FEED_EVENTS_PARTITIONS,
            replication_factor=settings.KAFKA_REPLICATION_FACTOR,
        ),
        NewTopic(
            Topic.FEED_EVENTS_DLQ.topic_name,
            num_partitions=1,
            replication_factor=settings.KAFKA_REPLICATION_FACTOR,
        ),
    ]
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in wanted if t.topic not in existing]
    if not missing:
        # create_topics refuses an empty list.
        return []
    created = []
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def broker_ping(*, timeout: float = 2.0) -> None:
    """Raise KafkaException unless a broker answers a metadata request within ``timeout``."""
    admin = AdminClient(kafka_config())
    admin.list_topics(timeout=timeout)


def topic_id_lookup(topic: str, *, admin: AdminClient | None = None, timeout: float = 10.0) -> str:
    """The broker's id of ``topic`` as text, new each time the topic is created; "" if the
    broker has none (Apache Kafka before 2.8).

    Raises KafkaException if the broker does not answer or does not know the topic.
    """
    admin = admin or AdminClient(kafka_config())
    futures = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
    topic_id = futures[topic].result(timeout).topic_id
    if topic_id is None or (
        topic_id.get_most_significant_bits() == 0 and topic_id.get_least_significant_bits() == 0
    ):
        return ""
    return str(topic_id)
