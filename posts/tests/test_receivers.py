import json

import pytest
from django.db import transaction

from posts.models import Post
from posts.services import post_create
from tests.helpers import topic_read

pytestmark = pytest.mark.broker


@pytest.mark.django_db(transaction=True)
def test_a_committed_post_is_published_as_post_created(make_user, settings):
    ada = make_user()

    post = post_create(author=ada, content="hello")

    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    event = json.loads(message.value())
    assert message.key() == str(ada.pk).encode()
    assert event["type"] == "post.created"
    assert event["version"] == 1
    assert event["payload"] == {"post_id": post.pk, "author_id": ada.pk}
    assert {"event_id", "occurred_at"} <= set(event)
    assert dict(message.headers())["event_type"] == b"post.created"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_post_publishes_nothing(make_user, settings):
    ada = make_user()

    def create_then_fail() -> None:
        with transaction.atomic():
            post_create(author=ada, content="never")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        create_then_fail()
    post_create(author=ada, content="marker")

    # Partition order is per key, and both posts share the author's key.
    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert json.loads(message.value())["payload"]["post_id"] == Post.objects.get(content="marker").pk
    assert not Post.objects.filter(content="never").exists()
