"""The transactional outbox: no event lost to a broker outage or a crash, none for a rollback."""

import datetime
import json
import os
import signal
import subprocess
import sys

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import sql
from devtools.broker import broker_start, broker_stop
from eventbus import producer
from eventbus.models import OutboxMessage
from eventbus.outbox import RELAY_LOCK_ID, OutboxRelay, RelayResult
from eventbus.topics import topics_ensure
from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post
from posts.services import post_create
from tests.helpers import ROOT, free_port, start_manage, stop_process, subprocess_env, topic_read, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def relay(**overrides) -> OutboxRelay:
    options = {
        "batch_size": 100,
        "retention": datetime.timedelta(minutes=10),
        "flush_timeout": 10.0,
    }
    return OutboxRelay(**(options | overrides))


@pytest.mark.broker
@pytest.mark.own_relay
def test_a_post_and_its_outbox_row_commit_together_and_the_relay_publishes_it(make_user, settings):
    ada = make_user()

    post = post_create(author=ada, content="hi")

    [row] = OutboxMessage.objects.all()
    event = json.loads(bytes(row.value))
    assert event["payload"] == {"post_id": post.pk, "author_id": ada.pk}
    assert row.key == str(ada.pk)
    assert row.sent_at is None
    assert relay().run_once().published == 1
    row.refresh_from_db()
    assert row.sent_at is not None
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert json.loads(message.value())["payload"] == event["payload"]


def test_a_post_is_two_inserts_and_its_outbox_row_reads_nothing_back(make_user):
    ada = make_user()

    with CaptureQueriesContext(connection) as queries:
        post = post_create(author=ada, content="hi")

    begin, post_insert, outbox_insert, commit = (q["sql"] for q in queries)
    assert (begin, commit) == ("BEGIN", "COMMIT")
    assert post_insert.startswith(f'INSERT INTO "{Post._meta.db_table}"')
    assert outbox_insert.startswith(f'INSERT INTO "{OutboxMessage._meta.db_table}"')
    assert "RETURNING" not in outbox_insert
    [row] = OutboxMessage.objects.all()
    event = json.loads(bytes(row.value))
    assert event["payload"] == {"post_id": post.pk, "author_id": ada.pk}
    assert row.headers == [["event_type", "post.created"], ["event_id", event["event_id"]]]
    assert (row.topic, row.key, row.sent_at) == (django_settings.FEED_EVENTS_TOPIC, str(ada.pk), None)
    assert timezone.now() - row.created_at < datetime.timedelta(minutes=1)


def test_creating_a_post_does_no_producer_work(make_user, client_for):
    response = client_for(make_user()).post("/posts", {"content": "hi"}, format="json")

    assert response.status_code == 201
    # The request wrote its rows and committed; publishing is the relay's, in its own process.
    assert producer._producer is None
    assert OutboxMessage.objects.get().sent_at is None


@pytest.mark.broker
def test_a_sent_row_records_the_partition_and_offset_the_broker_gave_it(make_user, settings):
    ada, bob = make_user(), make_user()
    posts = [post_create(author=author, content="hi") for author in (ada, bob, ada)]

    assert producer.producer_flush(10) == 0

    messages = topic_read(settings.FEED_EVENTS_TOPIC, count=3)
    where = {json.loads(m.value())["payload"]["post_id"]: (m.partition(), m.offset()) for m in messages}
    rows = OutboxMessage.objects.order_by("pk")
    assert [(row.sent_partition, row.sent_offset) for row in rows] == [where[post.pk] for post in posts]


@pytest.mark.broker
def test_a_rolled_back_post_leaves_no_outbox_row_and_no_event(make_user, settings):
    ada = make_user()

    def create_then_fail() -> None:
        with transaction.atomic():
            Post.objects.create(author=ada, content="never")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        create_then_fail()
    marker = Post.objects.create(author=ada, content="marker")

    assert OutboxMessage.objects.count() == 1
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert json.loads(message.value())["payload"]["post_id"] == marker.pk
    assert not Post.objects.filter(content="never").exists()


