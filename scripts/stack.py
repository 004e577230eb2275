"""The processes of the whole stack, for scripts that drive it (chaos, bench)."""

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def database_recreate(env: dict[str, str]) -> None:
    """Drop and create the database Django is configured with, then migrate it.

    Django must be set up (from ``env``) before this is called.
    """
    import psycopg
    from django.conf import settings
    from psycopg import sql

    db = settings.DATABASES["default"]
    with psycopg.connect(
        dbname="postgres", host=db["HOST"], port=db["PORT"], user=db["USER"], autocommit=True
    ) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db["NAME"])))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db["NAME"])))
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], env=env, check=True)


class Stack:
    """The API, the fan-out worker and the outbox relay of one run, each restartable."""

    def __init__(self, env: dict[str, str], run_dir: Path) -> None:
        self.env = env
        self.run_dir = run_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *, command: list[str] | None = None, **extra_env: str) -> subprocess.Popen:
        commands = {
            "api": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")],
            "fanout": [sys.executable, str(ROOT / "manage.py"), "run_fanout"],
            "relay": [sys.executable, str(ROOT / "manage.py"), "run_outbox_relay"],
        }
        env = {**self.env, **extra_env}
        if name == "api":
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(self.run_dir / "prometheus")}
        with open(self.run_dir / f"{name}.log", "ab") as stream:
            self.processes[name] = subprocess.Popen(
                command or commands[name], env=env, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT
            )
        return self.processes[name]

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
