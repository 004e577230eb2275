"""Failure drills against the real run_fanout process, PostgreSQL, Redis and broker.

Each drill ends with the same check: the feed table holds exactly the expected (user,
post) pairs, with none missing and none extra, and nothing was dead-lettered.
"""

import random
import signal
import subprocess
import threading
import time

import pytest
import requests
from confluent_kafka import TopicPartition
from django.contrib.auth import get_user_model
from django.db import connection

from consumers.loop import consumer_build
from consumers.models import AppliedOffset, DeadLetter
from devtools.seed import readers_ensure
from eventbus.events import POST_CREATED, PostCreated, event_build, event_encode
from eventbus.producer import message_publish, producer_flush
from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post
from tests.helpers import (
    TcpProxy,
    free_port,
    metric_sum,
    offsets_committed,
    restart_postgres,
    restart_redis,
    start_manage,
    stop_process,
    subprocess_env,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.drill]
User = get_user_model()


class Graph:
    """Authors, each followed by ``fans`` users, and posts whose events are not yet published."""

    def __init__(self, *, authors: int, fans: int, posts: int) -> None:
        tag = random.randrange(10**9)
        users = User.objects.bulk_create([User(username=f"drill{tag}-{i}") for i in range(authors + fans)])
        readers_ensure([user.pk for user in users])
        self.authors, self.fans = users[:authors], users[authors:]
        Follow.objects.bulk_create(
            [
                Follow(follower=fan, followee=author)
                for i, author in enumerate(self.authors)
                for fan in self.fans[i % 2 :: 2]
            ]
        )
        # bulk_create sends no post_save: the drill publishes the events itself.
        self.posts = Post.objects.bulk_create(
            [Post(author=self.authors[i % authors], content=f"drill {i}") for i in range(posts)]
        )
        followers = {}
        for follower_id, followee_id in Follow.objects.values_list("follower_id", "followee_id"):
            followers.setdefault(followee_id, []).append(follower_id)
        self.expected = {
            (user_id, post.pk)
            for post in self.posts
            for user_id in [post.author_id, *followers.get(post.author_id, [])]
        }

    def publish(self, topic: str, *, per_second: float | None = None, posts=None) -> None:
        interval = 1 / per_second if per_second else 0
        for post in posts or self.posts:
            event = event_build(
                event_type=POST_CREATED, payload=PostCreated(post_id=post.pk, author_id=post.author_id)
            )
            message_publish(topic=topic, key=str(post.author_id), value=event_encode(event))
            if interval:
                time.sleep(interval)  # a steady arrival rate, not a wait for a result
        assert producer_flush(30) == 0

    def publish_in_background(self, topic: str, *, per_second: float) -> threading.Thread:
        thread = threading.Thread(target=self.publish, args=(topic,), kwargs={"per_second": per_second})
        thread.start()
        return thread


def feed_pairs() -> set[tuple[int, int]]:
    connection.close_if_unusable_or_obsolete()
    return set(FeedEntry.objects.values_list("user_id", "post_id"))


