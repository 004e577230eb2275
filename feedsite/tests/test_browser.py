"""The admin in a real browser: headless Chromium driven by Playwright."""

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_staff_user_signs_in_to_the_admin(page: Page, browser_server: str, make_user) -> None:
    make_user("operator", is_staff=True, is_superuser=True)

    page.goto(f"{browser_server}/admin/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("pw-Secret-123")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page).to_have_url(f"{browser_server}/admin/")
