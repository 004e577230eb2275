"""``python manage.py run_stream``: the stream process (``GET /feeds/{id}/stream``) under
uvicorn, on STREAM_PORT; make run-stream and make run start it, docker-compose's
``stream`` service too."""

import os

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve GET /feeds/{id}/stream (Server-Sent Events) under uvicorn on STREAM_PORT."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--host",
            default=os.environ.get("HOST", "127.0.0.1"),
            help="Address to listen on (default: HOST or 127.0.0.1).",
        )
        parser.add_argument(
            "--port", type=int, default=settings.STREAM_PORT, help="Port (default: STREAM_PORT)."
        )

    def handle(self, *args, host: str, port: int, **options) -> None:
        uvicorn.run(
            "feedsite.asgi:application",
            host=host,
            port=port,
            lifespan="on",
            access_log=False,
            # Open streams are ended after this long when the process is asked to stop;
            # their clients reconnect, to another process or to this one restarted.
            timeout_graceful_shutdown=5,
            # One process per core: run more of them behind the proxy rather than workers.
            workers=1,
        )
