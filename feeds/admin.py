from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest

from core.adminlog import admin_log
from feeds.models import PulledAuthor
from feeds.rebuild import BATCH_SIZE, CacheNotInvalidated, feeds_rebuild_batch
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

    def has_rebuild_feeds_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("feeds.rebuild_feeds")

    @admin.action(description="Rebuild the feeds of the selected users", permissions=["rebuild_feeds"])
    def rebuild_feeds(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        """What ``manage.py rebuild_feeds --user ...`` does, for the selected users."""
        users = list(queryset.order_by("pk"))
        ids = [user.pk for user in users]
        added = removed = changed = stale = 0
        for start in range(0, len(ids), BATCH_SIZE):
            try:
                result = feeds_rebuild_batch(ids[start : start + BATCH_SIZE])
            except CacheNotInvalidated:
                stale += 1
                admin_log(request, users[start : start + BATCH_SIZE], "Rebuilt the feed.")
                continue
            admin_log(request, users[start : start + BATCH_SIZE], "Rebuilt the feed.")
            added, removed, changed = (
                added + result.added,
                removed + result.removed,
                changed + len(result.changed),
            )
        self.message_user(
            request,
            f"Rebuilt {len(ids)} feeds: {changed} changed, {added} entries added, {removed} removed.",
            messages.SUCCESS,
        )
        if stale:
            self.message_user(
                request,
                "Redis was unreachable: some rebuilt feeds keep their cached first page for up to "
                "FEED_CACHE_TTL seconds.",
                messages.WARNING,
            )
