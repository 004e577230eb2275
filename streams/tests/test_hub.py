"""The hub's bookkeeping, without a server: what an ended stream keeps, and limits that
hold while opens wait for the database."""

import asyncio
import threading

import pytest

from streams import hub as hub_module
from streams import selectors
from streams.credentials import Credential
from streams.hub import CLOSE, Hub, Refused, Stream
from streams.positions import Position


def run(coroutine_function):
    """``asyncio.run`` on a thread of its own: once a browser test has run, Playwright keeps
    an event loop on the test's thread, where asyncio.run refuses to start another."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coroutine_function())
        except BaseException as error:  # re-raised on the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the coroutine did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_a_stream_that_overflows_keeps_no_frame_it_cannot_send_in_order():
    """Its client resumes from the last post it received: a frame dropped from the middle
    of the queue would be skipped for good."""
    stream = Stream(user_id=1, address="a", credential=Credential(1, False, "x"), position=Position(1, 0))
    stream.queue = asyncio.Queue(3)
    for frame in (b"a", b"b", b"c", b"d"):
        stream.put(frame)

    assert stream.ended
    assert [stream.queue.get_nowait() for _ in range(stream.queue.qsize())] == [CLOSE]


def test_opens_waiting_for_the_database_count_against_the_user_limit(monkeypatch, settings):
    settings.STREAM_MAX_PER_USER = 4
    settings.STREAM_MAX_PER_ADDRESS = 0

    async def slow_database(function, /, **kwargs):
        await asyncio.sleep(0.05)
        if function is selectors.stream_horizon:
            return selectors.Horizon(low=10, high=10)
        return {} if function is selectors.stream_posts_json else []

    monkeypatch.setattr(hub_module, "_db", slow_database)

    async def six_at_once() -> list[object]:
        hub = Hub()
        hub.low = 10
        credential = Credential(7, False, "x", token="t")
        opens = [
            hub.open(credential=credential, user_id=7, address="a", after=Position(5, 0)) for _ in range(6)
        ]
        return await asyncio.gather(*opens, return_exceptions=True)

    results = run(six_at_once)

    assert sum(isinstance(r, Stream) for r in results) == 4
    assert [r.status for r in results if isinstance(r, Refused)] == [429, 429]


def test_staff_streams_count_against_the_staff_member_not_the_feed_owner(settings):
    settings.STREAM_MAX_PER_USER = 1
    settings.STREAM_MAX_PER_ADDRESS = 0
    hub = Hub()
    hub.low = 10

    async def both() -> None:
        staff = Credential(1, True, "x", token="s")
        owner = Credential(2, False, "y", token="o")
        await hub.open(credential=staff, user_id=2, address="a", after=None)
        await hub.open(credential=owner, user_id=2, address="b", after=None)
        with pytest.raises(Refused):
            await hub.open(credential=staff, user_id=2, address="a", after=None)

    run(both)
    assert len(hub.streams[2]) == 2
