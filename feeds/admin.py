from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.adminlog import admin_log
from feeds.models import PulledAuthor
from feeds.rebuild import feeds_rebuild_users
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

    @admin.action(description="Rebuild the feeds of the selected users", permissions=["rebuild_feeds"])
    def rebuild_feeds(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        """What ``manage.py rebuild_feeds --user ...`` does, for the selected users."""
        users = {user.pk: user for user in queryset.order_by("pk")}
        # One batch after another, in this request's thread and transaction.
        summary = feeds_rebuild_users(
            list(users),
            concurrency=1,
            progress=lambda batch: admin_log(request, [users[pk] for pk in batch], "Rebuilt the feed."),
        )
        self.message_user(
            request,
            f"Rebuilt {summary.checked} feeds: {summary.changed} changed, {summary.added} entries added, "
            f"{summary.removed} removed.",
            messages.SUCCESS,
        )
        if summary.stale:
            self.message_user(
                request,
                "Redis was unreachable: some rebuilt feeds keep their cached first page for up to "
                "FEED_CACHE_TTL seconds.",
                messages.WARNING,
            )
