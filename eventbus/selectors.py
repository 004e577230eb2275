"""Reads of the outbox, for the admin's inspector."""

from django.db import models
from django.db.models.expressions import RawSQL

from eventbus.models import OutboxMessage


def outbox_messages_of_events(*, event_types: list[str], payload: dict[str, int]) -> list[OutboxMessage]:
    """The outbox rows still kept of events of these types whose payload holds ``payload``'s
    fields, oldest first. Sent rows are pruned after OUTBOX_RETENTION_SECONDS.

    The rows are not indexed by payload: this scans the outbox, which retention keeps small.
    """
    document = RawSQL("convert_from(value, 'UTF8')::jsonb", [], output_field=models.JSONField())
    return list(
        OutboxMessage.objects.annotate(document=document)
        .filter(document__type__in=event_types)
        .filter(document__payload__contains=payload)
        .order_by("pk")
    )
