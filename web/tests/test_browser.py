"""The web timeline in a real browser: headless Chromium driven by Playwright.

Two people sign up, follow, post, read, page, unfollow and delete, with the fan-out
worker applying events between the steps; one blocks another and unblocks them. A
failing test leaves a screenshot of each of its pages in .run/browser-failures.
"""

import time
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from follows.models import Block, Follow, Mute
from posts.services import post_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

User = get_user_model()
PASSWORD = "a-long-passphrase"


def sign_up(page: Page, server: str, username: str) -> None:
    page.goto(f"{server}/signup")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Home")).to_be_visible()


def until(condition: Callable[[], bool], *, step: Callable[[], object], seconds: float = 20) -> None:
    """Run ``step`` (the worker applying what has arrived) until ``condition`` holds, or
    fail at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not reached before the deadline"
        step()


def shown(page: Page, text: str) -> Callable[[], bool]:
    """Whether the page, loaded afresh, shows a post with this text."""

    def check() -> bool:
        page.reload()
        return page.locator("p.content", has_text=text).count() > 0

    return check


@pytest.mark.broker
def test_two_people_follow_post_read_page_unfollow_and_delete(
    page: Page, new_context, browser_server: str, worker, settings
) -> None:
    settings.FEED_PAGE_SIZE = 3
    settings.WEB_NEW_POSTS_POLL_SECONDS = 1
    ada = page
    bob = new_context().new_page()
    sign_up(ada, browser_server, "ada")
    sign_up(bob, browser_server, "bob")

    # Bob follows Ada from her profile.
    bob.goto(f"{browser_server}/@ada")
    bob.get_by_role("button", name="Follow @ada").click()
    expect(bob.get_by_role("button", name="Unfollow @ada")).to_be_visible()
    expect(bob.get_by_text("1 follower")).to_be_visible()

    # Ada posts; the box counts down, and the post is at the top of her timeline at once.
    box = ada.get_by_label("What's new?")
    box.fill("Hello from ada")
    expect(ada.get_by_text("486 characters left")).to_be_visible()
    ada.get_by_role("button", name="Post").click()
    expect(ada.locator("p.content").first).to_have_text("Hello from ada")

    # Bob sees it once the worker has applied it.
    bob.goto(browser_server)
    until(shown(bob, "Hello from ada"), step=worker.run_once)
    expect(bob.locator("article", has_text="Hello from ada").get_by_role("link", name="@ada")).to_be_visible()

    # Posts that arrive while Bob reads are announced, not inserted.
    ada_user = User.objects.get(username="ada")
    for i in range(4):
        post_create(author=ada_user, content=f"ada again {i}")
    announcement = bob.get_by_role("status").get_by_role("link", name="3+ new posts: show")
    until(announcement.is_visible, step=lambda: worker.run_once() or time.sleep(0.1))
    expect(bob.locator("p.content").first).to_have_text("Hello from ada")
    announcement.click()
    expect(bob.locator("p.content")).to_have_text(["ada again 3", "ada again 2", "ada again 1"])

    # Older posts, by the API's cursor, and back.
    bob.get_by_role("link", name="Older posts").click()
    expect(bob.locator("p.content")).to_have_text(["ada again 0", "Hello from ada"])
    expect(bob.get_by_role("link", name="Older posts")).to_have_count(0)
    bob.get_by_role("link", name="Newest posts").click()
    expect(bob.locator("p.content").first).to_have_text("ada again 3")

    # Ada deletes a post: gone from her timeline at once, and from Bob's.
    ada.goto(browser_server)
    ada.locator("article", has_text="ada again 3").get_by_role("button", name="Delete this post").click()
    expect(ada.get_by_text("Your post was deleted.")).to_be_visible()
    expect(ada.locator("p.content", has_text="ada again 3")).to_have_count(0)
    bob.reload()
    expect(bob.locator("p.content", has_text="ada again 3")).to_have_count(0)
    # Nobody may delete another's post: Bob is not offered the button.
    expect(bob.get_by_role("button", name="Delete this post")).to_have_count(0)

    # Bob unfollows; once the worker has applied it, Ada's posts leave his timeline.
    bob.goto(f"{browser_server}/@ada")
    bob.get_by_role("button", name="Unfollow @ada").click()
    expect(bob.get_by_role("button", name="Follow @ada")).to_be_visible()
    bob.goto(browser_server)
    until(lambda: not shown(bob, "ada again")(), step=worker.run_once)
    expect(bob.get_by_text("Nothing here yet.")).to_be_visible()


def test_post_content_is_shown_as_text_never_run(page: Page, browser_server: str) -> None:
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_up(page, browser_server, "mallory")

    page.get_by_label("What's new?").fill("<script>alert(1)</script>")
    page.get_by_role("button", name="Post").click()

    expect(page.locator("p.content").first).to_have_text("<script>alert(1)</script>")
    page.goto(f"{browser_server}/@mallory")
    expect(page.locator("p.content").first).to_have_text("<script>alert(1)</script>")
    assert dialogs == []


def test_everything_works_without_javascript(new_context, browser_server: str, make_user) -> None:
    Follow.objects.create(follower=make_user(), followee=make_user("bob"))
    page = new_context(java_script_enabled=False).new_page()

    sign_up(page, browser_server, "ada")
    page.get_by_label("What's new?").fill("no scripts needed")
    page.get_by_role("button", name="Post").click()
    expect(page.locator("p.content").first).to_have_text("no scripts needed")
    # Who to follow, then the profile's button.
    page.get_by_role("link", name="@bob").click()
    page.get_by_role("button", name="Follow @bob").click()
    expect(page.get_by_role("button", name="Unfollow @bob")).to_be_visible()
    page.get_by_role("link", name="@ada").first.click()
    page.get_by_role("button", name="Delete this post").click()
    expect(page.get_by_text("No posts yet.")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Home")).to_be_visible()


def test_block_from_a_profile_and_unblock_from_the_list(page: Page, browser_server: str, make_user) -> None:
    post_create(author=make_user("bob"), content="bob writes")
    sign_up(page, browser_server, "ada")

    # Block asks first, saying what it does.
    page.goto(f"{browser_server}/@bob")
    expect(page.locator("p.content")).to_have_text(["bob writes"])
    expect(page.get_by_role("button", name="Mute @bob")).to_be_visible()
    page.get_by_role("button", name="Block @bob").click()
    expect(page.get_by_role("heading", name="Block @bob?")).to_be_visible()
    expect(page.get_by_text("they cannot follow you")).to_be_visible()
    page.get_by_role("button", name="Block @bob").click()

    # Back on the profile: no posts, no Follow button, an Unblock button.
    expect(page).to_have_url(f"{browser_server}/@bob")
    expect(page.get_by_text("You block @bob.", exact=True)).to_be_visible()
    expect(page.locator("p.content")).to_have_count(0)
    expect(page.get_by_role("button", name="Follow @bob")).to_have_count(0)

    # Unblocked from the list, which stays open.
    page.get_by_role("link", name="Blocked and muted").click()
    expect(page.get_by_role("heading", name="Blocked accounts")).to_be_visible()
    expect(page.get_by_role("link", name="@bob")).to_be_visible()
    page.get_by_role("button", name="Unblock @bob").click()
    expect(page).to_have_url(f"{browser_server}/settings/blocks")
    expect(page.get_by_text("You no longer block @bob.")).to_be_visible()
    expect(page.get_by_text("You block nobody.")).to_be_visible()
    page.get_by_role("link", name="Muted", exact=True).click()
    expect(page.get_by_text("You mute nobody.")).to_be_visible()

    page.goto(f"{browser_server}/@bob")
    expect(page.locator("p.content")).to_have_text(["bob writes"])
    expect(page.get_by_role("button", name="Follow @bob")).to_be_visible()


def test_pages_fit_a_360_pixel_screen(new_context, browser_server: str, make_user) -> None:
    long_name = "a_rather_long_username_that_could_overflow_a_narrow_screen"
    other = make_user(long_name)
    page = new_context(viewport={"width": 360, "height": 740}).new_page()
    sign_up(page, browser_server, "ada")
    page.get_by_label("What's new?").fill("x" * 500)
    page.get_by_role("button", name="Post").click()
    page.goto(f"{browser_server}/@{long_name}")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, (long_name, width)
    ada = User.objects.get(username="ada")
    Block.objects.create(user=ada, target=other)
    Mute.objects.create(user=ada, target=other)

    paths = (f"/@{long_name}", f"/@{long_name}/block", "/settings/blocks", "/settings/mutes")
    for path in ("/", "/@ada", *paths, "/signin", "/signup"):
        page.goto(f"{browser_server}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)


def test_the_timeline_marks_where_the_reader_left_off_and_moves_the_marker(
    page: Page, browser_server: str, make_user
) -> None:
    from feeds.markers import marker_get, marker_set
    from feeds.models import FeedEntry
    from posts.models import Post

    sign_up(page, browser_server, "ada")
    ada = User.objects.get(username="ada")
    posts = [Post.objects.create(author=ada, content=f"post number {i}") for i in range(4)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])
    marker_set(user_id=ada.pk, last_read_id=posts[1].pk)

    page.goto(f"{browser_server}/")

    line = page.locator("li.left-off")
    expect(line).to_have_text("You left off here")
    # Between the posts written after the marker and the one it names.
    assert page.locator("ol.posts > li").nth(2).get_attribute("class") == "left-off"
    # The newest post is in view: the marker follows it, once, a second later.
    until(
        lambda: marker_get(user_id=ada.pk).last_read_id == posts[-1].pk,
        step=lambda: page.wait_for_timeout(200),
        seconds=15,
    )
    assert marker_get(user_id=ada.pk).version == 2


@pytest.fixture
def stream_for_pages(browser_server, settings, tmp_path):
    """The stream process on its own port, letting in the pages of ``browser_server``, which
    open their stream there (STREAM_BROWSER_PORT), as under make run."""
    from devtools.processes import stop_process
    from streams.tests.sse import stream_process

    base, process = stream_process(tmp_path / "stream.log", STREAM_ALLOWED_ORIGINS=browser_server)
    settings.STREAM_BROWSER_PORT = int(base.rsplit(":", 1)[1])
    yield base
    stop_process(process)


def test_a_post_by_someone_followed_is_announced_live_and_shown_on_click(
    page: Page, browser_server: str, stream_for_pages: str, make_user
) -> None:
    author = make_user("grace")
    sign_up(page, browser_server, "ada")
    ada = User.objects.get(username="ada")
    Follow.objects.create(follower=ada, followee=author)
    streamed = []
    page.on("request", lambda request: streamed.append(request.url) if "/stream" in request.url else None)
    page.goto(f"{browser_server}/")
    # The page asked for its stream; a post written before the stream process registers it
    # is sent all the same, from the position the page was rendered at.
    until(lambda: bool(streamed), step=lambda: page.wait_for_timeout(100), seconds=10)
    post_create(author=author, content="written while ada reads")

    announcement = page.get_by_role("link", name="1 new post: show")
    expect(announcement).to_be_visible(timeout=10_000)
    # Announced, never inserted under the reader's eyes.
    expect(page.get_by_text("written while ada reads")).to_have_count(0)
    assert stream_for_pages.rsplit(":", 1)[1] in streamed[0]
    # Shown on click, in this page: it is not loaded again.
    page.evaluate("window.stillThisPage = true")
    announcement.click()
    expect(page.locator("p.content").first).to_have_text("written while ada reads")
    assert page.evaluate("window.stillThisPage === true")
    expect(page.get_by_role("link", name="1 new post: show")).to_have_count(0)
    # The stream goes on: the next post is announced on the same page.
    post_create(author=author, content="and another")
    expect(page.get_by_role("link", name="1 new post: show")).to_be_visible(timeout=10_000)


def test_where_the_stream_cannot_be_reached_new_posts_are_asked_for_instead(
    page: Page, browser_server: str, settings, make_user
) -> None:
    from devtools.processes import free_port
    from feeds.cache import pages_invalidate
    from feeds.models import FeedEntry

    settings.STREAM_BROWSER_PORT = free_port()  # nothing listens there
    settings.WEB_NEW_POSTS_POLL_SECONDS = 1
    author = make_user("grace")
    sign_up(page, browser_server, "ada")
    ada = User.objects.get(username="ada")
    Follow.objects.create(follower=ada, followee=author)
    page.goto(f"{browser_server}/")
    post = post_create(author=author, content="found by asking")
    # As the worker would: the post in ada's stored feed, her cached page dropped.
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)
    pages_invalidate([ada.pk])

    # Three failed connections (EventSource retries every 3 s), then a poll.
    expect(page.get_by_role("link", name="1 new post: show")).to_be_visible(timeout=30_000)
