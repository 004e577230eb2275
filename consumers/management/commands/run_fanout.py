import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from prometheus_client import start_http_server

from consumers.loop import FanoutWorker, consumer_build

logger = logging.getLogger("consumers.run_fanout")


class Command(BaseCommand):
    help = "Consume feed events and write them into followers' feeds (fan-out on write)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--group", default=settings.FANOUT_GROUP_ID, help="consumer group id")
        parser.add_argument("--batch-size", type=int, default=settings.FANOUT_BATCH_SIZE)
        parser.add_argument("--batch-ms", type=int, default=settings.FANOUT_BATCH_MS)
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.FANOUT_METRICS_PORT,
            help="port for Prometheus metrics, 0 to disable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["metrics_port"]:
            start_http_server(options["metrics_port"], addr=settings.METRICS_HOST)
        worker = FanoutWorker(
            consumer=consumer_build(
                group_id=options["group"], session_timeout_ms=settings.FANOUT_SESSION_TIMEOUT_MS
            ),
            group_id=options["group"],
            batch_size=options["batch_size"],
            batch_timeout=options["batch_ms"] / 1000,
        )

        def request_stop(signum: int, _frame: Any) -> None:
            logger.info("%s received: finishing the current batch", signal.Signals(signum).name)
            worker.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("fan-out worker started: group=%s", options["group"])
        worker.run()
        logger.info("fan-out worker stopped")
