"""The per-request database health check: free on a healthy connection, and a connection
the server dropped is still replaced before the request uses it."""

import select

import psycopg
import pytest
from django.db import close_old_connections, connection

from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def last_statement_of(pid: int) -> str:
    """What the server last ran for that backend, seen from a connection of our own."""
    with psycopg.connect(**connection.get_connection_params()) as other:
        return other.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def socket_readable(conn: psycopg.Connection) -> bool:
    return bool(select.select([conn.fileno()], [], [], 0)[0])


def test_a_healthy_reused_connection_is_checked_without_a_query():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'before the request' AS marker")
        pid = connection.connection.info.backend_pid
    close_old_connections()  # What Django does as a request starts.

    connection.close_if_health_check_failed()

    assert connection.health_check_enabled
    assert connection.health_check_done
    assert connection.connection.info.backend_pid == pid
    assert last_statement_of(pid) == "SELECT 'before the request' AS marker"


def test_a_connection_the_server_dropped_is_replaced_before_the_next_request_uses_it(make_user, client_for):
    client = client_for(make_user())
    assert client.post("/posts", {"content": "first"}, format="json").status_code == 201
    dropped = connection.connection
    with psycopg.connect(**connection.get_connection_params()) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [dropped.info.backend_pid])
    wait_for(lambda: socket_readable(dropped), timeout=10, what="the server to close the connection")
    # What Django's request handler does as a request starts (its test client does not).
    close_old_connections()

    response = client.post("/posts", {"content": "second"}, format="json")

    assert response.status_code == 201
    assert connection.connection is not dropped


def test_the_instrumented_backend_has_the_same_health_check():
    from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as Instrumented

    from core.db.health import QuietHealthCheck
    from core.db.postgresql_metrics.base import DatabaseWrapper

    assert issubclass(DatabaseWrapper, QuietHealthCheck)
    assert issubclass(DatabaseWrapper, Instrumented)
