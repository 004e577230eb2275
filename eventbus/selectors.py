"""Reads of the outbox, for the admin's inspector."""

import json

from eventbus.models import OutboxMessage


def outbox_messages_of_events(
    *, event_types: list[str], key: str, payload: dict[str, int]
) -> list[OutboxMessage]:
    """The outbox rows still kept of events of these types, published under ``key``, whose
    payload holds ``payload``'s fields; oldest first. Sent rows are pruned after
    OUTBOX_RETENTION_SECONDS.

    Rows are found by their ``event_type`` header and key (no index: retention keeps the
    outbox small) and their payloads compared here, so a value that is not an event's
    JSON is skipped, never an error.
    """
    found = []
    for event_type in event_types:
        rows = OutboxMessage.objects.filter(key=key, headers__contains=[["event_type", event_type]])
        for row in rows:
            try:
                event = json.loads(bytes(row.value))
                held = event["payload"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(held, dict) and all(held.get(name) == value for name, value in payload.items()):
                found.append(row)
    return sorted(found, key=lambda row: row.pk)
