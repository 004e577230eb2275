"""Every Redis key the project uses, built here and nowhere else."""

from django.conf import settings


def _prefix() -> str:
    return settings.CACHES["default"].get("KEY_PREFIX") or "feedsite"


def feed_page_key(user_id: int) -> str:
    """The rendered first page of a user's feed, prefixed with its generation."""
    return f"{_prefix()}:feed:{user_id}:page"


def feed_generation_key(user_id: int) -> str:
    """A random value renewed each time a user's feed changes; stale pages carry another.

    Not ``:gen``, where earlier releases kept a counter: their INCR would fail on a random
    value, and a random value must not be mistaken for a count.
    """
    return f"{_prefix()}:feed:{user_id}:generation"


def auth_token_key(token: str) -> str:
    """The user an API token belongs to, with the user's token epoch when it was read.

    Named anew when the epoch joined the value, so that a release before it, running
    beside this one during a deploy, never reads this layout as its own.
    """
    return f"{_prefix()}:auth:token2:{token}"


def auth_epoch_key_prefix() -> str:
    """auth_epoch_key without the user id, for the Lua script that appends it."""
    return f"{_prefix()}:auth:epoch:"


def auth_epoch_key(user_id: int | str) -> str:
    """A random value per user; a cached token lookup holds only while it is unchanged."""
    return f"{auth_epoch_key_prefix()}{user_id}"


def throttle_key(scope: str, ident: str) -> str:
    """The theoretical arrival time (GCRA) of a client's next request in a throttle scope."""
    return f"{_prefix()}:throttle:{scope}:{ident}"


def follow_suggestions_key() -> str:
    """The most-followed accounts, with their follower counts, for "who to follow"."""
    return f"{_prefix()}:follows:most-followed"


def reader_seen_key_prefix() -> str:
    """reader_seen_key without the user id, for the Lua script that appends it."""
    return f"{_prefix()}:reader:seen:"


def reader_seen_key(user_id: int | str) -> str:
    """Present while a user was recorded as seen within FEED_ACTIVITY_RESOLUTION_SECONDS."""
    return f"{reader_seen_key_prefix()}{user_id}"


def stream_channel() -> str:
    """The Redis channel on which committed and deleted posts are announced to the stream
    processes (streams.hub); one subscription per process."""
    return f"{_prefix()}:stream:posts"
