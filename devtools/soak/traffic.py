"""The soak's traffic: an open loop of the mix's requests, each started on a fixed
schedule whatever the server does, by a pool of threads on keep-alive connections
(``http.client``: a third of the CPU ``requests`` spends on one, 0.4 ms to 1.2 ms here).
Latency is counted from each request's scheduled start, so a stall is charged to every
request it delays.

The state the requests need (whom each user follows, the posts they may delete, the
cursor of the page they read last) is kept here and changed only by answered requests;
a pair being followed or unfollowed is not picked again until its answer is in, so every
request the generator sends is one the API should accept.
"""

import bisect
import http.client
import itertools
import json
import queue
import random
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

# Each kind's share of the requests (the reasons are in devtools/soak/__init__.py).
MIX = {
    "read": 0.60,
    "read_next": 0.15,
    "post": 0.20,
    "follow": 0.025,
    "unfollow": 0.015,
    "delete": 0.01,
}
# The kinds whose requests each publish an event for the fan-out workers.
EVENT_KINDS = ("post", "follow", "unfollow", "delete")
KIND_NAMES = {
    "post": "POST /posts",
    "read": "GET /feeds/{id}",
    "read_next": "GET /feeds/{id}?cursor=",
    "follow": "POST /follow",
    "unfollow": "DELETE /follow/{id}",
    "delete": "DELETE /posts/{id}",
}
# The statuses each kind succeeds with; anything else is unexpected.
EXPECTED = {
    "post": {201},
    "read": {200},
    "read_next": {200},
    "follow": {201},
    "unfollow": {204},
    "delete": {204},
}
# Threads sending requests: enough for the mix's rates at a few hundred milliseconds each.
THREADS = 64
# A request started more than this after its scheduled time is late.
LATE_SECONDS = 0.1
TIMEOUT = 10.0
# Connection errors that mean the server had closed an idle keep-alive connection before
# this request reached it: it was not processed, so it is sent again on a new one.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass
class Request:
    method: str
    path: str
    token: str
    body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Called with the status and the decoded body once answered, under the state lock.
    settle: Callable[[int | str, dict | None], None] | None = None


@dataclass
class KindStats:
    """What one kind of request did: statuses (an exception's name when none came back),
    requests started late, dropped when the run ended, skipped for want of anything to
    do, and each latency in seconds from its scheduled start."""

    statuses: Counter = field(default_factory=Counter)
    late: int = 0
    dropped: int = 0
    skipped: int = 0
    latencies: array = field(default_factory=lambda: array("d"))

    @property
    def done(self) -> int:
        return sum(self.statuses.values())


def status_class(kind: str, status: int | str) -> str:
    """``ok``, ``5xx``, ``4xx`` (not expected), ``other`` or ``error`` (no response)."""
    if isinstance(status, str):
        return "error"
    if status in EXPECTED[kind]:
        return "ok"
    if status >= 500:
        return "5xx"
    return "4xx" if status >= 400 else "other"


