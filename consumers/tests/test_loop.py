import io
import json
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from django.core.management import call_command
from django.db import connection, connections
from django.db.utils import OperationalError
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers import deadletters, handlers, loop
from consumers.breaker import BreakerOpen, DeadLetterBreaker
from consumers.loop import FanoutWorker, consumer_build
from consumers.models import AppliedOffset, DeadLetter
from eventbus import producer
from eventbus.events import POST_CREATED, PostCreated, event_build, event_encode
from eventbus.producer import DeliveryFailed, message_publish, producer_flush
from eventbus.topics import kafka_config, topics_ensure
from feeds import cache, effects
from feeds.effects import FeedEffects
from feeds.models import FeedEntry, StalePages
from follows.models import Follow
from posts.models import Post
from posts.services import post_create
from tests.helpers import (
    drain,
    fail_post_created_on,
    offsets_committed,
    topic_read,
    wait_for,
    worker_assigned,
)

pytestmark = pytest.mark.broker


def publish(settings, *values: bytes, key: str = "1") -> None:
    for value in values:
        message_publish(topic=settings.FEED_EVENTS_TOPIC, key=key, value=value)
    assert producer_flush(10) == 0


def created(post: Post) -> bytes:
    event = event_build(
        event_type=POST_CREATED, payload=PostCreated(post_id=post.pk, author_id=post.author_id)
    )
    return event_encode(event)


def committed(worker: FanoutWorker, settings) -> int:
    return offsets_committed(
        worker.consumer, topic=settings.FEED_EVENTS_TOPIC, partitions=settings.FEED_EVENTS_PARTITIONS
    )


class Crash(BaseException):
    """The process dying where it stands (what SIGKILL would do), past any except clause."""


def fresh_worker(settings) -> FanoutWorker:
    """A worker started anew in the same group: it resumes from the committed offsets."""
    return worker_assigned(from_start=False)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


@pytest.mark.django_db
def test_worker_fans_out_a_batch_and_commits_its_offsets(worker, settings, make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(5)]
    latency_before = sample("feed_post_to_feed_latency_seconds_count")
    publish(settings, *(created(p) for p in posts), key=str(author.pk))

    drain(worker, 5)

    assert set(FeedEntry.objects.values_list("user_id", "post_id")) == {
        (user.pk, post.pk) for user in (author, fan) for post in posts
    }
    assert committed(worker, settings) == 5
    assert sample("feed_post_to_feed_latency_seconds_count") == latency_before + 5


@pytest.mark.django_db(transaction=True)
def test_a_quiet_topic_is_applied_without_waiting_out_the_batch_window(settings, make_user):
    # given a worker whose batch window is far longer than the wait below, and one post
    worker = worker_assigned(batch_timeout=60)
    author = make_user()
    post = post_create(author=author, content="alone")
    assert producer_flush(10) == 0
    consumed: list[int] = []

    def batch() -> None:
        try:
            consumed.append(worker.run_once())
        finally:
            connections.close_all()

    # when one batch runs
    thread = threading.Thread(target=batch)
    thread.start()
    try:
        # then it returns with the event applied as soon as the event is there
        wait_for(
            lambda: not thread.is_alive(), timeout=10, what="the batch to return before its window ended"
        )
    finally:
        thread.join()
        worker.consumer.close()
    assert consumed == [1]
    assert FeedEntry.objects.filter(user_id=author.pk, post_id=post.pk).exists()


