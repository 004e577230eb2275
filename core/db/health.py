"""A persistent connection's health check without a query.

With ``CONN_HEALTH_CHECKS`` Django checks a reused connection once per request, before its
first query, by running ``SELECT 1``: a round trip, and a statement for the server to
parse and run, on every request that touches the database. Between requests, though, a
healthy connection is idle and the server sends nothing on it. A server that goes away
(restart, ``pg_terminate_backend``, a crash) closes the socket, after a FATAL error
message when it can: either way the socket becomes readable. So an idle connection whose
socket has nothing to read is usable, and only one that has something to read (or is not
idle) gets Django's ``SELECT 1``, which tells for sure and closes it if it fails.

A peer that vanishes without closing the socket (a cable pulled) is not seen this way;
``SELECT 1`` would not see it either before the TCP timeout.
"""

import select

from psycopg import Connection
from psycopg.pq import TransactionStatus


def connection_seems_usable(connection: Connection) -> bool:
    """Whether an open connection is idle with nothing from the server waiting on it."""
    if connection.closed or connection.broken:
        return False
    if connection.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class QuietHealthCheck:
    """Mixin for a PostgreSQL DatabaseWrapper: the per-request health check asks the
    socket first, and runs ``SELECT 1`` only when the socket says something happened."""

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and connection_seems_usable(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
