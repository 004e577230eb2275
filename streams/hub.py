"""One stream process's open streams, and what feeds them.

A ``Hub`` holds every open stream of the process, by user. Three tasks keep it going:

- the *listener*: the process's one Redis subscription (``stream_channel``); a message
  says a post committed (or was deleted) and wakes the pump. After Redis comes back it
  subscribes again and wakes the pump, which reads what was missed from PostgreSQL;
- the *pump*: reads the window of transactions that ended since the last read
  (``streams.selectors``), for the users with open streams, and queues each post to their
  streams. It also runs every STREAM_POLL_SECONDS without being woken, so delivery never
  depends on Redis, only its speed does;
- the *warden*: every STREAM_AUTH_CHECK_SECONDS, looks up all open streams' credentials in
  one statement that returns only those that no longer hold, and ends the streams whose
  token or session was deleted, or whose user was deactivated or changed password.

A stream that opens with a position is first sent what it missed (``open``), under the
lock the pump reads under, so nothing falls between the replay and the live posts.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from core import metrics
from core.cache_keys import stream_channel
from streams import selectors
from streams.credentials import Credential
from streams.positions import Position, position_encode

logger = logging.getLogger(__name__)

# Queued to a stream to end it.
CLOSE = object()


class Refused(Exception):
    """The stream cannot open: ``status`` (429, 503), a message, and seconds to wait."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass(eq=False)
class Stream:
    """One open stream: its reader, client address, credential, position and queue of
    frames (bytes) to send, ending with CLOSE."""

    user_id: int
    address: str
    credential: Credential
    position: Position
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(settings.STREAM_QUEUE_SIZE))
    ended: bool = False

    def put(self, frame: object) -> None:
        if self.ended:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            # A client that does not read: it is ended, and resumes from its position.
            logger.info("stream of user %s ended: %s frames unread", self.user_id, self.queue.qsize())
            metrics.STREAMS_ENDED.labels("unread").inc()
            self.end()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            while True:
                try:
                    self.queue.put_nowait(CLOSE)
                    return
                except asyncio.QueueFull:
                    self.queue.get_nowait()


def frame(event: str, position: Position, data: dict) -> bytes:
    """One Server-Sent Event: ``event:``, ``id:`` (the position after it) and JSON ``data:``."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\nid: {position_encode(position)}\ndata: {body}\n\n".encode()


async def _db(function, /, **kwargs):
    """Run a database function in the thread Django's async adapters use for the ORM."""

    def call():
        close_old_connections()
        return function(**kwargs)

    return await sync_to_async(call, thread_sensitive=True)()


