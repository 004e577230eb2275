"""The web pages through Django's test client: no JavaScript, sessions and CSRF as a
browser has them."""

import re

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from core.cursor import cursor_encode
from feeds.models import FeedEntry
from follows.models import Block, Follow, Mute
from posts.models import Post
from posts.services import POST_REQUEST_LOCK_CLASS
from streams.positions import Position
from tests.helpers import free_port

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "pw-Secret-123"
JSON = "application/json"


@pytest.fixture
def signed_in(make_user):
    """A client signed in as a new user: (client, user)."""

    def make(username: str | None = None, *, csrf: bool = False):
        user = make_user(username)
        client = Client(enforce_csrf_checks=csrf)
        client.force_login(user)
        return client, user

    return make


def csrf_token(client: Client, path: str = "/") -> str:
    html = client.get(path).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def test_every_page_answers_without_javascript(signed_in, make_user):
    make_user("bob")
    anonymous = Client()
    client, _ = signed_in("ada")

    pages = {
        "/signup": anonymous.get("/signup"),
        "/signin": anonymous.get("/signin"),
        "/@bob (anonymous)": anonymous.get("/@bob"),
        "/": client.get("/"),
        "/@ada": client.get("/@ada"),
        "/@bob": client.get("/@bob"),
        "/@bob/block": client.get("/@bob/block"),
        "/settings/blocks": client.get("/settings/blocks"),
        "/settings/mutes": client.get("/settings/mutes"),
    }

    for name, response in pages.items():
        assert response.status_code == 200, name
        html = response.content.decode()
        assert html.startswith("<!doctype html>"), name
        assert '<html lang="en">' in html, name
        # Nothing is loaded from elsewhere: the page works offline.
        assert not re.search(r'(src|href)="(https?:)?//', html), name


def test_anonymous_timeline_sends_to_sign_in():
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == "/signin?next=/"


def test_every_form_field_has_a_label(signed_in):
    client, _ = signed_in("ada")

    for path in ("/", "/signin", "/signup"):
        html = (client if path == "/" else Client()).get(path).content.decode()
        ids = re.findall(r'<(?:input|textarea)[^>]*\sid="([^"]+)"', html)
        fields = re.findall(r'<(?:input|textarea)(?![^>]*type="hidden")[^>]*>', html)
        assert fields, path
        assert len(ids) == len(fields), path
        for field_id in ids:
            assert f'<label for="{field_id}"' in html, (path, field_id)


