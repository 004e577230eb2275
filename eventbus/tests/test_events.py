import json
import uuid

import pytest

from eventbus.events import (
    POST_CREATED,
    InvalidEvent,
    PostCreated,
    UndecodableEvent,
    UnknownEventType,
    event_build,
    event_decode,
    event_encode,
)


def envelope(**overrides):
    body = {
        "event_id": str(uuid.uuid4()),
        "type": POST_CREATED,
        "version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "payload": {"post_id": 1, "author_id": 2},
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_an_event_survives_the_wire():
    event = event_build(event_type=POST_CREATED, payload=PostCreated(post_id=7, author_id=3))

    decoded = event_decode(event_encode(event))

    assert decoded == event
    wire = json.loads(event_encode(event))
    assert set(wire) == {"event_id", "type", "version", "occurred_at", "payload"}
    assert wire["payload"] == {"post_id": 7, "author_id": 3}


def test_building_an_event_checks_the_payload_type():
    with pytest.raises(ValueError, match="does not carry"):
        event_build(event_type="post.deleted", payload=PostCreated(post_id=1, author_id=1))


@pytest.mark.parametrize("raw", [None, b"", b"{not json", b"\xff\xfe", b"[1, 2"])
def test_undecodable(raw):
    with pytest.raises(UndecodableEvent):
        event_decode(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"a string"',
        envelope(event_id="not-a-uuid"),
        envelope(version="1"),
        envelope(occurred_at="yesterday"),
        envelope(payload={"post_id": "1", "author_id": 2}),
        envelope(payload={"post_id": 0, "author_id": 2}),
        envelope(payload={"author_id": 2}),
        envelope(payload=None),
    ],
)
def test_schema_violations(raw):
    with pytest.raises(InvalidEvent):
        event_decode(raw)


def test_unknown_type_or_version():
    with pytest.raises(UnknownEventType):
        event_decode(envelope(type="post.exploded"))
    with pytest.raises(UnknownEventType):
        event_decode(envelope(version=99))


def test_a_feeds_rebuild_event_carries_user_ids():
    from eventbus.events import FEEDS_REBUILD, FeedsRebuild

    event = event_build(event_type=FEEDS_REBUILD, payload=FeedsRebuild(user_ids=[3, 1]))

    assert event_decode(event_encode(event)).payload.user_ids == [3, 1]


@pytest.mark.parametrize("user_ids", [[], [0], ["1"], None, list(range(1, 10_002))])
def test_a_feeds_rebuild_event_needs_one_to_ten_thousand_ids(user_ids):
    raw = envelope(type="feeds.rebuild", payload={"user_ids": user_ids})

    with pytest.raises(InvalidEvent):
        event_decode(raw)
