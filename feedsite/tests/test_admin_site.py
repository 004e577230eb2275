"""The admin site as a whole."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(make_user) -> Client:
    client = Client()
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    return client


def test_the_site_header_names_the_system(staff_client):
    page = staff_client.get("/admin/")

    assert b"feedsite administration" in page.content
    assert b"<title>Site administration | feedsite admin</title>" in page.content
