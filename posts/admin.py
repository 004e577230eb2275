from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from posts.models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    """Posts. The author is fixed once posted: a post moved to another author would stay in
    the old author's followers' feeds (no event announces it)."""

    list_display = ["id", "author_link", "short_content", "created_at"]
    list_select_related = ["author"]
    list_filter = ["created_at"]
    search_fields = ["content", "author__username"]
    raw_id_fields = ["author"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="author", ordering="author__username")
    def author_link(self, obj: Post) -> str:
        url = reverse("admin:auth_user_change", args=[obj.author_id])
        return format_html('<a href="{}">{}</a>', url, obj.author.get_username())

    @admin.display(description="content")
    def short_content(self, obj: Post) -> str:
        return obj.content if len(obj.content) <= 80 else obj.content[:79] + "…"

    @admin.display(description="delivery")
    def inspector_link(self, obj: Post) -> str:
        url = reverse("admin-inspect") + f"?post={obj.pk}"
        return format_html('<a href="{}">Inspect its events and who sees it</a>', url)

    def get_readonly_fields(self, request: HttpRequest, obj: Post | None = None) -> list[str]:
        return ["author", "inspector_link"] if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Post | None = None) -> list[str]:
        fields = ["author", "content", "created_at"]
        return [*fields, "inspector_link"] if obj is not None else fields
