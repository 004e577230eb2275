from django.db import models


class DeadLetter(models.Model):
    """A message the fan-out worker could not process, kept for inspection and replay."""

    class Status(models.TextChoices):
        PENDING = "pending"
        REPLAYED = "replayed"
        DISCARDED = "discarded"

    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True, blank=True)
    value = models.BinaryField(null=True, blank=True)
    # [[name, value-as-text], ...] as the message carried them.
    headers = models.JSONField(default=list, blank=True)
    error_class = models.CharField(max_length=255)
    error_message = models.TextField()
    traceback = models.TextField(blank=True)
    consumer_group = models.CharField(max_length=255)
    failed_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    # The message's own Kafka timestamp (ms since the epoch), carried to the DLQ topic.
    original_timestamp = models.BigIntegerField(null=True, blank=True)
    # When the broker acknowledged the copy on the DLQ topic; until then the worker retries,
    # and a worker that starts publishes what a crashed one left unpublished.
    published_at = models.DateTimeField(null=True, blank=True)
    # The dead letter whose replay this message was (its ``dlq.replay_of`` header): the
    # replay failed again. No database constraint: the worker stores dead letters in bulk,
    # and one replayed may be deleted meanwhile; the admin deletes through the ORM, which
    # clears the link.
    replay_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_constraint=False,
        related_name="failed_replays",
    )

    class Meta:
        ordering = ["-failed_at", "-id"]
        # Beyond view: what the admin's actions need, each its own.
        permissions = [
            ("replay_deadletter", "Can replay dead letters to their original topic"),
            ("discard_deadletter", "Can discard dead letters"),
        ]
        indexes = [
            models.Index(
                fields=["consumer_group"],
                condition=models.Q(published_at__isnull=True),
                name="deadletter_unpublished",
            ),
        ]
        constraints = [
            # A message re-read after a crash is dead-lettered once, not twice.
            models.UniqueConstraint(
                fields=["consumer_group", "topic", "partition", "offset"],
                name="deadletter_unique_message",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset} {self.error_class}"

    def value_text(self) -> str:
        """The raw value as text, with undecodable bytes escaped."""
        if self.value is None:
            return ""
        return bytes(self.value).decode("utf-8", errors="backslashreplace")

    def key_text(self) -> str:
        if self.key is None:
            return ""
        return bytes(self.key).decode("utf-8", errors="backslashreplace")


class AppliedOffset(models.Model):
    """Per consumer group and partition: the next offset to apply, written in the same
    transaction as the feed entries, so a redelivered message is recognised and skipped;
    and the offset after the last message fetched, written before a batch is applied, so
    a message fetched again after an unclean stop is counted as reprocessed.

    ``topic_id`` is the broker's id of the topic the offsets were read from: a topic deleted
    and created again under the same name gets a new one, and starts from offset 0 again,
    so offsets stored under another id say nothing about it. Empty for rows written before
    ids were kept, and on brokers that have none."""

    consumer_group = models.CharField(max_length=255)
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    next_offset = models.BigIntegerField()
    fetched_offset = models.BigIntegerField(default=0)
    topic_id = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["consumer_group", "topic", "partition"], name="appliedoffset_unique_partition"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.consumer_group} {self.topic}[{self.partition}] → {self.next_offset}"
