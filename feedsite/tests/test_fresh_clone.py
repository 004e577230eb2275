"""The commands of the README and docs/OPERATING.md, as written, on a fresh copy of the
repository, as CI's fresh clone sees them: the files git would check out (tracked ones as
they are in the working tree, and new ones git does not ignore), without .env, .run,
staticfiles or caches.

The copy shares this virtualenv through a symlink (``.venv``) instead of installing
requirements-dev.txt again, which would need the network and minutes; CI's own fresh clone
installs it in ``make test``. Everything else is the newcomer's: no DJANGO_ variables in the
environment, only the addresses of this suite's PostgreSQL, Redis and broker, a database,
topics and ports of its own.

Not run here: ``make test`` and ``make test-fast`` (the suite itself), ``make bench``,
``make chaos`` (restarts PostgreSQL), ``make soak``, and the ``docker compose`` commands and ``make infra``
(no Docker here; feedsite/tests/test_compose.py checks the compose file).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from confluent_kafka import Producer
from django.conf import settings
from psycopg import sql

from feedsite.tests.test_docs import section
from tests.helpers import ROOT, free_port, metric_sum, wait_for

pytestmark = [pytest.mark.drill, pytest.mark.timeout(900)]

README = (ROOT / "README.md").read_text()
OPERATING = (ROOT / "docs" / "OPERATING.md").read_text()
# Seconds one command may take (make migrate on an empty database is the slowest).
COMMAND_TIMEOUT = 180


@dataclass
class Clone:
    path: Path
    env: dict[str, str]
    logs: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def run(self, command: str, **extra: str) -> str:
        """Run a shell command in the copy as a newcomer would type it; fail on a non-zero exit."""
        result = subprocess.run(
            command,
            shell=True,
            cwd=self.path,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def start(self, command: str, name: str, **extra: str) -> subprocess.Popen:
        """Start a long-running command in its own process group, as in its own terminal."""
        with open(self.logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                command,
                shell=True,
                cwd=self.path,
                env={**self.env, **extra},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def group_stop(process: subprocess.Popen, sig: signal.Signals, *, timeout: float = 45) -> None:
    """Send ``sig`` to the process group (Ctrl-C in a terminal sends SIGINT to all of it) and
    wait until every process of the group has exited; SIGKILL what is left after ``timeout``."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    pytest.fail(f"process group of {process.args!r} still running {timeout}s after {sig.name}")


def clone_files(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree: a commit would not hold it
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def database_drop(params: dict, name: str) -> None:
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Clone]:
    path = tmp_path_factory.mktemp("fresh-clone")
    clone_files(path)
    assert not (path / ".env").exists()
    assert not (path / ".run").exists()

    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    if not stamp.exists():
        pytest.fail(f"{stamp} is missing: make the virtualenv with make venv", pytrace=False)
    (path / ".venv").symlink_to(venv, target_is_directory=True)
    # The shared virtualenv is installed: make must not see requirements newer than its stamp.
    for requirements in path.glob("requirements*.txt"):
        os.utime(requirements, (stamp.stat().st_mtime - 60,) * 2)

    db = settings.DATABASES["default"]
    params = {"host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432, "user": db["USER"] or None}
    params["password"] = db["PASSWORD"] or None
    name = f"{db['NAME']}_clone"
    database_drop(params, name)
    auth = f"{db['USER']}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}@" if db["USER"] else ""
    suffix = f"clone-{os.getpid()}"
    home = tmp_path_factory.mktemp("home")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "DATABASE_URL": f"postgres://{auth}{params['host']}:{params['port']}/{name}",
        "REDIS_URL": settings.REDIS_URL,
        "CACHE_KEY_PREFIX": suffix,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FEED_EVENTS_TOPIC": f"{suffix}-feed-events",
        "FEED_EVENTS_DLQ_TOPIC": f"{suffix}-feed-events.dlq",
        "FANOUT_GROUP_ID": f"{suffix}-fanout",
        "PORT": str(free_port()),
        "FANOUT_METRICS_PORT": str(free_port()),
        "OUTBOX_RELAY_METRICS_PORT": str(free_port()),
        "STREAM_PORT": str(free_port()),
        "STREAM_METRICS_PORT": str(free_port()),
    }
    try:
        yield Clone(path=path, env=env, logs=tmp_path_factory.mktemp("clone-logs"))
    finally:
        database_drop(params, name)


