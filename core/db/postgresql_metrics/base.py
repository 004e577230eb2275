"""django_prometheus's instrumented PostgreSQL backend (DATABASE_QUERY_METRICS) with a
health check that costs no round trip (core.db.health)."""

from django_prometheus.db.backends.postgresql import base

from core.db.health import QuietHealthCheck


class DatabaseWrapper(QuietHealthCheck, base.DatabaseWrapper):
    pass
