from django.contrib import admin
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.converters import IdConverter
from feeds.views import FeedView, MarkersView, UnreadView
from feedsite.adminlogin import admin_login
from feedsite.health import healthz, metrics_export, readyz
from feedsite.inspector import inspector_view
from follows.views import (
    BlockDeleteView,
    BlockListCreateView,
    FollowCreateView,
    FollowDeleteView,
    MuteDeleteView,
    MuteListCreateView,
    TokenObtainView,
    UserCreateView,
)
from posts.views import PostCreateView, PostDetailView

register_converter(IdConverter, "id")

admin.site.site_header = "feedsite administration"
admin.site.site_title = "feedsite admin"
admin.site.index_title = "Site administration"

urlpatterns = [
    path("users", UserCreateView.as_view(), name="user-create"),
    path("auth/token", TokenObtainView.as_view(), name="token-obtain"),
    path("posts", PostCreateView.as_view(), name="post-create"),
    path("posts/<id:post_id>", PostDetailView.as_view(), name="post-detail"),
    path("follow", FollowCreateView.as_view(), name="follow-create"),
    path("follow/<id:followee_id>", FollowDeleteView.as_view(), name="follow-delete"),
    path("blocks", BlockListCreateView.as_view(), name="block-list"),
    path("blocks/<id:user_id>", BlockDeleteView.as_view(), name="block-delete"),
    path("mutes", MuteListCreateView.as_view(), name="mute-list"),
    path("mutes/<id:user_id>", MuteDeleteView.as_view(), name="mute-delete"),
    path("feeds/<id:user_id>", FeedView.as_view(), name="feed"),
    path("feeds/<id:user_id>/unread", UnreadView.as_view(), name="feed-unread"),
    path("markers", MarkersView.as_view(), name="markers"),
    path("metrics", metrics_export, name="metrics"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Before admin.site.urls, whose own login view it wraps.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/inspect/", admin.site.admin_view(inspector_view), name="admin-inspect"),
    path("admin/", admin.site.urls),
    # The web pages: the timeline at /, profiles at /@name, sign up, in and out.
    path("", include("web.urls")),
]

# JSON, like every other API error, for URLs that match nothing and for crashes.
handler404 = "core.exceptions.not_found"
handler500 = "core.exceptions.server_error"
