"""Shared fixtures: a broker for the session, fresh topics and Redis per test, factories.

Only tests marked ``broker`` or ``drill`` get the broker, topics of their own and an outbox
relay on a thread (which publishes what they commit). Any other test sees a broker address
that refuses connections and a short message timeout, so that a test that truly needs the
broker fails instead of passing by luck.
"""

import datetime
import itertools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from consumers.models import DeadLetter
from devtools.broker import broker_start, broker_stop
from eventbus import producer
from eventbus.outbox import OutboxRelay, relay_loop
from eventbus.topics import topics_ensure
from follows.models import Reader
from tests.helpers import ROOT, free_port, stop_process, subprocess_env, wait_for, worker_assigned

User = get_user_model()
_names = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A dev broker of our own for the session, unless TEST_KAFKA_BOOTSTRAP_SERVERS names one."""
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    bootstrap = f"127.0.0.1:{free_port()}"
    process = broker_start(bootstrap, log=tmp_path_factory.mktemp("broker") / "broker.log")
    try:
        yield bootstrap
    finally:
        broker_stop(process)


# Markers of the tests that get the session broker (see pyproject.toml).
BROKER_MARKERS = ("broker", "drill")
# Fixtures that start or need the broker: a test using one must carry a broker marker.
BROKER_FIXTURES = {"kafka_bootstrap", "kafka", "worker"}
# How long an unmarked test's producer keeps an undeliverable message, in milliseconds.
NO_BROKER_MESSAGE_TIMEOUT_MS = 500


def broker_marked(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in BROKER_MARKERS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture starts: a test that uses a broker fixture must be marked for it."""
    used = BROKER_FIXTURES & set(getattr(item, "fixturenames", ()))
    if used and not broker_marked(item):
        pytest.fail(f"{item.nodeid} uses {sorted(used)}: mark it broker or drill", pytrace=False)


@pytest.fixture(scope="session")
def refused_address() -> Iterator[str]:
    """A local address that refuses every connection: a port bound for the session, never
    listened on, so that no broker (of this suite or anyone's) can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(autouse=True)
def broker_for_marked_tests(request: pytest.FixtureRequest, settings) -> Iterator[None]:
    """Tests marked broker or drill get their topics; any other test gets a refused address."""
    if broker_marked(request.node):
        request.getfixturevalue("kafka")
        if not request.node.get_closest_marker("own_relay"):
            request.getfixturevalue("outbox_relay")
        yield
        return
    settings.KAFKA_BOOTSTRAP_SERVERS = request.getfixturevalue("refused_address")
    settings.KAFKA_MESSAGE_TIMEOUT_MS = NO_BROKER_MESSAGE_TIMEOUT_MS
    producer.producer_reset()
    yield
    # What the test published can never be delivered: drop it rather than wait for it.
    if producer._producer is not None and producer._producer_pid == os.getpid():
        producer._producer.purge()
    producer.producer_reset()


@pytest.fixture
def kafka(kafka_bootstrap: str, settings) -> Iterator[dict[str, str]]:
    """Own topics and consumer group on the session broker (tests marked broker or drill)."""
    suffix = f"{os.getpid()}-{next(_names)}"
    settings.KAFKA_BOOTSTRAP_SERVERS = kafka_bootstrap
    settings.FEED_EVENTS_TOPIC = f"test-feed-events-{suffix}"
    settings.FEED_EVENTS_DLQ_TOPIC = f"test-feed-events-{suffix}.dlq"
    settings.FANOUT_GROUP_ID = f"test-fanout-{suffix}"
    settings.FEED_EVENTS_PARTITIONS = 3
    producer.producer_reset()
    topics_ensure()
    yield {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FEED_EVENTS_TOPIC": settings.FEED_EVENTS_TOPIC,
        "FEED_EVENTS_DLQ_TOPIC": settings.FEED_EVENTS_DLQ_TOPIC,
        "FANOUT_GROUP_ID": settings.FANOUT_GROUP_ID,
        "FEED_EVENTS_PARTITIONS": "3",
    }
    producer.producer_reset()


@pytest.fixture
def outbox_relay(kafka) -> Iterator[OutboxRelay]:
    """The outbox relay on a thread of the test process, as `make run` runs it beside the
    API: it publishes every committed event of the test (tests marked broker or drill,
    unless marked own_relay)."""
    relay = OutboxRelay(batch_size=500, retention=datetime.timedelta(minutes=10), flush_timeout=10.0)
    stop = threading.Event()
    thread = threading.Thread(
        target=relay_loop,
        kwargs={"relay": relay, "idle": 0.01, "backoff_max": 0.5, "stopping": stop.is_set},
        name="outbox-relay",
        daemon=True,
    )
    thread.start()
    yield relay
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), "the test's outbox relay did not stop"


@pytest.fixture(autouse=True)
def redis_clean() -> Iterator[None]:
    """The suite's Redis database (15 by default) starts empty for every test."""
    redis = get_redis_connection("default")
    redis.flushdb()
    yield
    redis.flushdb()


