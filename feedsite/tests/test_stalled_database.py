"""A stalled database: requests get quick 503s instead of hanging, nothing of them is stored,
cached reads keep answering, and a client that retries with its Idempotency-Key ends up with
each post stored once. /readyz reports a database that does not answer in time."""

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import requests
from django.db import connection, connections
from django.test import Client
from rest_framework.authtoken.models import Token

from core.db.timeouts import db_timeouts_use
from eventbus.models import OutboxMessage
from posts.models import Post
from tests.helpers import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api_timeouts() -> Iterator[None]:
    """This process's connections get short API timeouts, as the API process's do; the
    settings are put back afterwards."""
    saved = dict(connections.settings["default"].get("OPTIONS", {}))

    def use(*, lock_ms: int, statement_ms: int) -> None:
        db_timeouts_use(lock_timeout_ms=lock_ms, statement_timeout_ms=statement_ms)

    yield use
    connections.settings["default"]["OPTIONS"] = saved
    connection.close()


@contextlib.contextmanager
def table_locked(table: str = "posts_post") -> Iterator[None]:
    """``table`` locked ACCESS EXCLUSIVE by another session, as a migration, a VACUUM FULL
    or an operator's open transaction holds it."""
    params = {k: v for k, v in connection.get_connection_params().items() if k != "options"}
    with psycopg.connect(**params) as other:
        other.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        other.rollback()


def test_the_timeouts_are_options_of_each_new_connection(api_timeouts):
    api_timeouts(lock_ms=1500, statement_ms=4000)

    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        [(lock,)] = cursor.fetchall()
        cursor.execute("SHOW statement_timeout")
        [(statement,)] = cursor.fetchall()

    assert (lock, statement) == ("1500ms", "4s")


def test_no_statement_of_the_projects_connections_is_jit_compiled(api_timeouts):
    """PostgreSQL's JIT compiles a statement whose cost estimate passes jit_above_cost: the
    worker's trim on the partitioned feed table passed it and took 16 times as long (70 ms
    instead of 4.5 on the soak's table), every step. The statements here are short: no
    compile ever pays for itself. Even with every statement past the threshold, none is
    compiled, and the API's own startup options (its timeouts) keep it so."""
    api_timeouts(lock_ms=1500, statement_ms=4000)
    with connection.cursor() as cursor:
        cursor.execute("SET jit_above_cost = 0")
        cursor.execute("EXPLAIN (ANALYZE) SELECT count(*) FROM feeds_feedentry")
        plan = "\n".join(line for (line,) in cursor.fetchall())
        cursor.execute("SHOW lock_timeout")
        [(lock,)] = cursor.fetchall()

    assert "JIT:" not in plan, plan
    assert lock == "1500ms"


def test_a_post_waiting_past_the_lock_timeout_is_a_503_and_stores_nothing(
    api_timeouts, make_user, client_for
):
    client = client_for(make_user())
    api_timeouts(lock_ms=300, statement_ms=5000)

    with table_locked():
        started = time.monotonic()
        response = client.post("/posts", {"content": "hello"}, format="json")
        waited = time.monotonic() - started

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "try again" in response.json()["detail"]
    assert waited < 1.3
    assert not Post.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_statement_past_the_statement_timeout_is_a_503(api_timeouts, make_user, client_for):
    client = client_for(make_user())
    # No lock timeout: the statement timeout alone ends the wait.
    api_timeouts(lock_ms=0, statement_ms=300)

    with table_locked():
        response = client.post("/posts", {"content": "hello"}, format="json")

    assert response.status_code == 503
    assert not Post.objects.exists()


def test_the_web_post_box_under_a_lock_answers_its_503_page_and_stores_nothing(api_timeouts, make_user):
    user = make_user()
    browser = Client()
    browser.force_login(user)
    api_timeouts(lock_ms=300, statement_ms=5000)

    with table_locked():
        response = browser.post("/", {"content": "hello", "idempotency_key": uuid.uuid4().hex})

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert b"try again" in response.content
    assert not Post.objects.exists()


@pytest.mark.broker  # the broker answers, so that only the database's check takes time
def test_readyz_reports_a_database_that_accepts_connections_but_does_not_answer():
    db = connections.settings["default"]
    saved = db["HOST"], db["PORT"]
    with TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))) as proxy:
        db["HOST"], db["PORT"] = "127.0.0.1", str(proxy.port)
        connection.close()  # the next connection, of any thread, goes through the proxy
        try:
            assert Client().get("/readyz").json()["checks"]["database"] == "ok", "through the proxy"
            proxy.stall()

            started = time.monotonic()
            response = Client().get("/readyz")
            waited = time.monotonic() - started
        finally:
            db["HOST"], db["PORT"] = saved
            connection.close()

    assert response.status_code == 503
    assert response.json()["down"] == ["database"]
    assert waited < 3, "the probe waited for the database instead of its own timeout"


# --- The whole API under gunicorn ---------------------------------------------------------

