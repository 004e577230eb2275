"""PostgreSQL backends: Django's own (and django_prometheus's instrumented one) with a
health check that costs no round trip (``core.db.health``)."""
