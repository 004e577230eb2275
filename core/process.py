"""What the long-running commands (run_fanout, run_outbox_relay) share."""

import logging
import signal
from collections.abc import Callable
from typing import Any

from django.conf import settings
from prometheus_client import start_http_server

logger = logging.getLogger(__name__)


def metrics_serve(port: int) -> None:
    """Serve this process's Prometheus metrics on ``port`` (0: not at all)."""
    if port:
        start_http_server(port, addr=settings.METRICS_HOST)


def stop_on_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM or SIGINT; the loop then finishes its batch and returns."""

    def handler(signum: int, _frame: Any) -> None:
        logger.info("%s received: stopping after the current batch", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
