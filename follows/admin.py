from collections.abc import Callable
from contextlib import suppress
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from follows.models import Block, Follow, Mute, Reader, Relation, UserToken
from follows.selectors import blocked_between
from follows.services import FollowBlocked, block_create, block_delete, mute_create, mute_delete

User = get_user_model()

# Ids beyond bigint cannot exist; PostgreSQL would refuse them as parameters.
MAX_ID = 2**63 - 1


def user_link(user: User) -> str:
    """A link to the user's admin page, named by the username."""
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:auth_user_change", args=[user.pk]), user.get_username()
    )


def accounts_link(url: str, count: int) -> str:
    return format_html('<a href="{}">{} account{}</a>', url, count, "" if count == 1 else "s")


def end_filtered_title(request: HttpRequest, titles: list[tuple[str, str]]) -> str | None:
    """The title of a changelist filtered by one end (the user page's links): of the
    ``(parameter, title)`` pairs, the last whose parameter names a user, with their name."""
    found = None
    for parameter, title in titles:
        value = request.GET.get(parameter, "")
        user = (
            User.objects.filter(pk=int(value)).first() if value.isdigit() and int(value) <= MAX_ID else None
        )
        if user is not None:
            found = title.format(user.get_username())
    return found


class FollowAdminForm(forms.ModelForm):
    """A new follow, refused where a block stands between the two, as the API refuses it
    (``follows.services.follow_create``, which checks it again under its lock)."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        follower, followee = cleaned.get("follower"), cleaned.get("followee")
        new = self.instance.pk is None and follower is not None and followee is not None
        if new and blocked_between(follower.pk, followee.pk):
            raise forms.ValidationError(f"{FollowBlocked()} A block stands between the two.")
        return cleaned


@admin.register(Follow)
class FollowAdmin(admin.ModelAdmin):
    """Follows. Their ends are fixed once made: a follow changed in place would leave the
    feeds of both followers as they were (no event announces it); delete it and add another."""

    form = FollowAdminForm

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
        title = end_filtered_title(
            request,
            [("follower__id__exact", "Accounts {} follows"), ("followee__id__exact", "Followers of {}")],
        )
        if title is not None:
            extra_context["title"] = title
        return super().changelist_view(request, extra_context)


class RelationAdminForm(forms.ModelForm):
    """A new block or mute, checked against the rules its service applies (``follows.services``)
    while they can still be shown as the form's errors: the admin calls ``save_model`` only
    once the form is valid, and an exception raised there is a server error. The service
    checks them again under its locks: only a race with another add past the limit, or
    with the target's deletion, still fails there."""

    # The setting that caps how many accounts one user may block (mute).
    limit_setting = ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        user, target = cleaned.get("user"), cleaned.get("target")
        if user is None or target is None:
            return cleaned
        model = self._meta.model
        noun = model._meta.verbose_name
        if user.pk == target.pk:
            self.add_error("target", f"A user cannot {noun} themselves.")
        limit = getattr(settings, self.limit_setting)
        if model.objects.filter(user_id=user.pk).count() >= limit:
            accounts = ngettext("%(count)d account", "%(count)d accounts", limit) % {"count": limit}
            raise forms.ValidationError(
                f"{user.get_username()} cannot {noun} more than {accounts} ({self.limit_setting})."
            )
        return cleaned


class BlockAdminForm(RelationAdminForm):
    limit_setting = "BLOCK_LIMIT"


class MuteAdminForm(RelationAdminForm):
    limit_setting = "MUTE_LIMIT"


