"""The processes of the whole stack, for ``make run`` and for the scripts that drive it
(chaos, bench): the database, the dev broker, the API, the fan-out worker and the outbox
relay.

Django is set up by the caller, from the environment it wants; this module imports it
only inside functions, so that a script can set that environment first.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

from devtools.processes import ROOT, stop_processes

COMMANDS = {
    "api": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite" / "gunicorn.conf.py")],
    "fanout": [sys.executable, str(ROOT / "manage.py"), "run_fanout"],
    "relay": [sys.executable, str(ROOT / "manage.py"), "run_outbox_relay"],
    "stream": [sys.executable, str(ROOT / "manage.py"), "run_stream"],
}
# Seconds a process has between SIGTERM and SIGKILL when the stack stops.
STOP_TIMEOUT = 30.0


def manage(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, env=env, cwd=ROOT)


def _server_params() -> tuple[str, dict[str, str | None]]:
    """The configured database's name and how to reach its server."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    return db["NAME"], {key.lower(): db.get(key) or None for key in ("HOST", "PORT", "USER", "PASSWORD")}


def database_create(*, drop: bool = False, log: Callable[[str], None] = print) -> None:
    """Create the database Django is configured with if it is missing (after dropping it
    first, with ``drop``). Django must be set up."""
    import psycopg
    from psycopg import sql

    name, params = _server_params()
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        if drop:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        elif conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        else:
            log(f"creating database {name}")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_recreate(env: dict[str, str]) -> None:
    """Drop and create the database Django is configured with, then migrate it.

    Django must be set up (from ``env``) before this is called.
    """
    database_create(drop=True)
    manage("migrate", "-v", "0", env=env)


def broker_ensure(bootstrap: str, *, log_file: Path, log: Callable[[str], None]) -> subprocess.Popen | None:
    """Start the dev broker unless one already answers; return it if we started it."""
    from devtools.broker import broker_answers, broker_start

    if broker_answers(bootstrap):
        log(f"using the Kafka broker at {bootstrap}")
        return None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting the dev broker (Tansu, in-memory) at {bootstrap}; log: {log_file.relative_to(ROOT)}")
    return broker_start(bootstrap, log=log_file)


class Stack:
    """The API, the fan-out worker and the outbox relay of one run, each restartable.

    Each process writes to ``<run_dir>/<name>.log``, or to this terminal with
    ``log_files=False``.
    """

    def __init__(self, env: dict[str, str], run_dir: Path, *, log_files: bool = True) -> None:
        self.env = env
        self.run_dir = run_dir
        self.log_files = log_files
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *, command: list[str] | None = None, **extra_env: str) -> subprocess.Popen:
        env = {**self.env, **extra_env}
        if name == "api":
            env = {**env, **api_metrics_env(self.run_dir)}
        command = command or COMMANDS[name]
        if not self.log_files:
            self.processes[name] = subprocess.Popen(command, env=env, cwd=ROOT)
            return self.processes[name]
        with open(self.run_dir / f"{name}.log", "ab") as stream:
            self.processes[name] = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT
            )
        return self.processes[name]

    def kill(self, name: str) -> None:
        """SIGKILL: the process dies where it stands."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self, name: str) -> None:
        stop_processes({name: self.processes.pop(name)}, timeout=STOP_TIMEOUT)

    def stop_all(self, *, log: Callable[[str], None] | None = None) -> None:
        stop_processes(self.processes, timeout=STOP_TIMEOUT, log=log)

    def exited(self) -> str | None:
        """The name of a process that has exited, if any."""
        return next((name for name, process in self.processes.items() if process.poll() is not None), None)


def api_metrics_env(run_dir: Path) -> dict[str, str]:
    """The API's metrics directory, shared by its gunicorn workers so that /metrics sums
    them all; gunicorn empties it at start (feedsite/gunicorn.conf.py). The API's alone: a
    worker or relay writing there would be counted in the API's sums."""
    return {"PROMETHEUS_MULTIPROC_DIR": str(run_dir / "prometheus")}


