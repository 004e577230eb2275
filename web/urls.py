from django.urls import path

from web import views

app_name = "web"

# Every path here must be a browser path (BROWSER_PATHS, BROWSER_PATH_PREFIXES): the
# session, CSRF and messages middleware run only there.
urlpatterns = [
    path("", views.timeline, name="timeline"),
    path("timeline/new", views.timeline_new, name="timeline-new"),
    path("timeline/marker", views.timeline_marker, name="timeline-marker"),
    path("signup", views.signup, name="signup"),
    path("signin", views.signin, name="signin"),
    path("signout", views.signout, name="signout"),
    path("settings/blocks", views.blocks, name="blocks"),
    path("settings/mutes", views.mutes, name="mutes"),
    path("@<str:username>", views.profile, name="profile"),
    path("@<str:username>/follow", views.follow, name="follow"),
    path("@<str:username>/unfollow", views.unfollow, name="unfollow"),
    path("@<str:username>/block", views.block, name="block"),
    path("@<str:username>/unblock", views.unblock, name="unblock"),
    path("@<str:username>/mute", views.mute, name="mute"),
    path("@<str:username>/unmute", views.unmute, name="unmute"),
    path("@<str:username>/<id:post_id>/delete", views.post_delete_view, name="post-delete"),
]
