"""Stream positions: where a client of ``GET /feeds/{id}/stream`` is, as the ``id:`` of its
events (and so its ``Last-Event-ID``).

A position is the (transaction, post) pair of the last post sent, or of the stream's start:
the posts after it are those written by a later transaction, or by the same one with a
higher id. Opaque to clients, like page cursors; it is not one, since the stream orders
posts by the transaction that added them and pages by id.
"""

import base64
import binascii
from dataclasses import dataclass

PREFIX = "s1:"


class InvalidPosition(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Position:
    added: int
    post_id: int


def position_encode(position: Position) -> str:
    raw = f"{PREFIX}{position.added}.{position.post_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def position_decode(text: str) -> Position:
    """The position behind ``text``; raises InvalidPosition for anything not issued here."""
    if len(text) > 64:
        raise InvalidPosition("Malformed stream position.")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidPosition("Malformed stream position.") from None
    added, dot, post_id = raw.removeprefix(PREFIX).partition(".")
    if not raw.startswith(PREFIX) or not dot or not added.isdigit() or not post_id.isdigit():
        raise InvalidPosition("Malformed stream position.")
    if len(added) > 18 or len(post_id) > 18:
        raise InvalidPosition("Malformed stream position.")
    return Position(int(added), int(post_id))
