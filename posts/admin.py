from django.contrib import admin

from posts.models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["id", "author", "short_content", "created_at"]
    list_select_related = ["author"]
    list_filter = ["created_at"]
    search_fields = ["content", "author__username"]
    raw_id_fields = ["author"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="content")
    def short_content(self, obj: Post) -> str:
        return obj.content if len(obj.content) <= 80 else obj.content[:79] + "…"