def feed_checksum() -> tuple[int, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), md5(coalesce(string_agg(user_id || ':' || post_id, ',' "
            "ORDER BY user_id, post_id), '')) FROM feeds_feedentry"
        )
        return cursor.fetchone()


def assert_exact(graph: Graph) -> None:
    wait_for(lambda: feed_pairs() >= graph.expected, timeout=120, what="every expected feed entry")
    assert feed_pairs() == graph.expected
    assert FeedEntry.objects.count() == len(graph.expected)
    assert not DeadLetter.objects.exists()


def scrape(port: int, name: str) -> float:
    """The sum of a metric's samples, over all label values, as the worker exports it."""
    return metric_sum(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, name)


def owned(port: int) -> float:
    """How many partitions a worker owns; 0 until its metrics server answers."""
    try:
        return scrape(port, "feed_fanout_assigned_partitions")
    except requests.ConnectionError:
        return 0


def worker_env(kafka, **extra):
    return subprocess_env(kafka, **({"FANOUT_BATCH_SIZE": "20"} | extra))


def committed_total(settings) -> int:
    consumer = consumer_build(group_id=settings.FANOUT_GROUP_ID, session_timeout_ms=6000)
    try:
        return offsets_committed(
            consumer, topic=settings.FEED_EVENTS_TOPIC, partitions=settings.FEED_EVENTS_PARTITIONS
        )
    finally:
        consumer.close()


def database_address(settings) -> tuple[str, int]:
    db = settings.DATABASES["default"]
    return db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)


def database_proxy(settings) -> TcpProxy:
    """A proxy to the suite's PostgreSQL, for the worker that env_behind sends through it."""
    return TcpProxy(database_address(settings))


def env_behind(proxy: TcpProxy, kafka, settings, *, metrics_port: int) -> dict[str, str]:
    """A worker's environment in which only its PostgreSQL goes through ``proxy``."""
    host, port = database_address(settings)
    env = worker_env(kafka, FANOUT_METRICS_PORT=str(metrics_port))
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
    return env


def waiting_for_the_database(metrics_port: int) -> None:
    wait_for(
        lambda: scrape(metrics_port, 'feed_fanout_retries_total{reason="unavailable"}') > 0,
        timeout=30,
        what="the worker behind the proxy to wait for the database",
    )


def delivered(graph: Graph, *, timeout: float) -> None:
    """Wait until every post is in every feed it belongs in; fail saying how many are not."""
    try:
        wait_for(lambda: feed_pairs() >= graph.expected, timeout=timeout, what="every post in every feed")
    except pytest.fail.Exception:
        missing = {post_id for _, post_id in graph.expected - feed_pairs()}
        pytest.fail(f"{len(missing)} of {len(graph.posts)} posts never reached the feeds")


def test_a_worker_killed_at_random_moments_applies_every_event_exactly_once(kafka, settings, tmp_path):
    graph = Graph(authors=6, fans=20, posts=4000)
    graph.publish(settings.FEED_EVENTS_TOPIC)
    # Small batches: more kills land mid-batch, and ten short lives cannot finish the load
    # (at most about 0.5 s of work each) however fast a batch is applied.
    env = worker_env(kafka, FANOUT_BATCH_SIZE="2", FANOUT_SESSION_TIMEOUT_MS="3000")
    chance = random.Random(20261127)
    for _ in range(10):
        applied = FeedEntry.objects.count()
        worker = start_manage(["run_fanout"], env, tmp_path / "fanout.log")
        try:
            # Once this worker is applying batches, kill it at a random instant.
            wait_for(lambda n=applied: FeedEntry.objects.count() > n, timeout=60, what="progress")
            time.sleep(chance.uniform(0, 0.4))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
    assert FeedEntry.objects.count() < len(graph.expected), "the load finished before the last kill"

    worker = start_manage(["run_fanout"], env, tmp_path / "fanout.log")
    try:
        assert_exact(graph)
    finally:
        stop_process(worker)


def test_replaying_the_whole_topic_leaves_the_feeds_unchanged(kafka, settings, tmp_path):
    graph = Graph(authors=4, fans=10, posts=120)
    graph.publish(settings.FEED_EVENTS_TOPIC)
    worker = start_manage(["run_fanout"], worker_env(kafka), tmp_path / "fanout.log")
    try:
        assert_exact(graph)
        wait_for(lambda: committed_total(settings) == 120, timeout=60, what="offsets committed")
    finally:
        stop_process(worker)
    before = feed_checksum()

    for forget_applied_offsets in (False, True):
        # Reset the group to the earliest offset, as an operator would.
        consumer = consumer_build(group_id=settings.FANOUT_GROUP_ID, session_timeout_ms=6000)
        consumer.commit(
            offsets=[
                TopicPartition(settings.FEED_EVENTS_TOPIC, p, 0)
                for p in range(settings.FEED_EVENTS_PARTITIONS)
            ],
            asynchronous=False,
        )
        consumer.close()
        assert committed_total(settings) == 0
        if forget_applied_offsets:
            # Without the stored offsets, only the handlers' idempotency protects the feeds.
            AppliedOffset.objects.all().delete()
        worker = start_manage(["run_fanout"], worker_env(kafka), tmp_path / "fanout.log")
        try:
            wait_for(lambda: committed_total(settings) == 120, timeout=90, what="the replay")
        finally:
            stop_process(worker)
        assert feed_checksum() == before
    assert before[0] == len(graph.expected)


def test_sigterm_under_load_commits_so_a_restart_reprocesses_nothing(kafka, settings, tmp_path):
    graph = Graph(authors=5, fans=20, posts=1500)
    graph.publish(settings.FEED_EVENTS_TOPIC)
    timeout = 20
    env = worker_env(kafka, FANOUT_SHUTDOWN_TIMEOUT=str(timeout))
    worker = start_manage(["run_fanout"], env, tmp_path / "fanout.log")
    try:
        wait_for(lambda: FeedEntry.objects.exists(), timeout=60, what="the worker to start applying")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout) == 0
    finally:
        stop_process(worker)
    assert FeedEntry.objects.count() < len(graph.expected), "the load finished before the SIGTERM"

    port = free_port()
    worker = start_manage(["run_fanout"], {**env, "FANOUT_METRICS_PORT": str(port)}, tmp_path / "fanout2.log")
    try:
        assert_exact(graph)
        assert scrape(port, "feed_fanout_reprocessed_total") == 0
    finally:
        stop_process(worker)


