"""Liveness and readiness probes."""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection

from consumers.producer import producer_get
from feedsite import metrics

READY_TIMEOUT = 2.0


# csrf_exempt: an unsafe method gets 405 from require_GET, not the CSRF check's 403 page.
@csrf_exempt
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


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
            results[name] = f"down: {type(exc).__name__}: {exc}"[:300]
        metrics.DEPENDENCY_UP.labels(name).set(1 if results[name] == "ok" else 0)
    down = [name for name, result in results.items() if result != "ok"]
    body = {"status": "ready" if not down else "unavailable", "down": down, "checks": results}
    return JsonResponse(body, status=503 if down else 200)
