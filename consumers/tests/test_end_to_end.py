"""The whole path: HTTP API, PostgreSQL, broker, the real run_fanout process, feeds, cache."""

import signal

import pytest
import requests

from consumers.models import DeadLetter
from eventbus.producer import message_publish, producer_flush
from tests.helpers import (
    free_port,
    metric_sum,
    start_manage,
    stop_process,
    subprocess_env,
    topic_read,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.drill]


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kwargs)

    def signup(self, name: str) -> dict:
        response = self.call("POST", "/users", json={"username": name, "password": "pw-Secret-123"})
        assert response.status_code == 201, response.text
        return response.json()

    def feed_ids(self, user: dict) -> list[int]:
        response = self.call("GET", f"/feeds/{user['id']}", user["token"])
        assert response.status_code == 200, response.text
        return [post["id"] for post in response.json()["results"]]


@pytest.fixture
def fanout_process(kafka, tmp_path):
    port = free_port()
    log = tmp_path / "fanout.log"
    process = start_manage(["run_fanout"], subprocess_env(kafka, FANOUT_METRICS_PORT=str(port)), log)
    yield process, port, log
    stop_process(process)


def test_posts_reach_followers_through_kafka_and_the_worker(live_server, fanout_process, settings):
    process, metrics_port, log = fanout_process
    api = Api(live_server.url)

    # Three people; two follow the third, who posts.
    star, fan1, fan2 = api.signup("star"), api.signup("fan1"), api.signup("fan2")
    for fan in (fan1, fan2):
        assert api.call("POST", "/follow", fan["token"], json={"followee_id": star["id"]}).status_code == 201
    for user in (star, fan1, fan2):
        assert api.feed_ids(user) == []  # an empty first page, now cached
    post = api.call("POST", "/posts", star["token"], json={"content": "hello, followers"}).json()

    for user in (star, fan1, fan2):
        wait_for(
            lambda u=user: api.feed_ids(u) == [post["id"]], timeout=60, what=f"{user['username']}'s feed"
        )

    # A repeated read is served from the cache.
    hits_before = metric_sum(api.call("GET", "/metrics").text, "feed_cache_hits_total")
    assert api.feed_ids(fan1) == [post["id"]]
    assert metric_sum(api.call("GET", "/metrics").text, "feed_cache_hits_total") == hits_before + 1

    # Garbage on the topic is dead-lettered, and the next good post still gets through.
    message_publish(topic=settings.FEED_EVENTS_TOPIC, key=str(star["id"]), value=b"{oops")
    assert producer_flush(10) == 0
    second = api.call("POST", "/posts", star["token"], json={"content": "still here"}).json()
    wait_for(lambda: api.feed_ids(fan2) == [second["id"], post["id"]], timeout=60, what="the second post")
    dead = wait_for(lambda: list(DeadLetter.objects.all()), timeout=30, what="a DeadLetter row")
    assert [(d.error_class, bytes(d.value)) for d in dead] == [("UndecodableEvent", b"{oops")]
    [dlq_message] = topic_read(settings.FEED_EVENTS_DLQ_TOPIC, count=1)
    assert dlq_message.value() == b"{oops"
    assert dict(dlq_message.headers())["dlq.error.class"] == b"UndecodableEvent"

    # The worker exports its own metrics.
    worker_metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert metric_sum(worker_metrics, "feed_fanout_rows_total") >= 6
    assert metric_sum(worker_metrics, "feed_post_to_feed_latency_seconds_count") >= 2
    assert 'feed_dead_letters_total{error="UndecodableEvent"} 1.0' in worker_metrics

    # SIGTERM: the worker finishes its batch and exits cleanly.
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()
