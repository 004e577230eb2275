"""Liveness and readiness probes, and the metrics export: what anonymous callers may see.

They answer anyone, so they say only names and states; why a dependency is down goes to
the log, and the metrics go only to the networks in METRICS_ALLOWED_NETWORKS.
"""

import functools
import ipaddress
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView
from django_redis import get_redis_connection

from core import metrics
from core.throttling import client_ip
from eventbus.producer import producer_get

logger = logging.getLogger(__name__)

READY_TIMEOUT = 2.0


# csrf_exempt: an unsafe method gets 405 from require_GET, not the CSRF check's 403 page.
@csrf_exempt
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


# The database check runs on a thread of its own, so that a database that accepts
# connections but does not answer in time is reported down after READY_TIMEOUT instead of
# holding the probe.
_database_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz-database")


def _select_one() -> None:
    # A connection of its own each time (a probe every few seconds can afford the connect):
    # none is left open on the thread between checks.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


_database_check: Future | None = None
_database_check_lock = threading.Lock()


def _database() -> None:
    """``SELECT 1`` on the checker's thread, waited for READY_TIMEOUT at most; while a
    check that timed out still hangs, the database is down without asking again."""
    global _database_check
    with _database_check_lock:
        if _database_check is not None and not _database_check.done():
            raise TimeoutError("the previous check is still waiting for an answer")
        _database_check = check = _database_checker.submit(_select_one)
    try:
        check.result(timeout=READY_TIMEOUT)
    except FutureTimeout:
        raise TimeoutError(f"no answer within {READY_TIMEOUT}s") from None


def _redis() -> None:
    get_redis_connection("default").ping()


def _kafka() -> None:
    # The process's own producer: no new client, and it reuses its broker connections.
    producer_get().list_topics(timeout=READY_TIMEOUT)


CHECKS = {"database": _database, "redis": _redis, "kafka": _kafka}


@csrf_exempt
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            # Exception text names hosts, ports and users: for the log, not for anyone asking.
            logger.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = "down"
        metrics.DEPENDENCY_UP.labels(name).set(1 if results[name] == "ok" else 0)
    down = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ready" if not down else "unavailable", "down": down, "checks": results}
    return JsonResponse(body, status=503 if down else 200)


@functools.lru_cache(maxsize=8)
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network) for network in allowed)


def metrics_allowed(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(client_ip(request).strip())
    except ValueError:
        return False
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in network for network in _networks(tuple(settings.METRICS_ALLOWED_NETWORKS)))


@csrf_exempt
@require_GET
def metrics_export(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for METRICS_ALLOWED_NETWORKS only; others get the 404 of a URL
    that does not exist."""
    if not metrics_allowed(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return ExportToDjangoView(request)