class Hub:
    def __init__(self) -> None:
        self.streams: dict[int, set[Stream]] = defaultdict(set)
        self.by_address: dict[str, int] = defaultdict(int)
        # Every post added below ``low`` has been read and queued; None until started.
        self.low: int | None = None
        # The highest transaction announced over Redis: the pump reads again soon until
        # ``low`` passes it (an older transaction still running holds the window back).
        self.announced = 0
        self.committed_at: dict[int, float] = {}
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        # The hub's own tasks, referenced here: a task nothing refers to may be collected
        # while it waits, and its work would stop in silence.
        self.tasks: set[asyncio.Task] = set()
        self.subscribed = False

    # --- life ------------------------------------------------------------------------

    async def start(self) -> None:
        horizon = await _db(selectors.stream_horizon)
        self.low = horizon.low
        for work in (self._listen, self._pump, self._warden):
            task = asyncio.create_task(work(), name=f"stream-{work.__name__.strip('_')}")
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("stream task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        for stream in [s for streams in self.streams.values() for s in streams]:
            stream.end()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # --- streams ---------------------------------------------------------------------

    def count(self) -> int:
        return sum(len(streams) for streams in self.streams.values())

    async def open(
        self, *, credential: Credential, user_id: int, address: str, after: Position | None
    ) -> Stream:
        """Register a stream of ``user_id``'s feed, queued first with what it missed after
        ``after`` (or with a ``reset`` event when that is more than STREAM_REPLAY_LIMIT
        posts or cannot be replayed). Raises Refused beyond the limits or without the
        database."""
        if len(self.streams[user_id]) >= settings.STREAM_MAX_PER_USER:
            metrics.STREAMS_REFUSED.labels("user_limit").inc()
            raise Refused(429, "Too many open streams for this user.", settings.STREAM_RETRY_AFTER_SECONDS)
        limit = settings.STREAM_MAX_PER_ADDRESS
        if limit and self.by_address[address] >= limit:
            metrics.STREAMS_REFUSED.labels("address_limit").inc()
            raise Refused(
                429, "Too many open streams from this address.", settings.STREAM_RETRY_AFTER_SECONDS
            )
        async with self.lock:
            low = self.low
            start = Position(low, 0)
            frames: list[bytes] = []
            if after is not None:
                replay = settings.STREAM_REPLAY_LIMIT
                try:
                    horizon = await _db(selectors.stream_horizon)
                    rows = (
                        await _db(
                            selectors.stream_replay, user_id=user_id, after=after, below=low, limit=replay + 1
                        )
                        if after.added < horizon.high
                        else None
                    )
                    posts = await _db(selectors.stream_posts_json, post_ids=[pid for _, pid in rows or []])
                except DatabaseError:
                    metrics.STREAMS_REFUSED.labels("database").inc()
                    raise Refused(503, "The stream is unavailable; try again shortly.", 5) from None
                if rows is None or len(rows) > replay:
                    # Too far behind (or a position this database never issued): reload.
                    reason = "too_old" if rows is not None else "unknown_position"
                    frames.append(frame("reset", start, {"reason": reason}))
                    metrics.STREAM_EVENTS_SENT.labels("reset").inc()
                else:
                    # The live posts the pump queues are added at or above ``low``, and
                    # every row here below it: they follow on.
                    start = Position(*rows[-1]) if rows else after
                    for added, post_id in rows:
                        if post_id in posts:
                            frames.append(frame("post", Position(added, post_id), posts[post_id]))
                    metrics.STREAM_EVENTS_SENT.labels("post").inc(len(frames))
            stream = Stream(user_id=user_id, address=address, credential=credential, position=start)
            for item in frames:
                stream.put(item)
            self.streams[user_id].add(stream)
            self.by_address[address] += 1
            metrics.STREAMS_OPEN.inc()
            return stream

    def close(self, stream: Stream) -> None:
        streams = self.streams.get(stream.user_id)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        if not streams:
            del self.streams[stream.user_id]
        self.by_address[stream.address] -= 1
        if self.by_address[stream.address] <= 0:
            del self.by_address[stream.address]
        stream.end()
        metrics.STREAMS_OPEN.dec()

    # --- the listener ----------------------------------------------------------------

    def announce(self, message: bytes | str) -> None:
        """A message from the channel: ``{"post": id, "added": xid, "at": unix time}`` after a
        post committed, ``{"deleted": id, "author": id}`` after a delete."""
        try:
            body = json.loads(message)
        except ValueError:
            logger.warning("stream channel: unreadable message %r", message[:100])
            return
        if not isinstance(body, dict):
            return
        if isinstance(body.get("added"), int):
            self.announced = max(self.announced, body["added"])
            timed = isinstance(body.get("post"), int) and isinstance(body.get("at"), int | float)
            if timed and len(self.committed_at) < 10_000:
                self.committed_at[body["post"]] = float(body["at"])
            self.wake.set()
        elif isinstance(body.get("deleted"), int) and isinstance(body.get("author"), int):
            task = asyncio.create_task(self._deleted(body["deleted"], body["author"]))
            self.tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _listen(self) -> None:
        import redis.asyncio as redis
        from redis.exceptions import RedisError

        wait = 0.1
        while True:
            client = redis.Redis.from_url(
                settings.STREAM_REDIS_URL,
                socket_connect_timeout=2,
                socket_keepalive=True,
                health_check_interval=5,
            )
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(stream_channel())
                self.subscribed, wait = True, 0.1
                metrics.STREAM_SUBSCRIBED.set(1)
                # Posts announced while this process was not listening: read them now.
                self.wake.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is not None and message.get("type") == "message":
                        self.announce(message["data"])
            except (RedisError, OSError) as error:
                if self.subscribed:
                    logger.warning(
                        "stream channel lost (%s); the pump polls every %ss meanwhile",
                        error,
                        settings.STREAM_POLL_SECONDS,
                    )
                self.subscribed = False
                metrics.STREAM_SUBSCRIBED.set(0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)

    # --- the pump --------------------------------------------------------------------

    async def _pump(self) -> None:
        wait = 0.0
        while True:
            timeout = wait or settings.STREAM_POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            try:
                async with self.lock:
                    await self._advance()
            except DatabaseError as error:
                logger.warning("stream pump: database unavailable (%s)", error)
                wait = min(max(wait * 2, 0.5), settings.STREAM_POLL_SECONDS)
                continue
            # An announced post not read yet: an older transaction holds the window back.
            wait = min(max(wait * 2, 0.01), 0.5) if self.announced >= self.low else 0.0

    async def _advance(self) -> None:
        horizon = await _db(selectors.stream_horizon)
        if self.announced >= horizon.high:
            # No transaction of this database: an announcement from another one sharing
            # the channel. Forgotten, so that the pump does not keep reading for it.
            self.announced = 0
        if horizon.low <= self.low:
            return
        users = list(self.streams)
        rows = await _db(selectors.stream_window, low=self.low, below=horizon.low, user_ids=users)
        post_ids = sorted({post_id for _, post_id, _ in rows})
        posts = await _db(selectors.stream_posts_json, post_ids=post_ids) if rows else {}
        # Only once the window is read whole: a database error above reads it again.
        self.low = horizon.low
        if len(self.committed_at) > 1000:
            # Announced posts no open stream was sent: forgotten after ten minutes.
            since = time.time() - 600
            self.committed_at = {post: at for post, at in self.committed_at.items() if at > since}
        if not rows:
            return
        now = time.time()
        frames: dict[int, bytes] = {}
        for added, post_id, user_id in rows:
            data = posts.get(post_id)
            if data is None:
                continue
            position = Position(added, post_id)
            for stream in self.streams.get(user_id, ()):
                if position > stream.position:
                    if post_id not in frames:
                        frames[post_id] = frame("post", position, data)
                    stream.put(frames[post_id])
                    stream.position = position
                    metrics.STREAM_EVENTS_SENT.labels("post").inc()
        for post_id in frames:
            committed = self.committed_at.pop(post_id, None)
            if committed is not None:
                metrics.STREAM_DELIVERY_LAG.observe(max(now - committed, 0.0))

    async def _deleted(self, post_id: int, author_id: int) -> None:
        users = list(self.streams)
        if not users:
            return
        try:
            readers = await _db(selectors.stream_followers_among, author_id=author_id, user_ids=users)
        except DatabaseError as error:
            logger.warning("stream: delete of post %s not announced (%s)", post_id, error)
            return
        for user_id in readers:
            for stream in self.streams.get(user_id, ()):
                stream.put(frame("delete", stream.position, {"id": post_id}))
                metrics.STREAM_EVENTS_SENT.labels("delete").inc()

    # --- the warden ------------------------------------------------------------------

    async def _warden(self) -> None:
        while True:
            await asyncio.sleep(settings.STREAM_AUTH_CHECK_SECONDS)
            streams = [s for group in self.streams.values() for s in group]
            if not streams:
                continue
            try:
                revoked = await _db(
                    selectors.stream_credentials_revoked,
                    tokens={s.credential.token for s in streams if s.credential.token},
                    sessions={s.credential.session for s in streams if s.credential.session},
                    users={(s.credential.user_id, s.credential.password) for s in streams},
                )
            except DatabaseError as error:
                logger.warning("stream warden: database unavailable (%s)", error)
                continue
            if not (revoked.tokens or revoked.sessions or revoked.users):
                continue
            for stream in streams:
                credential = stream.credential
                if (
                    (credential.user_id, credential.password) in revoked.users
                    or credential.token in revoked.tokens
                    or credential.session in revoked.sessions
                ):
                    metrics.STREAMS_ENDED.labels("revoked").inc()
                    self.close(stream)
