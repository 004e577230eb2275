"""How many requests of one API process run in Django at once, and how long others wait.

gunicorn's thread pool holds more threads than Django may use (gunicorn.conf.py): a
request that goes to Django first takes one of ``slots``, and one that cannot have a slot
within ``wait`` seconds is answered 503 with Retry-After at once. So while requests wait
on a stalled database (up to its lock and statement timeouts), the other threads are still
free for the cached first pages, answered in front of Django (``feeds.fastpath``), and no
request waits for a slot longer than ``wait``.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterable

from core import metrics
from core.logcontext import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

RETRY_AFTER = "1"
_JSON = json.dumps({"detail": "Service busy; try again shortly."}).encode()
_HTML = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Busy</title>"
    b"<p>Busy for a moment; try again shortly.</p></html>"
)


class RequestSlots:
    """WSGI middleware: at most ``slots`` requests in ``application`` at once."""

    def __init__(self, application: WSGIApp, *, slots: int, wait: float) -> None:
        self.application = application
        self.wait = wait
        self._slots = threading.BoundedSemaphore(slots)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not self._slots.acquire(timeout=self.wait):
            return self._busy(environ, start_response)
        try:
            # Django's response is complete here; a streamed body (static files) is sent
            # after the slot is given back, needing no database.
            return self.application(environ, start_response)
        finally:
            self._slots.release()

    def _busy(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        metrics.API_REQUESTS_SHED.inc()
        logger.warning("no request slot within %.1fs; %s answered 503", self.wait, environ.get("PATH_INFO"))
        html = "text/html" in environ.get("HTTP_ACCEPT", "")
        body, content_type = (_HTML, "text/html; charset=utf-8") if html else (_JSON, "application/json")
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Retry-After", RETRY_AFTER),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("X-Frame-Options", "DENY"),
                (REQUEST_ID_HEADER, request_id_of(environ.get("HTTP_X_REQUEST_ID"))),
            ],
        )
        return [body]
