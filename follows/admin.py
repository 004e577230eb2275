from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from follows.models import Follow, Reader, UserToken

User = get_user_model()

# Ids beyond bigint cannot exist; PostgreSQL would refuse them as parameters.
MAX_ID = 2**63 - 1


def user_link(user: User) -> str:
    """A link to the user's admin page, named by the username."""
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:auth_user_change", args=[user.pk]), user.get_username()
    )


@admin.register(Follow)
class FollowAdmin(admin.ModelAdmin):
    """Follows. Their ends are fixed once made: a follow changed in place would leave the
    feeds of both followers as they were (no event announces it); delete it and add another."""

    list_display = ["id", "follower_link", "followee_link", "created_at"]
    list_select_related = ["follower", "followee"]
    list_filter = ["created_at"]
    search_fields = ["follower__username", "followee__username"]
    raw_id_fields = ["follower", "followee"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    @admin.display(description="follower", ordering="follower__username")
    def follower_link(self, obj: Follow) -> str:
        return user_link(obj.follower)

    @admin.display(description="followee", ordering="followee__username")
    def followee_link(self, obj: Follow) -> str:
        return user_link(obj.followee)

    def get_readonly_fields(self, request: HttpRequest, obj: Follow | None = None) -> list[str]:
        return ["follower", "followee"] if obj is not None else []

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """Follows filtered by one end (the user page's links) say so in their title."""
        extra_context = dict(extra_context or {})
        for parameter, title in [
            ("follower__id__exact", "Accounts {} follows"),
            ("followee__id__exact", "Followers of {}"),
        ]:
            value = request.GET.get(parameter, "")
            user = (
                User.objects.filter(pk=int(value)).first()
                if value.isdigit() and int(value) <= MAX_ID
                else None
            )
            if user is not None:
                extra_context["title"] = title.format(user.get_username())
        return super().changelist_view(request, extra_context)


admin.site.unregister(User)


@admin.register(User)
class UserWithFollowsAdmin(UserAdmin):
    """The stock user admin, with the id listed and searchable, plus links to whom the user
    follows and who follows them.

    Links rather than inlines: an account with many followers would not fit on a page.
    """

    list_display = ["id", *UserAdmin.list_display]
    search_help_text = "An exact user id, or part of a username, name or email address."
    readonly_fields = [*UserAdmin.readonly_fields, "following_link", "followers_link"]
    fieldsets = [*UserAdmin.fieldsets, ("Follows", {"fields": ["following_link", "followers_link"]})]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[User], search_term: str
    ) -> tuple[QuerySet[User], bool]:
        """The stock search, plus the user whose id is exactly the term."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term.isdigit() and int(term) <= MAX_ID:
            found |= queryset.filter(pk=int(term))
        return found, may_have_duplicates

    @admin.display(description="following")
    def following_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?follower__id__exact={obj.pk}"
        count = obj.following.count()
        return format_html('<a href="{}">{} account{}</a>', url, count, "" if count == 1 else "s")

    @admin.display(description="followers")
    def followers_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?followee__id__exact={obj.pk}"
        count = obj.followers.count()
        return format_html('<a href="{}">{} account{}</a>', url, count, "" if count == 1 else "s")


admin.site.unregister(TokenProxy)


@admin.register(UserToken)
class UserTokenAdmin(TokenAdmin):
    """API tokens, one per user, shown by their key's first characters only. The user is
    typed as an id (with a lookup), not chosen from a list of every account."""

    list_display = ["key_prefix", "user_link", "created"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]

    @admin.display(description="key")
    def key_prefix(self, obj: UserToken) -> str:
        return obj.key_prefix

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: UserToken) -> str:
        return user_link(obj.user)


@admin.register(Reader)
class ReaderAdmin(admin.ModelAdmin):
    """When each user was last seen, and whether reads use their stored feed; written by
    the system (follows.activity, rebuilds, vacuum_feeds), so read-only here."""

    list_display = ["user", "seen_at", "feed_complete"]
    list_filter = ["feed_complete", "seen_at"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Reader | None = None) -> bool:
        return False