def test_sign_up_creates_the_account_and_signs_in():
    client = Client(enforce_csrf_checks=True)
    token = csrf_token(client, "/signup")

    response = client.post(
        "/signup", {"username": "ada", "password": "a-long-passphrase", "csrfmiddlewaretoken": token}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert User.objects.filter(username="ada").exists()
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": "ada", "password": "short"}, "This password is too short"),
        ({"username": "taken", "password": "a-long-passphrase"}, "A user with that username already exists."),
        ({"username": "TAKEN", "password": "a-long-passphrase"}, "A user with that username already exists."),
        ({"username": "", "password": "a-long-passphrase"}, "This field may not be blank."),
        ({"username": "a b", "password": "a-long-passphrase"}, "Enter a valid username"),
    ],
)
def test_sign_up_refuses_bad_input_with_a_400_that_says_why(make_user, data, message):
    make_user("taken")

    response = Client().post("/signup", data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert User.objects.count() == 1


def test_sign_in_and_out(make_user):
    make_user("ada")
    client = Client(enforce_csrf_checks=True)
    token = csrf_token(client, "/signin")

    response = client.post(
        "/signin?next=/@ada", {"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert response["Location"] == "/@ada"
    token = csrf_token(client, "/")

    response = client.post("/signout", {"csrfmiddlewaretoken": token})

    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_sign_in_goes_only_to_a_local_next(make_user):
    make_user("ada")

    response = Client().post("/signin?next=https://evil.example/", {"username": "ada", "password": PASSWORD})

    assert response["Location"] == "/"


def test_a_wrong_password_is_a_400(make_user):
    make_user("ada")

    response = Client().post("/signin", {"username": "ada", "password": "wrong"})

    assert response.status_code == 400
    assert "Unable to sign in with these credentials." in response.content.decode()


def test_a_form_without_its_csrf_token_is_refused(make_user):
    make_user("ada")

    response = Client(enforce_csrf_checks=True).post("/signin", {"username": "ada", "password": PASSWORD})

    assert response.status_code == 403


def test_sign_in_draws_on_the_token_endpoints_allowances(make_user, settings):
    """Per address (token) and per account (account_login), shared with POST /auth/token."""
    make_user("ada")
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "token": "2/hour"}
    credentials = {"username": "ada", "password": PASSWORD}
    api = Client()
    assert api.post("/auth/token", credentials, content_type=JSON).status_code == 200

    web = Client()
    assert web.post("/signin", {"username": "ada", "password": PASSWORD}).status_code == 302
    refused = Client().post("/signin", {"username": "ada", "password": PASSWORD})

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert "Too many attempts" in refused.content.decode()
    assert api.post("/auth/token", credentials, content_type=JSON).status_code == 429


def test_wrong_passwords_use_up_the_accounts_allowance_shared_with_the_api(make_user, settings):
    make_user("ada")
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "account_login": "2/hour"}

    for _ in range(2):
        assert Client().post("/signin", {"username": "ada", "password": "wrong"}).status_code == 400

    assert Client().post("/signin", {"username": "ada", "password": PASSWORD}).status_code == 429
    credentials = {"username": "ada", "password": PASSWORD}
    assert Client().post("/auth/token", credentials, content_type=JSON).status_code == 429


def test_sign_up_draws_on_the_signup_allowance_shared_with_the_api(settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "signup": "1/hour"}
    signup = {"username": "ada", "password": "a-long-passphrase"}
    assert Client().post("/users", signup, content_type=JSON).status_code == 201

    refused = Client().post("/signup", {"username": "bob", "password": "a-long-passphrase"})

    assert refused.status_code == 429
    assert not User.objects.filter(username="bob").exists()


def test_a_new_post_is_at_the_top_of_the_own_timeline_at_once(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    Follow.objects.create(follower=ada, followee=bob)
    older = Post.objects.create(author=bob, content="from bob")
    FeedEntry.objects.create(user_id=ada.pk, post_id=older.pk)

    response = client.post("/", {"content": "hello from the web"})

    assert response.status_code == 302
    assert response["Location"] == "/"
    html = client.get("/").content.decode()
    assert html.index("hello from the web") < html.index("from bob")


@pytest.mark.parametrize(("content", "status"), [("", 400), (" ", 400), ("x" * 501, 400), ("x" * 500, 302)])
def test_the_post_box_keeps_the_apis_rules(signed_in, content, status):
    client, ada = signed_in("ada")

    response = client.post("/", {"content": content})

    assert response.status_code == status
    assert Post.objects.filter(author=ada).count() == (1 if status == 302 else 0)


def form_key(html: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1)


def test_a_form_sent_twice_stores_its_post_once(signed_in):
    client, ada = signed_in("ada")
    key = form_key(client.get("/").content.decode())

    first = client.post("/", {"content": "hello", "idempotency_key": key})
    again = client.post("/", {"content": "hello", "idempotency_key": key})

    assert (first.status_code, again.status_code) == (302, 302)
    assert Post.objects.filter(author=ada).count() == 1


def test_each_post_box_has_a_key_of_its_own_and_a_refused_draft_keeps_it(signed_in):
    client, ada = signed_in("ada")
    keys = {form_key(client.get("/").content.decode()) for _ in range(3)}
    key = keys.pop()

    refused = client.post("/", {"content": "x" * 501, "idempotency_key": key})

    assert len(keys) == 2
    assert key not in keys
    assert form_key(refused.content.decode()) == key, "the draft shown again is the same post"
    assert not Post.objects.filter(author=ada).exists()


def test_a_form_sent_again_while_the_first_is_saved_keeps_the_draft_and_its_key(signed_in):
    client, ada = signed_in("ada")
    # What the first submission holds while it is being saved: the key's advisory lock.
    with psycopg.connect(**connection.get_connection_params()) as first:
        first.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [POST_REQUEST_LOCK_CLASS, f"{ada.pk}:k1"]
        )
        response = client.post("/", {"content": "hello", "idempotency_key": "k1"})
    html = response.content.decode()
    # The first sending never committed (its lock is gone): sent again, the draft is stored.
    again = client.post("/", {"content": "hello", "idempotency_key": form_key(html)})

    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert "still being sent" in html
    assert ">hello</textarea>" in html
    assert form_key(html) == "k1"
    assert again.status_code == 302
    assert Post.objects.filter(author=ada).count() == 1


def test_a_key_sent_again_with_other_text_is_refused_with_a_new_key(signed_in):
    client, ada = signed_in("ada")
    client.post("/", {"content": "hello", "idempotency_key": "k1"})

    response = client.post("/", {"content": "edited", "idempotency_key": "k1"})

    assert response.status_code == 409
    assert "already sent with other text" in response.content.decode()
    assert form_key(response.content.decode()) != "k1"
    assert list(Post.objects.filter(author=ada).values_list("content", flat=True)) == ["hello"]


def test_the_post_box_shows_the_limit(signed_in):
    client, _ = signed_in("ada")

    html = client.get("/").content.decode()

    assert 'maxlength="500"' in html
    assert "500 characters" in html


def test_post_content_is_shown_as_text_never_as_html(signed_in):
    client, _ = signed_in("ada")

    client.post("/", {"content": "<script>alert(1)</script>"})

    for path in ("/", "/@ada"):
        html = client.get(path).content.decode()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script>alert(1)</script>" not in html


def test_the_timeline_pages_by_the_apis_cursor(signed_in, settings):
    settings.FEED_PAGE_SIZE = 3
    client, ada = signed_in("ada")
    posts = [Post.objects.create(author=ada, content=f"post number {i}") for i in range(5)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])

    first = client.get("/").content.decode()
    cursor = cursor_encode(posts[2].pk)
    assert f'href="/?cursor={cursor}"' in first
    second = client.get(f"/?cursor={cursor}").content.decode()

    assert [f"post number {i}" in first for i in range(5)] == [False, False, True, True, True]
    assert [f"post number {i}" in second for i in range(5)] == [True, True, False, False, False]
    assert "Older posts" not in second