def matches(expected: object, actual: object, bound: dict[str, object]) -> bool:
    """The README's sample output against a real answer: "..." is anything, "<NAME>" binds
    NAME to the value (a token used by later commands), anything else is equal."""
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and set(expected) == set(actual)
            and all(matches(value, actual[key], bound) for key, value in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a, bound) for e, a in zip(expected, actual, strict=True))
        )
    if expected == "...":
        return True
    if isinstance(expected, str) and (placeholder := re.fullmatch(r"<([A-Z]+)>", expected)):
        bound[placeholder.group(1)] = actual
        return isinstance(actual, str) and bool(actual)
    return expected == actual


def first_session() -> list[tuple[str, str | None]]:
    """The README's first session: each command with the sample answer printed under it."""
    block = README.split("A first session:\n\n```sh\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, str | None]] = []
    for line in block.splitlines():
        if line.startswith("# "):
            steps[-1] = (steps[-1][0], line[2:])
        else:
            steps.append((line, None))
    return steps


def shown_commands(markdown: str, heading: str) -> list[str]:
    """The commands of the first ``sh`` block under ``heading``, without their comments."""
    block = section(markdown, heading).split("```sh\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+# .*$", "", line) for line in block.splitlines() if line.strip()]


def test_make_alone_lists_every_target(clone):
    listed = clone.run("make")

    assert listed == clone.run("make help")
    for target in ("run", "run-api", "run-processor", "run-fanout", "run-relay", "infra", "test", "dlq"):
        assert re.search(rf"^  {target} +\S", listed, flags=re.MULTILINE), target
    assert not (clone.path / ".env").exists(), "make help needs no settings"


def test_a_newcomer_follows_the_readme_from_make_run_to_the_admin(clone):
    """make run, then the documented commands in order: the README's first session, and
    OPERATING.md's demo data, rebuilding feeds, dead letters, a superuser for the admin and
    manage.py shell."""
    stack = clone.start("make run", "run")
    try:
        wait_for(lambda: ready(stack, f"{clone.api}/readyz", clone.log("run")), timeout=150, what="make run")
        # The stream process runs beside the API, on STREAM_PORT.
        stream = f"http://127.0.0.1:{clone.env['STREAM_PORT']}"
        wait_for(lambda: ready(stack, f"{stream}/healthz", clone.log("run")), timeout=60, what="the stream")
        readme_walk(clone)
    finally:
        group_stop(stack, signal.SIGINT)
    assert "[devstack] stopped" in clone.log("run")


def test_make_run_starts_the_fan_out_workers_it_is_asked_for(clone):
    """OPERATING's scaling example: two workers in one group, each on its own metrics port,
    sharing the topic's partitions."""
    [command] = [line for line in shown_commands(OPERATING, "## Scaling") if "FANOUT_WORKERS" in line]
    assert command == "FANOUT_WORKERS=2 make run"
    stack = clone.start(command, "run-workers")
    first = int(clone.env["FANOUT_METRICS_PORT"])
    ports = (first, first + 10)

    def owned() -> list[float]:
        counts = []
        for port in ports:
            try:
                text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return []
            counts.append(metric_sum(text, "feed_fanout_assigned_partitions"))
        return counts

    try:
        wait_for(
            lambda: ready(stack, f"{clone.api}/readyz", clone.log("run-workers")), timeout=150, what=command
        )
        assert f"2 fan-out worker(s), metrics on port(s) {ports[0]}, {ports[1]}" in clone.log("run-workers")
        # Both in the group, every partition owned by one of them.
        spread = wait_for(
            lambda: (counts := owned()) and min(counts) >= 1 and sum(counts) == 6 and counts,
            timeout=60,
            what="the two workers to share the 6 partitions",
        )
        assert sorted(spread) == [3, 3]
    finally:
        group_stop(stack, signal.SIGINT)
    assert "[devstack] stopped" in clone.log("run-workers")


