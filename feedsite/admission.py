"""Which threads of one API process run Django, and how long a request waits for one.

gunicorn's thread pool holds more threads than Django may use (gunicorn.conf.py). Requests
that go to Django run on ``threads`` threads of their own, handed over by the pool thread
that read them; one that no Django thread takes up within ``wait`` seconds is answered 503
with Retry-After at once. So while Django's threads wait on a stalled database (up to its
lock and statement timeouts), the pool's other threads still answer the cached first
pages in front of Django (``feeds.fastpath``), and no request waits for Django longer than
``wait``. Only Django's threads open database connections, so each process holds at most
``threads`` of them, as it did when gunicorn had ``threads`` threads.

The probes and the metrics (``EXEMPT``) need no database and no Django thread: they run on the pool
thread, so that a saturated process still answers its liveness probe and its scrapes.
"""

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from django.http.response import HttpResponseBase

from core import metrics
from core.logcontext import REQUEST_ID_HEADER, request_id_of

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER = "1"
_JSON = json.dumps({"detail": "Service busy; try again shortly."}).encode()
_HTML = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Busy</title>"
    b"<p>Busy for a moment; try again shortly.</p></html>"
)


class DjangoThreads:
    """WSGI middleware: ``application`` runs on ``threads`` threads of its own."""

    def __init__(self, application: WSGIApp, *, threads: int, wait: float) -> None:
        self.application = application
        self.wait = wait
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="django")

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in EXEMPT:
            return self.application(environ, start_response)
        started = threading.Event()

        def run() -> Iterable[bytes]:
            started.set()
            response = self.application(environ, start_response)
            if isinstance(response, HttpResponseBase) and not response.streaming:
                # Closed here, so that Django's request_finished (close_old_connections)
                # runs on the thread whose connection it is.
                body = response.content
                response.close()
                return [body]
            # A streamed body (static files) is sent by the pool thread, needing no database.
            return response

        future = self._threads.submit(run)
        # cancel() fails once a thread has taken the request up: then it is waited for, and
        # Django's own timeouts bound it.
        if not started.wait(self.wait) and future.cancel():
            return self._busy(environ, start_response)
        return future.result()

    def _busy(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        metrics.API_REQUESTS_SHED.inc()
        logger.warning("no Django thread within %.1fs; %s answered 503", self.wait, environ.get("PATH_INFO"))
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