class RelationAdmin(admin.ModelAdmin):
    """Blocks or mutes, added and deleted through the services the API uses, so that the
    admin's do what the API's do: a block ends the follows between the two, an unmute
    brings the muted posts back, cached pages are dropped. Their ends are fixed once made,
    as a follow's are."""

    list_display = ["id", "user_link", "target_link", "created_at"]
    list_select_related = ["user", "target"]
    list_filter = ["created_at"]
    search_fields = ["user__username", "target__username"]
    raw_id_fields = ["user", "target"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    # The changelist's titles when filtered by the user (the target), formatted with their name.
    end_titles: list[tuple[str, str]] = []
    relation_create: Callable[..., tuple[Relation, bool]]
    relation_delete: Callable[..., None]

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: Relation) -> str:
        return user_link(obj.user)

    @admin.display(description="target", ordering="target__username")
    def target_link(self, obj: Relation) -> str:
        return user_link(obj.target)

    def get_readonly_fields(self, request: HttpRequest, obj: Relation | None = None) -> list[str]:
        return ["user", "target"] if obj is not None else []

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = dict(extra_context or {})
        title = end_filtered_title(request, self.end_titles)
        if title is not None:
            extra_context["title"] = title
        return super().changelist_view(request, extra_context)

    def save_model(self, request: HttpRequest, obj: Relation, form: forms.ModelForm, change: bool) -> None:
        """A new one is made by its service; a change has nothing to change but is saved as
        a follow's is."""
        if change:
            super().save_model(request, obj, form, change)
            return
        relation, _ = self.relation_create(user=obj.user, target_id=obj.target_id)
        obj.pk, obj.created_at = relation.pk, relation.created_at

    def delete_model(self, request: HttpRequest, obj: Relation) -> None:
        # Deleted meanwhile by its user or another admin: what was asked for is done.
        with suppress(self.model.DoesNotExist):
            self.relation_delete(user=obj.user, target_id=obj.target_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Relation]) -> None:
        """The delete action: one service call per row, all or none of them."""
        with transaction.atomic():
            for relation in queryset.select_related("user").order_by("pk"):
                self.delete_model(request, relation)


@admin.register(Block)
class BlockAdmin(RelationAdmin):
    form = BlockAdminForm
    end_titles = [("user__id__exact", "Accounts {} blocks"), ("target__id__exact", "Accounts that block {}")]
    relation_create = staticmethod(block_create)
    relation_delete = staticmethod(block_delete)


@admin.register(Mute)
class MuteAdmin(RelationAdmin):
    form = MuteAdminForm
    end_titles = [("user__id__exact", "Accounts {} mutes"), ("target__id__exact", "Accounts that mute {}")]
    relation_create = staticmethod(mute_create)
    relation_delete = staticmethod(mute_delete)


admin.site.unregister(User)


@admin.register(User)
class UserWithFollowsAdmin(UserAdmin):
    """The stock user admin, with the id listed and searchable, plus links to whom the user
    follows, blocks and mutes, and who follows, blocks and mutes them.

    Links rather than inlines: an account with many followers would not fit on a page.
    """

    list_display = ["id", *UserAdmin.list_display]
    search_help_text = "An exact user id, or part of a username, name or email address."
    readonly_fields = [
        *UserAdmin.readonly_fields,
        "following_link",
        "followers_link",
        "blocking_link",
        "blocked_by_link",
        "muting_link",
        "muted_by_link",
    ]
    fieldsets = [
        *UserAdmin.fieldsets,
        ("Follows", {"fields": ["following_link", "followers_link"]}),
        (
            "Blocks and mutes",
            {"fields": ["blocking_link", "blocked_by_link", "muting_link", "muted_by_link"]},
        ),
    ]

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
        return accounts_link(url, obj.following.count())

    @admin.display(description="followers")
    def followers_link(self, obj: User) -> str:
        url = reverse("admin:follows_follow_changelist") + f"?followee__id__exact={obj.pk}"
        return accounts_link(url, obj.followers.count())

    @admin.display(description="blocks")
    def blocking_link(self, obj: User) -> str:
        url = reverse("admin:follows_block_changelist") + f"?user__id__exact={obj.pk}"
        return accounts_link(url, Block.objects.filter(user_id=obj.pk).count())

    @admin.display(description="blocked by")
    def blocked_by_link(self, obj: User) -> str:
        url = reverse("admin:follows_block_changelist") + f"?target__id__exact={obj.pk}"
        return accounts_link(url, Block.objects.filter(target_id=obj.pk).count())

    @admin.display(description="mutes")
    def muting_link(self, obj: User) -> str:
        url = reverse("admin:follows_mute_changelist") + f"?user__id__exact={obj.pk}"
        return accounts_link(url, Mute.objects.filter(user_id=obj.pk).count())

    @admin.display(description="muted by")
    def muted_by_link(self, obj: User) -> str:
        url = reverse("admin:follows_mute_changelist") + f"?target__id__exact={obj.pk}"
        return accounts_link(url, Mute.objects.filter(target_id=obj.pk).count())


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