@pytest.mark.django_db
def test_poison_goes_to_the_dlq_topic_and_table_and_the_worker_moves_on(worker, settings, make_user):
    author = make_user()
    good = Post.objects.create(author=author, content="good")
    poison = [
        b"{not json",
        json.dumps({"type": POST_CREATED, "version": 1}).encode(),
        json.loads(created(good)) | {"type": "post.exploded"},
    ]
    poison[2] = json.dumps(poison[2]).encode()
    dead_before = sample("feed_dead_letters_total", error="UndecodableEvent")
    publish(settings, *poison, created(good))

    drain(worker, 4)

    assert FeedEntry.objects.filter(user_id=author.pk, post_id=good.pk).exists()
    rows = list(DeadLetter.objects.order_by("offset"))
    assert [r.error_class for r in rows] == ["UndecodableEvent", "InvalidEvent", "UnknownEventType"]
    assert [bytes(r.value) for r in rows] == poison
    assert {r.topic for r in rows} == {settings.FEED_EVENTS_TOPIC}
    assert {r.consumer_group for r in rows} == {settings.FANOUT_GROUP_ID}
    assert all(r.status == DeadLetter.Status.PENDING and r.traceback for r in rows)
    assert committed(worker, settings) == 4
    assert sample("feed_dead_letters_total", error="UndecodableEvent") == dead_before + 1

    dlq = topic_read(settings.FEED_EVENTS_DLQ_TOPIC, count=3)
    headers = [
        dict(m.headers()) for m in sorted(dlq, key=lambda m: int(dict(m.headers())["dlq.original.offset"]))
    ]
    assert [m.value() for m in sorted(dlq, key=lambda m: m.offset())] == poison
    for row, header in zip(rows, headers, strict=True):
        assert header["dlq.original.topic"] == settings.FEED_EVENTS_TOPIC.encode()
        assert header["dlq.original.partition"] == str(row.partition).encode()
        assert header["dlq.original.offset"] == str(row.offset).encode()
        assert header["dlq.error.class"] == row.error_class.encode()
        assert header["dlq.consumer.group"] == settings.FANOUT_GROUP_ID.encode()
        assert header["dlq.error.message"]
        assert header["dlq.failed_at"]


@pytest.mark.django_db
def test_reprocessing_the_same_messages_changes_nothing(worker, settings, make_user):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="once")
    publish(settings, created(post), created(post), b"garbage")
    drain(worker, 3)
    before = sorted(FeedEntry.objects.values_list("user_id", "post_id"))

    # Rewind, as a crash before the offset commit would.
    worker.consumer.assign(
        [
            TopicPartition(settings.FEED_EVENTS_TOPIC, p, OFFSET_BEGINNING)
            for p in range(settings.FEED_EVENTS_PARTITIONS)
        ]
    )
    drain(worker, 3)

    assert sorted(FeedEntry.objects.values_list("user_id", "post_id")) == before
    assert len(before) == 2
    assert DeadLetter.objects.count() == 1


@pytest.mark.django_db
def test_a_handler_failure_dead_letters_only_the_failing_event(worker, settings, make_user, monkeypatch):
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(3)]
    fail_post_created_on(monkeypatch, posts[1].pk)
    publish(settings, *(created(p) for p in posts))

    drain(worker, 3)

    assert set(FeedEntry.objects.values_list("post_id", flat=True)) == {posts[0].pk, posts[2].pk}
    [row] = DeadLetter.objects.all()
    assert row.error_class == "ValueError"
    assert "cannot handle this one" in row.error_message
    assert json.loads(bytes(row.value))["payload"]["post_id"] == posts[1].pk


@pytest.mark.django_db
def test_cached_pages_of_touched_feeds_are_invalidated(worker, settings, make_user, client_for):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    client = client_for(fan)
    assert client.get(f"/feeds/{fan.pk}").json()["results"] == []
    assert cache.page_lookup(fan.pk)[0] is not None
    post = Post.objects.create(author=author, content="fresh")
    publish(settings, created(post))

    drain(worker, 1)

    assert cache.page_lookup(fan.pk)[0] is None
    assert [p["id"] for p in client.get(f"/feeds/{fan.pk}").json()["results"]] == [post.pk]


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_retried_not_dead_lettered(worker, settings, make_user, monkeypatch):
    real = handlers.HANDLERS[POST_CREATED]
    calls = []

    def flaky(events):
        calls.append(len(events))
        if len(calls) < 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real(events)

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, flaky)
    monkeypatch.setattr("consumers.loop.RETRY_BACKOFF_MIN", 0.05)
    # Committed for real, so the post_save receiver publishes its event.
    post = Post.objects.create(author=make_user(), content="eventually")
    assert producer_flush(10) == 0

    drain(worker, 1)

    assert len(calls) == 3
    assert FeedEntry.objects.filter(post_id=post.pk).exists()
    assert not DeadLetter.objects.exists()
    assert committed(worker, settings) == 1


@pytest.mark.django_db
def test_redelivered_messages_are_skipped_and_counted(worker, settings, make_user, monkeypatch):
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(4)]
    publish(settings, *(created(p) for p in posts), key=str(author.pk))
    drain(worker, 4)
    calls = []
    real = handlers.HANDLERS[POST_CREATED]
    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, lambda events: calls.append(events) or real(events))
    before = sample("feed_fanout_reprocessed_total", reason="applied")

    worker.consumer.assign(
        [
            TopicPartition(settings.FEED_EVENTS_TOPIC, p, OFFSET_BEGINNING)
            for p in range(settings.FEED_EVENTS_PARTITIONS)
        ]
    )
    drain(worker, 4)

    assert calls == []
    assert sample("feed_fanout_reprocessed_total", reason="applied") == before + 4