def redis_answers() -> bool:
    return (
        subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, text=True).stdout.strip()
        == "PONG"
    )


@pytest.mark.skipif(
    subprocess.run(["which", "pg_ctlcluster"], capture_output=True).returncode != 0,
    reason="needs pg_ctlcluster to restart the local PostgreSQL",
)
def test_postgres_and_redis_restarts_under_load_lose_nothing_and_dead_letter_nothing(
    kafka, settings, tmp_path
):
    graph = Graph(authors=5, fans=10, posts=400)
    port = free_port()
    worker = start_manage(
        ["run_fanout"], worker_env(kafka, FANOUT_METRICS_PORT=str(port)), tmp_path / "fanout.log"
    )
    publisher = graph.publish_in_background(settings.FEED_EVENTS_TOPIC, per_second=40)
    try:
        wait_for(lambda: FeedEntry.objects.exists(), timeout=60, what="the worker to start applying")
        connection.close()
        restart_postgres()
        wait_for(
            lambda: scrape(port, 'feed_fanout_retries_total{reason="unavailable"}') > 0,
            timeout=30,
            what="the worker to notice",
        )
        restart_redis()
        wait_for(redis_answers, timeout=30, what="Redis")
        publisher.join(60)
        assert_exact(graph)
        assert worker.poll() is None, "the worker died instead of waiting"
    finally:
        publisher.join(60)
        if not redis_answers():
            restart_redis()
        stop_process(worker)


def test_two_workers_share_the_load_and_one_can_leave_mid_load(kafka, settings, tmp_path):
    graph = Graph(authors=6, fans=10, posts=3000)
    first = start_manage(["run_fanout"], worker_env(kafka), tmp_path / "first.log")
    second = start_manage(["run_fanout"], worker_env(kafka), tmp_path / "second.log")
    try:
        graph.publish(settings.FEED_EVENTS_TOPIC)
        applied = wait_for(
            lambda: (n := FeedEntry.objects.count()) > len(graph.expected) // 10 and n,
            timeout=60,
            what="progress",
        )
        second.send_signal(signal.SIGTERM)
        # Checked at the signal: while the second worker shuts down, the first keeps going.
        assert applied < len(graph.expected), "the load finished before the stop"
        assert second.wait(30) == 0
        assert_exact(graph)
        wait_for(lambda: committed_total(settings) == 3000, timeout=60, what="every offset committed")
    finally:
        stop_process(first)
        stop_process(second)


def test_partitions_taken_over_during_a_database_outage_lose_nothing(kafka, settings, tmp_path):
    # Thirty authors: each round of thirty posts lands on every partition.
    graph = Graph(authors=30, fans=10, posts=60)
    first_round, second_round = graph.posts[:30], graph.posts[30:]
    with database_proxy(settings) as proxy:
        stays_port, leaves_port = free_port(), free_port()
        leaves = start_manage(
            ["run_fanout"], worker_env(kafka, FANOUT_METRICS_PORT=str(leaves_port)), tmp_path / "leaves.log"
        )
        stays_env = env_behind(proxy, kafka, settings, metrics_port=stays_port)
        stays = None
        try:
            wait_for(
                lambda: owned(leaves_port) == 3,
                timeout=60,
                what="the first worker to own every partition",
            )
            stays = start_manage(["run_fanout"], stays_env, tmp_path / "stays.log")
            wait_for(
                lambda: owned(stays_port) >= 1 and owned(leaves_port) <= 2,
                timeout=60,
                what="the two workers to share the partitions",
            )

            # The database goes away for one worker: it holds its batch and waits.
            proxy.close()
            graph.publish(settings.FEED_EVENTS_TOPIC, posts=first_round)
            waiting_for_the_database(stays_port)
            # The other leaves: its partitions move to the waiting worker, and more
            # events arrive on them meanwhile.
            leaves.send_signal(signal.SIGTERM)
            assert leaves.wait(30) == 0
            graph.publish(settings.FEED_EVENTS_TOPIC, posts=second_round)
            wait_for(
                lambda: owned(stays_port) == 3,
                timeout=60,
                what="the waiting worker to take every partition over",
            )
            # Two more retries: at least one whole wait since it took them over, long
            # enough to have fetched from them.
            retries = scrape(stays_port, 'feed_fanout_retries_total{reason="unavailable"}')
            wait_for(
                lambda: scrape(stays_port, 'feed_fanout_retries_total{reason="unavailable"}') >= retries + 2,
                timeout=60,
                what="a whole retry wait after the takeover",
            )
            assert FeedEntry.objects.count() < len(graph.expected), "everything was applied before the outage"

            proxy.open()
            delivered(graph, timeout=90)
            assert_exact(graph)
            assert stays.poll() is None, "the worker died instead of waiting"
            # The drill reached the case it is about.
            assert "assigned during a retry wait are paused" in (tmp_path / "stays.log").read_text()
        finally:
            stop_process(leaves)
            if stays is not None:
                stop_process(stays)


