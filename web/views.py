"""The web pages: a timeline, profiles, sign up, in and out, server-rendered.

Thin views on the same services and selectors as the API, with its validation
(serializers), its rate limits (the same scopes and keys, so a browser and a script draw
on one allowance) and its cursor. They answer HTML; every bad input is a 4xx page.
"""

import functools
import logging
import math
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.db import IntegrityError
from django.db.utils import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from redis.exceptions import RedisError
from rest_framework.exceptions import ValidationError

from core.cursor import InvalidCursor, cursor_decode, cursor_encode
from core.throttling import (
    STORE_DOWN_RETRY_AFTER,
    AccountLoginLimit,
    ThrottleStoreUnavailable,
    client_ip,
    rate_wait,
)
from feeds.markers import MarkerConflict, marker_get, marker_set
from feeds.serializers import MarkerMoveSerializer, MarkerSerializer
from follows.activity import reader_seen_marked
from follows.models import Block, Follow, Mute
from follows.selectors import (
    follow_counts,
    follow_suggestions,
    profile_standing,
    relations_page,
    user_get_by_username,
)
from follows.serializers import UserCreateSerializer
from follows.services import (
    FollowBlocked,
    FollowError,
    RelationError,
    UnknownUser,
    block_create,
    block_delete,
    follow_create,
    follow_delete,
    mute_create,
    mute_delete,
    user_create,
)
from posts.models import Post
from posts.selectors import post_page_by_author
from posts.serializers import PostCreateSerializer, idempotency_key_parse
from posts.services import (
    NotAuthor,
    PostRequestInProgress,
    PostRequestMismatch,
    post_create_once,
    post_delete,
)
from streams.positions import Position, position_encode
from streams.selectors import stream_start
from web.selectors import timeline_new_count, timeline_page

logger = logging.getLogger(__name__)

User = get_user_model()

# Accounts the "who to follow" list shows.
SUGGESTIONS = 5


class Refused(Exception):
    """A request a rate limit refused (429), or a fail-closed one whose store is down (503)."""

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _rate_take(scope: str, ident: str, *, closed: str | None = None) -> None:
    """Take one request from ``ident``'s allowance in ``scope``, as the API's throttles do;
    raises Refused. While Redis is down a limit lets requests through, unless it fails
    closed: then ``closed`` is the message of the 503."""
    try:
        wait = rate_wait(scope, ident)
    except RedisError:
        if closed is None:
            logger.warning("throttle store unavailable; %s not limited", scope)
            return
        logger.error("throttle store unavailable; %s refused", scope)
        raise Refused(503, closed, STORE_DOWN_RETRY_AFTER) from None
    if wait is not None:
        raise Refused(429, f"Too many attempts; try again in {math.ceil(wait)} seconds.", wait)


