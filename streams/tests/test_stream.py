"""GET /feeds/{id}/stream against the real stream process (uvicorn), PostgreSQL and Redis:
live delivery, resume, the ends of a stream and its limits."""

import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feeds.models import PulledAuthor
from follows.activity import reader_seen_marked
from follows.models import Follow, Mute
from posts.models import Post
from posts.serializers import post_json
from posts.services import post_create, post_delete
from streams.positions import Position, position_decode, position_encode
from streams.selectors import stream_horizon
from streams.tests.sse import Ended, Sse, stream_process
from tests.helpers import restart_redis, stop_process, wait_for

pytestmark = [pytest.mark.drill, pytest.mark.django_db(transaction=True)]

User = get_user_model()


@pytest.fixture(scope="module")
def stream_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """One stream process for the module's tests (a returning client is sent 5 posts at most)."""
    base, process = stream_process(tmp_path_factory.mktemp("stream") / "stream.log", STREAM_REPLAY_LIMIT="5")
    yield base
    stop_process(process)


def _token(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def _open(base: str, user, *, last: str | None = None, **headers: str) -> Sse:
    if user is not None:
        headers.setdefault("Authorization", f"Token {_token(user)}")
    if last is not None:
        headers["Last-Event-ID"] = last
    path = headers.pop("path", None) or f"/feeds/{user.pk}/stream"
    stream = Sse(base, path, headers)
    assert stream.status == 200, (stream.status, stream.response.read())
    return stream


def _author_and_reader(make_user):
    """Two new users, the second following the first."""
    author, reader = make_user(), make_user()
    Follow.objects.create(follower=reader, followee=author)
    return author, reader


def _posts(stream: Sse, count: int, timeout: float = 10.0) -> list[int]:
    """The ids of the next ``count`` post events."""
    ids = []
    while len(ids) < count:
        event = stream.next(timeout=timeout)
        assert event.event == "post", event
        ids.append(event.data["id"])
    return ids


def test_a_post_reaches_its_readers_streams_as_the_feed_shows_it(stream_server, make_user):
    author, reader, stranger = make_user(), make_user(), make_user()
    Follow.objects.create(follower=reader, followee=author)
    reader_stream, author_stream, stranger_stream = (
        _open(stream_server, reader),
        _open(stream_server, author),
        _open(stream_server, stranger),
    )
    assert reader_stream.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    post = post_create(author=author, content="live")
    event = reader_stream.next()
    # The post as the feed gives it, once the worker copied it; here it is merged from the posts.
    assert event.event == "post"
    assert event.data == post_json(Post.objects.get(pk=post.pk))
    assert position_decode(event.id) == Position(Post.objects.get(pk=post.pk).added, post.pk)
    assert author_stream.next().data["id"] == post.pk  # the author's own feed has it too
    mine = post_create(author=stranger, content="only mine")
    assert stranger_stream.next().data["id"] == mine.pk  # the first event: not the author's post
    for stream in (reader_stream, author_stream, stranger_stream):
        stream.close()


def test_big_accounts_count_and_muted_authors_do_not(stream_server, make_user):
    big, muted, reader = make_user(), make_user(), make_user()
    PulledAuthor.objects.create(user=big)  # merged at read time, never fanned out
    Follow.objects.create(follower=reader, followee=big)
    Follow.objects.create(follower=reader, followee=muted)
    Mute.objects.create(user=reader, target=muted)
    stream = _open(stream_server, reader)
    post_create(author=muted, content="hidden")
    shown = post_create(author=big, content="from a big account")
    assert _posts(stream, 1) == [shown.pk]
    stream.close()


def test_a_deleted_post_is_announced_with_its_id(stream_server, make_user):
    author, reader = _author_and_reader(make_user)
    stream = _open(stream_server, reader)
    post = post_create(author=author, content="soon gone")
    first = stream.next()
    post_delete(post_id=post.pk, actor=author)
    event = stream.next()
    assert (event.event, event.data) == ("delete", {"id": post.pk})
    assert event.id == first.id  # a delete does not move the position
    stream.close()


def test_posts_come_in_commit_order_and_a_returning_client_gets_each_once(stream_server, make_user):
    """A transaction that began first holds back the posts of later ones until it ends, so
    a client that received the first is owed exactly the rest, whatever their ids."""
    author, reader = _author_and_reader(make_user)
    stream = _open(stream_server, reader)
    started, release, done = threading.Event(), threading.Event(), threading.Event()
    held: list[int] = []

    def slow_post() -> None:
        try:
            from django.db import transaction

            with transaction.atomic():
                # The transaction takes its id now, before the other post is written.
                from django.db import connection

                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_current_xact_id()")
                started.set()
                assert release.wait(30)
                held.append(post_create(author=author, content="began first").pk)
        finally:
            connections.close_all()
            done.set()

    thread = threading.Thread(target=slow_post)
    thread.start()
    assert started.wait(10)
    later = post_create(author=author, content="committed first")
    release.set()
    assert done.wait(30)
    thread.join(10)
    # The post that committed first has the lower id, and comes second.
    assert later.pk < held[0]
    first = stream.next()
    assert first.data["id"] == held[0]
    stream.close()
    returning = _open(stream_server, reader, last=first.id)
    assert _posts(returning, 1) == [later.pk]
    again = post_create(author=author, content="live again")
    assert _posts(returning, 1) == [again.pk]
    returning.close()


def test_a_dropped_stream_resumes_with_nothing_lost_or_twice(stream_server, make_user):
    author, reader = _author_and_reader(make_user)
    stream = _open(stream_server, reader)
    seen = [post_create(author=author, content="one").pk]
    assert _posts(stream, 1) == seen
    last = stream.last_id
    stream.close()
    missed = [post_create(author=author, content=f"while away {n}").pk for n in range(3)]
    returning = _open(stream_server, reader, last=last)
    assert _posts(returning, 3) == missed
    live = post_create(author=author, content="live")
    assert _posts(returning, 1) == [live.pk]
    returning.close()


def test_a_position_too_old_or_unknown_gets_a_reset(stream_server, make_user):
    author, reader = _author_and_reader(make_user)
    stream = _open(stream_server, reader)
    post_create(author=author, content="one")
    last = stream.next().id
    stream.close()
    for n in range(6):  # the module's process replays 5 at most
        post_create(author=author, content=f"many {n}")
    returning = _open(stream_server, reader, last=last)
    event = returning.next()
    assert (event.event, event.data) == ("reset", {"reason": "too_old"})
    live = post_create(author=author, content="after the reset")
    assert _posts(returning, 1) == [live.pk]
    returning.close()
    unknown = _open(stream_server, reader, last=position_encode(Position(10**17, 1)))
    assert unknown.next().data == {"reason": "unknown_position"}
    unknown.close()


def test_a_position_the_database_has_not_passed_yet_is_not_reset(stream_server, make_user):
    """On a quiet database every transaction has ended: the oldest running one is the
    next to begin, and a page rendered then starts its stream there."""
    author, reader = _author_and_reader(make_user)
    # Made and marked seen now, as a page's render does: nothing writes between the horizon
    # and the stream's open.
    _token(reader)
    reader_seen_marked(user_id=reader.pk)
    quiet = stream_horizon()
    stream = _open(stream_server, reader, last=position_encode(Position(quiet.high, 0)))
    post = post_create(author=author, content="the next")
    event = stream.next()
    assert (event.event, event.data["id"]) == ("post", post.pk)
    stream.close()


def test_a_stream_resumes_across_a_restart_of_the_stream_process(make_user, tmp_path):
    author, reader = _author_and_reader(make_user)
    base, process = stream_process(tmp_path / "first.log")
    try:
        stream = _open(base, reader)
        post_create(author=author, content="before")
        last = stream.next().id
    finally:
        stop_process(process)
    with pytest.raises(Ended):
        stream.next(timeout=10)
    missed = [post_create(author=author, content=f"while down {n}").pk for n in range(2)]
    base, process = stream_process(tmp_path / "second.log")
    try:
        returning = _open(base, reader, last=last)
        assert _posts(returning, 2) == missed
        live = post_create(author=author, content="after")
        assert _posts(returning, 1) == [live.pk]
        returning.close()
    finally:
        stop_process(process)


def test_streams_deliver_and_resume_across_a_redis_restart(stream_server, make_user):
    author, reader = _author_and_reader(make_user)
    stream = _open(stream_server, reader)
    post_create(author=author, content="before")
    last = stream.next().id
    restart_redis()
    # Announced to nobody (the subscription was cut) or to the new one: delivered either way.
    during = post_create(author=author, content="just after the restart")
    assert _posts(stream, 1) == [during.pk]
    stream.close()
    missed = post_create(author=author, content="while away")
    returning = _open(stream_server, reader, last=last)
    assert _posts(returning, 2) == [during.pk, missed.pk]
    live = post_create(author=author, content="live")
    assert _posts(returning, 1, timeout=10) == [live.pk]
    returning.close()


def _ends_within_two_seconds(stream: Sse) -> None:
    started = time.monotonic()
    assert stream.ended_within(5), "the stream did not end"
    assert time.monotonic() - started < 2.0


def test_deleting_the_token_ends_its_streams(stream_server, make_user):
    reader = make_user()
    stream = _open(stream_server, reader)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {_token(reader)}")
    assert api.delete("/auth/token").status_code == 204
    _ends_within_two_seconds(stream)
    refused = Sse(stream_server, f"/feeds/{reader.pk}/stream", {"Authorization": f"Token {_token(reader)}x"})
    assert refused.status == 401


def test_deactivating_the_user_ends_their_streams(stream_server, make_user):
    reader = make_user()
    stream = _open(stream_server, reader)
    reader.is_active = False
    reader.save()
    _ends_within_two_seconds(stream)


def test_a_password_change_ends_token_and_session_streams(stream_server, make_user):
    reader = make_user()
    browser = Client()
    assert browser.login(username=reader.username, password="pw-Secret-123")
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    by_session = _open(stream_server, None, path=f"/feeds/{reader.pk}/stream", Cookie=cookie)
    by_token = _open(stream_server, reader)
    user = User.objects.get(pk=reader.pk)
    user.set_password("another-Secret-456")
    user.save()
    _ends_within_two_seconds(by_session)
    _ends_within_two_seconds(by_token)
    assert Sse(stream_server, f"/feeds/{reader.pk}/stream", {"Cookie": cookie}).status == 401


def test_losing_staff_ends_the_streams_of_other_users_feeds(stream_server, make_user):
    staff, reader = make_user(is_staff=True), make_user()
    watched = _open(stream_server, staff, path=f"/feeds/{reader.pk}/stream")
    own = _open(stream_server, staff)
    staff.is_staff = False
    staff.save()
    _ends_within_two_seconds(watched)
    post = post_create(author=staff, content="still mine")
    assert _posts(own, 1) == [post.pk]
    own.close()


def test_an_unreadable_cookie_does_not_hide_the_session(stream_server, make_user):
    reader = make_user()
    browser = Client()
    assert browser.login(username=reader.username, password="pw-Secret-123")
    session = browser.cookies["sessionid"].value
    stream = _open(
        stream_server, None, path=f"/feeds/{reader.pk}/stream", Cookie=f'prefs={{"a":1}}; sessionid={session}'
    )
    stream.close()


def test_signing_out_ends_the_session_stream(stream_server, make_user):
    reader = make_user()
    browser = Client()
    assert browser.login(username=reader.username, password="pw-Secret-123")
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    stream = _open(stream_server, None, path=f"/feeds/{reader.pk}/stream", Cookie=cookie)
    browser.logout()
    _ends_within_two_seconds(stream)


def test_a_user_may_hold_four_streams_and_is_told_when_to_retry(stream_server, make_user):
    reader = make_user()
    streams = [_open(stream_server, reader) for _ in range(4)]
    refused = Sse(stream_server, f"/feeds/{reader.pk}/stream", {"Authorization": f"Token {_token(reader)}"})
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.body() == {"detail": "Too many open streams for this user."}
    streams.pop().close()

    def reopened() -> Sse | None:
        again = Sse(stream_server, f"/feeds/{reader.pk}/stream", {"Authorization": f"Token {_token(reader)}"})
        return again if again.status == 200 else None

    streams.append(wait_for(reopened, timeout=10, what="a slot freed by the closed stream"))
    for stream in streams:
        stream.close()


def test_a_client_address_may_hold_a_bounded_number_of_streams(make_user, tmp_path):
    base, process = stream_process(tmp_path / "stream.log", STREAM_MAX_PER_ADDRESS="2")
    try:
        first, second = _open(base, make_user()), _open(base, make_user())
        other = make_user()
        refused = Sse(base, f"/feeds/{other.pk}/stream", {"Authorization": f"Token {_token(other)}"})
        assert refused.status == 429
        assert refused.body() == {"detail": "Too many open streams from this address."}
        assert int(refused.headers["Retry-After"]) > 0
        first.close()
        second.close()
    finally:
        stop_process(process)


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ({}, "/feeds/{me}/stream", 401),
        ({}, "/feeds/{me}/stream?access_token={token}", 400),
        ({"Authorization": "Token nope"}, "/feeds/{me}/stream", 401),
        ({"Authorization": "Bearer {token}"}, "/feeds/{me}/stream", 401),
        ({"Authorization": "Token {token}"}, "/feeds/{other}/stream", 403),
        ({"Authorization": "Token {token}"}, "/feeds/0/stream", 404),
        ({"Authorization": "Token {token}"}, "/feeds/{me}/stream?since=bogus", 400),
        ({"Authorization": "Token {token}", "Last-Event-ID": "czE6"}, "/feeds/{me}/stream", 400),
        ({"Authorization": "Token {token}", "Origin": "http://elsewhere.example"}, "/feeds/{me}/stream", 403),
        ({"Authorization": "Token {token}"}, "/feeds/{me}/other", 404),
        ({"Cookie": 'sessionid="\\000aaaaaaaaaa"'}, "/feeds/{me}/stream", 401),
        ({"Authorization": "Token \\000abc"}, "/feeds/{me}/stream", 401),
    ],
)
def test_bad_requests_get_a_clear_4xx(stream_server, make_user, headers, path, status):
    me, other = make_user(), make_user()
    values = {"me": me.pk, "other": other.pk, "token": _token(me)}
    answer = Sse(stream_server, path.format(**values), {k: v.format(**values) for k, v in headers.items()})
    assert answer.status == status
    assert "detail" in answer.body() or status == 400


def test_an_allowed_origin_reads_with_credentials_and_staff_read_any_feed(stream_server, make_user):
    staff, reader = make_user(is_staff=True), make_user()
    # The suite's process allows none: the page's own origin needs no CORS headers.
    same = _open(stream_server, reader, Origin=stream_server)
    assert "Access-Control-Allow-Origin" not in same.headers
    same.close()
    watched = _open(stream_server, staff, path=f"/feeds/{reader.pk}/stream")
    post = post_create(author=reader, content="seen by staff")
    assert _posts(watched, 1) == [post.pk]
    watched.close()
    missing = Sse(stream_server, "/feeds/999999999/stream", {"Authorization": f"Token {_token(staff)}"})
    assert missing.status == 404
