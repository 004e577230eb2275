from functools import partial

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import ngettext

from consumers.deadletters import dead_letters_discard, dead_letters_replay
from consumers.models import AppliedOffset, DeadLetter
from core.adminlog import admin_log
from eventbus.producer import DeliveryFailed


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Dead letters, read-only, with Replay and Discard: as list actions and as buttons on
    each dead letter's page, each behind a confirmation step and its own permission."""

    list_display = [
        "id",
        "failed_at",
        "status",
        "error_class",
        "short_error",
        "topic",
        "partition",
        "offset",
        "replay_of_link",
    ]
    list_filter = ["status", "error_class", "topic", "consumer_group", "failed_at"]
    search_fields = ["=id", "error_message", "error_class"]
    date_hierarchy = "failed_at"
    actions = ["replay", "discard"]
    change_form_template = "admin/consumers/deadletter/change_form.html"
    fields = [
        "status",
        "status_changed_at",
        "replay_of_link",
        "failed_replays_links",
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
        "headers_display",
        "traceback_display",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False

    @admin.display(description="error message")
    def short_error(self, obj: DeadLetter) -> str:
        return Truncator(obj.error_message).chars(120)

    @admin.display(description="replay of")
    def replay_of_link(self, obj: DeadLetter) -> str:
        if obj.replay_of_id is None:
            return "-"
        url = reverse("admin:consumers_deadletter_change", args=[obj.replay_of_id])
        return format_html('<a href="{}">dead letter {}</a>', url, obj.replay_of_id)

    @admin.display(description="replays that failed again")
    def failed_replays_links(self, obj: DeadLetter) -> str:
        ids = list(obj.failed_replays.order_by("pk").values_list("pk", flat=True))
        if not ids:
            return "-"
        return format_html_join(
            ", ",
            '<a href="{}">dead letter {}</a>',
            ((reverse("admin:consumers_deadletter_change", args=[pk]), pk) for pk in ids),
        )

    @admin.display(description="key")
    def key_display(self, obj: DeadLetter) -> str:
        return obj.key_text()

    @admin.display(description="value")
    def value_display(self, obj: DeadLetter) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.value_text())

    @admin.display(description="headers")
    def headers_display(self, obj: DeadLetter) -> str:
        if not obj.headers:
            return "none"
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", ((n, v) for n, v in obj.headers))
        return format_html("<table>{}</table>", rows)

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> str:
        return format_html("<pre>{}</pre>", obj.traceback)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consumers.replay_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("consumers.discard_deadletter")

    def get_urls(self) -> list:
        own = [
            path(
                f"<path:object_id>/{action}/",
                self.admin_site.admin_view(partial(self.button_view, action=action)),
                name=f"consumers_deadletter_{action}",
            )
            for action in ("replay", "discard")
        ]
        return own + super().get_urls()

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        pending = obj is not None and obj.status == DeadLetter.Status.PENDING
        extra_context = {
            **(extra_context or {}),
            "can_replay": pending and self.has_replay_permission(request),
            "can_discard": pending and self.has_discard_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def button_view(self, request: HttpRequest, object_id: str, *, action: str) -> HttpResponse:
        """A dead letter's Replay or Discard button: GET asks for confirmation, POST acts."""
        dead_letter = self.get_object(request, unquote(object_id))
        if dead_letter is None:
            raise Http404("No dead letter with this id.")
        if not self.has_view_permission(request, dead_letter) or not getattr(
            self, f"has_{action}_permission"
        )(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "dead_letter": dead_letter,
            "action": action,
            "title": f"{action.capitalize()} dead letter {dead_letter.pk}?",
        }
        if dead_letter.status != DeadLetter.Status.PENDING:
            context["refused"] = (
                f"Dead letter {dead_letter.pk} is already {dead_letter.status}: nothing was done."
            )
            return TemplateResponse(request, "admin/consumers/deadletter/confirm.html", context, status=409)
        if request.method != "POST":
            return TemplateResponse(request, "admin/consumers/deadletter/confirm.html", context)
        getattr(self, action)(request, DeadLetter.objects.filter(pk=dead_letter.pk), single=True)
        return HttpResponseRedirect(reverse("admin:consumers_deadletter_change", args=[dead_letter.pk]))

    def _confirm(self, request: HttpRequest, queryset: QuerySet[DeadLetter], action: str) -> HttpResponse:
        """The list action's confirmation page: the selection, and a form that posts it again
        with ``confirm``."""
        count = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "action": action,
            "count": count,
            "dead_letters": queryset.order_by("pk")[:CONFIRM_LISTED],
            "title": ngettext("%(verb)s %(count)d dead letter?", "%(verb)s %(count)d dead letters?", count)
            % {"verb": action.capitalize(), "count": count},
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "admin/consumers/deadletter/confirm_bulk.html", context)

    @admin.action(description="Replay to the original topic", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter], single: bool = False):
        if not single and request.POST.get("confirm") != "yes":
            return self._confirm(request, queryset, "replay")
        dead_letters = list(queryset.order_by("pk"))
        try:
            count = dead_letters_replay(dead_letters=dead_letters)
        except DeliveryFailed as exc:
            self.message_user(request, f"Nothing replayed: {exc}", messages.ERROR)
            return None
        admin_log(request, dead_letters, "Replayed to the original topic.")
        self.message_user(request, _done("Replayed", dead_letters, count, single), messages.SUCCESS)
        return None

    @admin.action(description="Discard", permissions=["discard"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter], single: bool = False):
        if not single and request.POST.get("confirm") != "yes":
            return self._confirm(request, queryset, "discard")
        dead_letters = list(queryset.order_by("pk"))
        count = dead_letters_discard(dead_letters=dead_letters)
        admin_log(request, dead_letters, "Discarded.")
        self.message_user(request, _done("Discarded", dead_letters, count, single), messages.SUCCESS)
        return None


# Dead letters a list action's confirmation page names; it counts the rest.
CONFIRM_LISTED = 100


def _done(verb: str, dead_letters: list[DeadLetter], count: int, single: bool) -> str:
    if single:
        return f"{verb} dead letter {dead_letters[0].pk}."
    return ngettext("%(verb)s %(count)d dead letter.", "%(verb)s %(count)d dead letters.", count) % {
        "verb": verb,
        "count": count,
    }


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
