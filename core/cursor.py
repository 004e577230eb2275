"""Opaque keyset cursors: the id of the last row a page showed (a post, a block, a mute)."""

import base64
import binascii

PREFIX = "p1:"


class InvalidCursor(ValueError):
    pass


def cursor_encode(post_id: int) -> str:
    return base64.urlsafe_b64encode(f"{PREFIX}{post_id}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> int:
    """The post id behind ``cursor``; raises InvalidCursor for anything we did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("Malformed cursor.") from None
    digits = raw.removeprefix(PREFIX)
    if not raw.startswith(PREFIX) or not digits.isdigit() or len(digits) > 18:
        raise InvalidCursor("Malformed cursor.")
    post_id = int(digits)
    if post_id < 1:
        raise InvalidCursor("Malformed cursor.")
    return post_id