@pytest.mark.parametrize("query", ["?cursor=nope", "?cursor=" + "A" * 100])
def test_a_bad_cursor_is_a_400(signed_in, query):
    client, _ = signed_in("ada")

    response = client.get("/" + query)

    assert response.status_code == 400
    assert "<!doctype html>" in response.content.decode()


def test_profile_shows_posts_counts_and_a_follow_button(signed_in, make_user):
    client, _ = signed_in("ada")
    bob, carol = make_user("bob"), make_user("carol")
    Follow.objects.create(follower=carol, followee=bob)
    Follow.objects.create(follower=bob, followee=carol)
    Post.objects.create(author=bob, content="bob speaks")

    html = client.get("/@bob").content.decode()

    assert "bob speaks" in html
    assert re.search(r"<strong>1</strong>\s*followers?", html)
    assert re.search(r"<strong>1</strong>\s*following", html)
    assert "Follow<" in html


def test_an_unknown_profile_is_a_404_page(signed_in):
    client, _ = signed_in("ada")

    response = client.get("/@nobody")

    assert response.status_code == 404
    assert "<!doctype html>" in response.content.decode()


def test_follow_and_unfollow(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")

    response = client.post("/@bob/follow")
    assert response.status_code == 302
    assert Follow.objects.filter(follower=ada, followee=bob).exists()
    assert "Unfollow" in client.get("/@bob").content.decode()

    response = client.post("/@bob/unfollow")

    assert response.status_code == 302
    assert not Follow.objects.filter(follower=ada, followee=bob).exists()


def test_following_yourself_or_nobody_is_refused(signed_in):
    client, _ = signed_in("ada")

    assert client.post("/@ada/follow").status_code == 400
    assert client.post("/@nobody/follow").status_code == 404
    assert client.get("/@ada/follow").status_code == 405
    assert Follow.objects.count() == 0


def test_anonymous_follow_sends_to_sign_in(make_user):
    make_user("bob")

    response = Client().post("/@bob/follow")

    assert response.status_code == 302
    assert response["Location"].startswith("/signin")


def test_delete_own_post(signed_in):
    client, ada = signed_in("ada")
    post = Post.objects.create(author=ada, content="regret")

    response = client.post(f"/@ada/{post.pk}/delete")

    assert response.status_code == 302
    assert not Post.objects.filter(pk=post.pk).exists()
    assert "regret" not in client.get("/").content.decode()


def test_only_the_author_deletes_a_post(signed_in, make_user):
    client, _ = signed_in("ada")
    bob = make_user("bob")
    post = Post.objects.create(author=bob, content="mine")

    assert client.post(f"/@bob/{post.pk}/delete").status_code == 403
    assert client.post("/@ada/999999/delete").status_code == 404
    assert Post.objects.filter(pk=post.pk).exists()


def test_who_to_follow_lists_the_most_followed_accounts_not_yet_followed(signed_in, make_user):
    client, ada = signed_in("ada")
    star, popular, known = make_user("star"), make_user("popular"), make_user("known")
    fans = [make_user() for _ in range(3)]
    for fan in fans:
        Follow.objects.create(follower=fan, followee=star)
        Follow.objects.create(follower=fan, followee=known)
    Follow.objects.create(follower=fans[0], followee=popular)
    Follow.objects.create(follower=fans[0], followee=ada)
    Follow.objects.create(follower=ada, followee=known)
    gone = make_user("gone", is_active=False)
    Follow.objects.create(follower=fans[1], followee=gone)

    html = client.get("/").content.decode()
    section = html[html.index("Who to follow") :]

    assert section.index("@star") < section.index("@popular")
    assert "3 followers" in section
    assert "@known" not in section
    assert "@ada" not in section
    assert "@gone" not in section


def test_new_posts_since_the_page_loaded_are_counted(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    first = Post.objects.create(author=bob, content="seen")
    FeedEntry.objects.create(user_id=ada.pk, post_id=first.pk)
    newer = [Post.objects.create(author=bob, content=f"new {i}") for i in range(2)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in newer])

    response = client.get(f"/timeline/new?after={first.pk}")

    assert response.status_code == 200
    assert response.json() == {"count": 2, "more": False}
    assert client.get("/timeline/new?after=x").status_code == 400
    assert Client().get(f"/timeline/new?after={first.pk}").status_code == 401


def test_new_posts_beyond_a_page_are_counted_as_more(signed_in, make_user, settings):
    settings.FEED_PAGE_SIZE = 2
    client, ada = signed_in("ada")
    bob = make_user("bob")
    posts = [Post.objects.create(author=bob, content=f"post {i}") for i in range(4)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])

    assert client.get(f"/timeline/new?after={posts[0].pk}").json() == {"count": 2, "more": True}
    assert client.get(f"/timeline/new?after={posts[2].pk}").json() == {"count": 1, "more": False}


