"""The admin's feed inspector: why does (or doesn't) a user see a post.

One screen, ``/admin/inspect/?user=<id or name>&post=<id>``, for staff with the
``feeds.inspect_feeds`` permission. For a user: the first pages of their feed as the API
serves them (``feeds.pages.feed_page``, the cached first page included), each entry with
the source a read took it from. For a post: its events in the outbox, whether each was
sent and whether the fan-out group applied it (its partition and offset against the
group's applied offsets), and whether its author is a pulled big account. For both: whether
the user follows the author, whether either blocks the other or the user mutes the author,
whether the user holds a stored entry, and whether paging reaches the post.

Everything here reads through the apps' own selectors; nothing is written, except that a
first page read here is cached, as any API read would.
"""

import datetime
import json
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from consumers.selectors import applied_offsets_of
from core.cursor import cursor_decode
from eventbus.events import FOLLOW_CREATED, FOLLOW_DELETED, POST_CREATED, POST_DELETED
from eventbus.models import OutboxMessage
from eventbus.selectors import outbox_messages_of_events
from feeds import cache
from feeds.models import FeedEntry, PulledAuthor
from feeds.pages import feed_page
from feeds.selectors import EntrySource, feed_entry_sources, feed_reaches_post
from follows.activity import active_since, reader_feed_trusted, reader_state
from follows.models import Block, Follow, Mute
from posts.models import Post

User = get_user_model()

# Feed pages of FEED_PAGE_SIZE posts the inspector reads, from the first.
INSPECTED_PAGES = 3
# Ids beyond bigint cannot exist.
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class InspectedEntry:
    """One post of a feed page as the API served it, and where the read found it."""

    page: int
    position: int
    post_id: int
    author_id: int
    author: str
    content: str
    created_at: str
    source: EntrySource


@dataclass
class FeedInspection:
    user: User
    entries: list[InspectedEntry]
    pages: int
    # Whether a page follows the last one read.
    more: bool
    # Whether Redis held the user's first page when the inspection began.
    cached_first_page: bool
    following: int
    pulled_followees: int
    # When the user was last seen (None: never), whether that makes them active, and
    # whether reads use their stored entries (follows.activity).
    seen_at: datetime.datetime | None
    active: bool
    stored_trusted: bool


@dataclass(frozen=True)
class InspectedEvent:
    """An outbox row, and whether the fan-out group applied its message."""

    message: OutboxMessage
    event_type: str
    # None while the partition and offset are unknown (not sent yet).
    applied: bool | None = None
    # The group's next offset on the message's partition (None: nothing applied there yet).
    group_next_offset: int | None = None


@dataclass
class PostInspection:
    post_id: int
    post: Post | None
    author: User | None
    pulled_since: datetime.datetime | None
    followers: int
    events: list[InspectedEvent]
    # The fan-out writes the author's own entry in the transaction that stores its offset.
    author_entry: bool


@dataclass
class ReaderInspection:
    """One user and one post: follows, blocks and mutes, stored entry, whether reads reach
    it, and why."""

    user: User
    is_author: bool
    follow: Follow | None
    follow_events: list[InspectedEvent]
    # The user blocks the author; the author blocks the user; the user mutes the author.
    blocks: Block | None
    blocked_by: Block | None
    mute: Mute | None
    stored: bool
    reached: bool
    entry: InspectedEntry | None
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)


def _events_inspect(*, event_types: list[str], key: int, payload: dict[str, int]) -> list[InspectedEvent]:
    rows = outbox_messages_of_events(event_types=event_types, key=str(key), payload=payload)
    offsets = {
        topic: applied_offsets_of(group_id=settings.FANOUT_GROUP_ID, topic=topic)
        for topic in {row.topic for row in rows}
    }
    events = []
    for row in rows:
        event_type = dict(row.headers).get("event_type", "")
        if row.sent_partition is None or row.sent_offset is None:
            events.append(InspectedEvent(message=row, event_type=event_type))
            continue
        stored = offsets[row.topic].get(row.sent_partition)
        next_offset = stored.next_offset if stored is not None else None
        applied = next_offset is not None and next_offset > row.sent_offset
        events.append(
            InspectedEvent(message=row, event_type=event_type, applied=applied, group_next_offset=next_offset)
        )
    return events


