"""The stream process's ASGI application: ``GET /feeds/{user_id}/stream`` (Server-Sent
Events of the new posts of that user's home feed), ``/healthz``, and nothing else.

A plain ASGI callable rather than Django's handler: an open stream costs its queue, two
tasks and a few objects (BENCHMARKS.md, Live streams), and no middleware runs per event.
Django is used for its settings, ORM and authentication (``streams.credentials``).
"""

import asyncio
import gc
import json
import logging
import re
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.http.cookie import parse_cookie

from core.process import metrics_serve
from core.throttling import client_ip
from streams.credentials import credential_of
from streams.hub import CLOSE, Hub, Refused, _db
from streams.positions import InvalidPosition, position_decode

logger = logging.getLogger(__name__)

_STREAM_PATH = re.compile(r"/feeds/([1-9][0-9]{0,17})/stream")
_QUERY_KEYS = {"since"}
# Asks EventSource to reconnect after this many milliseconds when a stream drops.
_PREAMBLE = b"retry: 3000\n: open\n\n"
_HEARTBEAT = b": heartbeat\n\n"
# Django's session keys are lowercase letters and digits.
_SESSION_KEY = re.compile(r"[a-z0-9]{8,64}")
# Seconds one write to a client may wait for it to read: a client that stops reading is
# dropped then, and its slot freed.
SEND_TIMEOUT = 30


def _user_exists(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id).exists()


class StreamApp:
    def __init__(self) -> None:
        self.hub = Hub()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.hub.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                metrics_serve(settings.STREAM_METRICS_PORT)
                # What startup made (Django's apps, settings, URL patterns) lives as long as
                # the process: out of the collector's reach, a full collection while posts
                # are on their way to thousands of streams takes less time.
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.hub.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        cors = self._cors(headers)
        path = scope["path"]
        if path == "/healthz":
            ready = self.hub.low is not None
            await _answer(send, 200 if ready else 503, {"status": "ok" if ready else "starting"})
            return
        match = _STREAM_PATH.fullmatch(path)
        if match is None:
            await _answer(send, 404, {"detail": "Not found."})
            return
        if cors is None:
            await _answer(send, 403, {"detail": "This origin may not open streams."})
            return
        if scope["method"] != "GET":
            await _answer(
                send, 405, {"detail": f'Method "{scope["method"]}" not allowed.'}, [("allow", "GET")], cors
            )
            return
        user_id = int(match.group(1))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            await _answer(send, 400, {name: ["Unknown parameter."] for name in unknown}, cors=cors)
            return
        # EventSource sends the last id it saw when it reconnects: it wins over ``since``.
        given = headers.get("last-event-id") or (query.get("since") or [""])[-1]
        after = None
        if given:
            try:
                after = position_decode(given)
            except InvalidPosition as error:
                await _answer(send, 400, {"detail": str(error)}, cors=cors)
                return
        try:
            credential = await _db(
                credential_of, authorization=headers.get("authorization"), session_key=_session_key(headers)
            )
            staff_elsewhere = credential is not None and credential.user_id != user_id and credential.is_staff
            if staff_elsewhere and not await _db(_user_exists, user_id=user_id):
                await _answer(send, 404, {"detail": "Not found."}, cors=cors)
                return
        except DatabaseError:
            await _answer(
                send,
                503,
                {"detail": "The stream is unavailable; try again shortly."},
                [("retry-after", "5")],
                cors,
            )
            return
        if credential is None:
            await _answer(
                send,
                401,
                {"detail": "Authentication credentials were not provided or are not valid."},
                [("www-authenticate", "Token")],
                cors,
            )
            return
        if credential.user_id != user_id and not credential.is_staff:
            await _answer(send, 403, {"detail": "You can only read your own feed."}, cors=cors)
            return
        try:
            stream = await self.hub.open(
                credential=credential, user_id=user_id, address=_client_address(scope, headers), after=after
            )
        except Refused as refused:
            await _answer(
                send,
                refused.status,
                {"detail": refused.message},
                [("retry-after", str(refused.retry_after))],
                cors,
            )
            return
        try:
            await self._serve(stream, receive, send, cors)
        finally:
            self.hub.close(stream)

    async def _serve(self, stream, receive, send, cors) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _encode(
                    [
                        ("content-type", "text/event-stream; charset=utf-8"),
                        ("cache-control", "no-store"),
                        # nginx passes each event on at once instead of buffering.
                        ("x-accel-buffering", "no"),
                        *cors,
                    ]
                ),
            }
        )

        # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs each await as a task
        # of its own, which cost a post on its way to 2,000 streams about a third more time.
        async def body(chunk: bytes) -> None:
            async with asyncio.timeout(SEND_TIMEOUT):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await body(_PREAMBLE)
        watcher = asyncio.create_task(_until_disconnect(receive, stream))
        try:
            while True:
                try:
                    async with asyncio.timeout(settings.STREAM_HEARTBEAT_SECONDS):
                        item = await stream.queue.get()
                except TimeoutError:
                    await body(_HEARTBEAT)
                    continue
                chunks = []
                while item is not CLOSE:
                    chunks.append(item)
                    if stream.queue.empty():
                        break
                    item = stream.queue.get_nowait()
                if chunks:
                    await body(b"".join(chunks))
                if item is CLOSE:
                    break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, TimeoutError):
            pass  # the client went away, or stopped reading
        finally:
            watcher.cancel()

    def _cors(self, headers: dict[str, str]) -> list[tuple[str, str]] | None:
        """The CORS headers for the request's Origin; None when that origin may not read
        streams. No Origin (an API client) and the page's own origin need none."""
        origin = headers.get("origin")
        if origin is None:
            return []
        if origin in settings.STREAM_ALLOWED_ORIGINS:
            return [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("vary", "Origin"),
            ]
        if urlsplit(origin).netloc == headers.get("host"):
            return []
        return None


async def _until_disconnect(receive, stream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.end()
            return


def _session_key(headers: dict[str, str]) -> str | None:
    """The session cookie's key, parsed as Django parses cookies (one it cannot read does
    not hide the others); None unless it has a session key's form."""
    raw = headers.get("cookie")
    key = parse_cookie(raw).get(settings.SESSION_COOKIE_NAME) if raw else None
    return key if key and _SESSION_KEY.fullmatch(key) else None


def _client_address(scope, headers: dict[str, str]) -> str:
    """The client's address as the API's throttles see it (``client_ip``): the socket's, or
    the one the trusted proxies (TRUSTED_PROXY_COUNT) put in X-Forwarded-For."""
    remote = scope["client"][0] if scope.get("client") else None
    return client_ip(SimpleNamespace(META={"REMOTE_ADDR": remote}, headers=headers)) or "unknown"


def _encode(headers) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _answer(send, status: int, body: dict, headers=(), cors=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _encode(
                [
                    ("content-type", "application/json"),
                    ("content-length", str(len(payload))),
                    *headers,
                    *(cors or ()),
                ]
            ),
        }
    )
    await send({"type": "http.response.body", "body": payload})
