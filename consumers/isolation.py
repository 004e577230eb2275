"""A batch's events decoded and handled, the ones that fail isolated for the dead-letter queue."""

import logging
from collections.abc import Sequence
from itertools import groupby

from confluent_kafka import KafkaException, Message
from django.db import transaction
from django.db.utils import InterfaceError, OperationalError
from redis.exceptions import RedisError

from consumers.deadletters import Failure
from consumers.effects import Changes
from consumers.handlers import HANDLERS, Handler
from core import metrics
from core.logcontext import log_context
from eventbus.events import Event, PoisonMessage, UnknownEventType, event_decode
from eventbus.producer import DeliveryFailed

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

Decoded = list[tuple[Message, Event]]


def events_decode(messages: Sequence[Message]) -> tuple[Decoded, list[Failure]]:
    """The events of ``messages`` that decode to a known type, and failures for the rest."""
    decoded: Decoded = []
    failures: list[Failure] = []
    for message in messages:
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
    return decoded, failures


def events_handle(
    decoded: Decoded, *, changes: Changes, failures: list[Failure], max_retries: int
) -> Changes:
    """Run handlers over consecutive same-type runs, in order, merging into ``changes``.

    A run that fails for a reason other than a service outage is retried event by
    event, each in its own savepoint and up to ``max_retries`` times; an event that
    still fails is appended to ``failures``, for the dead-letter queue. Outages
    (TRANSIENT_ERRORS) propagate: the caller retries the whole batch.
    """
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
            changes = _event_handle(
                handler, message, event, changes=changes, failures=failures, max_retries=max_retries
            )
    return changes


def _event_handle(
    handler: Handler,
    message: Message,
    event: Event,
    *,
    changes: Changes,
    failures: list[Failure],
    max_retries: int,
) -> Changes:
    with log_context(event_id=str(event.event_id), event_type=event.type, offset=message.offset()):
        for attempt in range(1, max_retries + 1):
            try:
                with transaction.atomic():
                    changes |= handler([event])
                break
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                metrics.FANOUT_RETRIES.labels("handler").inc()
                if attempt == max_retries:
                    logger.warning(
                        "event dead-lettered after %d attempts: %s: %s",
                        attempt,
                        type(exc).__name__,
                        exc,
                        extra={"partition": message.partition()},
                    )
                    failures.append(Failure.of(message, exc))
    return changes
