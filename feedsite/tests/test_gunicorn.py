"""The API under gunicorn with several workers: summed metrics, and fork-safe publishing."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection
from rest_framework.authtoken.models import Token

from eventbus.models import OutboxMessage
from tests.helpers import ROOT, metric_sum, subprocess_env, topic_read, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.drill]

REQUESTS = 40
HEALTHZ = (
    'django_http_requests_total_by_view_transport_method_total{method="GET",transport="http",view="healthz"}'
)


def test_metrics_sum_over_all_gunicorn_workers(gunicorn):
    base, metrics_dir = gunicorn()
    before = metric_sum(requests.get(f"{base}/metrics", timeout=5).text, HEALTHZ)

    for _ in range(REQUESTS):
        # A new connection each time, so that the workers share the requests.
        assert requests.get(f"{base}/healthz", timeout=5, headers={"Connection": "close"}).ok

    after = metric_sum(requests.get(f"{base}/metrics", timeout=5).text, HEALTHZ)
    assert after - before == REQUESTS
    writers = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}
    assert len(writers) >= 2, "only one worker process wrote metrics"


def test_every_preloaded_workers_posts_are_delivered(gunicorn, make_user, settings):
    base, _ = gunicorn(GUNICORN_PRELOAD="1")
    users = [make_user() for _ in range(5)]
    tokens = [Token.objects.create(user=u).key for u in users]

    for i in range(30):
        response = requests.post(
            f"{base}/posts",
            json={"content": f"post {i}"},
            headers={"Authorization": f"Token {tokens[i % 5]}", "Connection": "close"},
            timeout=10,
        )
        assert response.status_code == 201

    wait_for(
        lambda: not OutboxMessage.objects.filter(sent_at__isnull=True).exists(),
        timeout=30,
        what="every worker's deliveries to be confirmed",
    )
    assert len(topic_read(settings.FEED_EVENTS_TOPIC, count=30)) == 30


PRELOAD_SCRIPT = """
import feedsite.wsgi
from eventbus import producer
print("no client" if producer._producer is None else "client created before the fork")
"""


def test_loading_the_app_creates_no_kafka_client_before_the_fork(kafka):
    # librdkafka clients do not survive a fork; gunicorn's preload loads the app in the
    # master, so the app must leave creating the producer to each worker's first use.
    result = subprocess.run(
        [sys.executable, "-c", PRELOAD_SCRIPT],
        env=subprocess_env(kafka),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no client"


def test_rate_limits_are_shared_by_all_gunicorn_workers(gunicorn, make_user):
    base, _ = gunicorn(THROTTLE_POSTS_RATE="5/minute")
    token = Token.objects.create(user=make_user()).key
    headers = {"Authorization": f"Token {token}", "Connection": "close"}

    # A new connection each time: the requests spread over the three workers.
    responses = [
        requests.post(f"{base}/posts", json={"content": str(i)}, headers=headers, timeout=10)
        for i in range(9)
    ]

    assert [r.status_code for r in responses] == [201] * 5 + [429] * 4
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in responses[5:])


def database_connections() -> int:
    """Connections to the suite's database, but this one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        [(count,)] = cursor.fetchall()
    return count


def test_only_the_django_threads_hold_database_connections(gunicorn, make_user):
    """Thirty concurrent posts reach a worker of 2 Django and 28 queue threads: at most 2
    database connections are opened, as with 2 threads."""
    tokens = [Token.objects.create(user=make_user()).key for _ in range(30)]
    before = database_connections()
    base, _ = gunicorn(GUNICORN_WORKERS="1", GUNICORN_THREADS="2", API_REQUEST_QUEUE_MS="10000")

    def post(token: str) -> int:
        return requests.post(
            f"{base}/posts", json={"content": "hi"}, headers={"Authorization": f"Token {token}"}, timeout=30
        ).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(post, tokens))

    assert statuses == [201] * 30
    assert database_connections() - before <= 2