@pytest.mark.broker
@pytest.mark.own_relay
def test_the_relay_publishes_unsent_rows_in_order_and_prunes_sent_ones(make_user, settings):
    ada = make_user()
    posts = [Post.objects.create(author=ada, content=str(i)) for i in range(3)]
    old_sent = OutboxMessage.objects.create(
        topic="t", key="k", value=b"v", sent_at=timezone.now() - datetime.timedelta(hours=1)
    )

    result = relay().run_once()

    assert (result.published, result.failed, result.pruned) == (3, 0, 1)
    assert not OutboxMessage.objects.filter(pk=old_sent.pk).exists()
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    messages = topic_read(settings.FEED_EVENTS_TOPIC, count=3)
    ids = [json.loads(m.value())["payload"]["post_id"] for m in sorted(messages, key=lambda m: m.offset())]
    assert ids == [p.pk for p in posts]


@pytest.mark.broker
@pytest.mark.own_relay
def test_the_delivered_rows_of_a_batch_are_marked_sent_in_one_statement(make_user):
    with transaction.atomic():
        for i in range(50):
            Post.objects.create(author=make_user(), content=str(i))

    with CaptureQueriesContext(connection) as queries:
        result = relay().run_once()

    assert result.published == 50
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
    marks = [q for q in queries if q["sql"].startswith(f'UPDATE "{OutboxMessage._meta.db_table}"')]
    # One per batch of reports a poll served, not one per row; the broker may answer a few
    # of them while the batch is still being queued.
    assert 1 <= len(marks) <= 5, f"{len(marks)} UPDATEs marked 50 rows sent"


def test_an_idle_relay_costs_one_query(make_user):
    OutboxMessage.objects.create(topic="t", key="k", value=b"v", sent_at=timezone.now())
    outbox = relay()
    outbox.run_once()  # the upkeep (pruning, gauges) runs now, then not for a second

    with CaptureQueriesContext(connection) as queries:
        result = outbox.run_once()

    assert result == RelayResult()
    assert len(queries) == 1, [q["sql"] for q in queries]


def test_only_one_relay_publishes_at_a_time(make_user):
    Post.objects.create(author=make_user(), content="x")
    db = django_settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [RELAY_LOCK_ID])

        result = relay().run_once()

    assert result.locked_out
    assert result.published == 0


