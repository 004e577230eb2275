"""Structured logs: request, user, batch and event fields, as JSON or readable lines."""

import json
import logging
import subprocess
import sys

import pytest

from core.logcontext import ConsoleFormatter, ContextFilter, JsonLineFormatter, log_bind, log_context
from eventbus.events import POST_CREATED, PostCreated, event_build, event_encode
from eventbus.producer import message_publish, producer_flush
from posts.models import Post
from tests.helpers import ROOT, drain, fail_post_created_on


class Lines(logging.Handler):
    """Collects records as the production handler writes them: context filter, JSON."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.setFormatter(JsonLineFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def find(self, message: str) -> list[dict]:
        return [line for line in self.lines if line["message"] == message]


@pytest.fixture
def lines():
    handler = Lines()
    loggers = [logging.getLogger(name) for name in ("feedsite", "consumers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_json_lines_carry_the_context_and_the_extra_fields(lines):
    logger = logging.getLogger("feedsite.example")
    with log_context(request_id="r-1"):
        log_bind(user_id=7)
        with log_context(batch="0:1-2"):
            logger.info("inside", extra={"rows": 3})
        logger.info("outside the batch")
    logger.info("outside every context")

    inside, outside, bare = lines.lines
    assert inside["message"] == "inside"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "feedsite.example"
    assert inside["time"].startswith("20")
    assert (inside["request_id"], inside["user_id"], inside["batch"], inside["rows"]) == (
        "r-1",
        7,
        "0:1-2",
        3,
    )
    assert "batch" not in outside
    assert outside["user_id"] == 7
    assert not {"request_id", "user_id", "batch"} & set(bare)


def test_console_lines_are_readable_with_fields_after_the_message():
    record = logging.LogRecord("feeds", logging.WARNING, __file__, 1, "cache %s", ("down",), None)
    with log_context(request_id="r-2"):
        ContextFilter().filter(record)
    record.rows = 5

    line = ConsoleFormatter().format(record)

    assert line.endswith(" WARNING feeds cache down request_id=r-2 rows=5")


@pytest.mark.django_db
def test_each_request_is_logged_with_its_id_user_status_and_duration(lines, make_user, client_for):
    ada = make_user()
    client = client_for(ada)

    response = client.get(f"/feeds/{ada.pk}", HTTP_X_REQUEST_ID="abc-123")
    unauthenticated = client.__class__().get(f"/feeds/{ada.pk}")

    assert response.status_code == 200
    assert response["X-Request-ID"] == "abc-123"
    first, second = lines.find(f"GET /feeds/{ada.pk} 200")[0], lines.find(f"GET /feeds/{ada.pk} 401")[0]
    assert first["request_id"] == "abc-123"
    assert first["user_id"] == ada.pk
    assert (first["method"], first["path"], first["status"]) == ("GET", f"/feeds/{ada.pk}", 200)
    assert first["duration_ms"] >= 0
    assert "user_id" not in second, "no user leaks from an earlier request"
    assert second["request_id"] == unauthenticated["X-Request-ID"] != "abc-123"


@pytest.mark.broker
@pytest.mark.django_db
def test_worker_lines_carry_the_batch_and_a_failing_events_id(
    lines, worker, settings, make_user, monkeypatch
):
    author = make_user()
    posts = [Post.objects.create(author=author, content=str(i)) for i in range(2)]
    events = [
        event_build(event_type=POST_CREATED, payload=PostCreated(post_id=p.pk, author_id=author.pk))
        for p in posts
    ]
    fail_post_created_on(monkeypatch, posts[1].pk)
    for event in events:
        message_publish(topic=settings.FEED_EVENTS_TOPIC, key=str(author.pk), value=event_encode(event))
    assert producer_flush(10) == 0

    drain(worker, 2)

    [batch] = lines.find("batch applied")
    assert batch["batch_size"] == 2
    assert batch["batch"].endswith(":0-1")
    assert (batch["applied"], batch["dead_letters"], batch["rows"]) == (1, 1, 1)
    [dead] = [line for line in lines.lines if line["message"].startswith("event dead-lettered")]
    assert dead["event_id"] == str(events[1].event_id)
    assert dead["event_type"] == POST_CREATED
    assert dead["batch"] == batch["batch"]


def check_logging(**env: str) -> subprocess.CompletedProcess:
    code = "import logging; logging.getLogger('devtools.demo').warning('hello', extra={'rows': 2})"
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
            # Production reads no local settings file (a developer's .env says LOG_FORMAT=console).
            "DJANGO_ENV_FILE": "",
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_write_json_and_debug_writes_readable_lines():
    production = check_logging(DJANGO_SECRET_KEY="k")
    debug = check_logging(DJANGO_DEBUG="true")
    assert production.returncode == debug.returncode == 0, production.stderr + debug.stderr

    line = json.loads(production.stderr.strip())
    assert (line["level"], line["logger"], line["message"], line["rows"]) == (
        "WARNING",
        "devtools.demo",
        "hello",
        2,
    )
    assert debug.stderr.strip().endswith("WARNING devtools.demo hello rows=2")


def test_an_unknown_log_format_is_refused_at_startup():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
            "DJANGO_ENV_FILE": "",
            "DJANGO_SECRET_KEY": "k",
            "LOG_FORMAT": "xml",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be json or console, not 'xml'" in result.stderr
