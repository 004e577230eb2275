from django.contrib import admin

from feeds.models import PulledAuthor


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