def redis_unreachable(settings) -> None:
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }


def test_sign_in_fails_closed_while_the_throttle_store_is_down(make_user, settings):
    make_user("ada")
    redis_unreachable(settings)
    client = Client()

    response = client.post("/signin", {"username": "ada", "password": PASSWORD})

    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert "unavailable for a moment" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_with_redis_down_one_still_signs_up_posts_and_reads(make_user, settings):
    star = make_user("star")
    Follow.objects.create(follower=make_user(), followee=star)
    redis_unreachable(settings)
    client = Client()

    signed_up = client.post("/signup", {"username": "ada", "password": "a-long-passphrase"})
    posted = client.post("/", {"content": "still here"})
    timeline = client.get("/")

    assert (signed_up.status_code, posted.status_code, timeline.status_code) == (302, 302, 200)
    html = timeline.content.decode()
    assert "still here" in html
    assert "@star" in html[html.index("Who to follow") :]
    assert client.get("/timeline/new?after=0").json()["count"] == 1


def test_the_post_box_and_follow_buttons_keep_the_apis_limits(signed_in, make_user, settings):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "posts": "1/hour", "follow": "1/hour"}
    client, ada = signed_in("ada")
    make_user("bob"), make_user("carol")

    posts = [client.post("/", {"content": f"post {i}"}) for i in range(2)]
    follows = [client.post(f"/@{name}/follow") for name in ("bob", "carol")]

    assert [r.status_code for r in posts] == [302, 429]
    assert "Too many attempts" in posts[1].content.decode()
    assert int(posts[1]["Retry-After"]) > 0
    assert [r.status_code for r in follows] == [302, 429]
    assert Post.objects.filter(author=ada).count() == 1
    assert Follow.objects.filter(follower=ada).count() == 1


def test_a_database_outage_is_a_503_page_not_a_500(signed_in, monkeypatch):
    from django.db.utils import OperationalError

    client, _ = signed_in("ada")

    def unreachable(**kwargs):
        raise OperationalError("connection refused")

    # Fault injection: the real outage is drilled in consumers/tests/test_reliability.py.
    monkeypatch.setattr("web.views.timeline_page", unreachable)
    response = client.get("/")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert "Unavailable for a moment" in response.content.decode()


def test_who_to_follow_leaves_out_blocked_and_muted_accounts(signed_in, make_user):
    client, ada = signed_in("ada")
    blocked, blocker, muted, star = (make_user(name) for name in ("blocked", "blocker", "muted", "star"))
    for account in (blocked, blocker, muted, star):
        Follow.objects.create(follower=make_user(), followee=account)
    Block.objects.create(user=ada, target=blocked)
    Block.objects.create(user=blocker, target=ada)
    Mute.objects.create(user=ada, target=muted)

    html = client.get("/").content.decode()
    section = html[html.index("Who to follow") :]

    assert "@star" in section
    assert "@blocked" not in section
    assert "@blocker" not in section
    assert "@muted" not in section


