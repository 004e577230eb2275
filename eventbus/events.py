"""The event schema: envelope, payload types and their wire encoding (JSON).

Every event is ``{"event_id", "type", "version", "occurred_at", "payload"}``. A payload
model is registered per (type, version); anything else is rejected as poison.
"""

import datetime
import uuid
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

POST_CREATED = "post.created"
POST_DELETED = "post.deleted"
FOLLOW_CREATED = "follow.created"
FOLLOW_DELETED = "follow.deleted"
FEEDS_REBUILD = "feeds.rebuild"
BLOCK_CREATED = "block.created"
BLOCK_DELETED = "block.deleted"
MUTE_CREATED = "mute.created"
MUTE_DELETED = "mute.deleted"


class PoisonMessage(Exception):
    """A message that will never be processable, however often it is retried."""


class UndecodableEvent(PoisonMessage):
    pass


class InvalidEvent(PoisonMessage):
    pass


class UnknownEventType(PoisonMessage):
    pass


class Envelope(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    event_id: uuid.UUID
    type: str = Field(min_length=1)
    version: int = Field(ge=1)
    occurred_at: datetime.datetime
    payload: dict[str, Any]


class PostCreated(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    post_id: int = Field(ge=1)
    author_id: int = Field(ge=1)


class PostDeleted(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    post_id: int = Field(ge=1)
    author_id: int = Field(ge=1)


class FollowChanged(BaseModel):
    """Payload of follow.created and follow.deleted."""

    model_config = ConfigDict(strict=True, frozen=True)

    follower_id: int = Field(ge=1)
    followee_id: int = Field(ge=1)


class RelationChanged(BaseModel):
    """Payload of block.created, block.deleted, mute.created and mute.deleted: ``user_id``
    blocks (or mutes) ``target_id``, or no longer does."""

    model_config = ConfigDict(strict=True, frozen=True)

    user_id: int = Field(ge=1)
    target_id: int = Field(ge=1)


class FeedsRebuild(BaseModel):
    """Payload of feeds.rebuild: recompute these users' stored feeds (an operator's request)."""

    model_config = ConfigDict(strict=True, frozen=True)

    user_ids: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=10_000)


PAYLOADS: dict[tuple[str, int], type[BaseModel]] = {
    (POST_CREATED, 1): PostCreated,
    (POST_DELETED, 1): PostDeleted,
    (FOLLOW_CREATED, 1): FollowChanged,
    (FOLLOW_DELETED, 1): FollowChanged,
    (FEEDS_REBUILD, 1): FeedsRebuild,
    (BLOCK_CREATED, 1): RelationChanged,
    (BLOCK_DELETED, 1): RelationChanged,
    (MUTE_CREATED, 1): RelationChanged,
    (MUTE_DELETED, 1): RelationChanged,
}


class Event(BaseModel):
    """A decoded, validated event: the envelope plus its typed payload."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    event_id: uuid.UUID
    type: str
    version: int
    occurred_at: datetime.datetime
    payload: BaseModel


def event_build(*, event_type: str, payload: BaseModel, version: int = 1) -> Event:
    """A new event with a fresh id, stamped now."""
    if PAYLOADS.get((event_type, version)) is not payload.__class__:
        raise ValueError(f"{event_type!r} v{version} does not carry {payload.__class__.__name__}")
    return Event(
        event_id=uuid.uuid4(),
        type=event_type,
        version=version,
        occurred_at=datetime.datetime.now(datetime.UTC),
        payload=payload,
    )


def event_encode(event: Event) -> bytes:
    envelope = Envelope(
        event_id=event.event_id,
        type=event.type,
        version=event.version,
        occurred_at=event.occurred_at,
        payload=event.payload.model_dump(mode="json"),
    )
    return envelope.model_dump_json().encode()


def event_decode(raw: bytes | None) -> Event:
    """Decode and validate one message value, or raise a PoisonMessage subclass."""
    if raw is None:
        raise UndecodableEvent("message has no value")
    try:
        envelope = Envelope.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise UndecodableEvent(f"not valid JSON: {exc.errors()[0]['msg']}") from None
        raise InvalidEvent(_describe(exc)) from None
    payload_model = PAYLOADS.get((envelope.type, envelope.version))
    if payload_model is None:
        raise UnknownEventType(f"no handler for {envelope.type!r} version {envelope.version}")
    try:
        payload = payload_model.model_validate(envelope.payload, strict=True)
    except pydantic.ValidationError as exc:
        raise InvalidEvent(f"{envelope.type} payload: {_describe(exc)}") from None
    return Event(
        event_id=envelope.event_id,
        type=envelope.type,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        payload=payload,
    )


def _describe(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )
