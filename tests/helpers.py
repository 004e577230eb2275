"""Helpers for the test suite and failure drills: polling with a deadline, reading topics,
driving the worker, child processes of the suite, cutting one process off a service."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from django.conf import settings

from devtools.processes import ROOT, free_port, metric_sum, restart_postgres, restart_redis, stop_process
from eventbus.topics import kafka_config
from feedsite.settings.test import TEST_ENV_DEFAULTS

__all__ = [
    "ROOT",
    "TcpProxy",
    "drain",
    "fail_post_created_on",
    "free_port",
    "metric_sum",
    "offsets_committed",
    "restart_postgres",
    "restart_redis",
    "smoke_run",
    "start_manage",
    "stop_process",
    "subprocess_env",
    "topic_read",
    "wait_for",
]


def wait_for(condition: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = ""):
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def topic_read(topic: str, *, count: int, timeout: float = 30.0) -> list[Message]:
    """Read the first ``count`` messages of ``topic`` (all partitions), failing after ``timeout``."""
    consumer = Consumer(
        kafka_config(
            **{
                "group.id": f"test-reader-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(count - len(messages), 0.5) if m.error() is None]
    finally:
        consumer.close()
    assert len(messages) >= count, f"read {len(messages)} of {count} messages from {topic}"
    return messages


def drain(worker, count: int, timeout: float = 30.0) -> None:
    """Run a FanoutWorker's batches until ``count`` messages were consumed."""
    seen, deadline = 0, time.monotonic() + timeout
    while seen < count:
        assert time.monotonic() < deadline, f"consumed {seen} of {count}"
        seen += worker.run_once()


def subprocess_env(kafka_env: dict[str, str], **extra: str) -> dict[str, str]:
    """Environment for a child process that must see the suite's database, Redis and topics."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    env = {
        **os.environ,
        **kafka_env,
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.test",
        "DATABASE_URL": f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def smoke_run(script: str, *, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """``scripts/<script> --smoke``, a development tool's tiny run, as a newcomer's shell runs
    it (none of the suite's settings in its environment) with ``env`` added; its output
    captured. Fails if the run changed BENCHMARKS.md: a smoke run leaves the committed
    results alone."""
    environ = {
        k: v for k, v in os.environ.items() if k not in TEST_ENV_DEFAULTS and k != "DJANGO_SETTINGS_MODULE"
    }
    benchmarks = ROOT / "BENCHMARKS.md"
    before = benchmarks.read_bytes() if benchmarks.exists() else None
    result = subprocess.run(
        [sys.executable, f"scripts/{script}", "--smoke"],
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    after = benchmarks.read_bytes() if benchmarks.exists() else None
    assert after == before, f"scripts/{script} --smoke changed BENCHMARKS.md"
    return result


def start_manage(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as stream:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=env,
            cwd=ROOT,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


class TcpProxy:
    """A TCP proxy to ``target`` on a free local port, that a test can close and reopen to
    make one client lose its server while the others keep theirs.

    Closed, it refuses new connections and cuts the ones it carries, as a server that went
    away would. Stalled, it keeps every connection open, accepts new ones, and passes nothing on,
    as a server that hangs would. Use it as a context manager; it listens from the start.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._stalled = False

    def __enter__(self) -> "TcpProxy":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        # accept() wakes up now and then, so that close() can end the thread.
        listener.settimeout(0.1)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self._stalled = False
        if listener is not None:
            listener.close()
        for sock in sockets:
            _socket_cut(sock)

    def stall(self) -> None:
        """From now on pass nothing on, on the connections carried as on new ones."""
        with self._lock:
            self._stalled = True

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._stalled:
                    # Held open, never answered; cut by close().
                    self._sockets.add(client)
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _socket_cut(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _socket_cut(client)
                    _socket_cut(server)
                    return
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not self._stalled:
                    sink.sendall(data)
        with self._lock:
            self._sockets -= {source, sink}
        _socket_cut(source)
        _socket_cut(sink)


def _socket_cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def offsets_committed(consumer: Consumer, *, topic: str, partitions: int) -> int:
    """The sum of the offsets the consumer's group committed on ``topic`` (none: 0)."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))


def fail_post_created_on(monkeypatch: pytest.MonkeyPatch, post_id: int) -> None:
    """Make the post.created handler raise ValueError on any run holding ``post_id``: a
    handler bug, which no real input produces."""
    # Here, not at the top: scripts import this module before Django is set up.
    from consumers import handlers
    from eventbus.events import POST_CREATED

    real = handlers.HANDLERS[POST_CREATED]

    def failing(events):
        if any(e.payload.post_id == post_id for e in events):
            raise ValueError("cannot handle this one")
        return real(events)

    monkeypatch.setitem(handlers.HANDLERS, POST_CREATED, failing)


def worker_assigned(*, batch_timeout: float = 0.2, from_start: bool = True):
    """A FanoutWorker assigned every partition of the events topic (no group join to wait
    for): from the beginning, or with ``from_start=False`` from the group's committed
    offsets, as a worker started anew would resume."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID

    from consumers.loop import FanoutWorker, consumer_build
    from feeds.effects import FeedEffects

    consumer = consumer_build(group_id=settings.FANOUT_GROUP_ID, session_timeout_ms=6000)
    offset = OFFSET_BEGINNING if from_start else OFFSET_INVALID
    consumer.assign(
        [
            TopicPartition(settings.FEED_EVENTS_TOPIC, p, offset)
            for p in range(settings.FEED_EVENTS_PARTITIONS)
        ]
    )
    return FanoutWorker(
        consumer=consumer,
        group_id=settings.FANOUT_GROUP_ID,
        batch_size=100,
        batch_timeout=batch_timeout,
        effects=FeedEffects(),
    )
