import datetime
import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.db.timeouts import db_timeouts_use
from core.process import metrics_serve, stop_on_signals
from eventbus.outbox import OutboxRelay, relay_loop

logger = logging.getLogger("eventbus.run_outbox_relay")


class Command(BaseCommand):
    help = "Publish the outbox's unsent rows to Kafka, oldest first, and prune sent ones."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=settings.OUTBOX_RELAY_BATCH_SIZE)
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.OUTBOX_RELAY_METRICS_PORT,
            help="port for Prometheus metrics, 0 to disable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        db_timeouts_use(
            lock_timeout_ms=settings.WORKER_DB_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.WORKER_DB_STATEMENT_TIMEOUT_MS,
        )
        metrics_serve(options["metrics_port"])
        relay = OutboxRelay(
            batch_size=options["batch_size"],
            retention=datetime.timedelta(seconds=settings.OUTBOX_RETENTION_SECONDS),
            flush_timeout=settings.KAFKA_PRODUCER_FLUSH_TIMEOUT,
        )
        stopping = False

        def request_stop() -> None:
            nonlocal stopping
            stopping = True

        stop_on_signals(request_stop)
        logger.info("outbox relay started")
        relay_loop(
            relay,
            idle=settings.OUTBOX_RELAY_INTERVAL_MS / 1000,
            backoff_max=settings.OUTBOX_RELAY_BACKOFF_MAX,
            stopping=lambda: stopping,
        )
        logger.info("outbox relay stopped")
