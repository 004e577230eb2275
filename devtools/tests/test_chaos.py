"""The chaos drill's verdict and entry point (the drill itself restarts PostgreSQL, so the
suite does not run it)."""

import subprocess
import sys

import pytest

from devtools.chaos import chaos_verify, report_table
from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post
from tests.helpers import ROOT


@pytest.mark.django_db
def test_verify_counts_lost_and_unexpected_feed_entries(make_user):
    ada, bob, cy = make_user(), make_user(), make_user()
    Follow.objects.create(follower=bob, followee=ada)
    by_ada = Post.objects.create(author=ada, content="hello")
    by_cy = Post.objects.create(author=cy, content="hi")
    FeedEntry.objects.all().delete()
    # bob misses ada's post and holds cy's, whom he does not follow.
    FeedEntry.objects.bulk_create(
        [
            FeedEntry(user=ada, post=by_ada),
            FeedEntry(user=cy, post=by_cy),
            FeedEntry(user=bob, post=by_cy),
        ]
    )

    report = chaos_verify()

    assert report == {
        "posts": 2,
        "expected": 3,
        "found": 3,
        "lost": 1,
        "duplicated": 0,
        "unexpected": 1,
        "dead_letters": 0,
    }


@pytest.mark.django_db
def test_verify_of_a_complete_feed_table_is_clean(make_user):
    ada, bob = make_user(), make_user()
    Follow.objects.create(follower=bob, followee=ada)
    post = Post.objects.create(author=ada, content="hello")
    FeedEntry.objects.bulk_create(
        [FeedEntry(user=ada, post=post), FeedEntry(user=bob, post=post)], ignore_conflicts=True
    )

    report = chaos_verify()

    assert (report["expected"], report["found"], report["lost"], report["unexpected"]) == (2, 2, 0, 0)


def test_report_is_one_markdown_row_under_its_heading():
    report = dict(posts=5, expected=9, found=8, lost=1, duplicated=0, unexpected=0, dead_letters=2)

    assert report_table(report).splitlines() == [
        "",
        "| posts | expected feed entries | found | lost | duplicated | unexpected | dead letters |",
        "|---|---|---|---|---|---|---|",
        "| 5 | 9 | 8 | 1 | 0 | 0 | 2 |",
    ]


def test_the_chaos_script_parses_its_options():
    result = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "--seconds" in result.stdout