def test_partitions_lost_during_a_retry_wait_and_assigned_back_are_consumed_again(kafka, settings, tmp_path):
    """A worker waiting out its database outage loses partitions to a worker that joins; the
    outage ends, the other worker leaves, and the partitions come back to the first: every
    event on them, before and after, is applied (librdkafka keeps a partition's pause
    across its revocation and re-assignment, so the wait must not leave one paused)."""
    graph = Graph(authors=30, fans=10, posts=60)
    first_round, second_round = graph.posts[:30], graph.posts[30:]
    with database_proxy(settings) as proxy:
        waits_port, joins_port = free_port(), free_port()
        waits_env = env_behind(proxy, kafka, settings, metrics_port=waits_port)
        waits = start_manage(["run_fanout"], waits_env, tmp_path / "waits.log")
        joins = None
        try:
            wait_for(
                lambda: owned(waits_port) == 3, timeout=60, what="the first worker to own every partition"
            )

            proxy.close()
            graph.publish(settings.FEED_EVENTS_TOPIC, posts=first_round)
            waiting_for_the_database(waits_port)
            joins = start_manage(
                ["run_fanout"], worker_env(kafka, FANOUT_METRICS_PORT=str(joins_port)), tmp_path / "joins.log"
            )
            wait_for(
                lambda: owned(joins_port) >= 1 and owned(waits_port) <= 2,
                timeout=60,
                what="the joining worker to take partitions from the waiting one",
            )

            # The outage ends, the wait with it; then the other worker leaves and its
            # partitions go back to the worker that waited.
            proxy.open()
            wait_for(
                lambda: scrape(waits_port, "feed_fanout_batch_duration_seconds_count") > 0,
                timeout=60,
                what="the waiting worker to apply its batch",
            )
            joins.send_signal(signal.SIGTERM)
            assert joins.wait(30) == 0
            wait_for(lambda: owned(waits_port) == 3, timeout=60, what="the partitions to come back")
            graph.publish(settings.FEED_EVENTS_TOPIC, posts=second_round)

            delivered(graph, timeout=60)
            assert_exact(graph)
        finally:
            stop_process(waits)
            if joins is not None:
                stop_process(joins)


def test_three_workers_under_traffic_with_one_killed_and_one_joining_lose_nothing(kafka, settings, tmp_path):
    """Posts keep arriving while one of three workers is SIGKILLed and a fourth joins: every
    post reaches every follower once, and the partitions spread evenly again."""
    # Forty seconds of posts: long enough for the kill, the join and two rebalances.
    graph = Graph(authors=30, fans=10, posts=6000)
    ports = [free_port() for _ in range(4)]
    workers = []

    def start(index: int):
        env = worker_env(kafka, FANOUT_METRICS_PORT=str(ports[index]))
        workers.append(start_manage(["run_fanout"], env, tmp_path / f"worker{index}.log"))
        return workers[-1]

    try:
        for index in range(3):
            start(index)
        wait_for(
            lambda: [owned(port) for port in ports[:3]] == [1, 1, 1],
            timeout=60,
            what="three workers to own a partition each",
        )
        publisher = graph.publish_in_background(settings.FEED_EVENTS_TOPIC, per_second=150)
        wait_for(lambda: FeedEntry.objects.count() > len(graph.expected) // 10, timeout=60, what="progress")
        killed = workers[1]
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        start(3)
        wait_for(lambda: owned(ports[3]) >= 1, timeout=60, what="the fourth worker to join")
        assert publisher.is_alive(), "the traffic ended before the kill and the join"
        publisher.join(60)

        assert_exact(graph)
        live = [ports[0], ports[2], ports[3]]
        wait_for(
            lambda: [owned(port) for port in live] == [1, 1, 1],
            timeout=int(settings.FANOUT_SESSION_TIMEOUT_MS) / 1000 * 2,
            what="the partitions to spread evenly again",
        )
    finally:
        for worker in workers:
            stop_process(worker)
