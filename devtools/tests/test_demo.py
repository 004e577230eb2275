"""seed_demo: a deterministic power-law graph, posts through the event path, idempotence."""

import io
import re
import statistics
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from devtools.demo import demo_plan
from eventbus.models import OutboxMessage
from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post
from tests.helpers import drain, topic_read

User = get_user_model()

OPTIONS = {"users": 80, "avg_follows": 6, "posts": 50, "celebrities": 2, "seed": 3}


def seed_demo(**options) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO(), **{**OPTIONS, **options})
    return out.getvalue()


def test_plan_is_fixed_by_the_seed():
    assert demo_plan(**OPTIONS) == demo_plan(**OPTIONS)
    assert demo_plan(**{**OPTIONS, "seed": 4}).follows != demo_plan(**OPTIONS).follows


def test_plan_is_a_power_law_graph_led_by_the_celebrities():
    plan = demo_plan(users=3000, avg_follows=20, posts=500, celebrities=3, seed=1)
    followers = Counter(followee for _, followee in plan.follows)
    ranked = [user for user, _ in followers.most_common()]
    assert set(ranked[:3]) == {0, 1, 2}, "the celebrities are the most followed"
    assert followers[0] > 0.4 * 3000
    median = statistics.median(followers.get(i, 0) for i in range(3, 3000))
    assert followers[ranked[3]] > 10 * median, "the head of regular accounts is far above the median"
    assert 16 <= len(plan.follows) / 3000 <= 24, "follows per user are near --avg-follows"
    assert all(f != e for f, e in plan.follows)
    authors = Counter(author for author, _ in plan.posts)
    assert authors.most_common(1)[0][1] > 10 * statistics.median(authors.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"users": 1}, "at least 2"),
        ({"celebrities": 80}, "celebrities must be fewer than users"),
        ({"avg_follows": 80}, "avg_follows must be fewer than users"),
        ({"posts": -1}, "posts must not be negative"),
    ],
)
@pytest.mark.django_db
def test_bad_options_are_refused_before_writing(options, message):
    with pytest.raises(CommandError, match=message):
        seed_demo(**options)
    assert not User.objects.exists()


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_posts_travel_as_events_and_the_worker_fills_the_feeds(worker, settings):
    out = seed_demo(wait=0)
    plan = demo_plan(**OPTIONS)
    users = dict(User.objects.filter(username__in=plan.usernames).values_list("username", "pk"))
    assert len(users) == 80
    assert Token.objects.filter(user_id__in=users.values()).count() == 80
    assert Follow.objects.count() == len(plan.follows)
    assert Post.objects.count() == OutboxMessage.objects.count() == 50
    assert len(topic_read(settings.FEED_EVENTS_TOPIC, count=50)) == 50
    assert not FeedEntry.objects.exists(), "feeds fill only through the worker"

    drain(worker, 50)
    followers = Counter(Follow.objects.values_list("followee_id", flat=True))
    expected = sum(1 + followers[author] for author in Post.objects.values_list("author_id", flat=True))
    assert FeedEntry.objects.count() == expected

    # The printed commands carry real tokens and work as printed.
    feed = re.search(r"curl -s -H 'Authorization: Token (\w+)' http://127.0.0.1:8000(/feeds/\d+)", out)
    assert feed, out
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {feed[1]}")
    response = client.get(feed[2])
    assert response.status_code == 200, response.content
    assert response.json()["results"], "the busy reader's feed is filled"

    # The printed sign-in works in a browser's way, and shows that reader's timeline.
    sign_in = re.search(r"sign in at http://127.0.0.1:8000/ as (\S+) with the password '([^']+)'", out)
    assert sign_in, out
    browser = Client()
    signed_in = browser.post("/signin", {"username": sign_in[1], "password": sign_in[2]})
    assert signed_in.status_code == 302, signed_in.content
    timeline = browser.get("/").content.decode()
    assert timeline.count('<p class="content">') == len(response.json()["results"])


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_a_second_run_with_the_same_seed_writes_nothing(worker):
    seed_demo(wait=0)
    drain(worker, 50)
    tables = (User, Token, Follow, Post, OutboxMessage, FeedEntry)
    before = {model: model.objects.count() for model in tables}

    out = seed_demo(wait=30)

    assert {model: model.objects.count() for model in tables} == before
    assert "users: 80 (0 new)" in out
    assert "posts: 50 (0 new)" in out
    assert "every event applied" in out


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_waiting_without_a_worker_fails_clearly():
    with pytest.raises(
        CommandError, match="50 events are not applied after 1 s: is the fan-out worker running"
    ):
        seed_demo(wait=1)
    assert Post.objects.count() == 50, "the posts stay saved"


@pytest.mark.broker
@pytest.mark.own_relay
@pytest.mark.django_db(transaction=True)
def test_waiting_without_the_outbox_relay_fails_clearly():
    with pytest.raises(
        CommandError, match="50 events are not published after 1 s: is the outbox relay running"
    ):
        seed_demo(wait=1)
    assert Post.objects.count() == 50, "the posts stay saved"
