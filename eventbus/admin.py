import contextlib
import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from eventbus.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    """The outbox, read-only: what was announced, and whether and where the broker took it.
    Sent rows are pruned after OUTBOX_RETENTION_SECONDS."""

    list_display = ["id", "event_type", "key", "created_at", "sent_at", "sent_partition", "sent_offset"]
    list_filter = [("sent_at", admin.EmptyFieldListFilter), "topic", "created_at"]
    search_fields = ["=id", "=key"]
    search_help_text = (
        "An exact row id, or an exact key (the author's id for post events, the follower's for follows)."
    )
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = [
        "topic",
        "key",
        "event_type",
        "value_display",
        "headers",
        "created_at",
        "sent_at",
        "sent_partition",
        "sent_offset",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OutboxMessage | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OutboxMessage | None = None) -> bool:
        return False

    @admin.display(description="event type")
    def event_type(self, obj: OutboxMessage) -> str:
        return dict(obj.headers).get("event_type", "")

    @admin.display(description="value")
    def value_display(self, obj: OutboxMessage) -> str:
        text = bytes(obj.value).decode("utf-8", errors="backslashreplace")
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)
