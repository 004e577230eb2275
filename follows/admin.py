from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from feeds.rebuild import BATCH_SIZE, CacheNotInvalidated, feeds_rebuild_batch
from feedsite.adminlog import admin_log
from follows.models import Follow

User = get_user_model()


@admin.register(Follow)
class FollowAdmin(admin.ModelAdmin):
    list_display = ["id", "follower", "followee", "created_at"]
    list_select_related = ["follower", "followee"]
    list_filter = ["created_at"]
    search_fields = ["follower__username", "followee__username"]
    raw_id_fields = ["follower", "followee"]
    date_hierarchy = "created_at"
    show_full_result_count = False


admin.site.unregister(User)


@admin.register(User)
class UserWithFollowsAdmin(UserAdmin):
    """The stock user admin, plus links to whom the user follows and who follows them.

    Links rather than inlines: an account with many followers would not fit on a page.
    """

    readonly_fields = [*UserAdmin.readonly_fields, "following_link", "followers_link"]
    actions = ["rebuild_feeds"]
    fieldsets = [*UserAdmin.fieldsets, ("Follows", {"fields": ["following_link", "followers_link"]})]

    @admin.display(description="following")
    def following_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?follower__id__exact={obj.pk}"
        return format_html('<a href="{}">{} accounts</a>', url, obj.following.count())

    @admin.display(description="followers")
    def followers_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?followee__id__exact={obj.pk}"
        return format_html('<a href="{}">{} accounts</a>', url, obj.followers.count())

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
