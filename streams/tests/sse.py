"""A Server-Sent Events client for the tests: one HTTP/1.1 connection to the stream
process, read with deadlines (every read is bounded; nothing sleeps)."""

import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from devtools.processes import ROOT, free_port, stop_process
from tests.helpers import subprocess_env, wait_for


@dataclass
class Event:
    event: str
    id: str | None
    data: object


class Ended(Exception):
    """The server ended the stream."""


class Sse:
    def __init__(self, base: str, path: str, headers: dict[str, str] | None = None) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.connection.request("GET", path, headers=headers or {})
        self.sock = self.connection.sock
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers
        self.last_id: str | None = None
        self.comments: list[str] = []

    def body(self) -> object:
        return json.loads(self.response.read())

    def next(self, timeout: float = 10.0) -> Event:
        """The next event (comments are kept in ``comments``); raises Ended at the stream's
        end and TimeoutError after ``timeout`` seconds without one."""
        deadline = time.monotonic() + timeout
        fields: dict[str, str] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event in time")
            self.sock.settimeout(remaining)
            try:
                line = self.response.readline()
            except TimeoutError:
                raise TimeoutError("no event in time") from None
            if not line:
                raise Ended()
            line = line.decode().rstrip("\r\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "event" in fields or "data" in fields:
                if "id" in fields:
                    self.last_id = fields["id"]
                return Event(
                    fields.get("event", "message"), fields.get("id"), json.loads(fields.get("data", "null"))
                )
            fields = {}

    def ended_within(self, seconds: float) -> bool:
        """Whether the server ends the stream within ``seconds`` (events before are dropped)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.next(timeout=max(deadline - time.monotonic(), 0.01))
            except Ended:
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.connection.close()


def stream_process(log, **extra: str) -> tuple[str, subprocess.Popen]:
    """The stream process under uvicorn, as make run-stream starts it, on a free port, with
    the suite's database and Redis and ``extra`` settings; ready when /healthz answers."""
    port = free_port()
    env = subprocess_env({}, **({"STREAM_POLL_SECONDS": "1"} | extra))
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "feedsite.asgi:application",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the stream process exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=30, what="the stream process")
    except BaseException:
        stop_process(process)
        raise
    return base, process
