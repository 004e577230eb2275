from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from consumers.deadletters import dead_letters_discard, dead_letters_replay
from consumers.models import AppliedOffset, DeadLetter
from core.adminlog import admin_log
from eventbus.producer import DeliveryFailed


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["id", "failed_at", "status", "error_class", "topic", "partition", "offset"]
    list_filter = ["status", "error_class", "topic", "consumer_group", "failed_at"]
    search_fields = ["error_message", "error_class"]
    date_hierarchy = "failed_at"
    actions = ["replay", "discard"]
    fields = [
        "status",
        "status_changed_at",
        "topic",
        "partition",
        "offset",
        "consumer_group",
        "failed_at",
        "published_at",
        "error_class",
        "error_message",
        "key_display",
        "value_display",
        "headers",
        "traceback_display",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False

    @admin.display(description="key")
    def key_display(self, obj: DeadLetter) -> str:
        return obj.key_text()

    @admin.display(description="value")
    def value_display(self, obj: DeadLetter) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.value_text())

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> str:
        return format_html("<pre>{}</pre>", obj.traceback)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consumers.replay_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consumers.discard_deadletter")

    @admin.action(description="Replay to the original topic", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        dead_letters = list(queryset)
        try:
            count = dead_letters_replay(dead_letters=dead_letters)
        except DeliveryFailed as exc:
            self.message_user(request, f"Nothing replayed: {exc}", messages.ERROR)
            return
        admin_log(request, dead_letters, "Replayed to the original topic.")
        self.message_user(request, f"Replayed {count} dead letters.", messages.SUCCESS)

    @admin.action(description="Discard", permissions=["discard"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        dead_letters = list(queryset)
        count = dead_letters_discard(dead_letters=dead_letters)
        admin_log(request, dead_letters, "Discarded.")
        self.message_user(request, f"Discarded {count} dead letters.", messages.SUCCESS)


@admin.register(AppliedOffset)
class AppliedOffsetAdmin(admin.ModelAdmin):
    """The fan-out groups' stored offsets, read-only: per partition, the next offset to
    apply (a message below it was applied) and the one after the last message fetched."""

    list_display = [
        "consumer_group",
        "topic",
        "partition",
        "next_offset",
        "fetched_offset",
        "topic_id",
        "updated_at",
    ]
    list_filter = ["consumer_group", "topic"]
    ordering = ["consumer_group", "topic", "partition"]
    readonly_fields = [f.name for f in AppliedOffset._meta.fields if f.name != "id"]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AppliedOffset | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AppliedOffset | None = None) -> bool:
        return False