@pytest.mark.django_db
def test_messages_a_dead_worker_fetched_but_never_applied_are_counted_unapplied(
    worker, settings, make_user, monkeypatch
):
    # given a worker killed while applying the batch it fetched
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(3)]
    publish(settings, *(created(p) for p in posts), key=str(author.pk))
    real = handlers.HANDLERS[POST_CREATED]
    doomed = []

    def killed(events):
        doomed.extend(events)
        raise Crash("killed while applying the batch")

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, killed)
    with pytest.raises(Crash):
        drain(worker, 3)
    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, real)
    before = sample("feed_fanout_reprocessed_total", reason="unapplied")

    # when a worker started anew consumes them again
    successor = fresh_worker(settings)
    try:
        drain(successor, 3)
    finally:
        successor.consumer.close()

    # then they are applied, and counted as fetched before but never applied
    assert set(FeedEntry.objects.filter(user_id=author.pk).values_list("post_id", flat=True)) == {
        p.pk for p in posts
    }
    assert doomed
    assert sample("feed_fanout_reprocessed_total", reason="unapplied") == before + len(doomed)


@pytest.mark.django_db
def test_a_batch_reads_and_marks_its_fetched_offsets_in_one_statement(worker, settings, make_user):
    # given partitions with offsets stored, and more messages fetched from them
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(4)]
    publish(settings, *(created(p) for p in posts[:2]), key=str(author.pk))
    drain(worker, 2)
    publish(settings, *(created(p) for p in posts[2:]), key=str(author.pk))
    messages = []
    wait_for(
        lambda: (
            messages.extend(m for m in worker.consumer.consume(2, 0.5) if m.error() is None)
            or len(messages) == 2
        ),
        timeout=30,
        what="the two new messages",
    )

    # when the worker takes note that it fetched them
    with CaptureQueriesContext(connection) as queries:
        fresh = worker.offsets.fetched(messages)

    # then one statement both read what was applied and marked them fetched
    assert fresh == messages
    assert [q["sql"] for q in queries if AppliedOffset._meta.db_table in q["sql"]] == [queries[0]["sql"]]
    assert len(queries) == 1
    row = AppliedOffset.objects.get(consumer_group=settings.FANOUT_GROUP_ID)
    assert (row.next_offset, row.fetched_offset) == (2, 4)


@pytest.mark.django_db
def test_a_failing_event_is_retried_before_it_is_dead_lettered(worker, settings, make_user, monkeypatch):
    author = make_user()
    flaky, broken = (
        Post.objects.create(author=author, content="a"),
        Post.objects.create(author=author, content="b"),
    )
    real = handlers.HANDLERS[POST_CREATED]
    attempts = {flaky.pk: 0, broken.pk: 0}

    def handler(events):
        for event in events:
            attempts[event.payload.post_id] += 1
        if any(e.payload.post_id == broken.pk for e in events):
            raise ValueError("always")
        if attempts[flaky.pk] < 3:
            raise ValueError("not yet")
        return real(events)

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, handler)
    publish(settings, created(flaky), created(broken))

    drain(worker, 2)

    assert FeedEntry.objects.filter(post_id=flaky.pk).exists()
    assert [json.loads(bytes(d.value))["payload"]["post_id"] for d in DeadLetter.objects.all()] == [broken.pk]
    # One attempt with the whole run, then max_retries (3) alone.
    assert attempts[broken.pk] == 1 + worker.max_retries


@pytest.mark.django_db
def test_one_malformed_message_in_a_thousand_is_the_only_dead_letter(worker, settings, make_user):

    worker.breaker = DeadLetterBreaker(max_ratio=0.5, window=200)
    worker.batch_size = 250
    author = make_user()
    with_posts = Post.objects.bulk_create([Post(author=author, content=str(i)) for i in range(999)])
    values = [created(p) for p in with_posts]
    values.insert(500, b"\x00garbage")
    publish(settings, *values, key=str(author.pk))

    drain(worker, 1000, timeout=60)

    assert DeadLetter.objects.count() == 1
    assert bytes(DeadLetter.objects.get().value) == b"\x00garbage"
    assert FeedEntry.objects.filter(user_id=author.pk).count() == 999
    assert committed(worker, settings) == 1000


