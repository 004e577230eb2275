"""The partitions a fan-out worker owns: its rebalance callbacks, what it paused on purpose,
the lag of each, and a guard against an owned partition that is no longer fetched from.

librdkafka keeps a partition's pause across its revocation and a later assignment of the
same partition (librdkafka #1849): a partition paused for a retry wait and revoked before
the wait ended would come back paused, and never be fetched from again. So every pause
goes through ``Assignment``, which remembers what it paused, resumes a paused partition
when it is revoked or lost, and resumes every partition it is assigned outside a wait.
"""

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.offsets import Partition
from core import metrics

logger = logging.getLogger(__name__)

# Seconds the guard waits for the broker's answer about one idle partition.
WATERMARK_TIMEOUT = 1.0


def _key(tp: TopicPartition) -> Partition:
    return (tp.topic, tp.partition)


class Assignment:
    """One consumer's partitions. ``stall_seconds``: how long an owned partition that has
    messages left may go without handing one out before the guard reports it."""

    def __init__(self, consumer: Consumer, *, stall_seconds: float) -> None:
        self.consumer = consumer
        self.stall_seconds = stall_seconds
        self._paused: set[Partition] = set()
        self._waiting = False
        # When each owned partition last handed out a message, was assigned, or ended a wait.
        self._fetched: dict[Partition, float] = {}
        # When the broker was last asked about each idle partition.
        self._asked: dict[Partition, float] = {}

    def owned(self) -> set[Partition]:
        return {_key(tp) for tp in self.consumer.assignment()}

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback (cooperative: ``partitions`` are the ones added). During a
        wait they are paused with the others until it ends; otherwise they are resumed, in
        case librdkafka kept a pause from an earlier ownership."""
        consumer.incremental_assign(partitions)
        now = time.monotonic()
        self._fetched.update((_key(tp), now) for tp in partitions)
        if partitions and self._waiting:
            self.pause(partitions)
            logger.info("partitions assigned during a retry wait are paused until it ends")
        elif partitions:
            consumer.resume(partitions)
        self._changed("assigned", partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback for partitions revoked or lost: resumed first if this worker
        paused them, so that they come back unpaused if they are assigned back."""
        revoked = {_key(tp) for tp in partitions}
        if paused := [tp for tp in partitions if _key(tp) in self._paused]:
            # close() revokes through here while librdkafka may no longer answer.
            with contextlib.suppress(KafkaException):
                consumer.resume(paused)
        self._paused -= revoked
        for topic, partition in revoked:
            self._fetched.pop((topic, partition), None)
            self._asked.pop((topic, partition), None)
            # Another worker reports these now: no figure of this one may linger in the sums.
            for gauge in (metrics.FANOUT_PARTITION_STALLED, metrics.CONSUMER_LAG):
                with contextlib.suppress(KeyError):
                    gauge.remove(topic, str(partition))
        consumer.incremental_unassign(partitions)
        self._changed("revoked", partitions)

    def _changed(self, change: str, partitions: list[TopicPartition]) -> None:
        try:
            owned = self.owned()
        except KafkaException:
            # close() revokes through this callback while the consumer is being destroyed,
            # when librdkafka may no longer answer: nothing is owned any more.
            owned = set()
        metrics.FANOUT_ASSIGNED_PARTITIONS.set(len(owned))
        if partitions:
            logger.info(
                "partitions %s: %s; now owns %s",
                change,
                sorted(tp.partition for tp in partitions),
                sorted(p for _, p in owned),
            )

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Pause ``partitions`` until the current wait ends (see ``all_paused``)."""
        partitions = list(partitions)
        if partitions:
            self.consumer.pause(partitions)
            self._paused |= {_key(tp) for tp in partitions}

    @contextlib.contextmanager
    def all_paused(self) -> Iterator[None]:
        """Every owned partition paused while the block runs, and any assigned meanwhile;
        afterwards exactly the partitions paused for it are resumed (those revoked meanwhile
        were resumed at their revocation)."""
        self._waiting = True
        try:
            self.pause(self.consumer.assignment())
            yield
        finally:
            self._waiting = False
            paused, self._paused = self._paused, set()
            if paused:
                self.consumer.resume([TopicPartition(t, p) for t, p in sorted(paused)])
            # A wait on purpose is not a stall: the guard counts from its end.
            now = time.monotonic()
            self._fetched.update((key, now) for key in paused)

    def fetched(self, messages: Iterable[Message]) -> None:
        """Note that these messages' partitions handed out messages now."""
        now = time.monotonic()
        self._fetched.update(((m.topic(), m.partition()), now) for m in messages)

    def observe(self) -> None:
        """Export each owned partition's lag, and report one that has not handed out a
        message for ``stall_seconds`` while messages are left on it, unless it is paused
        on purpose: a partition no longer fetched from delays its events without limit.

        The high watermark of a partition being fetched from comes with its fetches; an
        idle one's is as old as its last fetch, so the broker is asked for it, at most once
        per quarter of ``stall_seconds`` each, and after the first unanswered question no
        more in this round (a down broker must not hold up the loop for long)."""
        now = time.monotonic()
        broker_answers = True
        try:
            positions = self.consumer.position(self.consumer.assignment())
        except KafkaException as exc:
            logger.debug("lag not observed: %s", exc)
            return
        for tp in positions:
            key = _key(tp)
            idle = now - self._fetched.setdefault(key, now)
            suspect = idle > self.stall_seconds and key not in self._paused
            if not suspect:
                metrics.FANOUT_PARTITION_STALLED.labels(tp.topic, str(tp.partition)).set(0)
            if suspect and (not broker_answers or now - self._asked.get(key, 0.0) < self.stall_seconds / 4):
                continue
            try:
                if suspect:
                    self._asked[key] = now
                low, high = self.consumer.get_watermark_offsets(
                    tp, timeout=WATERMARK_TIMEOUT, cached=not suspect
                )
                position = tp.offset if tp.offset >= 0 or not suspect else self._committed(tp, low)
            except KafkaException as exc:
                logger.debug("lag of partition %s not observed: %s", tp.partition, exc)
                if suspect:
                    broker_answers = False
                continue
            if high < 0 or position < 0:
                continue
            lag = max(high - position, 0)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
            stalled = suspect and lag > 0
            metrics.FANOUT_PARTITION_STALLED.labels(tp.topic, str(tp.partition)).set(idle if stalled else 0)
            if stalled:
                logger.warning(
                    "partition %s is owned but handed out no message for %.0fs with %d left on it",
                    tp.partition,
                    idle,
                    lag,
                    extra={"partition": tp.partition, "idle_seconds": round(idle), "lag": lag},
                )

    def _committed(self, tp: TopicPartition, low: int) -> int:
        """Where a partition not fetched from since its assignment would start: the group's
        committed offset, or its first offset (auto.offset.reset is earliest)."""
        [committed] = self.consumer.committed(
            [TopicPartition(tp.topic, tp.partition)], timeout=WATERMARK_TIMEOUT
        )
        return committed.offset if committed.offset >= 0 else low