def test_following_across_a_block_is_a_403_that_does_not_say_which_way(signed_in, make_user):
    client, ada = signed_in("ada")
    bob, carol = make_user("bob"), make_user("carol")
    Block.objects.create(user=ada, target=bob)
    Block.objects.create(user=carol, target=ada)

    responses = [client.post("/@bob/follow"), client.post("/@carol/follow")]

    for response in responses:
        assert response.status_code == 403
        assert "<h1>This account cannot be followed.</h1>" in response.content.decode()
    assert not Follow.objects.exists()


def forms(html: str) -> dict[str, str]:
    """The page's forms, by action: their method."""
    return {
        action: method
        for method, action in re.findall(r'<form[^>]*method="(get|post)"[^>]*action="([^"]+)"', html)
    }


def test_profile_offers_block_and_mute_to_a_signed_in_viewer_not_the_owner(signed_in, make_user):
    client, _ = signed_in("ada")
    make_user("bob")

    other = forms(client.get("/@bob").content.decode())
    own = forms(client.get("/@ada").content.decode())
    anonymous = forms(Client().get("/@bob").content.decode())

    # Block asks first: its button opens the confirmation page.
    assert other["/@bob/block"] == "get"
    assert other["/@bob/mute"] == "post"
    assert other["/@bob/follow"] == "post"
    assert not {"/@ada/block", "/@ada/mute"} & set(own)
    assert not {"/@bob/block", "/@bob/mute"} & set(anonymous)


def test_block_asks_for_confirmation_then_ends_the_follows_both_ways(signed_in, make_user):
    client, ada = signed_in("ada", csrf=True)
    bob = make_user("bob")
    Follow.objects.create(follower=ada, followee=bob)
    Follow.objects.create(follower=bob, followee=ada)

    page = client.get("/@bob/block")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Block @bob?" in html
    assert "the follows between you end" in html
    assert "neither of you sees the other" in html
    assert "cannot follow you" in html
    assert forms(html)["/@bob/block"] == "post"
    assert 'href="/@bob">Cancel</a>' in html
    assert not Block.objects.exists(), "showing the question blocks nobody"

    response = client.post("/@bob/block", {"csrfmiddlewaretoken": csrf_token(client, "/@bob/block")})

    assert response.status_code == 302
    assert response["Location"] == "/@bob"
    assert Block.objects.filter(user=ada, target=bob).exists()
    assert not Follow.objects.exists()
    after = client.get("/@bob").content.decode()
    assert "You block @bob" in after
    assert "/@bob/unblock" in forms(after)


def test_block_confirmation_returns_to_next(signed_in, make_user):
    client, _ = signed_in("ada")
    make_user("bob")

    html = client.get("/@bob/block?next=/settings/mutes").content.decode()
    refused_next = client.get("/@bob/block?next=https://evil.example/").content.decode()
    response = client.post("/@bob/block", {"next": "/settings/mutes"})

    assert '<input type="hidden" name="next" value="/settings/mutes">' in html
    assert 'href="/settings/mutes">Cancel</a>' in html
    assert "evil.example" not in refused_next
    assert response["Location"] == "/settings/mutes"


