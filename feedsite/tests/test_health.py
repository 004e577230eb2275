import logging

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from eventbus import producer
from feedsite.health import CHECKS
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_is_up():
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.broker
def test_readyz_is_200_when_every_service_answers():
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "kafka": "ok"}


def test_readyz_names_the_broker_when_it_is_down(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    producer.producer_reset()

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["kafka"]
    producer.producer_reset()


@pytest.mark.broker
def test_readyz_names_redis_when_it_is_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1},
        }
    }

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["redis"]
    assert response.json()["checks"] == {"database": "ok", "redis": "down", "kafka": "ok"}
    up = {name: REGISTRY.get_sample_value("feed_dependency_up", {"dependency": name}) for name in CHECKS}
    assert up == {"database": 1.0, "redis": 0.0, "kafka": 1.0}


def test_metrics_are_exported_for_prometheus():
    body = Client().get("/metrics").content.decode()

    for name in (
        "feed_posts_created_total",
        "feed_cache_hits_total",
        "feed_cache_misses_total",
        "feed_fanout_rows_total",
        "feed_fanout_batch_duration_seconds_bucket",
        "feed_post_to_feed_latency_seconds_bucket",
        "django_http_requests_total_by_view_transport_method_total",
    ):
        assert name in body


def test_a_database_outage_is_a_503_not_a_500(make_user, client_for, monkeypatch):
    from django.db.utils import OperationalError

    client = client_for(make_user())

    def unreachable(**kwargs):
        raise OperationalError("connection refused")

    # Fault injection: the real outage is drilled in consumers/tests/test_reliability.py.
    monkeypatch.setattr("posts.views.post_create", unreachable)
    response = client.post("/posts", {"content": "hi"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "detail" in response.json()


@pytest.mark.broker
def test_readyz_tells_anonymous_callers_states_only_and_logs_the_details(settings, caplog):
    port = free_port()
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}}

    with caplog.at_level(logging.WARNING, logger="feedsite"):
        response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "down": ["redis"],
        "checks": {"database": "ok", "redis": "down", "kafka": "ok"},
    }
    assert str(port) not in response.content.decode()
    [record] = [r for r in caplog.records if r.name == "feedsite.health"]
    assert "redis" in record.getMessage()
    assert str(port) in record.getMessage(), "the log keeps the reason"


@pytest.mark.parametrize(
    ("address", "allowed", "status"),
    [
        ("127.0.0.1", "127.0.0.1/32,::1/128", 200),
        ("::1", "127.0.0.1/32,::1/128", 200),
        ("::ffff:127.0.0.1", "127.0.0.1/32", 200),
        ("203.0.113.9", "127.0.0.1/32,::1/128", 404),
        ("10.1.2.3", "10.0.0.0/8", 200),
        ("127.0.0.1", "10.0.0.0/8", 404),
        ("127.0.0.1", "", 404),
    ],
)
def test_metrics_are_served_only_to_allowed_networks(settings, address, allowed, status):
    settings.METRICS_ALLOWED_NETWORKS = [n for n in allowed.split(",") if n]

    response = Client(REMOTE_ADDR=address).get("/metrics")

    assert response.status_code == status
    if status == 404:
        assert response.json() == {"detail": "Not found."}
        assert b"feed_" not in response.content
    else:
        assert b"feed_posts_created_total" in response.content


def test_a_forged_forwarded_for_does_not_reach_the_metrics(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32"]

    response = Client(REMOTE_ADDR="203.0.113.9").get("/metrics", HTTP_X_FORWARDED_FOR="127.0.0.1")

    assert response.status_code == 404
