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
# Posts the pump reads per statement: a window behind a long transaction is read in chunks.
WINDOW_POSTS = 1000


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
        """End the stream: the frames not sent yet are dropped, not only the oldest, so
        that the client's last position is that of the last post it received, and a
        revoked stream is sent nothing more."""
        if not self.ended:
            self.ended = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(CLOSE)


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
        # Open streams by the user whose feed they carry; counts of open streams by the
        # user who opened them (staff may read another's feed) and by client address.
        self.streams: dict[int, set[Stream]] = {}
        self.by_owner: dict[int, int] = {}
        self.by_address: dict[str, int] = {}
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

    async def open(
        self, *, credential: Credential, user_id: int, address: str, after: Position | None
    ) -> Stream:
        """Register a stream of ``user_id``'s feed, queued first with what it missed after
        ``after`` (or with a ``reset`` event when that is more than STREAM_REPLAY_LIMIT
        posts or cannot be replayed). Raises Refused beyond the limits (counted for the
        credential's user, and for the client address) or without the database."""
        owner = credential.user_id
        if self.by_owner.get(owner, 0) >= settings.STREAM_MAX_PER_USER:
            metrics.STREAMS_REFUSED.labels("user_limit").inc()
            raise Refused(429, "Too many open streams for this user.", settings.STREAM_RETRY_AFTER_SECONDS)
        limit = settings.STREAM_MAX_PER_ADDRESS
        if limit and self.by_address.get(address, 0) >= limit:
            metrics.STREAMS_REFUSED.labels("address_limit").inc()
            raise Refused(
                429, "Too many open streams from this address.", settings.STREAM_RETRY_AFTER_SECONDS
            )
        # Taken before the first wait, so that opens racing one another count each other.
        self._take(owner, address)
        try:
            stream = await self._open(credential=credential, user_id=user_id, address=address, after=after)
        except DatabaseError:
            self._release(owner, address)
            metrics.STREAMS_REFUSED.labels("database").inc()
            raise Refused(503, "The stream is unavailable; try again shortly.", 5) from None
        except BaseException:
            self._release(owner, address)
            raise
        metrics.STREAMS_OPEN.inc()
        return stream

    async def _open(
        self, *, credential: Credential, user_id: int, address: str, after: Position | None
    ) -> Stream:
        replay = settings.STREAM_REPLAY_LIMIT
        rows: list[tuple[int, int]] = []
        reset = None
        if after is not None:
            # Most of the replay outside the lock, while the pump goes on; the rest, from
            # where it ended to where the pump has got, under it.
            horizon = await _db(selectors.stream_horizon)
            if after > Position(horizon.high, 0):
                reset = "unknown_position"  # a position this database never issued
            else:
                rows = await _db(
                    selectors.stream_replay, user_id=user_id, after=after, below=self.low, limit=replay + 1
                )
                if len(rows) > replay:
                    reset = "too_old"
        async with self.lock:
            low = self.low
            if reset is None and after is not None:
                since = Position(*rows[-1]) if rows else after
                rows += await _db(
                    selectors.stream_replay,
                    user_id=user_id,
                    after=since,
                    below=low,
                    limit=replay + 1 - len(rows),
                )
                if len(rows) > replay:
                    reset = "too_old"
            frames: list[bytes] = []
            if reset is not None:
                start = Position(low, 0)
                frames.append(frame("reset", start, {"reason": reset}))
                metrics.STREAM_EVENTS_SENT.labels("reset").inc()
            elif after is None:
                start = Position(low, 0)
            else:
                # The live posts the pump queues are added at or above ``low``, and every
                # row here below it: they follow on.
                start = Position(*rows[-1]) if rows else after
                posts = await _db(selectors.stream_posts_json, post_ids=[post_id for _, post_id in rows])
                for added, post_id in rows:
                    if post_id in posts:
                        frames.append(frame("post", Position(added, post_id), posts[post_id]))
                metrics.STREAM_EVENTS_SENT.labels("post").inc(len(frames))
            stream = Stream(user_id=user_id, address=address, credential=credential, position=start)
            for item in frames:
                stream.put(item)
            self.streams.setdefault(user_id, set()).add(stream)
            return stream

    def _take(self, owner: int, address: str) -> None:
        self.by_owner[owner] = self.by_owner.get(owner, 0) + 1
        self.by_address[address] = self.by_address.get(address, 0) + 1

    def _release(self, owner: int, address: str) -> None:
        for counts, key in ((self.by_owner, owner), (self.by_address, address)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def close(self, stream: Stream) -> None:
        streams = self.streams.get(stream.user_id)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        if not streams:
            del self.streams[stream.user_id]
        self._release(stream.credential.user_id, stream.address)
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
            except Exception:
                # Anything else is a bug, logged; the pump goes on, the window read again.
                logger.exception("stream pump failed; retrying")
                wait = settings.STREAM_POLL_SECONDS
                continue
            # An announced post not read yet: an older transaction holds the window back.
            wait = min(max(wait * 2, 0.01), 0.5) if self.announced >= self.low else 0.0

    async def _advance(self) -> None:
        horizon = await _db(selectors.stream_horizon)
        if self.announced >= horizon.high:
            # No transaction of this database: an announcement from another one sharing
            # the channel. Forgotten, so that the pump does not keep reading for it.
            self.announced = 0
        if horizon.high < self.low:
            # The database went back in time (a failover to a replica behind, a restore):
            # every position handed out may be wrong. The streams end; their clients come
            # back and are told to reload (``unknown_position``).
            logger.warning(
                "stream: the database's transactions went back to %s from %s", horizon.high, self.low
            )
            for stream in [s for group in self.streams.values() for s in group]:
                self.close(stream)
            self.low = horizon.low
            return
        if horizon.low <= self.low:
            return
        # The window, a chunk of posts at a time; read again whole after a database error,
        # which sends nothing twice, since each stream skips what is at or before its
        # position.
        after = Position(self.low, 0)
        while True:
            posts = await _db(
                selectors.stream_window, low=self.low, below=horizon.low, after=after, limit=WINDOW_POSTS
            )
            if not posts:
                break
            await self._queue(posts)
            after = Position(*posts[-1][:2])
            if len(posts) < WINDOW_POSTS:
                break
        self.low = horizon.low
        if len(self.committed_at) > 1000:
            # Announced posts no open stream was sent: forgotten after ten minutes.
            since = time.time() - 600
            self.committed_at = {post: at for post, at in self.committed_at.items() if at > since}

    async def _queue(self, posts: list[tuple[int, int, int]]) -> None:
        """Queue these (added, post, author) to the open streams of their readers."""
        users = list(self.streams)
        if not users:
            return
        readers = await _db(
            selectors.stream_readers, author_ids=sorted({author for _, _, author in posts}), user_ids=users
        )
        shown = [(added, post_id, author) for added, post_id, author in posts if readers.get(author)]
        if not shown:
            return
        data = await _db(selectors.stream_posts_json, post_ids=[post_id for _, post_id, _ in shown])
        now = time.time()
        for added, post_id, author in shown:
            if post_id not in data:
                continue
            position = Position(added, post_id)
            encoded = frame("post", position, data[post_id])
            sent = 0
            for user_id in readers[author]:
                for stream in self.streams.get(user_id, ()):
                    if position > stream.position:
                        stream.put(encoded)
                        stream.position = position
                        sent += 1
            metrics.STREAM_EVENTS_SENT.labels("post").inc(sent)
            committed = self.committed_at.pop(post_id, None)
            if sent and committed is not None:
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
                    staff={s.credential.user_id for s in streams if s.credential.user_id != s.user_id},
                )
            except DatabaseError as error:
                logger.warning("stream warden: database unavailable (%s)", error)
                continue
            except Exception:
                logger.exception("stream warden failed; retrying")
                continue
            if not (revoked.tokens or revoked.sessions or revoked.users or revoked.staff):
                continue
            for stream in streams:
                credential = stream.credential
                if (
                    (credential.user_id, credential.password) in revoked.users
                    or credential.token in revoked.tokens
                    or credential.session in revoked.sessions
                    or (credential.user_id != stream.user_id and credential.user_id in revoked.staff)
                ):
                    metrics.STREAMS_ENDED.labels("revoked").inc()
                    self.close(stream)