def wait_http(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


# --- make run ------------------------------------------------------------------------------

RUN_DIR = ROOT / ".run"
# The local settings file make creates (core/envfile.py reads it).
ENV_FILE = ROOT / ".env"
# Where make kept the secret key before .env existed.
LEGACY_SECRET_KEY = RUN_DIR / "secret-key"
# Production settings, served over plain HTTP on this machine: no redirect to HTTPS and
# no HTTPS-only cookies, unless the environment or .env says otherwise. .env starts with
# these lines (but the settings module, which manage.py picks before reading it).
DEVSTACK_ENV = {
    "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "DJANGO_SECURE_COOKIES": "false",
    "DJANGO_SECURE_HSTS_SECONDS": "0",
    # Readable log lines on a terminal; production writes JSON.
    "LOG_FORMAT": "console",
}


def devstack_log(message: str) -> None:
    print(f"[devstack] {message}", flush=True)


def devstack_env_file(*, path: Path = ENV_FILE, legacy_key: Path = LEGACY_SECRET_KEY) -> None:
    """Create the local settings file unless it exists: a random DJANGO_SECRET_KEY, or the
    one an earlier checkout kept in ``legacy_key`` so that its sessions stay valid, and
    make run's plain-HTTP values. Readable by its owner only: it holds the key."""
    if path.exists():
        return
    kept = legacy_key.read_text().strip() if legacy_key.is_file() else ""
    lines = [
        "# Local settings, read by manage.py and every make target where the environment sets",
        "# nothing (docs/CONFIGURATION.md). Created by make; git-ignored; add your own lines.",
        f"DJANGO_SECRET_KEY={kept or secrets.token_urlsafe(50)}",
        *(f"{name}={value}" for name, value in DEVSTACK_ENV.items() if name != "DJANGO_SETTINGS_MODULE"),
    ]
    # O_EXCL: two makes at once cannot both write it.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as stream:
        stream.write("\n".join(lines) + "\n")
    source = f"the key kept in {legacy_key.name}" if kept else "a random secret key"
    devstack_log(f"created {path.name} with {source} and the local plain-HTTP settings")


def devstack_environ_load() -> None:
    """make run's environment in this process: the local settings file, then make run's
    defaults for whatever neither it nor the environment sets."""
    from core.envfile import env_file_read

    env_file_read()
    for name, value in DEVSTACK_ENV.items():
        os.environ.setdefault(name, value)


# Worker N of make run (from 1) serves its metrics on FANOUT_METRICS_PORT + 10 * (N - 1):
# 9101, 9111, 9121, ... by default, clear of the relay's 9102.
FANOUT_METRICS_PORT_STEP = 10


def devstack_fanout_workers(environ: Mapping[str, str]) -> list[tuple[str, dict[str, str]]]:
    """The fan-out workers ``make run`` starts, FANOUT_WORKERS of them (default 1), each
    with its name (``fanout``, ``fanout-2``, ...) and the metrics port it serves on."""
    raw = environ.get("FANOUT_WORKERS", "1")
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise SystemExit(f"FANOUT_WORKERS must be a whole number of at least 1, not {raw!r}")
    base = int(environ.get("FANOUT_METRICS_PORT", "9101"))
    ports = [base + FANOUT_METRICS_PORT_STEP * n for n in range(count)]
    return [
        ("fanout" if n == 0 else f"fanout-{n + 1}", {"FANOUT_METRICS_PORT": str(port)})
        for n, port in enumerate(ports)
    ]


def devstack_process_env(name: str, environ: Mapping[str, str], *, run_dir: Path = RUN_DIR) -> dict[str, str]:
    """The environment of one process of ``make run`` (``api``, ``fanout``, ``relay`` or ``stream``),
    from ``environ``, which wins over make run's defaults."""
    env = {**DEVSTACK_ENV, **environ}
    if name == "api":
        env.update(api_metrics_env(run_dir))
    # The web timeline, served by the API, opens its stream on the stream process's port at
    # the page's own host, with its session cookie: the stream process lets those pages in.
    api_port, stream_port = env.get("PORT", "8000"), env.get("STREAM_PORT", "8001")
    env.setdefault("STREAM_BROWSER_PORT", stream_port)
    env.setdefault("STREAM_ALLOWED_ORIGINS", f"http://localhost:{api_port},http://127.0.0.1:{api_port}")
    return env


def devstack_exec(name: str) -> NoReturn:
    """``make run-api``, ``run-fanout`` (``run-processor``), ``run-relay``: one process of
    ``make run``, with the environment it has there, in place of this one, so that Ctrl-C
    and SIGTERM reach it directly."""
    devstack_environ_load()
    command = COMMANDS[name]
    os.chdir(ROOT)
    os.execve(command[0], command, devstack_process_env(name, os.environ))


def devstack_database() -> None:
    """``make migrate``: create the configured database if it does not exist, migrate it
    and collect the admin's static files."""
    import django

    devstack_environ_load()
    django.setup()
    database_create(log=devstack_log)
    manage("migrate", "--no-input", "-v", "0")
    manage("collectstatic", "--no-input", "-v", "0")


def devstack_run() -> int:
    """``make run``: the database, the dev broker when none answers, the topics, then the
    API, FANOUT_WORKERS fan-out workers and the relay in the foreground until Ctrl-C or
    SIGTERM, or until one of them exits (status 1)."""
    devstack_database()
    workers = devstack_fanout_workers(os.environ)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    broker = broker_ensure(bootstrap, log_file=RUN_DIR / "broker.log", log=devstack_log)
    stack = Stack(dict(os.environ), RUN_DIR, log_files=False)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    status = 0
    try:
        manage("create_topics")
        stack.start("api")
        for name, extra_env in workers:
            stack.start(name, command=COMMANDS["fanout"], **extra_env)
        stack.start("relay")
        stack.start("stream")
        ports = ", ".join(env["FANOUT_METRICS_PORT"] for _, env in workers)
        devstack_log(f"{len(workers)} fan-out worker(s), metrics on port(s) {ports}")
        port = os.environ.get("PORT", "8000")
        host = os.environ.get("HOST", "127.0.0.1")
        stream_port = os.environ.get("STREAM_PORT", "8001")
        devstack_log(f"streams on http://{host}:{stream_port}/feeds/{{id}}/stream")
        devstack_log(f"serving the API on http://{host}:{port}; Ctrl-C stops")
        while not stopping:
            if (name := stack.exited()) is not None:
                devstack_log(f"{name} exited with status {stack.processes[name].returncode}; stopping")
                stopping, status = True, 1
            time.sleep(0.2)
    finally:
        stack.stop_all(log=devstack_log)
        if broker is not None:
            from devtools.broker import broker_stop

            broker_stop(broker)
        devstack_log("stopped")
    return status