def ready(process: subprocess.Popen, url: str, log: str) -> bool:
    assert process.poll() is None, f"exited {process.returncode}:\n{log}"
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def readme_walk(clone: Clone) -> None:
    env_file = clone.path / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert re.search(r"^DJANGO_SECRET_KEY=\S{40,}$", env_file.read_text(), flags=re.MULTILINE)
    assert f"serving the API on http://127.0.0.1:{clone.env['PORT']}" in clone.log("run")

    # The first session, with H pointing at the port this API runs on.
    bound: dict[str, object] = {}
    session = first_session()
    assert [command.split()[0] for command, _ in session] == ["H=http://127.0.0.1:8000"] + ["curl"] * 5
    for command, sample in session[1:]:
        for name, value in bound.items():
            command = command.replace(f"<{name}>", str(value))

        def answered(command: str = command, sample: str | None = sample) -> bool:
            answer = json.loads(clone.run(command, H=clone.api))
            if sample is None:
                assert "detail" not in answer, f"{command}: {answer}"
                return True
            # A feed shows the post once the worker applied its event: poll for it.
            return matches(json.loads(sample), answer, bound)

        wait_for(answered, timeout=30, interval=0.3, what=f"`{command}` to answer like the README")

    demo = clone.run('make demo DEMO_ARGS="--users 60 --avg-follows 5 --posts 60 --celebrities 2"')
    assert "fan-out: every event applied" in demo
    feed_command = next(line for line in demo.splitlines() if line.startswith("curl") and "/feeds/" in line)
    assert f"{clone.api}/feeds/" in feed_command, "the printed commands use the API's real port"
    assert json.loads(clone.run(feed_command))["results"]

    rebuilds = shown_commands(OPERATING, "## Rebuilding feeds")
    assert {
        "make rebuild-feeds",
        'make rebuild-feeds REBUILD_ARGS="--user 42 43"',
        'make rebuild-feeds REBUILD_ARGS="--all --dry-run"',
        'make rebuild-feeds REBUILD_ARGS="--all --concurrency 4 --batch-size 500"',
    } <= set(rebuilds)
    for command in rebuilds:
        assert command.startswith("make rebuild-feeds"), command
        clone.run(command)

    # Five messages the worker cannot decode become dead letters 1 to 5, for the ids the
    # operating guide's examples use.
    producer = Producer({"bootstrap.servers": clone.env["KAFKA_BOOTSTRAP_SERVERS"]})
    for n in range(5):
        producer.produce(clone.env["FEED_EVENTS_TOPIC"], key=b"poison", value=f"not json {n}".encode())
    assert producer.flush(10) == 0
    wait_for(
        lambda: len(re.findall(r"^\d+\t", clone.run("make dlq"), flags=re.MULTILINE)) >= 5,
        timeout=60,
        interval=0.5,
        what="five pending dead letters",
    )
    # Every example shown is run, in the order shown; some must print what the guide says.
    examples = shown_commands(OPERATING, "## Dead letters")
    assert examples[0] == "make dlq"
    assert {
        'make dlq ARGS="show 3"',
        'make dlq ARGS="replay 3 4"',
        'make dlq ARGS="replay --all"',
        'make dlq ARGS="discard 5"',
        'make dlq ARGS="list --status replayed"',
    } <= set(examples)
    printed = {}
    for command in examples:
        assert command.startswith("make dlq"), command
        printed[command] = clone.run(command)
    assert "not json" in printed['make dlq ARGS="show 3"']
    assert re.search(r"^3\t", printed['make dlq ARGS="list --status replayed"'], flags=re.MULTILINE)

    [createsuperuser] = set(re.findall(r"`(\.venv/bin/python manage\.py createsuperuser)`", OPERATING))
    clone.run(
        f"{createsuperuser} --noinput",
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="an-admin-passphrase",
    )
    users = clone.run(
        '.venv/bin/python manage.py shell -v 0 -c "from django.contrib.auth.models import User; '
        'print(User.objects.filter(is_superuser=True).count(), User.objects.count())"'
    )
    assert users.split()[0] == "1"
    clone.run(".venv/bin/python manage.py check")

    # The admin over make run's plain HTTP: no redirect to https, cookies a browser sends back.
    browser = requests.Session()
    login = browser.get(f"{clone.api}/admin/login/", timeout=10, allow_redirects=False)
    assert login.status_code == 200
    assert not any(cookie.secure for cookie in browser.cookies)
    signed_in = browser.post(
        f"{clone.api}/admin/login/?next=/admin/",
        data={
            "username": "admin",
            "password": "an-admin-passphrase",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": f"{clone.api}/admin/login/"},
        timeout=10,
    )
    assert signed_in.url == f"{clone.api}/admin/", signed_in.text[:500]
    assert browser.get(f"{clone.api}/admin/consumers/deadletter/", timeout=10).status_code == 200

    clone.run("make lint")


def test_each_process_alone_runs_as_under_make_run(clone):
    """make run-api, make run-processor and make run-relay in three terminals make a
    working system with make run's settings; each stops on its signal."""
    clone.run("make migrate")
    clone.run("make topics")
    port = str(free_port())
    api = clone.start("make run-api", "run-api", PORT=port)
    processor = clone.start("make run-processor", "run-processor")
    relay = clone.start("make run-relay", "run-relay")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(api, f"{base}/healthz", clone.log("run-api")), timeout=60, what="make run-api")
        # Plain HTTP as under make run: the admin answers instead of redirecting to https.
        assert requests.get(f"{base}/admin/login/", timeout=10, allow_redirects=False).status_code == 200

        created = [
            requests.post(
                f"{base}/users", json={"username": name, "password": "a-long-passphrase"}, timeout=10
            )
            for name in ("carol", "dave")
        ]
        assert [r.status_code for r in created] == [201, 201], [r.text for r in created]
        carol, dave = (r.json() for r in created)
        follow = requests.post(
            f"{base}/follow",
            json={"followee_id": carol["id"]},
            headers={"Authorization": f"Token {dave['token']}"},
            timeout=10,
        )
        assert follow.status_code == 201, follow.text
        post = requests.post(
            f"{base}/posts",
            json={"content": "from three terminals"},
            headers={"Authorization": f"Token {carol['token']}"},
            timeout=10,
        )
        assert post.status_code == 201, post.text

        def in_feed() -> bool:
            assert processor.poll() is None, clone.log("run-processor")
            feed = requests.get(
                f"{base}/feeds/{dave['id']}", headers={"Authorization": f"Token {dave['token']}"}, timeout=10
            ).json()
            return any(entry["id"] == post.json()["id"] for entry in feed["results"])

        wait_for(in_feed, timeout=60, interval=0.3, what="the post in the follower's feed")

        def metrics_of(port: str) -> str:
            try:
                return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                return ""

        wait_for(
            lambda: "feed_outbox_backlog" in metrics_of(clone.env["OUTBOX_RELAY_METRICS_PORT"]), timeout=30
        )
        assert "feed_fanout_events_total" in metrics_of(clone.env["FANOUT_METRICS_PORT"])
        # The API's gunicorn workers write their metrics to make run's directory, and
        # /metrics reports their sum.
        assert requests.get(f"{base}/metrics", timeout=10).ok
        assert list((clone.path / ".run" / "prometheus").glob("*.db")), "no multiprocess metrics files"
    finally:
        for process in (api, processor, relay):
            group_stop(process, signal.SIGTERM)
    # make run's readable log lines (LOG_FORMAT=console from .env), not production's JSON.
    assert not re.search(r'^\{"level"', clone.log("run-processor"), flags=re.MULTILINE)