def test_blocking_twice_says_so(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    client.post("/@bob/block")

    response = client.post("/@bob/block", follow=True)

    assert "You already block @bob." in response.content.decode()
    assert Block.objects.filter(user=ada, target=bob).count() == 1


def test_unblock(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    Block.objects.create(user=ada, target=bob)

    response = client.post("/@bob/unblock", follow=True)
    again = client.post("/@bob/unblock", follow=True)

    assert response.redirect_chain == [("/@bob", 302)]
    assert "You no longer block @bob" in response.content.decode()
    assert not Block.objects.exists()
    assert "You did not block @bob." in again.content.decode()
    assert "/@bob/follow" in forms(again.content.decode())


def test_mute_and_unmute(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    Follow.objects.create(follower=ada, followee=bob)

    muted = client.post("/@bob/mute", follow=True)
    html = muted.content.decode()
    assert muted.redirect_chain == [("/@bob", 302)]
    assert "You mute @bob" in html
    assert Mute.objects.filter(user=ada, target=bob).exists()
    assert Follow.objects.filter(follower=ada, followee=bob).exists(), "a mute keeps the follow"
    assert "/@bob/unmute" in forms(html)
    assert "/@bob/mute" not in forms(html)
    assert "You already mute @bob." in client.post("/@bob/mute", follow=True).content.decode()

    unmuted = client.post("/@bob/unmute", {"next": "/settings/mutes"})
    again = client.post("/@bob/unmute", follow=True)

    assert unmuted["Location"] == "/settings/mutes"
    assert not Mute.objects.exists()
    assert "You did not mute @bob." in again.content.decode()


@pytest.mark.parametrize("action", ["block", "unblock", "mute", "unmute"])
def test_block_and_mute_forms_need_their_csrf_token(signed_in, make_user, action):
    client, ada = signed_in("ada", csrf=True)
    bob = make_user("bob")
    if action.startswith("un"):
        (Block if action == "unblock" else Mute).objects.create(user=ada, target=bob)
    before = (Block.objects.count(), Mute.objects.count())

    refused = client.post(f"/@bob/{action}")
    assert refused.status_code == 403
    assert (Block.objects.count(), Mute.objects.count()) == before

    response = client.post(f"/@bob/{action}", {"csrfmiddlewaretoken": csrf_token(client, "/@bob")})

    assert response.status_code == 302
    assert (Block.objects.count(), Mute.objects.count()) != before


def test_blocking_or_muting_yourself_or_nobody_is_refused(signed_in):
    client, _ = signed_in("ada")

    responses = {
        "GET /@ada/block": client.get("/@ada/block"),
        "POST /@ada/block": client.post("/@ada/block"),
        "POST /@ada/mute": client.post("/@ada/mute"),
        "GET /@nobody/block": client.get("/@nobody/block"),
        "POST /@nobody/block": client.post("/@nobody/block"),
        "POST /@nobody/unblock": client.post("/@nobody/unblock"),
        "POST /@nobody/mute": client.post("/@nobody/mute"),
        "POST /@nobody/unmute": client.post("/@nobody/unmute"),
        "GET /@ada/mute": client.get("/@ada/mute"),
        "GET /@ada/unblock": client.get("/@ada/unblock"),
        "GET /@ada/unmute": client.get("/@ada/unmute"),
    }

    assert {name: r.status_code for name, r in responses.items()} == {
        "GET /@ada/block": 400,
        "POST /@ada/block": 400,
        "POST /@ada/mute": 400,
        "GET /@nobody/block": 404,
        "POST /@nobody/block": 404,
        "POST /@nobody/unblock": 404,
        "POST /@nobody/mute": 404,
        "POST /@nobody/unmute": 404,
        "GET /@ada/mute": 405,
        "GET /@ada/unblock": 405,
        "GET /@ada/unmute": 405,
    }
    assert "You cannot block yourself." in responses["POST /@ada/block"].content.decode()
    assert "You cannot block yourself." in responses["GET /@ada/block"].content.decode()
    assert "You cannot mute yourself." in responses["POST /@ada/mute"].content.decode()
    assert "There is no account @nobody." in responses["POST /@nobody/mute"].content.decode()
    assert (Block.objects.count(), Mute.objects.count()) == (0, 0)


def test_blocks_and_mutes_beyond_the_limit_are_refused(signed_in, make_user, settings):
    settings.BLOCK_LIMIT, settings.MUTE_LIMIT = 1, 1
    client, _ = signed_in("ada")
    make_user("bob"), make_user("carol")

    blocks = [client.post(f"/@{name}/block") for name in ("bob", "carol")]
    mutes = [client.post(f"/@{name}/mute") for name in ("bob", "carol")]

    assert [r.status_code for r in blocks + mutes] == [302, 400, 302, 400]
    assert "You cannot block more than 1 accounts." in blocks[1].content.decode()
    assert "You cannot mute more than 1 accounts." in mutes[1].content.decode()
    assert (Block.objects.count(), Mute.objects.count()) == (1, 1)


def test_block_and_mute_buttons_draw_on_the_apis_allowances(signed_in, make_user, settings, client_for):
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "block": "1/hour", "mute": "1/hour"}
    client, ada = signed_in("ada")
    make_user("bob"), make_user("carol")
    dave = make_user("dave")

    blocks = [client.post(f"/@{name}/block") for name in ("bob", "carol")]
    mutes = [client.post(f"/@{name}/mute") for name in ("bob", "carol")]
    api = client_for(ada).post("/blocks", {"user_id": dave.pk}, format="json")

    assert [r.status_code for r in blocks + mutes] == [302, 429, 302, 429]
    assert "Too many attempts" in blocks[1].content.decode()
    assert int(blocks[1]["Retry-After"]) > 0
    assert int(mutes[1]["Retry-After"]) > 0
    assert api.status_code == 429
    assert (Block.objects.count(), Mute.objects.count()) == (1, 1)


def test_anonymous_block_and_mute_send_to_sign_in(make_user):
    make_user("bob")
    anonymous = Client()

    responses = [anonymous.get("/@bob/block")] + [
        anonymous.post(f"/@bob/{action}") for action in ("block", "unblock", "mute", "unmute")
    ]

    assert [r.status_code for r in responses] == [302] * 5
    assert all(r["Location"].startswith("/signin?next=") for r in responses)
    assert (Block.objects.count(), Mute.objects.count()) == (0, 0)


def test_a_blocked_viewer_sees_no_posts_and_no_follow_button(signed_in, make_user, settings):
    settings.FEED_PAGE_SIZE = 1
    client, ada = signed_in("ada")
    bob = make_user("bob")
    Follow.objects.create(follower=make_user(), followee=bob)
    posts = [Post.objects.create(author=bob, content=f"bob speaks {i}") for i in range(2)]
    Block.objects.create(user=bob, target=ada)

    html = client.get("/@bob").content.decode()
    older = client.get(f"/@bob?cursor={cursor_encode(posts[1].pk)}").content.decode()

    assert "You cannot see this account's posts." in html
    assert "bob speaks" not in html + older
    assert "Older posts" not in html
    assert not {"/@bob/follow", "/@bob/unfollow"} & set(forms(html))
    assert re.search(r"<strong>1</strong>\s*follower", html), "the counts stay"
    # Nothing says which way the block stands: the blocked one may block back.
    assert "blocks you" not in html
    assert forms(html)["/@bob/block"] == "get"


def test_a_blocker_sees_no_posts_of_the_blocked_and_can_unblock(signed_in, make_user):
    client, ada = signed_in("ada")
    bob = make_user("bob")
    Post.objects.create(author=bob, content="bob speaks")
    Block.objects.create(user=ada, target=bob)

    html = client.get("/@bob").content.decode()

    assert "You block @bob." in html
    assert "bob speaks" not in html
    assert "You cannot see this account's posts." not in html
    assert forms(html)["/@bob/unblock"] == "post"
    assert not {"/@bob/follow", "/@bob/unfollow", "/@bob/block"} & set(forms(html))


@pytest.mark.parametrize(("model", "path", "verb"), [(Block, "blocks", "unblock"), (Mute, "mutes", "unmute")])
def test_the_list_of_blocks_or_mutes_pages_newest_first_with_an_undo(
    signed_in, make_user, settings, model, path, verb
):
    settings.FEED_PAGE_SIZE = 2
    client, ada = signed_in("ada")
    targets = [make_user(f"target{i}") for i in range(3)]
    relations = [model.objects.create(user=ada, target=target) for target in targets]
    model.objects.create(user=make_user("other"), target=ada)

    first = client.get(f"/settings/{path}").content.decode()
    cursor = cursor_encode(relations[1].pk)
    second = client.get(f"/settings/{path}?cursor={cursor}").content.decode()

    assert first.index("@target2") < first.index("@target1")
    assert "@target0" not in first
    assert "@other" not in first
    assert 'href="/@target2"' in first
    assert "<time datetime=" in first
    assert f'href="/settings/{path}?cursor={cursor}"' in first
    assert "@target0" in second
    assert "@target2" not in second
    assert "Older" not in second
    assert forms(first)[f"/@target2/{verb}"] == "post"
    assert f'<input type="hidden" name="next" value="/settings/{path}">' in first

    response = client.post(f"/@target2/{verb}", {"next": f"/settings/{path}"})

    assert response["Location"] == f"/settings/{path}"
    assert not model.objects.filter(user=ada, target=targets[2]).exists()


@pytest.mark.parametrize("path", ["blocks", "mutes"])
def test_the_lists_of_blocks_and_mutes_say_when_empty_and_refuse_bad_cursors(signed_in, path):
    client, _ = signed_in("ada")

    empty = client.get(f"/settings/{path}")
    bad = client.get(f"/settings/{path}?cursor=nope")
    anonymous = Client().get(f"/settings/{path}")

    assert empty.status_code == 200
    assert f"You {path[:-1]} nobody." in empty.content.decode()
    assert bad.status_code == 400
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/signin?next=/settings/{path}"


def test_the_lists_of_blocks_and_mutes_are_linked_for_the_signed_in(signed_in):
    client, _ = signed_in("ada")

    home = client.get("/").content.decode()
    blocks = client.get("/settings/blocks").content.decode()

    assert 'href="/settings/blocks"' in home
    assert 'href="/settings/mutes"' in blocks
    assert 'href="/settings/blocks"' not in Client().get("/signin").content.decode()


def timeline_posts(user, count: int) -> list[int]:
    posts = Post.objects.bulk_create([Post(author=user, content=f"post {i}") for i in range(count)])
    FeedEntry.objects.bulk_create([FeedEntry(user_id=user.pk, post_id=p.pk) for p in posts])
    return [p.pk for p in posts]


def test_the_timeline_marks_where_the_reader_left_off(signed_in):
    from feeds.markers import marker_set

    client, user = signed_in()
    ids = timeline_posts(user, 5)
    assert "You left off here" not in client.get("/").content.decode()

    marker_set(user_id=user.pk, last_read_id=ids[2])
    html = client.get("/").content.decode()

    line = html.index("You left off here")
    assert html.index("post 4") < html.index("post 3") < line < html.index("post 2") < html.index("post 1")
    assert f'data-read="{ids[2]}"' in html
    assert 'data-version="1"' in html
    marker_set(user_id=user.pk, last_read_id=ids[-1])
    assert "You left off here" not in client.get("/").content.decode()


def test_the_timeline_moves_the_marker_with_its_session_and_version(signed_in):
    client, user = signed_in(csrf=True)
    ids = timeline_posts(user, 3)
    token = csrf_token(client)

    moved = client.post(
        "/timeline/marker", {"csrfmiddlewaretoken": token, "last_read_id": ids[1], "version": 0}
    )
    assert moved.status_code == 200, moved.content
    assert moved.json()["home"]["last_read_id"] == ids[1]
    assert moved.json()["home"]["version"] == 1
    stale = client.post(
        "/timeline/marker", {"csrfmiddlewaretoken": token, "last_read_id": ids[2], "version": 0}
    )
    assert stale.status_code == 409
    assert stale.json()["home"]["version"] == 1
    again = client.post(
        "/timeline/marker", {"csrfmiddlewaretoken": token, "last_read_id": ids[2], "version": 1}
    )
    assert again.json()["home"]["version"] == 2


@pytest.mark.parametrize(
    "data", [{}, {"last_read_id": "x"}, {"last_read_id": 0}, {"last_read_id": 1, "other": 2}]
)
def test_a_bad_marker_is_a_400(signed_in, data):
    client, _ = signed_in()
    assert client.post("/timeline/marker", data).status_code == 400


def test_the_marker_needs_a_session_and_its_csrf_token(signed_in):
    assert Client().post("/timeline/marker", {"last_read_id": 1}).status_code == 401
    client, _ = signed_in(csrf=True)
    assert client.post("/timeline/marker", {"last_read_id": 1}).status_code == 403
    assert client.get("/timeline/marker").status_code == 405


def _stream_since(html: str):
    from urllib.parse import parse_qs, unquote, urlsplit

    from streams.positions import position_decode

    url = unquote(re.search(r'data-stream="([^"]+)"', html).group(1))
    return position_decode(parse_qs(urlsplit(url).query)["since"][0])


@pytest.mark.django_db(transaction=True)
def test_the_timelines_stream_starts_before_a_post_the_worker_has_not_copied_yet(signed_in, make_user):
    client, reader = signed_in()
    author = make_user()
    Follow.objects.create(follower=reader, followee=author)
    shown = Post.objects.create(author=author, content="copied")
    FeedEntry.objects.create(user_id=reader.pk, post_id=shown.pk)
    # Committed, but not in the reader's stored feed yet: the page does not show it.
    waiting = Post.objects.create(author=author, content="not copied yet")

    html = client.get("/").content.decode()

    assert "not copied yet" not in html
    assert _stream_since(html) < Position(Post.objects.get(pk=waiting.pk).added, waiting.pk)


@pytest.mark.django_db(transaction=True)
def test_the_timelines_stream_starts_at_the_database_horizon_without_posts(signed_in):
    from streams.selectors import stream_horizon

    client, _ = signed_in()
    before = stream_horizon()
    since = _stream_since(client.get("/").content.decode())
    assert Position(before.low, 0) <= since <= Position(stream_horizon().high, 0)