def feed_inspect(*, user: User, pages: int = INSPECTED_PAGES) -> FeedInspection:
    """The first ``pages`` pages of the user's feed, read as the API reads them."""
    cached, _ = cache.page_lookup(user.pk)
    entries: list[InspectedEntry] = []
    cursor = None
    more = False
    read = 0
    for number in range(1, pages + 1):
        body = feed_page(user_id=user.pk, limit=settings.FEED_PAGE_SIZE, before_post_id=cursor)
        page = json.loads(body)
        read = number
        sources = feed_entry_sources(
            user_id=user.pk, posts=[(p["id"], p["author_id"]) for p in page["results"]]
        )
        for post in page["results"]:
            entries.append(
                InspectedEntry(
                    page=number,
                    position=len(entries) + 1,
                    post_id=post["id"],
                    author_id=post["author_id"],
                    author=post["author"],
                    content=post["content"],
                    created_at=post["created_at"],
                    source=sources[post["id"]],
                )
            )
        more = page["next_cursor"] is not None
        if not more:
            break
        cursor = cursor_decode(page["next_cursor"])
    followees = Follow.objects.filter(follower_id=user.pk).values("followee_id")
    reader = reader_state(user_id=user.pk)
    return FeedInspection(
        user=user,
        entries=entries,
        pages=read,
        more=more,
        cached_first_page=cached is not None,
        following=Follow.objects.filter(follower_id=user.pk).count(),
        pulled_followees=PulledAuthor.objects.filter(user_id__in=followees).count(),
        seen_at=reader.seen_at if reader is not None else None,
        active=reader is not None and reader.seen_at > active_since(),
        stored_trusted=reader_feed_trusted(user_id=user.pk),
    )


def post_inspect(*, post_id: int) -> PostInspection:
    """A post's author and events: sent, applied, pulled. A deleted post's author is
    taken from its events while the outbox keeps them."""
    post = Post.objects.select_related("author").filter(pk=post_id).first()
    author = post.author if post is not None else _author_of_deleted(post_id)
    events = (
        _events_inspect(event_types=[POST_CREATED, POST_DELETED], key=author.pk, payload={"post_id": post_id})
        if author is not None
        else []
    )
    pulled = PulledAuthor.objects.filter(user_id=author.pk).first() if author is not None else None
    return PostInspection(
        post_id=post_id,
        post=post,
        author=author,
        pulled_since=pulled.marked_at if pulled is not None else None,
        followers=Follow.objects.filter(followee_id=author.pk).count() if author is not None else 0,
        events=events,
        author_entry=author is not None
        and FeedEntry.objects.filter(user_id=author.pk, post_id=post_id).exists(),
    )