@pytest.fixture
def own_broker(kafka, settings, tmp_path):
    """A broker of this test's own, so that freezing it cannot disturb other tests."""
    bootstrap = f"127.0.0.1:{free_port()}"
    process = broker_start(bootstrap, log=tmp_path / "broker.log")
    settings.KAFKA_BOOTSTRAP_SERVERS = bootstrap
    producer.producer_reset()
    topics_ensure()
    try:
        yield process, {**kafka, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    finally:
        os.kill(process.pid, signal.SIGCONT)
        producer.producer_reset()
        broker_stop(process)


@pytest.mark.drill
def test_posts_created_while_the_broker_is_down_all_reach_every_follower(
    own_broker, settings, make_user, client_for, tmp_path
):
    broker, kafka_env = own_broker
    authors = [make_user() for _ in range(4)]
    fans = [make_user() for _ in range(3)]
    for author in authors:
        for fan in fans:
            Follow.objects.create(follower=fan, followee=author)
    worker = start_manage(["run_fanout"], subprocess_env(kafka_env), tmp_path / "fanout.log")
    try:
        wait_for(
            lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
            timeout=30,
            what="the follows to be published before the outage",
        )
        os.kill(broker.pid, signal.SIGSTOP)
        clients = [client_for(a) for a in authors]
        statuses = [
            clients[i % 4].post("/posts", {"content": f"during the outage {i}"}, format="json").status_code
            for i in range(200)
        ]
        assert statuses == [201] * 200
        assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 200

        # The test's relay has been failing and backing off; it recovers by itself.
        os.kill(broker.pid, signal.SIGCONT)
        wait_for(
            lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
            timeout=60,
            what="the relay to publish the backlog",
        )

        expected = {(user.pk, post.pk) for post in Post.objects.all() for user in [post.author, *fans]}
        wait_for(
            lambda: set(FeedEntry.objects.values_list("user_id", "post_id")) == expected,
            timeout=90,
            what="every post in every feed",
        )
        assert len(expected) == 800
    finally:
        stop_process(worker)


@pytest.mark.drill
@pytest.mark.own_relay
def test_an_api_process_killed_right_after_its_commit_loses_nothing(make_user, kafka, settings, tmp_path):
    ada = make_user()
    script = (
        "import os, signal\n"
        "from django.db import transaction\n"
        "from django.contrib.auth import get_user_model\n"
        "from posts.services import post_create\n"
        "with transaction.atomic():\n"
        # Dies the moment the transaction commits.
        "    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        f"    post_create(author=get_user_model().objects.get(pk={ada.pk}), content='orphan')\n"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", script],
        env=subprocess_env(kafka),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    post = Post.objects.get(content="orphan")
    assert OutboxMessage.objects.get().sent_at is None

    assert relay().run_once().published == 1

    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert json.loads(message.value())["payload"] == {"post_id": post.pk, "author_id": ada.pk}


@pytest.mark.drill
@pytest.mark.own_relay
def test_the_relay_command_runs_and_stops_cleanly(kafka, make_user, tmp_path, settings):
    Post.objects.create(author=make_user(), content="waiting")
    env = subprocess_env(kafka, OUTBOX_RELAY_METRICS_PORT="0")
    process = start_manage(["run_outbox_relay"], env, tmp_path / "relay.log")
    try:
        wait_for(
            lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
            timeout=30,
            what="the relay",
        )
        topic_read(settings.FEED_EVENTS_TOPIC, count=1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        stop_process(process)


def publishes(settings) -> bool:
    try:
        producer.messages_publish_confirmed(
            [{"topic": settings.FEED_EVENTS_TOPIC, "key": "k", "value": b"after the freeze"}], timeout=10
        )
    except producer.DeliveryFailed:
        return False
    return True


@pytest.mark.drill
@pytest.mark.own_relay
def test_a_producer_fenced_by_a_long_broker_freeze_is_replaced(own_broker, settings, caplog):
    broker, _ = own_broker
    settings.KAFKA_MESSAGE_TIMEOUT_MS = 5000
    producer.producer_reset()
    assert publishes(settings)

    os.kill(broker.pid, signal.SIGSTOP)
    for i in range(50):
        producer.message_publish(topic=settings.FEED_EVENTS_TOPIC, key=str(i), value=b"during the freeze")
    # The outage itself, not a wait for a result: frozen this long, the broker fences the
    # idempotent producer, whose every later message is refused with PRODUCER_FENCED.
    producer.producer_flush(8)
    os.kill(broker.pid, signal.SIGCONT)

    wait_for(lambda: publishes(settings), timeout=60, interval=0.5, what="a publish to succeed again")
    assert "Kafka producer unusable" in caplog.text, "the freeze did not fence the producer"


@pytest.mark.broker
@pytest.mark.own_relay
def test_the_relay_marks_a_batch_sent_without_waiting_for_the_wal_flush(make_user):
    Post.objects.create(author=make_user(), content="x")

    with CaptureQueriesContext(connection) as queries:
        assert relay().run_once().published == 1

    # A mark lost to a crash of PostgreSQL only publishes the row again, which consumers
    # ignore; waiting for the disk on every batch would slow every event down.
    [locked] = [q["sql"] for q in queries if "pg_try_advisory_xact_lock" in q["sql"]]
    assert sql.UNFLUSHED in locked