@pytest.mark.django_db
def test_a_handler_that_always_raises_trips_the_breaker(worker, settings, make_user, monkeypatch):

    worker.breaker = DeadLetterBreaker(max_ratio=0.5, window=20)
    worker.batch_size = 5
    author = make_user()
    posts = Post.objects.bulk_create([Post(author=author, content=str(i)) for i in range(40)])

    def broken(events):
        raise RuntimeError("bug")

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, broken)
    publish(settings, *(created(p) for p in posts), key=str(author.pk))

    with pytest.raises(BreakerOpen):
        drain(worker, 40)

    # It stopped before dead-lettering everything, and nothing past the trip was committed.
    assert DeadLetter.objects.count() < 40
    assert committed(worker, settings) == DeadLetter.objects.count()
    assert sample("feed_fanout_breaker_open") == 1


@pytest.mark.django_db
def test_offsets_are_committed_only_for_partitions_still_owned(worker, settings, make_user):
    messages = []
    for key in range(12):  # enough keys to land on every partition
        publish(settings, b"{}", key=str(key))
    deadline = time.monotonic() + 30
    while len(messages) < 12 and time.monotonic() < deadline:
        messages += [m for m in worker.consumer.consume(12, 0.5) if m.error() is None]
    partitions = sorted({m.partition() for m in messages})
    assert len(partitions) >= 2
    kept = partitions[0]
    # A rebalance took every other partition away mid-batch.
    worker.consumer.assign([TopicPartition(settings.FEED_EVENTS_TOPIC, kept)])

    worker._commit(messages)

    offsets = worker.consumer.committed(
        [TopicPartition(settings.FEED_EVENTS_TOPIC, p) for p in partitions], timeout=10
    )
    assert {tp.partition: tp.offset for tp in offsets if tp.offset >= 0} == {
        kept: max(m.offset() for m in messages if m.partition() == kept) + 1
    }


@pytest.mark.django_db
def test_replaying_a_dead_letter_twice_applies_it_once(worker, settings, make_user, monkeypatch):

    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    post = Post.objects.create(author=author, content="unlucky")
    real = handlers.HANDLERS[POST_CREATED]

    def outage_of_a_dependency(events):
        raise ValueError("a bug, fixed by the next deploy")

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, outage_of_a_dependency)
    publish(settings, created(post))
    drain(worker, 1)
    [dead] = DeadLetter.objects.all()
    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, real)

    call_command("dlq", "replay", str(dead.pk), stdout=io.StringIO())
    call_command("dlq", "replay", str(dead.pk), stdout=io.StringIO())
    drain(worker, 2)

    assert sorted(FeedEntry.objects.values_list("user_id", "post_id")) == sorted(
        [(author.pk, post.pk), (fan.pk, post.pk)]
    )
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED
    assert DeadLetter.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_pages_are_invalidated_after_a_redis_failure_once_redis_answers(
    worker, settings, make_user, client_for, monkeypatch
):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    client_for(fan).get(f"/feeds/{fan.pk}")
    assert cache.page_lookup(fan.pk)[0] is not None
    calls = []

    def redis_times_out_once(users):
        calls.append(set(users))
        if len(calls) == 1:
            raise RedisTimeoutError("Timeout reading from socket")
        cache.pages_invalidate(users)

    monkeypatch.setattr(effects, "pages_invalidate", redis_times_out_once)
    monkeypatch.setattr(loop, "RETRY_BACKOFF_MIN", 0.01)
    post = Post.objects.create(author=author, content="fresh")
    publish(settings, created(post))

    drain(worker, 1)

    # The retry finds the batch applied and skips it, but still invalidates its pages.
    assert calls == [{author.pk, fan.pk}, {author.pk, fan.pk}]
    assert cache.page_lookup(fan.pk)[0] is None


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_reaches_the_dlq_topic_after_a_failed_publish(worker, settings, monkeypatch):
    real = deadletters.messages_publish_confirmed
    calls = []

    def broker_fails_once(messages, **kwargs):
        calls.append(len(messages))
        if len(calls) == 1:
            raise DeliveryFailed("1 of 1 not delivered: Local: Message timed out")
        real(messages, **kwargs)

    monkeypatch.setattr(deadletters, "messages_publish_confirmed", broker_fails_once)
    monkeypatch.setattr(loop, "RETRY_BACKOFF_MIN", 0.01)
    publish(settings, b"{poison")

    drain(worker, 1)

    [message] = topic_read(settings.FEED_EVENTS_DLQ_TOPIC, count=1, timeout=10)
    assert message.value() == b"{poison"
    assert calls == [1, 1]
    [row] = DeadLetter.objects.all()
    assert row.published_at is not None
    assert committed(worker, settings) == 1


