"""The admin in a real browser: headless Chromium driven by Playwright."""

import re

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from consumers.models import DeadLetter
from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post
from tests.helpers import topic_read

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-Secret-123"


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def staff_with(make_user, username: str, *codenames: str):
    user = make_user(username, is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def test_a_staff_user_signs_in_to_the_admin(page: Page, browser_server: str, make_user) -> None:
    make_user("operator", is_staff=True, is_superuser=True)

    log_in(page, browser_server, "operator")

    expect(page).to_have_url(f"{browser_server}/admin/")
    expect(page.locator("#site-name")).to_have_text("feedsite administration")


def test_an_operator_finds_a_user_by_id_and_inspects_their_feed(
    page: Page, browser_server: str, make_user
) -> None:
    make_user("operator", is_staff=True, is_superuser=True)
    ada, bob = make_user("ada"), make_user("bob")
    for n in range(3):
        make_user(f"bob{n}")
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello from ada")
    FeedEntry.objects.create(user=bob, post=post)
    log_in(page, browser_server, "operator")

    page.goto(f"{browser_server}/admin/auth/user/")
    page.locator("#searchbar").fill(str(bob.pk))
    page.locator("#searchbar").press("Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows.filter(has_text="bob")).to_have_count(1)
    rows.filter(has_text="bob").get_by_role("link", name=str(bob.pk), exact=True).click()
    page.get_by_role("link", name="Inspect the feed as the API serves it").click()

    expect(page.get_by_role("heading", name=re.compile(r"Feed of bob"))).to_be_visible()
    entry = page.locator("#feed-entries tbody tr")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text("hello from ada")
    expect(entry).to_contain_text("stored entry")
    entry.get_by_role("link", name=str(post.pk), exact=True).click()
    expect(page.locator("#verdict")).to_contain_text(f"bob sees post {post.pk}, on page 1, position 1")


def test_an_operator_with_the_permission_discards_a_dead_letter(
    page: Page, browser_server: str, make_user, make_dead_letter
) -> None:
    staff_with(make_user, "discarder", "view_deadletter", "discard_deadletter")
    dead_letter = make_dead_letter(headers=[["event_type", "post.created"]])
    log_in(page, browser_server, "discarder")

    page.goto(f"{browser_server}/admin/consumers/deadletter/{dead_letter.pk}/change/")
    expect(page.get_by_role("link", name="Replay", exact=True)).to_have_count(0)
    page.get_by_role("link", name="Discard", exact=True).click()
    expect(page.get_by_role("heading", name=f"Discard dead letter {dead_letter.pk}?")).to_be_visible()
    page.get_by_role("button", name="Yes, discard it").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Discarded dead letter {dead_letter.pk}.")
    expect(page.locator(".field-status")).to_contain_text("Discarded")
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DISCARDED


@pytest.mark.broker
def test_an_operator_with_the_permission_replays_a_dead_letter(
    page: Page, browser_server: str, make_user, make_dead_letter
) -> None:
    staff_with(make_user, "replayer", "view_deadletter", "replay_deadletter")
    dead_letter = make_dead_letter(headers=[["event_type", "post.created"]])
    log_in(page, browser_server, "replayer")

    page.goto(f"{browser_server}/admin/consumers/deadletter/{dead_letter.pk}/change/")
    page.get_by_role("link", name="Replay", exact=True).click()
    expect(page.get_by_role("heading", name=f"Replay dead letter {dead_letter.pk}?")).to_be_visible()
    page.get_by_role("button", name="Yes, replay it").click()

    expect(page.locator(".messagelist")).to_contain_text(f"Replayed dead letter {dead_letter.pk}.")
    expect(page.locator(".field-status")).to_contain_text("Replayed")
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert message.value() == b"\xffnot json"


def test_an_operator_without_the_permission_is_offered_nothing_and_refused(
    page: Page, browser_server: str, make_user, make_dead_letter
) -> None:
    staff_with(make_user, "viewer", "view_deadletter")
    dead_letter = make_dead_letter(headers=[["event_type", "post.created"]])
    log_in(page, browser_server, "viewer")

    page.goto(f"{browser_server}/admin/consumers/deadletter/{dead_letter.pk}/change/")
    expect(page.locator(".field-error_message")).to_contain_text("not valid JSON")
    expect(page.get_by_role("link", name="Replay", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Discard", exact=True)).to_have_count(0)
    for action in ("replay", "discard"):
        response = page.goto(f"{browser_server}/admin/consumers/deadletter/{dead_letter.pk}/{action}/")
        assert response is not None
        assert response.status == 403
    page.goto(f"{browser_server}/admin/consumers/deadletter/")
    expect(page.locator("#result_list")).to_contain_text("not valid JSON")
    expect(page.locator("select[name=action] option[value=replay]")).to_have_count(0)
    expect(page.locator("select[name=action] option[value=discard]")).to_have_count(0)

    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.PENDING