@pytest.fixture
def make_user(db) -> Callable[..., User]:
    """A user, active (seen now, feed complete) unless ``active=False``: never seen."""

    def make(username: str | None = None, *, active: bool = True, **extra: object) -> User:
        username = username or f"user{next(_names)}"
        user = User.objects.create_user(username=username, password="pw-Secret-123", **extra)
        if active:
            Reader.objects.create(user=user, seen_at=timezone.now(), feed_complete=True)
        return user

    return make


@pytest.fixture
def staff_client(make_user) -> Client:
    """A Django test client signed in to the admin as a superuser."""
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def make_dead_letter(db) -> Callable[..., DeadLetter]:
    """A pending dead letter of an undecodable message; ``fields`` override the defaults."""

    def make(**fields: object) -> DeadLetter:
        defaults = {
            "topic": settings.FEED_EVENTS_TOPIC,
            "partition": 0,
            "offset": 7,
            "key": b"1",
            "value": b"\xffnot json",
            "headers": [],
            "error_class": "UndecodableEvent",
            "error_message": "not valid JSON",
            "consumer_group": settings.FANOUT_GROUP_ID,
            "failed_at": timezone.now(),
        }
        return DeadLetter.objects.create(**(defaults | fields))

    return make


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    def make(user: User) -> APIClient:
        token, _ = Token.objects.get_or_create(user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def worker(settings):
    """A worker assigned every partition from the start (no group join to wait for)."""
    worker = worker_assigned()
    yield worker
    worker.consumer.close()


@pytest.fixture
def gunicorn(kafka, tmp_path):
    """Start the API under gunicorn with the given extra environment (tests marked drill);
    stop it at the end of the test."""
    processes = []

    def start(**extra: str) -> tuple[str, Path]:
        port = free_port()
        metrics_dir = tmp_path / f"prometheus-{port}"
        defaults = {"GUNICORN_WORKERS": "3", "GUNICORN_THREADS": "2"}
        env = subprocess_env(
            kafka, PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **(defaults | extra)
        )
        with open(tmp_path / "gunicorn.log", "ab") as stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")],
                env=env,
                cwd=ROOT,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            # Not /healthz, whose requests a test counts: a probe that timed out on the client
            # is still served, and counted, later. Any answer from Django will do.
            try:
                return requests.get(f"{base}/probe-of-the-test", timeout=1).status_code == 404
            except requests.RequestException:
                return False

        wait_for(up, timeout=30, what="gunicorn")
        return base, metrics_dir

    yield start
    for process in processes:
        stop_process(process)


# --- Browser tests ------------------------------------------------------------------------
# pytest-playwright provides `page` and saves a screenshot of every failing browser test in
# .run/browser-failures. The browser is the system's Chromium (Debian's `chromium`), since
# Playwright's own download is not available everywhere the suite runs.
CHROMIUM_EXECUTABLE = os.environ.get("CHROMIUM_EXECUTABLE", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not os.path.exists(CHROMIUM_EXECUTABLE):
        pytest.fail(f"{CHROMIUM_EXECUTABLE} is missing: install Debian's chromium", pytrace=False)
    # Playwright's sync API keeps an event loop on the test's thread, so Django's guard
    # against blocking database calls from async code would refuse the test's own ORM calls
    # (fixtures and assertions) once a page is open. Nothing in the suite runs async code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM_EXECUTABLE,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    }


@pytest.fixture
def browser_server(live_server) -> str:
    """The site, served by a live server thread of this process, for the browser to visit."""
    return live_server.url