LOCK_SECONDS = 20
LOCK_TIMEOUT = 2.0
POSTERS = 24
POSTS_EACH = 2


class Poster:
    """A client that posts ``POSTS_EACH`` posts, each with a key of its own, and retries a
    request that got a 503 or a 409 after Retry-After, and one that timed out at once, as
    mobile and web clients do. Half of them give up after less than the lock timeout."""

    def __init__(self, base: str, token: str, index: int, *, timeout: float) -> None:
        self.base, self.token, self.index, self.timeout = base, token, index, timeout
        self.answers: list[tuple[int | str, float, bool]] = []  # status, seconds, under the lock
        self.keys: list[str] = []
        self.created: list[dict] = []

    def send(self, session: requests.Session, n: int) -> requests.Response:
        return session.post(
            f"{self.base}/posts",
            json={"content": f"poster {self.index} post {n}"},
            headers={"Authorization": f"Token {self.token}", "Idempotency-Key": self.keys[n]},
            timeout=self.timeout,
        )

    def run(self, locked: threading.Event, deadline: float) -> None:
        with requests.Session() as session:
            for n in range(POSTS_EACH):
                self.keys.append(f'"{uuid.uuid4()}"')
                while time.monotonic() < deadline:
                    before, started = locked.is_set(), time.monotonic()
                    try:
                        response = self.send(session, n)
                    except requests.Timeout:
                        self.answers.append(("timeout", time.monotonic() - started, before))
                        continue
                    under_lock = before and locked.is_set()
                    self.answers.append((response.status_code, time.monotonic() - started, under_lock))
                    if response.status_code == 201:
                        self.created.append(response.json())
                        break
                    time.sleep(float(response.headers.get("Retry-After", "1")))  # the server's ask


@pytest.mark.drill
def test_under_a_table_lock_posts_get_quick_503s_cached_reads_answer_and_retries_store_each_post_once(
    gunicorn, make_user
):
    base, _ = gunicorn(
        GUNICORN_WORKERS="2", GUNICORN_THREADS="4", DB_LOCK_TIMEOUT_MS=str(int(LOCK_TIMEOUT * 1000))
    )
    reader = make_user()
    reader_token = Token.objects.create(user=reader).key
    posters = [make_user() for _ in range(POSTERS)]
    tokens = [Token.objects.create(user=user).key for user in posters]
    feed = f"{base}/feeds/{reader.pk}"
    auth = {"Authorization": f"Token {reader_token}"}
    # The reader's first page and token are cached before the lock (the first read fills them).
    assert requests.get(feed, headers=auth, timeout=5).status_code == 200

    locked, done = threading.Event(), threading.Event()
    reads: list[tuple[int | str, float]] = []

    def read() -> None:
        with requests.Session() as session:
            while not done.is_set():
                started = time.monotonic()
                try:
                    status = session.get(feed, headers=auth, timeout=10).status_code
                except requests.Timeout:
                    status = "timeout"
                if locked.is_set():
                    reads.append((status, time.monotonic() - started))
                done.wait(0.2)  # the reader's polling interval

    clients = [Poster(base, token, i, timeout=1.0 if i % 2 else 10.0) for i, token in enumerate(tokens)]
    deadline = time.monotonic() + LOCK_SECONDS + 60
    threads = [threading.Thread(target=c.run, args=(locked, deadline)) for c in clients]
    reader_thread = threading.Thread(target=read)
    with table_locked():
        locked.set()
        reader_thread.start()
        for thread in threads:
            thread.start()
        time.sleep(LOCK_SECONDS)  # how long the lock is held: the situation under test
        locked.clear()
    for thread in threads:
        thread.join(90)
    done.set()
    reader_thread.join(15)

    under_lock = [(status, seconds) for c in clients for status, seconds, locked_ in c.answers if locked_]
    answered = [(status, seconds) for status, seconds in under_lock if status != "timeout"]
    assert len(answered) >= POSTERS * 3, "the posters kept asking during the lock"
    assert {status for status, _ in answered} <= {503, 409}, "never a 500, a 201 or a hang"
    assert max(seconds for _, seconds in answered) < LOCK_TIMEOUT + 1
    assert len(reads) >= LOCK_SECONDS * 3
    assert {status for status, _ in reads} == {200}
    assert max(seconds for _, seconds in reads) < 1, "cached reads queued behind the database"
    for client, user in zip(clients, posters, strict=True):
        assert len(client.created) == POSTS_EACH, f"poster {client.index}: {client.answers}"
        assert Post.objects.filter(author=user).count() == POSTS_EACH, "each post stored exactly once"
    # A retry whose first answer was lost gets that answer again, and stores nothing.
    with requests.Session() as session:
        for client in clients:
            again = client.send(session, POSTS_EACH - 1)
            assert again.status_code == 201
            assert again.json() == client.created[-1]
            assert again.headers["Idempotent-Replayed"] == "true"
    assert Post.objects.filter(author__in=posters).count() == POSTERS * POSTS_EACH
