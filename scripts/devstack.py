"""Run the whole feed system locally in the foreground: ``make run``.

Creates and migrates the database, starts the dev broker when nothing answers at
KAFKA_BOOTSTRAP_SERVERS, creates the topics, then runs gunicorn, the fan-out worker and
the outbox relay until Ctrl-C or SIGTERM, which stops them all.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings.base")
# Production settings, served over plain HTTP on this machine: no redirect to HTTPS and
# no HTTPS-only cookies, unless the environment says otherwise.
for _name, _value in {
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "DJANGO_SECURE_COOKIES": "false",
    "DJANGO_SECURE_HSTS_SECONDS": "0",
    # Readable log lines on a terminal; production writes JSON.
    "LOG_FORMAT": "console",
}.items():
    os.environ.setdefault(_name, _value)


def log(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def manage(*args: str, env: dict | None = None) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, env=env)


def database_ensure() -> None:
    """Create the configured database if it does not exist, then migrate it."""
    import django
    import psycopg
    from psycopg import sql

    django.setup()
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone()
        if not exists:
            log(f"creating database {db['NAME']}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    manage("migrate", "--no-input", "-v", "0")
    manage("collectstatic", "--no-input", "-v", "0")


def broker_ensure() -> subprocess.Popen | None:
    """Start the dev broker unless one already answers; return it if we started it."""
    from devtools.broker import broker_answers, broker_start

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    if broker_answers(bootstrap):
        log(f"using the Kafka broker at {bootstrap}")
        return None
    RUN_DIR.mkdir(exist_ok=True)
    log(f"starting the dev broker (Tansu, in-memory) at {bootstrap}; log: .run/broker.log")
    return broker_start(bootstrap, log=RUN_DIR / "broker.log")


def run() -> int:
    database_ensure()
    broker = broker_ensure()
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    try:
        manage("create_topics")
        # gunicorn empties this directory at start (feedsite/gunicorn.conf.py).
        api_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(RUN_DIR / "prometheus")}
        children["api"] = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite" / "gunicorn.conf.py")],
            env=api_env,
            cwd=ROOT,
        )
        for name, command in (("fanout", "run_fanout"), ("relay", "run_outbox_relay")):
            children[name] = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), command], cwd=ROOT)
        port = os.environ.get("PORT", "8000")
        log(f"serving the API on http://{os.environ.get('HOST', '127.0.0.1')}:{port}; Ctrl-C stops")
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    log(f"{name} exited with status {child.returncode}; stopping")
                    stopping = True
                    status = 1
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in children.items():
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 30s; killing it")
                child.kill()
                child.wait()
        if broker is not None:
            from devtools.broker import broker_stop

            broker_stop(broker)
        log("stopped")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["run", "migrate"], nargs="?", default="run")
    action = parser.parse_args().action
    if action == "migrate":
        database_ensure()
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main())
