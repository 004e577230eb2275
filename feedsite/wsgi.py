"""WSGI entry point, used by gunicorn (see feedsite/gunicorn.conf.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings.base")

django_application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (the settings are loaded above)

from core.db.timeouts import db_timeouts_use  # noqa: E402
from feeds.fastpath import CachedFeedPages  # noqa: E402
from feedsite.admission import DjangoThreads  # noqa: E402

# A request waits for the database a few seconds at most (a 503 after that).
db_timeouts_use(
    lock_timeout_ms=settings.DB_LOCK_TIMEOUT_MS, statement_timeout_ms=settings.DB_STATEMENT_TIMEOUT_MS
)
# Cached first feed pages are answered in front of Django; everything else goes to one of
# Django's own threads, or is answered 503 when none takes it up in time.
application = CachedFeedPages(
    DjangoThreads(
        django_application, threads=settings.API_DJANGO_THREADS, wait=settings.API_REQUEST_QUEUE_MS / 1000
    )
)
