from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from core.adminlog import admin_log
from feeds.models import PulledAuthor
from feeds.rebuild import feeds_rebuild_enqueue
from follows.admin import UserWithFollowsAdmin

User = get_user_model()


@admin.register(PulledAuthor)
class PulledAuthorAdmin(admin.ModelAdmin):
    """Authors whose posts are merged at read time instead of fanned out (read-only:
    the worker marks them)."""

    list_display = ["user", "marked_at"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    date_hierarchy = "marked_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


admin.site.unregister(User)


@admin.register(User)
class UserWithFeedsAdmin(UserWithFollowsAdmin):
    """The user admin of the follows app, plus rebuilding the selected users' feeds."""

    actions = ["rebuild_feeds"]
    readonly_fields = [*UserWithFollowsAdmin.readonly_fields, "feed_inspector_link"]
    fieldsets = [*UserWithFollowsAdmin.fieldsets, ("Feed", {"fields": ["feed_inspector_link"]})]

    @admin.display(description="feed")
    def feed_inspector_link(self, obj: User) -> str:
        url = reverse("admin-inspect") + f"?user={obj.pk}"
        return format_html('<a href="{}">Inspect the feed as the API serves it</a>', url)

    def has_rebuild_feeds_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("feeds.rebuild_feeds")

    @admin.action(
        description="Rebuild the feeds of the selected users (queued for the worker)",
        permissions=["rebuild_feeds"],
    )
    def rebuild_feeds(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        """What ``manage.py rebuild_feeds --user ...`` does, for the selected users, queued as
        events the fan-out worker applies: many feeds take longer than a web request may."""
        user_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        events = feeds_rebuild_enqueue(user_ids=user_ids)
        if len(user_ids) <= LOGGED_USERS:
            admin_log(request, list(queryset.order_by("pk")), "Queued a rebuild of the feed.")
        else:
            LogEntry.objects.create(
                user_id=request.user.pk,
                content_type=ContentType.objects.get_for_model(User),
                object_repr=f"{len(user_ids)} users",
                action_flag=CHANGE,
                change_message=f"Queued a rebuild of {len(user_ids)} feeds.",
            )
        feeds = ngettext("%(count)d feed", "%(count)d feeds", len(user_ids)) % {"count": len(user_ids)}
        queued = ngettext("%(count)d event", "%(count)d events", events) % {"count": events}
        self.message_user(
            request,
            f"Queued the rebuild of {feeds} in {queued}: the fan-out worker applies them shortly "
            '(its log says "feeds rebuilt" for each batch).',
            messages.SUCCESS,
        )


# Users up to which a queued rebuild is logged in each user's history; beyond, one entry
# says how many.
LOGGED_USERS = 1000