def _decoded(data: bytes) -> dict | None:
    """A JSON object body; None for anything else (an empty body, an HTML error page)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class Traffic:
    """The open loop: ``rates`` requests per second of each kind for ``seconds``, as the
    ``users`` (id to token) whose follows are ``follows``; new follows go to
    ``candidates``, picked in proportion to ``weights`` (their follower counts)."""

    def __init__(
        self,
        *,
        port: int,
        rates: dict[str, float],
        users: dict[int, str],
        follows: dict[int, set[int]],
        candidates: list[int],
        weights: list[float],
        seed: int,
    ) -> None:
        self.port = port
        self.rates = {kind: rate for kind, rate in rates.items() if rate > 0}
        self.tokens = users
        self.users = sorted(users)
        self.follows = follows
        self.candidates = candidates
        self.cumulative = list(itertools.accumulate(weights))
        self.chance = random.Random(seed)
        self.lock = threading.Lock()
        self.stats_lock = threading.Lock()
        self.stats = {kind: KindStats() for kind in self.rates}
        self.pending: set[tuple[int, int]] = set()
        self.posts: list[tuple[int, int]] = []
        self.cursors: dict[int, str] = {}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.abandon = False
        self.threads: list[threading.Thread] = []
        self.started = 0.0
        self.thread_cpu = 0.0

    # --- running ---------------------------------------------------------------------

    def start(self, seconds: float) -> None:
        self.started = time.monotonic()
        scheduler = threading.Thread(
            target=self._schedule, args=(seconds,), name="soak-schedule", daemon=True
        )
        self.threads = [scheduler] + [
            threading.Thread(target=self._work, name=f"soak-{n}", daemon=True) for n in range(THREADS)
        ]
        for thread in self.threads:
            thread.start()

    def wait(self) -> None:
        """Until the schedule has run its course."""
        self.threads[0].join()

    def stop(self, *, grace: float = 30.0) -> None:
        """End the schedule, let the threads send what is queued for up to ``grace``
        seconds, then drop the rest (counted) and join them."""
        self.stopping.set()
        self.threads[0].join()
        deadline = time.monotonic() + grace
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.abandon = True
        for _ in self.threads[1:]:
            self.queue.put(None)
        for thread in self.threads[1:]:
            thread.join(TIMEOUT + 5)

    def _schedule(self, seconds: float) -> None:
        """Queue each kind's requests at its rate, evenly spaced, each with its scheduled
        start, until ``seconds`` have passed."""
        queued = dict.fromkeys(self.rates, 0)
        while not self.stopping.is_set():
            elapsed = time.monotonic() - self.started
            if elapsed >= seconds:
                break
            for kind, rate in self.rates.items():
                due = int(elapsed * rate) + 1
                while queued[kind] < due:
                    self.queue.put((kind, self.started + queued[kind] / rate))
                    queued[kind] += 1
            time.sleep(0.002)
        # Each thread adds its CPU when it ends; the scheduler's own counts too.
        self._cpu_add(time.thread_time())

    def _work(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while (item := self.queue.get()) is not None:
            kind, scheduled = item
            if self.abandon:
                self._record(kind, dropped=True)
                continue
            late = time.monotonic() - scheduled > LATE_SECONDS
            with self.lock:
                request = getattr(self, f"_{kind}")()
            if request is None:
                self._record(kind, skipped=True)
                continue
            connection, status, body = self._send(connection, request)
            latency = time.monotonic() - scheduled
            if request.settle is not None:
                with self.lock:
                    request.settle(status, body)
            self._record(kind, status=status, latency=latency, late=late)
        if connection is not None:
            connection.close()
        self._cpu_add(time.thread_time())

    def _send(
        self, connection: http.client.HTTPConnection | None, request: Request
    ) -> tuple[http.client.HTTPConnection | None, int | str, dict | None]:
        headers = {"Authorization": f"Token {request.token}", **request.headers}
        payload = None
        if request.body is not None:
            payload = json.dumps(request.body)
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            reused = connection is not None
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            try:
                connection.request(request.method, request.path, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except STALE as exc:
                connection.close()
                connection = None
                if reused and attempt == 1:
                    continue
                return None, type(exc).__name__, None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                return None, type(exc).__name__, None
            return connection, response.status, _decoded(data) if request.settle is not None else None
        raise AssertionError("unreachable")

    def _record(
        self,
        kind: str,
        *,
        status: int | str | None = None,
        latency: float = 0.0,
        late: bool = False,
        dropped: bool = False,
        skipped: bool = False,
    ) -> None:
        with self.stats_lock:
            stats = self.stats[kind]
            if dropped:
                stats.dropped += 1
            elif skipped:
                stats.skipped += 1
            else:
                stats.statuses[status] += 1
                stats.late += late
                stats.latencies.append(latency)

    def _cpu_add(self, seconds: float) -> None:
        with self.stats_lock:
            self.thread_cpu += seconds

    def totals(self) -> dict[str, Counter]:
        """Responses so far of each kind, by status class (``status_class``)."""
        counted = {}
        with self.stats_lock:
            for kind, stats in self.stats.items():
                counted[kind] = Counter()
                for status, n in stats.statuses.items():
                    counted[kind][status_class(kind, status)] += n
        return counted

    # --- the requests of each kind, built under the state lock ------------------------

    def _user(self) -> int:
        return self.chance.choice(self.users)

    def _post(self) -> Request:
        user = self._user()

        def settle(status: int | str, body: dict | None) -> None:
            if status == 201 and body and "id" in body:
                self.posts.append((body["id"], user))

        return Request(
            "POST",
            "/posts",
            self.tokens[user],
            body={"content": f"soak post by {user} at {time.time():.3f}"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
            settle=settle,
        )

    def _read(self) -> Request:
        user = self._user()
        return Request("GET", f"/feeds/{user}", self.tokens[user], settle=self._cursor_keeper(user))

    def _read_next(self) -> Request | None:
        """The next page of the reader who read a page last (a reader scrolls on), by the
        cursor that page gave."""
        if not self.cursors:
            return None
        user, cursor = self.cursors.popitem()
        path = f"/feeds/{user}?cursor={quote(cursor)}"
        return Request("GET", path, self.tokens[user], settle=self._cursor_keeper(user))

    def _cursor_keeper(self, user: int) -> Callable[[int | str, dict | None], None]:
        def settle(status: int | str, body: dict | None) -> None:
            if status == 200 and body and body.get("next_cursor"):
                self.cursors[user] = body["next_cursor"]

        return settle

    def _follow(self) -> Request | None:
        """A follow of an account not followed yet, picked by popularity."""
        user = self._user()
        followed = self.follows.setdefault(user, set())
        for _ in range(10):
            pick = self.candidates[bisect.bisect(self.cumulative, self.chance.random() * self.cumulative[-1])]
            if pick != user and pick not in followed and (user, pick) not in self.pending:
                break
        else:
            return None
        self.pending.add((user, pick))

        def settle(status: int | str, body: dict | None) -> None:
            self.pending.discard((user, pick))
            if status in (200, 201):
                followed.add(pick)

        return Request("POST", "/follow", self.tokens[user], body={"followee_id": pick}, settle=settle)

    def _unfollow(self) -> Request | None:
        user = self._user()
        followed = self.follows.get(user)
        if not followed:
            return None
        pick = self.chance.choice(tuple(followed))
        if (user, pick) in self.pending:
            return None
        self.pending.add((user, pick))
        followed.discard(pick)

        def settle(status: int | str, body: dict | None) -> None:
            self.pending.discard((user, pick))
            if status != 204:
                followed.add(pick)

        return Request("DELETE", f"/follow/{pick}", self.tokens[user], settle=settle)

    def _delete(self) -> Request | None:
        """The deletion of one of the posts the traffic made, picked at random."""
        if not self.posts:
            return None
        index = self.chance.randrange(len(self.posts))
        self.posts[index], self.posts[-1] = self.posts[-1], self.posts[index]
        post_id, author = self.posts.pop()
        return Request("DELETE", f"/posts/{post_id}", self.tokens[author])
