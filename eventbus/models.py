from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    """A message written in the same transaction as the change it announces.

    The relay (``run_outbox_relay``) publishes it once the transaction has committed.
    ``sent_at`` is set only from a delivery report, and sent rows are pruned later.
    ``eventbus.outbox.outbox_enqueue`` writes the rows.
    """

    topic = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    value = models.BinaryField()
    headers = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Where the broker put the message, from the delivery report that marked it sent: the
    # admin compares it with the fan-out group's applied offsets.
    sent_partition = models.IntegerField(null=True, blank=True)
    sent_offset = models.BigIntegerField(null=True, blank=True)

    class Meta:
        # Created by the consumers app, which held the model first; the rows stay where they are.
        db_table = "consumers_outboxmessage"
        indexes = [
            # The relay's scan: unsent rows in id order, and nothing else.
            models.Index(fields=["id"], condition=models.Q(sent_at__isnull=True), name="outbox_unsent"),
            models.Index(fields=["sent_at"], condition=models.Q(sent_at__isnull=False), name="outbox_sent"),
        ]

    def __str__(self) -> str:
        return f"outbox {self.pk} → {self.topic} ({'sent' if self.sent_at else 'unsent'})"
