from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.urls import reverse
from django.utils.html import format_html

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
    fieldsets = [*UserAdmin.fieldsets, ("Follows", {"fields": ["following_link", "followers_link"]})]

    @admin.display(description="following")
    def following_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?follower__id__exact={obj.pk}"
        return format_html('<a href="{}">{} accounts</a>', url, obj.following.count())

    @admin.display(description="followers")
    def followers_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?followee__id__exact={obj.pk}"
        return format_html('<a href="{}">{} accounts</a>', url, obj.followers.count())
