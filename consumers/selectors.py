"""Reads of the fan-out worker's state, for the admin's inspector."""

from consumers.models import AppliedOffset


def applied_offsets_of(*, group_id: str, topic: str) -> dict[int, AppliedOffset]:
    """The group's stored offsets on ``topic``, by partition: a message at offset ``o`` of
    partition ``p`` is applied when ``next_offset`` of ``p`` is above ``o``."""
    rows = AppliedOffset.objects.filter(consumer_group=group_id, topic=topic)
    return {row.partition: row for row in rows}
