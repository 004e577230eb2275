"""Django's PostgreSQL backend with a health check that costs no round trip (core.db.health)."""

from django.db.backends.postgresql import base

from core.db.health import QuietHealthCheck


class DatabaseWrapper(QuietHealthCheck, base.DatabaseWrapper):
    pass
