"""``python manage.py run_stream``: the stream process (``GET /feeds/{id}/stream``) under
uvicorn, on STREAM_PORT; make run-stream and make run start it, docker-compose's
``stream`` service too."""

import os
import resource

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand


def open_files_raise() -> int:
    """Raise this process's limit of open files to the most it may have, and return it:
    each open stream holds a socket, and many systems start processes at 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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
        open_files_raise()
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