def _page(
    request: HttpRequest, template: str, context: dict, *, status: int = 200, retry_after: float | None = None
) -> HttpResponse:
    response = render(request, f"web/{template}", context, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(math.ceil(retry_after))
    return response


def _error(
    request: HttpRequest, status: int, message: str, *, retry_after: float | None = None
) -> HttpResponse:
    return _page(
        request, "error.html", {"status": status, "message": message}, status=status, retry_after=retry_after
    )


def _refused(request: HttpRequest, refused: Refused) -> HttpResponse:
    return _error(request, refused.status, refused.message, retry_after=refused.retry_after)


def _database_outage_is_503(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page whose database is unreachable answers a 503 with Retry-After, as the API
    does, not a 500."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except (OperationalError, InterfaceError):
            logger.warning("database unavailable; %s answered 503", request.path)
            # Neither the user nor the messages are read: both need the database.
            context = {
                "status": 503,
                "message": "Unavailable for a moment; try again shortly.",
                "user": AnonymousUser(),
                "messages": [],
            }
            return _page(request, "error.html", context, status=503, retry_after=1)

    return wrapped


def _next_path(request: HttpRequest, default: str = "/") -> str:
    """The local page to go to next (``next`` in the form or the query), else ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts=None) and target.startswith("/"):
        return target
    return default


def _form_key(request: HttpRequest) -> str | None:
    """The post box's idempotency key, if the form sent a well-formed one."""
    try:
        return idempotency_key_parse(request.POST.get("idempotency_key"))
    except ValidationError:
        return None


def _cursor(request: HttpRequest) -> int | None:
    """The id (of a post, a block or a mute) behind ``?cursor=``; raises InvalidCursor."""
    raw = request.GET.get("cursor")
    if raw is None:
        return None
    if len(raw) > 64:
        raise InvalidCursor("Malformed cursor.")
    return cursor_decode(raw)


def _first_error(errors: dict) -> str:
    for field_errors in errors.values():
        return str(field_errors[0])
    return "Invalid input."


@_database_outage_is_503
@require_http_methods(["GET", "POST"])
def timeline(request: HttpRequest) -> HttpResponse:
    """The signed-in user's feed, newest first, with the post box; POST writes a post."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    reader_seen_marked(user_id=request.user.pk)
    draft, error, status, retry_after = "", None, 200, None
    # Each rendering of the post box carries a key of its own, kept while its draft is shown
    # again: a double click, a resent form or a retry after a timeout stores the post once.
    form_key = uuid.uuid4().hex
    if request.method == "POST":
        draft = request.POST.get("content", "")
        form_key = _form_key(request) or form_key
        serializer = PostCreateSerializer(data={"content": draft})
        try:
            _rate_take("posts", f"user:{request.user.pk}")
        except Refused as refused:
            error, status, retry_after = refused.message, refused.status, refused.retry_after
        else:
            if serializer.is_valid():
                try:
                    post_create_once(
                        author=request.user, content=serializer.validated_data["content"], key=form_key
                    )
                except PostRequestInProgress:
                    # Shown again with its key: sent again, it is stored once, or its first
                    # sending's post is shown.
                    error, status = "This post is still being sent; send it again in a moment.", 409
                    retry_after = 1
                except PostRequestMismatch:
                    form_key = uuid.uuid4().hex
                    error, status = "This form was already sent with other text; send it again.", 409
                else:
                    return redirect("web:timeline")
            else:
                error, status = _first_error(serializer.errors), 400
    try:
        before = _cursor(request)
    except InvalidCursor:
        return _error(request, 400, "This link to older posts is not valid.")
    try:
        _rate_take("feeds", f"user:{request.user.pk}")
    except Refused as refused:
        return _refused(request, refused)
    # Before the page is read: the stream then brings every post written from here on.
    start = stream_start() if before is None else None
    posts, has_more = timeline_page(user_id=request.user.pk, before_post_id=before)
    since = position_encode(_stream_since(start, posts)) if start is not None else ""
    marker = marker_get(user_id=request.user.pk)
    return _page(
        request,
        "timeline.html",
        {
            "posts": posts,
            "older": cursor_encode(posts[-1].pk) if has_more else None,
            "paged": before is not None,
            "newest_id": posts[0].pk if posts and before is None else 0,
            "left_off_before": _left_off_before(posts, marker),
            "marker": marker,
            "suggestions": follow_suggestions(user_id=request.user.pk, limit=SUGGESTIONS),
            "draft": draft,
            "form_key": form_key,
            "error": error,
            "post_max_length": settings.POST_MAX_LENGTH,
            "poll_seconds": settings.WEB_NEW_POSTS_POLL_SECONDS,
            "stream_since": since,
            "stream_port": settings.STREAM_BROWSER_PORT,
        },
        status=status,
        retry_after=retry_after,
    )


def _stream_since(start: Position, posts: list[Post]) -> Position:
    """Where the timeline's stream starts: at the oldest post of the page, if before
    ``start``, for a post that committed before the page was read may not be on it yet
    (the worker copies posts into feeds a moment later). The page's posts the stream sends
    again are known by their ids and not counted."""
    added = [post.added for post in posts if post.added is not None]
    return min(start, Position(min(added), 0)) if added else start


def _left_off_before(posts: list[Post], marker) -> int | None:
    """The post above which the timeline draws "You left off here": the newest one the
    reader had read (at or below the marker) when newer ones come before it on the page."""
    if marker is None:
        return None
    for index, post in enumerate(posts):
        if post.pk <= marker.last_read_id:
            return post.pk if index > 0 else None
    return None


@_database_outage_is_503
@require_POST
def timeline_marker(request: HttpRequest) -> JsonResponse:
    """Move the reader's home marker (POST /markers for the page, with its session): the
    timeline's script sends the newest post scrolled past, with the version it holds."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "Sign in first."}, status=401)
    body = MarkerMoveSerializer(
        data={key: request.POST[key] for key in request.POST if key != "csrfmiddlewaretoken"}
    )
    if not body.is_valid():
        return JsonResponse(body.errors, status=400)
    try:
        marker = marker_set(
            user_id=request.user.pk,
            last_read_id=body.validated_data["last_read_id"],
            version=body.validated_data.get("version"),
        )
    except MarkerConflict as exc:
        current = exc.args[0]
        return JsonResponse(
            {
                "detail": "The marker was moved meanwhile.",
                "home": MarkerSerializer(current).data if current else None,
            },
            status=409,
        )
    return JsonResponse({"home": MarkerSerializer(marker).data})


@_database_outage_is_503
@require_GET
def timeline_new(request: HttpRequest) -> JsonResponse:
    """How many posts reached the user's feed above ``after`` (a post id), up to a page,
    and whether there may be more: the timeline's announcement of new posts polls this."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "Sign in first."}, status=401)
    after = request.GET.get("after", "")
    if not after.isdigit() or len(after) > 18:
        return JsonResponse({"after": ["A post id is required."]}, status=400)
    count, more = timeline_new_count(user_id=request.user.pk, after_post_id=int(after))
    return JsonResponse({"count": count, "more": more})


@_database_outage_is_503
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, "signup.html", {})
    username = request.POST.get("username", "")
    context = {"username": username}
    try:
        _rate_take("signup", f"ip:{client_ip(request)}")
    except Refused as refused:
        return _page(
            request,
            "signup.html",
            {**context, "error": refused.message},
            status=refused.status,
            retry_after=refused.retry_after,
        )
    serializer = UserCreateSerializer(
        data={"username": username, "password": request.POST.get("password", "")}
    )
    if not serializer.is_valid():
        return _page(request, "signup.html", {**context, "errors": serializer.errors}, status=400)
    try:
        user, _ = user_create(**serializer.validated_data)
    except IntegrityError:
        errors = {"username": ["A user with that username already exists."]}
        return _page(request, "signup.html", {**context, "errors": errors}, status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    name = user.get_username()
    messages.success(request, f"Welcome, @{name}. Follow a few accounts to fill your timeline.")
    return redirect("web:timeline")


@_database_outage_is_503
@require_http_methods(["GET", "POST"])
def signin(request: HttpRequest) -> HttpResponse:
    """Sign in with a password, behind the token endpoint's limits: per address
    (``token``, fail closed) and per account (``account_login``, shared with the API and
    the admin; a right password gives its attempt back)."""
    context = {"next": _next_path(request, "")}
    if request.method == "GET":
        return _page(request, "signin.html", context)
    username, password = request.POST.get("username", ""), request.POST.get("password", "")
    context["username"] = username
    if not username or not password:
        return _page(
            request, "signin.html", {**context, "error": "Enter a username and a password."}, status=400
        )
    account = AccountLoginLimit(username)
    unavailable = "Signing in is unavailable for a moment; try again shortly."
    try:
        _rate_take("token", f"ip:{client_ip(request)}", closed=unavailable)
        wait = account.check()
    except Refused as refused:
        return _page(
            request,
            "signin.html",
            {**context, "error": refused.message},
            status=refused.status,
            retry_after=refused.retry_after,
        )
    except ThrottleStoreUnavailable:
        return _page(
            request,
            "signin.html",
            {**context, "error": unavailable},
            status=503,
            retry_after=STORE_DOWN_RETRY_AFTER,
        )
    if wait is not None:
        message = f"Too many attempts; try again in {math.ceil(wait)} seconds."
        return _page(request, "signin.html", {**context, "error": message}, status=429, retry_after=wait)
    user = authenticate(request, username=username, password=password)
    if user is None:
        message = "Unable to sign in with these credentials."
        return _page(request, "signin.html", {**context, "error": message}, status=400)
    account.succeeded()
    login(request, user)
    reader_seen_marked(user_id=user.pk)
    return redirect(_next_path(request))


@_database_outage_is_503
@require_POST
def signout(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("web:signin")


@_database_outage_is_503
@require_GET
def profile(request: HttpRequest, username: str) -> HttpResponse:
    """A user's posts, newest first, their follower and following counts, and for another
    signed-in user Follow, Mute and Block buttons (or their undoing). Where a block stands
    between the two, either way, neither posts nor a Follow button are shown."""
    try:
        user = user_get_by_username(username=username)
    except User.DoesNotExist:
        return _error(request, 404, f"There is no account @{username}.")
    try:
        before = _cursor(request)
    except InvalidCursor:
        return _error(request, 400, "This link to older posts is not valid.")
    viewer = request.user
    is_self = viewer.is_authenticated and viewer.pk == user.pk
    standing = None
    if viewer.is_authenticated and not is_self:
        standing = profile_standing(viewer_id=viewer.pk, user_id=user.pk)
    if standing is not None and standing.separated:
        posts, has_more = [], False
    else:
        posts, has_more = post_page_by_author(
            author_id=user.pk, limit=settings.FEED_PAGE_SIZE, before_post_id=before
        )
    followers, following = follow_counts(user_id=user.pk)
    return _page(
        request,
        "profile.html",
        {
            "profile": user,
            "posts": posts,
            "older": cursor_encode(posts[-1].pk) if has_more else None,
            "paged": before is not None,
            "followers": followers,
            "following": following,
            "is_self": is_self,
            "standing": standing,
        },
    )


def _signed_in_user_named(request: HttpRequest, username: str):
    """(The account named ``username``, None) or (None, the response to give instead)."""
    if not request.user.is_authenticated:
        return None, redirect_to_login(f"/@{username}")
    try:
        return user_get_by_username(username=username), None
    except User.DoesNotExist:
        return None, _error(request, 404, f"There is no account @{username}.")


@_database_outage_is_503
@require_POST
def follow(request: HttpRequest, username: str) -> HttpResponse:
    followee, response = _signed_in_user_named(request, username)
    if response is not None:
        return response
    try:
        _rate_take("follow", f"user:{request.user.pk}")
        follow_create(follower=request.user, followee_id=followee.pk)
    except Refused as refused:
        return _refused(request, refused)
    except FollowBlocked as exc:
        return _error(request, 403, str(exc))
    except FollowError as exc:
        return _error(request, 400, str(exc))
    except UnknownUser:
        return _error(request, 404, f"There is no account @{username}.")
    messages.success(request, f"You follow @{followee.get_username()}; their posts will be on your timeline.")
    return redirect(_next_path(request, f"/@{followee.get_username()}"))


@_database_outage_is_503
@require_POST
def unfollow(request: HttpRequest, username: str) -> HttpResponse:
    followee, response = _signed_in_user_named(request, username)
    if response is not None:
        return response
    try:
        follow_delete(follower=request.user, followee_id=followee.pk)
    except Follow.DoesNotExist:
        messages.info(request, f"You did not follow @{followee.get_username()}.")
    else:
        messages.success(request, f"You no longer follow @{followee.get_username()}.")
    return redirect(_next_path(request, f"/@{followee.get_username()}"))


@_database_outage_is_503
@require_http_methods(["GET", "POST"])
def block(request: HttpRequest, username: str) -> HttpResponse:
    """GET asks whether to block the account, saying what a block does; POST blocks it."""
    target, response = _signed_in_user_named(request, username)
    if response is not None:
        return response
    name = target.get_username()
    back = _next_path(request, f"/@{name}")
    if request.method == "GET":
        if target.pk == request.user.pk:
            return _error(request, 400, "You cannot block yourself.")
        return _page(request, "block.html", {"profile": target, "next": back})
    return _relation_add(
        request,
        target,
        scope="block",
        create=block_create,
        done="You block @{}: neither of you sees the other's posts, and they cannot follow you.",
        already="You already block @{}.",
    )


@_database_outage_is_503
@require_POST
def unblock(request: HttpRequest, username: str) -> HttpResponse:
    return _relation_remove(
        request,
        username,
        remove=block_delete,
        missing=Block.DoesNotExist,
        done="You no longer block @{}. The follows the block ended stay ended.",
        absent="You did not block @{}.",
    )


@_database_outage_is_503
@require_POST
def mute(request: HttpRequest, username: str) -> HttpResponse:
    target, response = _signed_in_user_named(request, username)
    if response is not None:
        return response
    return _relation_add(
        request,
        target,
        scope="mute",
        create=mute_create,
        done="You mute @{}: their posts leave your timeline. They are not told.",
        already="You already mute @{}.",
    )


@_database_outage_is_503
@require_POST
def unmute(request: HttpRequest, username: str) -> HttpResponse:
    return _relation_remove(
        request,
        username,
        remove=mute_delete,
        missing=Mute.DoesNotExist,
        done="You no longer mute @{}; their posts are back on your timeline.",
        absent="You did not mute @{}.",
    )


def _relation_add(request: HttpRequest, target, *, scope: str, create: Callable, done: str, already: str):
    """Block or mute ``target`` under the rate limit of ``scope``, then back to the page
    the form came from; the messages are formatted with the target's name."""
    name = target.get_username()
    try:
        _rate_take(scope, f"user:{request.user.pk}")
        _, created = create(user=request.user, target_id=target.pk)
    except Refused as refused:
        return _refused(request, refused)
    except RelationError as exc:
        return _error(request, 400, str(exc))
    except UnknownUser:
        return _error(request, 404, f"There is no account @{name}.")
    (messages.success if created else messages.info)(request, (done if created else already).format(name))
    return redirect(_next_path(request, f"/@{name}"))


def _relation_remove(
    request: HttpRequest, username: str, *, remove: Callable, missing: type[Exception], done: str, absent: str
):
    """Unblock or unmute the account named ``username``, then back to the page the form
    came from."""
    target, response = _signed_in_user_named(request, username)
    if response is not None:
        return response
    name = target.get_username()
    try:
        remove(user=request.user, target_id=target.pk)
    except missing:
        messages.info(request, absent.format(name))
    else:
        messages.success(request, done.format(name))
    return redirect(_next_path(request, f"/@{name}"))


# What the lists of blocks and mutes say of each: (noun, past participle, undo, what it does).
RELATION_LISTS = {
    Block: (
        "block",
        "blocked",
        "unblock",
        "Neither of you sees the other's posts, and they cannot follow you.",
    ),
    Mute: (
        "mute",
        "muted",
        "unmute",
        "Their posts stay out of your timeline; any follow stays, and they are not told.",
    ),
}


def _relation_list(request: HttpRequest, model: type[Block | Mute]) -> HttpResponse:
    """The accounts the signed-in user blocks (or mutes), newest first, paged by the API's
    cursor, each with a button that undoes it and comes back here."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    noun, done, undo, effect = RELATION_LISTS[model]
    try:
        before = _cursor(request)
    except InvalidCursor:
        return _error(request, 400, f"This link to older {noun}s is not valid.")
    relations, more = relations_page(
        model, user_id=request.user.pk, limit=settings.FEED_PAGE_SIZE, before_id=before
    )
    return _page(
        request,
        "relations.html",
        {
            "relations": relations,
            "older": cursor_encode(relations[-1].pk) if more else None,
            "paged": before is not None,
            "page_path": request.path,
            "noun": noun,
            "done": done,
            "undo": undo,
            "effect": effect,
        },
    )


@_database_outage_is_503
@require_GET
def blocks(request: HttpRequest) -> HttpResponse:
    return _relation_list(request, Block)


@_database_outage_is_503
@require_GET
def mutes(request: HttpRequest) -> HttpResponse:
    return _relation_list(request, Mute)


@_database_outage_is_503
@require_POST
def post_delete_view(request: HttpRequest, username: str, post_id: int) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(f"/@{username}")
    try:
        post_delete(post_id=post_id, actor=request.user)
    except Post.DoesNotExist:
        return _error(request, 404, "There is no such post.")
    except NotAuthor:
        return _error(request, 403, "You can only delete your own posts.")
    messages.success(request, "Your post was deleted.")
    return redirect(_next_path(request))
