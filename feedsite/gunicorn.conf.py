"""gunicorn settings; every value can be overridden from the environment."""

import os
from pathlib import Path

from prometheus_client import multiprocess

# Address and port the API listens on. Defaults: 127.0.0.1 and 8000.
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Worker processes; one per core suits this CPU-bound API. Default: 2.
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
# Threads per worker that run requests in Django, covering time spent waiting on PostgreSQL
# and Redis (feedsite.admission). Default: 4.
django_threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Further threads per worker: they answer cached first pages, which need no Django, and hold
# requests waiting up to API_REQUEST_QUEUE_MS for a Django thread. Default: 28.
queue_threads = int(os.environ.get("GUNICORN_QUEUE_THREADS", "28"))
threads = django_threads + queue_threads
# Seconds a silent worker lives before it is restarted. Default: 30.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Import the app once in the master before forking (less memory, faster restarts). Default: off.
preload_app = os.environ.get("GUNICORN_PRELOAD", "").lower() in {"1", "true", "yes", "on"}
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
wsgi_app = "feedsite.wsgi:application"

# Metrics of all workers meet here; it must exist before the app is (pre)loaded.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server):
    # Samples left by an earlier run would be added to this run's sums.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def child_exit(server, worker):
    # Keep a dead worker's counters in the sum, but drop its live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
