"""ASGI entry point of the stream process (``GET /feeds/{id}/stream``), served by uvicorn:
make run-stream, make run, the ``stream`` service of docker-compose."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings.base")
django.setup()

from django.conf import settings  # noqa: E402  (the settings are loaded above)

from core.db.timeouts import db_timeouts_use  # noqa: E402
from streams.app import StreamApp  # noqa: E402

# A stream's queries wait for the database as briefly as the API's requests do.
db_timeouts_use(
    lock_timeout_ms=settings.DB_LOCK_TIMEOUT_MS, statement_timeout_ms=settings.DB_STATEMENT_TIMEOUT_MS
)
application = StreamApp()
