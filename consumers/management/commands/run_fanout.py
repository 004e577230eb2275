import logging
import os
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from consumers.breaker import BreakerOpen, DeadLetterBreaker
from consumers.loop import FanoutWorker, consumer_build
from core.db.timeouts import db_timeouts_use
from core.process import metrics_serve, stop_on_signals
from feeds.effects import FeedEffects

logger = logging.getLogger("consumers.run_fanout")

EXIT_BREAKER_OPEN = 3


class Command(BaseCommand):
    help = "Consume feed events and write them into followers' feeds (fan-out on write)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--group", default=settings.FANOUT_GROUP_ID, help="consumer group id")
        parser.add_argument("--batch-size", type=int, default=settings.FANOUT_BATCH_SIZE)
        parser.add_argument(
            "--batch-ms",
            type=int,
            default=settings.FANOUT_BATCH_MS,
            help="how long a batch keeps taking messages while more keep arriving (it never waits to fill)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.FANOUT_METRICS_PORT,
            help="port for Prometheus metrics, 0 to disable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        db_timeouts_use(
            lock_timeout_ms=settings.WORKER_DB_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.WORKER_DB_STATEMENT_TIMEOUT_MS,
        )
        metrics_serve(options["metrics_port"])
        worker = FanoutWorker(
            consumer=consumer_build(
                group_id=options["group"], session_timeout_ms=settings.FANOUT_SESSION_TIMEOUT_MS
            ),
            group_id=options["group"],
            batch_size=options["batch_size"],
            batch_timeout=options["batch_ms"] / 1000,
            effects=FeedEffects(
                trim_interval=settings.FEED_TRIM_INTERVAL,
                vacuum_interval=settings.FEED_VACUUM_INTERVAL_SECONDS,
            ),
            max_retries=settings.FANOUT_MAX_RETRIES,
            stall_seconds=settings.FANOUT_STALL_SECONDS,
            breaker=DeadLetterBreaker(
                max_ratio=settings.FANOUT_DLQ_MAX_RATIO, window=settings.FANOUT_DLQ_WINDOW
            ),
        )

        def request_stop() -> None:
            worker.stop()
            signal.alarm(settings.FANOUT_SHUTDOWN_TIMEOUT)

        def give_up(_signum: int, _frame: Any) -> None:
            logger.error("no clean stop within %ss; exiting", settings.FANOUT_SHUTDOWN_TIMEOUT)
            os._exit(1)

        stop_on_signals(request_stop)
        signal.signal(signal.SIGALRM, give_up)
        logger.info("fan-out worker started: group=%s", options["group"])
        try:
            worker.run()
        except BreakerOpen as exc:
            logger.critical("circuit breaker open, stopping: %s", exc)
            sys.exit(EXIT_BREAKER_OPEN)
        logger.info("fan-out worker stopped")
