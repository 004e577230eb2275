"""The admin site as a whole."""

import pytest

pytestmark = pytest.mark.django_db


def test_the_site_header_names_the_system(staff_client):
    page = staff_client.get("/admin/")

    assert b"feedsite administration" in page.content
    assert b"<title>Site administration | feedsite admin</title>" in page.content