@pytest.mark.django_db(transaction=True)
def test_a_fresh_worker_publishes_the_dead_letters_a_crash_left_unpublished(worker, settings, monkeypatch):
    def crash(**kwargs):
        raise Crash("killed between the commit and the DLQ publish")

    monkeypatch.setattr(loop, "dead_letters_publish", crash)
    publish(settings, b"{poison")
    with pytest.raises(Crash):
        drain(worker, 1)
    worker.consumer.close()
    monkeypatch.undo()
    assert DeadLetter.objects.count() == 1  # committed, never published

    restarted = fresh_worker(settings)
    try:
        restarted.run_once()
    finally:
        restarted.consumer.close()

    [message] = topic_read(settings.FEED_EVENTS_DLQ_TOPIC, count=1, timeout=10)
    assert message.value() == b"{poison"
    row = DeadLetter.objects.get()
    assert dict(message.headers())["dlq.original.offset"] == str(row.offset).encode()
    assert row.published_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "error",
    [
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
    ],
)
def test_any_redis_error_while_invalidating_is_retried_not_fatal(
    worker, settings, make_user, client_for, monkeypatch, error
):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    assert producer_flush(10) == 0
    drain(worker, 1)  # the follow.created event
    client = client_for(fan)
    assert client.get(f"/feeds/{fan.pk}").json()["results"] == []
    calls = []

    def redis_refuses_once(users):
        calls.append(set(users))
        if len(calls) == 1:
            raise error
        cache.pages_invalidate(users)

    monkeypatch.setattr(effects, "pages_invalidate", redis_refuses_once)
    monkeypatch.setattr(loop, "RETRY_BACKOFF_MIN", 0.01)
    post = Post.objects.create(author=author, content="fresh")
    assert producer_flush(10) == 0

    drain(worker, 1)

    assert calls == [{author.pk, fan.pk}, {author.pk, fan.pk}]
    assert cache.page_lookup(fan.pk)[0] is None
    assert not StalePages.objects.exists()
    assert [p["id"] for p in client.get(f"/feeds/{fan.pk}").json()["results"]] == [post.pk]
    assert committed(worker, settings) == 2


@pytest.mark.django_db(transaction=True)
def test_pages_held_when_a_rebalance_took_the_batchs_partitions_are_still_invalidated(
    worker, settings, make_user, client_for, monkeypatch
):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    assert producer_flush(10) == 0
    drain(worker, 1)  # the follow.created event
    client = client_for(fan)
    assert client.get(f"/feeds/{fan.pk}").json()["results"] == []
    calls = []

    def redis_refuses_once_while_the_partitions_move(users):
        calls.append(set(users))
        if len(calls) == 1:
            # A rebalance during the retry wait hands every partition to another worker,
            # which skips the applied batch and so invalidates nothing.
            worker.consumer.unassign()
            raise ReadOnlyError("You can't write against a read only replica.")
        cache.pages_invalidate(users)

    monkeypatch.setattr(effects, "pages_invalidate", redis_refuses_once_while_the_partitions_move)
    monkeypatch.setattr(loop, "RETRY_BACKOFF_MIN", 0.01)
    post = Post.objects.create(author=author, content="fresh")
    assert producer_flush(10) == 0

    drain(worker, 1)

    assert calls == [{author.pk, fan.pk}, {author.pk, fan.pk}]
    assert not StalePages.objects.exists()
    assert [p["id"] for p in client.get(f"/feeds/{fan.pk}").json()["results"]] == [post.pk]


