"""create_topics: creates what is missing, and is harmless to run again."""

import io

import pytest
from django.core.management import call_command

from eventbus.topics import topics_ensure

pytestmark = pytest.mark.broker


def test_creating_topics_that_exist_creates_nothing_and_succeeds(kafka):
    """The kafka fixture created this test's topics: make topics after make run finds them."""
    out = io.StringIO()

    assert topics_ensure() == []
    call_command("create_topics", stdout=out)

    assert out.getvalue().strip() == "topics already exist"
