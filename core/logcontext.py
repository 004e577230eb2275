"""Structured logs: context fields, their formatters, and the request middleware.

Code that knows something every log line of a unit of work should carry (a request id,
the authenticated user, a worker batch, an event) binds it with ``log_context`` or
``log_bind``; ``ContextFilter`` copies the fields onto each record. ``LOG_FORMAT`` picks
how records are written: one JSON object per line (``json``, the production default), or
a readable line with ``key=value`` pairs (``console``, the development default).
"""

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter

_fields: ContextVar[dict[str, object]] = ContextVar("log_fields", default={})  # noqa: B039  (never mutated)

# Attributes every LogRecord has; anything else on a record is a structured field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept if it looks like one; otherwise a new one is made.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add more)."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def log_bind(**fields: object) -> None:
    """Add ``fields`` to the rest of the innermost ``log_context`` block."""
    _fields.set({**_fields.get(), **fields})


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record passing the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _fields.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _extra(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class ConsoleFormatter(logging.Formatter):
    """``time level logger message key=value ...``: the fields after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _extra(record).items())
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # Tracebacks stay below.
        return f"{head} {fields}{newline}{rest}"


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: time, level, logger, message, then every field."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC.
            json_ensure_ascii=False,
        )


def request_id_of(value: str | None) -> str:
    """The client's X-Request-ID if it is well formed, else a new one."""
    if value and REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


access_logger = logging.getLogger("feedsite.requests")


class RequestContextMiddleware:
    """Binds a request id (and method and path) to the request's log records, returns it
    as X-Request-ID, and logs one line per request with its status and duration.

    The user id is bound by the authentication class once the token is checked.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        started = time.perf_counter()
        with log_context(request_id=request_id):
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            access_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response