@pytest.mark.django_db(transaction=True)
def test_a_fresh_worker_invalidates_the_pages_a_crash_left_stale(
    worker, settings, make_user, client_for, monkeypatch
):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    assert producer_flush(10) == 0
    drain(worker, 1)  # the follow.created event
    client = client_for(fan)
    assert client.get(f"/feeds/{fan.pk}").json()["results"] == []

    def crash(users):
        raise Crash("killed between the commit and the invalidation")

    monkeypatch.setattr(effects, "pages_invalidate", crash)
    post = Post.objects.create(author=author, content="fresh")
    assert producer_flush(10) == 0
    with pytest.raises(Crash):
        drain(worker, 1)
    worker.consumer.close()
    monkeypatch.undo()
    assert FeedEntry.objects.filter(user_id=fan.pk, post_id=post.pk).exists()  # committed
    assert cache.page_lookup(fan.pk)[0] is not None  # and the page is stale
    assert StalePages.objects.count() == 1

    restarted = fresh_worker(settings)
    try:
        restarted.run_once()
    finally:
        restarted.consumer.close()

    assert cache.page_lookup(fan.pk)[0] is None
    assert [p["id"] for p in client.get(f"/feeds/{fan.pk}").json()["results"]] == [post.pk]
    assert not StalePages.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_interrupted_by_a_stop_during_an_outage_is_kept_not_dropped(
    worker, settings, make_user, monkeypatch
):
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(3)]
    assert producer_flush(10) == 0
    real = handlers.HANDLERS[POST_CREATED]

    def outage_then_stop(events):
        worker.stop()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, outage_then_stop)
    drain(worker, 3)
    assert not FeedEntry.objects.exists()
    assert committed(worker, settings) == 0

    # A driver that goes on after the stop (run() would close the consumer instead) gets
    # the same messages again, applied before anything fetched after them.
    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, real)
    worker._stopping = False
    drain(worker, 3)

    assert set(FeedEntry.objects.values_list("post_id", flat=True)) == {p.pk for p in posts}
    assert committed(worker, settings) == 3


@pytest.mark.django_db
def test_offsets_stored_for_a_deleted_topic_do_not_skip_the_events_of_its_successor(
    worker, settings, make_user
):
    author = make_user()
    before = [Post.objects.create(author=author, content=f"before {i}") for i in range(4)]
    publish(settings, *(created(p) for p in before), key=str(author.pk))
    drain(worker, 4)
    [row] = AppliedOffset.objects.filter(consumer_group=settings.FANOUT_GROUP_ID)
    assert row.next_offset == 4
    # Closed first: librdkafka clients that saw the old topic may crash on meeting the new
    # one (a topic id changing under a cached name, confluentinc/librdkafka#4964).
    worker.consumer.close()
    stale_before = sample("feed_fanout_stale_offsets_total")

    # The topic is deleted and created again: its offsets start from 0 once more.
    admin = AdminClient(kafka_config())
    for future in admin.delete_topics([settings.FEED_EVENTS_TOPIC], operation_timeout=10).values():
        future.result(10)
    wait_for(
        lambda: settings.FEED_EVENTS_TOPIC not in admin.list_topics(timeout=10).topics,
        timeout=30,
        what="the topic to be gone",
    )
    assert topics_ensure() == [settings.FEED_EVENTS_TOPIC]
    producer.producer_reset()
    after = [Post.objects.create(author=author, content=f"after {i}") for i in range(3)]
    publish(settings, *(created(p) for p in after), key=str(author.pk))
    successor = FanoutWorker(
        consumer=consumer_build(group_id=settings.FANOUT_GROUP_ID, session_timeout_ms=6000),
        group_id=settings.FANOUT_GROUP_ID,
        batch_size=100,
        batch_timeout=0.2,
        effects=FeedEffects(),
    )
    successor.consumer.assign(
        [
            TopicPartition(settings.FEED_EVENTS_TOPIC, p, OFFSET_BEGINNING)
            for p in range(settings.FEED_EVENTS_PARTITIONS)
        ]
    )
    try:
        drain(successor, 3)
    finally:
        successor.consumer.close()

    assert set(FeedEntry.objects.values_list("post_id", flat=True)) == {p.pk for p in before + after}
    row.refresh_from_db()
    assert row.next_offset == 3
    assert sample("feed_fanout_stale_offsets_total") == stale_before + 1


class DestroyedConsumer(Consumer):
    """A consumer being closed: librdkafka answers _DESTROY, which a rebalance callback
    run by close() may meet, depending on timing."""

    def assignment(self):
        raise KafkaException(KafkaError(KafkaError._DESTROY))


def test_a_rebalance_callback_during_close_does_not_raise(settings):
    consumer = DestroyedConsumer(kafka_config(**{"group.id": settings.FANOUT_GROUP_ID}))
    worker = FanoutWorker(
        consumer=consumer,
        group_id=settings.FANOUT_GROUP_ID,
        batch_size=100,
        batch_timeout=0.2,
        effects=FeedEffects(),
    )
    try:
        worker.assignment.on_revoke(consumer, [])
    finally:
        Consumer.close(consumer)

    assert sample("feed_fanout_assigned_partitions") == 0
