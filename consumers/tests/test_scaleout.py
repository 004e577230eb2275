"""Failure drill: fan-out workers leaving one consumer group under post traffic, on a topic of
as many partitions as production has by default.

Besides the feed table (exact, as in test_reliability), it checks the group: after each
change the partitions are spread evenly over the live workers again, each owned by exactly
one, within a session timeout per rebalance the change takes; and that no event was
applied twice, which the feed table's primary key would hide.
"""

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection

from consumers.tests.test_reliability import Graph, assert_exact, committed_total, owned, scrape, worker_env
from eventbus.topics import topics_ensure
from feeds.models import FeedEntry
from tests.helpers import free_port, start_manage, stop_process, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.drill]

# FEED_EVENTS_PARTITIONS' default (the suite's topics have 3).
PARTITIONS = 6
# The workers' FANOUT_SESSION_TIMEOUT_MS, in seconds.
SESSION_TIMEOUT = 6.0
# What a worker logs on every assignment and revocation (consumers.assignment).
OWNS = re.compile(r"now owns \[([\d, ]*)\]")


class Worker:
    """One ``run_fanout`` of the drill under one name, across restarts: its metrics port,
    and a log per life."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.logs = name, logs
        self.port = free_port()
        self.env = {**env, "FANOUT_METRICS_PORT": str(self.port)}
        self.lives: list[Path] = []
        self.process = None

    def start(self) -> None:
        """Start a life of the worker; return once it serves its metrics (next: it joins)."""
        self.lives.append(self.logs / f"{self.name}-{len(self.lives)}.log")
        self.process = start_manage(["run_fanout"], self.env, self.lives[-1])
        wait_for(self.serving, timeout=30, what=f"the {self.name} worker to serve its metrics")

    def serving(self) -> bool:
        try:
            scrape(self.port, "feed_fanout_assigned_partitions")
        except requests.ConnectionError:
            return False
        return True

    def partitions(self) -> list[int]:
        """What this life of the worker owns, as its last assignment or revocation logged."""
        logged = OWNS.findall(self.lives[-1].read_text())
        return [int(p) for p in logged[-1].split(",") if p.strip()] if logged else []


def spread_evenly(live: list[Worker]) -> bool:
    """Every partition owned by exactly one of the ``live`` workers, each owning some, and
    no two shares differing by more than one; each worker's gauge agreeing with its log."""
    shares = [worker.partitions() for worker in live]
    sizes = [len(share) for share in shares]
    return (
        sorted(p for share in shares for p in share) == list(range(PARTITIONS))
        and min(sizes) >= 1
        and max(sizes) - min(sizes) <= 1
        and all(owned(worker.port) == size for worker, size in zip(live, sizes, strict=True))
    )


@pytest.fixture
def six_partitions(kafka, settings) -> dict[str, str]:
    """The test's events topic, again with PARTITIONS partitions: the workers' environment."""
    settings.FEED_EVENTS_TOPIC = f"{settings.FEED_EVENTS_TOPIC}-{PARTITIONS}"
    settings.FEED_EVENTS_PARTITIONS = PARTITIONS
    topics_ensure()
    return kafka | {
        "FEED_EVENTS_TOPIC": settings.FEED_EVENTS_TOPIC,
        "FEED_EVENTS_PARTITIONS": str(PARTITIONS),
    }


@pytest.fixture
def feed_writes(transactional_db) -> Iterator[Callable[[], tuple[int, int]]]:
    """Every feed entry an INSERT proposes, logged by a trigger before ON CONFLICT drops the
    ones already there: an event applied twice writes its entries twice here. Yields a
    function returning how many were written, and how many distinct (user, post) pairs."""
    table = FeedEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE drill_feed_writes (user_id bigint, post_id bigint)")
        cursor.execute(
            "CREATE FUNCTION drill_feed_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO drill_feed_writes VALUES (NEW.user_id, NEW.post_id); RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER drill_feed_write BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION drill_feed_write()"
        )

    def written() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), count(DISTINCT (user_id, post_id)) FROM drill_feed_writes")
            return cursor.fetchone()

    try:
        yield written
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER drill_feed_write ON {table}")
            cursor.execute("DROP FUNCTION drill_feed_write()")
            cursor.execute("DROP TABLE drill_feed_writes")


def spread_within(live: list[Worker], *, rebalances: int, after: str) -> None:
    """Wait for the partitions to spread evenly over ``live``, for at most a session timeout
    per rebalance the change takes: on the dev broker a member hears of a rebalance at its
    next heartbeat (a third of a session timeout) and the join round lasts about half one."""
    wait_for(
        lambda: spread_evenly(live),
        timeout=rebalances * SESSION_TIMEOUT,
        what=f"the partitions to spread evenly over {len(live)} workers {after}",
    )


def test_a_killed_and_a_restarted_worker_lose_nothing_apply_nothing_twice_and_spread_the_partitions(
    six_partitions, feed_writes, settings, tmp_path
):
    # Sixty authors: every partition carries posts. 37 s of posts at 80 a second outlast
    # the changes of the group (about 30 s).
    graph = Graph(authors=60, fans=10, posts=3000)
    env = worker_env(six_partitions, FANOUT_SESSION_TIMEOUT_MS=str(int(SESSION_TIMEOUT * 1000)))
    first, killed, restarted = (Worker(name, env, tmp_path) for name in ("first", "killed", "restarted"))
    workers = [first, killed, restarted]
    publisher = None
    try:
        for worker in workers:
            worker.start()
        wait_for(lambda: spread_evenly(workers), timeout=30, what="three workers to own two partitions each")
        publisher = graph.publish_in_background(settings.FEED_EVENTS_TOPIC, per_second=80)
        wait_for(
            lambda: scrape(killed.port, "feed_fanout_batch_duration_seconds_count") > 0,
            timeout=30,
            what="the worker to be killed to apply batches",
        )

        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(10)
        # Its session expires first: one session timeout more.
        spread_within([first, restarted], rebalances=2, after="the kill")

        restarted.process.send_signal(signal.SIGTERM)
        assert restarted.process.wait(30) == 0
        spread_within([first], rebalances=1, after="the stop")
        restarted.start()
        # Cooperative rebalancing: one to take partitions from the other worker, one to
        # give them to the restarted one.
        spread_within([first, restarted], rebalances=2, after="the restart")
        assert publisher.is_alive(), "the traffic ended before the last change"
        publisher.join(60)

        assert_exact(graph)
        wait_for(
            lambda: committed_total(settings) == len(graph.posts), timeout=60, what="every offset committed"
        )
        written, distinct = feed_writes()
        assert written - distinct == 0, "feed entries written twice: their events were applied twice"
        assert distinct == len(graph.expected)
    finally:
        if publisher is not None:
            publisher.join(60)
        for worker in workers:
            if worker.process is not None:
                stop_process(worker.process)