def _author_of_deleted(post_id: int) -> User | None:
    """The author of a deleted post, from its post.deleted event while the outbox keeps it."""
    for row in OutboxMessage.objects.filter(headers__contains=[["event_type", POST_DELETED]]).order_by("-pk"):
        try:
            payload = json.loads(bytes(row.value))["payload"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(payload, dict) and payload.get("post_id") == post_id:
            return User.objects.filter(pk=payload.get("author_id")).first()
    return None


def reader_inspect(*, user: User, post: PostInspection, feed: FeedInspection) -> ReaderInspection:
    """Whether ``user`` sees the post, with the facts that decide it and a verdict."""
    author = post.author
    is_author = author is not None and author.pk == user.pk
    follow = blocks = blocked_by = mute = None
    follow_events: list[InspectedEvent] = []
    if author is not None and not is_author:
        follow = Follow.objects.filter(follower_id=user.pk, followee_id=author.pk).first()
        blocks = Block.objects.filter(user_id=user.pk, target_id=author.pk).first()
        blocked_by = Block.objects.filter(user_id=author.pk, target_id=user.pk).first()
        mute = Mute.objects.filter(user_id=user.pk, target_id=author.pk).first()
        follow_events = _events_inspect(
            event_types=[FOLLOW_CREATED, FOLLOW_DELETED],
            key=user.pk,
            payload={"follower_id": user.pk, "followee_id": author.pk},
        )
    reader = ReaderInspection(
        user=user,
        is_author=is_author,
        follow=follow,
        follow_events=follow_events,
        blocks=blocks,
        blocked_by=blocked_by,
        mute=mute,
        stored=FeedEntry.objects.filter(user_id=user.pk, post_id=post.post_id).exists(),
        reached=post.post is not None and feed_reaches_post(user_id=user.pk, post_id=post.post_id),
        entry=next((e for e in feed.entries if e.post_id == post.post_id), None),
    )
    reader.verdict, reader.reasons = _verdict(reader, post, feed)
    return reader


def _verdict(reader: ReaderInspection, post: PostInspection, feed: FeedInspection) -> tuple[str, list[str]]:
    name, pid = reader.user.get_username(), post.post_id
    if post.post is None:
        return f"Post {pid} does not exist: it was deleted, or never created.", []
    if reader.reached:
        where = (
            f"on page {reader.entry.page}, position {reader.entry.position} ({reader.entry.source})"
            if reader.entry is not None
            else f"further down than the first {feed.pages} pages"
        )
        return f"{name} sees post {pid}, {where}.", []
    author = post.author.get_username()
    verdict = f"{name} does not see post {pid}."
    # A block or mute keeps the post out whatever the events did, so it is the whole reason.
    reasons = []
    if reader.blocks is not None:
        reasons.append(f"{name} blocks {author}.")
    if reader.blocked_by is not None:
        reasons.append(f"{author} blocks {name}.")
    if reasons and reader.follow is None:
        reasons.append(
            f"{name} does not follow {author}: a block ends the follows between the two and refuses new ones."
        )
    if reader.mute is not None:
        reasons.append(f"{name} mutes {author}.")
    if reasons:
        return verdict, reasons
    if not reader.is_author and reader.follow is None:
        reasons.append(f"{name} does not follow {author}.")
    created = [e for e in post.events if e.event_type == POST_CREATED]
    if created and created[-1].message.sent_at is None:
        reasons.append(
            "The post's event is not sent yet: the relay (run_outbox_relay) publishes unsent rows "
            f"within {settings.OUTBOX_RELAY_INTERVAL_MS} ms while it runs; is it running, and does the "
            "broker answer?"
        )
    elif created and created[-1].applied is False:
        reasons.append(
            "The fan-out worker has not applied the post's event yet: is run_fanout running, and how far "
            "behind is its group?"
        )
    if not feed.active and not reader.is_author:
        seen = f"last seen {feed.seen_at:%Y-%m-%d %H:%M}" if feed.seen_at else "never seen"
        reasons.append(
            f"{name} is not active ({seen}; active means seen within FEED_ACTIVE_SECONDS): fan-out "
            "writes no rows for them. Their next read merges their whole feed at read time."
        )
    pending_follow = [e for e in reader.follow_events if e.event_type == FOLLOW_CREATED and not e.applied]
    if reader.follow is not None and pending_follow:
        reasons.append("The follow's event is not applied yet: its backfill has not copied the posts.")
    if not reasons:
        reasons.append(
            "The events are applied, yet reads do not reach the post: rebuilding the feed (the user "
            'admin\'s "Rebuild feeds") recomputes its stored entries.'
        )
    return verdict, reasons


class InspectForm(forms.Form):
    user = forms.CharField(required=False, max_length=150, help_text="A user id or username.")
    post = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="A post id.")

    def clean_user(self) -> User | None:
        value = self.cleaned_data["user"].strip()
        if not value:
            return None
        if value.isdigit():
            user = User.objects.filter(pk=int(value)).first() if int(value) <= MAX_ID else None
        else:
            user = User.objects.filter(username__iexact=value).first()
        if user is None:
            raise forms.ValidationError(f"No user with the id or username {value!r}.")
        return user


def inspector_view(request: HttpRequest) -> HttpResponse:
    """The inspector page; a bad or unknown user or post id is a 400 with the form's errors."""
    if not request.user.has_perm("feeds.inspect_feeds"):
        raise PermissionDenied
    form = InspectForm(request.GET or None)
    context = {
        **admin.site.each_context(request),
        "title": "Feed inspector",
        "form": form,
        "page_size": settings.FEED_PAGE_SIZE,
        "retention": settings.OUTBOX_RETENTION_SECONDS,
        "group_id": settings.FANOUT_GROUP_ID,
    }
    if not form.is_bound:
        return TemplateResponse(request, "admin/feed_inspector.html", context)
    if not form.is_valid():
        return TemplateResponse(request, "admin/feed_inspector.html", context, status=400)
    user, post_id = form.cleaned_data["user"], form.cleaned_data["post"]
    if user is not None:
        context["feed"] = feed_inspect(user=user)
    if post_id is not None:
        context["post"] = post_inspect(post_id=post_id)
    if user is not None and post_id is not None:
        context["reader"] = reader_inspect(user=user, post=context["post"], feed=context["feed"])
    return TemplateResponse(request, "admin/feed_inspector.html", context)
