import pytest
from django_redis import get_redis_connection
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from core.cache_keys import feed_generation_key
from core.cursor import cursor_encode
from feeds import cache
from feeds.models import FeedEntry
from feeds.services import feed_fanout_posts
from follows.models import Follow
from posts.models import Post

pytestmark = pytest.mark.django_db


def hits() -> float:
    return REGISTRY.get_sample_value("feed_cache_hits_total") or 0.0


def misses() -> float:
    return REGISTRY.get_sample_value("feed_cache_misses_total") or 0.0


def test_own_feed_is_readable(make_user, client_for):
    ada = make_user()
    post = Post.objects.create(author=ada, content="mine")
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)

    response = client_for(ada).get(f"/feeds/{ada.pk}")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert [p["id"] for p in response.json()["results"]] == [post.pk]
    assert response.json()["next_cursor"] is None


def test_someone_elses_feed_is_forbidden(make_user, client_for):
    ada, bob = make_user(), make_user()

    response = client_for(bob).get(f"/feeds/{ada.pk}")

    assert response.status_code == 403
    assert "detail" in response.json()


def test_staff_can_read_any_feed_and_gets_404_for_unknown_users(make_user, client_for):
    ada, admin = make_user(), make_user(is_staff=True)
    client = client_for(admin)

    assert client.get(f"/feeds/{ada.pk}").status_code == 200
    assert client.get("/feeds/987654321").status_code == 404
    assert client.get(f"/feeds/{10**17}").status_code == 404
    assert client.get(f"/feeds/{10**17}?cursor={cursor_encode(5)}").status_code == 404
    assert client.get("/feeds/0").status_code == 404
    assert client.get("/feeds/-1").status_code == 404


def test_feed_needs_authentication(make_user):
    ada = make_user()

    assert APIClient().get(f"/feeds/{ada.pk}").status_code == 401
    assert APIClient(HTTP_AUTHORIZATION="Token bogus").get(f"/feeds/{ada.pk}").status_code == 401


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "cursor=garbage", "cursor=" + "A" * 65],
)
def test_bad_query_parameters_are_400(make_user, client_for, query):
    ada = make_user()

    response = client_for(ada).get(f"/feeds/{ada.pk}?{query}")

    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize("query", ["x=1", "limit=5&page=2", "nocache"])
def test_unknown_query_parameters_are_400(make_user, client_for, query):
    ada = make_user()

    response = client_for(ada).get(f"/feeds/{ada.pk}?{query}")

    assert response.status_code == 400, response.content
    unknown = query.split("&")[-1].split("=")[0]
    assert response.json() == {unknown: ["Unknown query parameter."]}


def test_limit_and_cursor_page_through_the_api(make_user, client_for):
    ada = make_user()
    posts = [Post.objects.create(author=ada, content=str(i)) for i in range(5)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])
    client = client_for(ada)

    first = client.get(f"/feeds/{ada.pk}?limit=3").json()
    second = client.get(f"/feeds/{ada.pk}?limit=3&cursor={first['next_cursor']}").json()

    assert [p["id"] for p in first["results"]] == [p.pk for p in posts[:1:-1]]
    assert [p["id"] for p in second["results"]] == [posts[1].pk, posts[0].pk]
    assert second["next_cursor"] is None


def test_default_limit_is_20(make_user, client_for):
    ada = make_user()
    posts = [Post.objects.create(author=ada, content=str(i)) for i in range(25)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])

    body = client_for(ada).get(f"/feeds/{ada.pk}").json()

    assert len(body["results"]) == 20
    assert body["next_cursor"] == cursor_encode(posts[5].pk)


def test_second_read_is_a_cache_hit_with_no_database_queries(
    make_user, client_for, django_assert_num_queries
):
    ada = make_user()
    post = Post.objects.create(author=ada, content="cached")
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)
    client = client_for(ada)
    hits_before, misses_before = hits(), misses()
    first = client.get(f"/feeds/{ada.pk}")

    with django_assert_num_queries(0):
        second = client.get(f"/feeds/{ada.pk}")

    assert second.content == first.content
    assert misses() == misses_before + 1
    assert hits() == hits_before + 1


def test_pages_past_the_first_are_not_cached(make_user, client_for):
    ada = make_user()
    posts = [Post.objects.create(author=ada, content=str(i)) for i in range(3)]
    FeedEntry.objects.bulk_create([FeedEntry(user_id=ada.pk, post_id=p.pk) for p in posts])
    client = client_for(ada)
    hits_before, misses_before = hits(), misses()

    client.get(f"/feeds/{ada.pk}?limit=1")
    client.get(f"/feeds/{ada.pk}?cursor={cursor_encode(posts[2].pk)}")

    assert (hits(), misses()) == (hits_before, misses_before)


def test_a_fanout_makes_cached_pages_stale(make_user, client_for):
    author, fan = make_user(), make_user()
    Follow.objects.create(follower=fan, followee=author)
    client = client_for(fan)
    assert client.get(f"/feeds/{fan.pk}").json()["results"] == []  # now cached
    post = Post.objects.create(author=author, content="new")

    result = feed_fanout_posts(post_ids=[post.pk])
    cache.pages_invalidate(result.changed)

    assert [p["id"] for p in client.get(f"/feeds/{fan.pk}").json()["results"]] == [post.pk]


def test_a_page_rendered_before_an_invalidation_is_never_served(make_user):
    ada = make_user()
    _, generation = cache.page_lookup(ada.pk)  # a reader starts on a miss ...
    cache.pages_invalidate([ada.pk])  # ... a fan-out commits meanwhile ...
    cache.page_store(ada.pk, generation=generation, body=b'{"stale":true}')  # ... it stores late

    body, _ = cache.page_lookup(ada.pk)

    assert body is None


def test_a_generation_lost_and_bumped_again_never_revives_an_old_page(make_user, client_for):
    ada = make_user()
    client = client_for(ada)
    first = Post.objects.create(author=ada, content="first")
    FeedEntry.objects.create(user_id=ada.pk, post_id=first.pk)
    cache.pages_invalidate([ada.pk])
    assert [p["id"] for p in client.get(f"/feeds/{ada.pk}").json()["results"]] == [first.pk]  # cached
    second = Post.objects.create(author=ada, content="second")
    FeedEntry.objects.create(user_id=ada.pk, post_id=second.pk)

    get_redis_connection("default").delete(feed_generation_key(ada.pk))  # evicted
    cache.pages_invalidate([ada.pk])  # the fan-out's bump starts it again

    assert [p["id"] for p in client.get(f"/feeds/{ada.pk}").json()["results"]] == [second.pk, first.pk]


def test_a_generation_lost_before_the_next_read_never_revives_an_old_page(make_user, client_for):
    ada = make_user()
    client = client_for(ada)
    assert client.get(f"/feeds/{ada.pk}").json()["results"] == []  # cached, no bump yet
    post = Post.objects.create(author=ada, content="new")
    FeedEntry.objects.create(user_id=ada.pk, post_id=post.pk)
    cache.pages_invalidate([ada.pk])

    get_redis_connection("default").delete(feed_generation_key(ada.pk))  # evicted

    assert [p["id"] for p in client.get(f"/feeds/{ada.pk}").json()["results"]] == [post.pk]
