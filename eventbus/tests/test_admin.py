"""The outbox's read-only admin pages."""

import pytest
from django.utils import timezone

from eventbus.models import OutboxMessage
from posts.models import Post

pytestmark = pytest.mark.django_db


def test_outbox_messages_are_listed_and_shown_but_never_changed(staff_client, make_user):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="hi")
    row = OutboxMessage.objects.get()
    OutboxMessage.objects.filter(pk=row.pk).update(sent_at=timezone.now(), sent_partition=3, sent_offset=77)

    listing = staff_client.get("/admin/eventbus/outboxmessage/")
    by_key = staff_client.get("/admin/eventbus/outboxmessage/", {"q": str(ada.pk)})
    detail = staff_client.get(f"/admin/eventbus/outboxmessage/{row.pk}/change/")

    assert listing.status_code == 200
    assert b"post.created" in listing.content
    assert b'<td class="field-sent_offset">77</td>' in listing.content
    assert list(by_key.context["cl"].result_list) == [row]
    assert f"&quot;post_id&quot;: {post.pk}".encode() in detail.content
    assert b'name="_save"' not in detail.content
    assert staff_client.get("/admin/eventbus/outboxmessage/add/").status_code == 403
    assert (
        staff_client.post(f"/admin/eventbus/outboxmessage/{row.pk}/change/", {"key": "x"}).status_code == 403
    )
    assert (
        staff_client.post(f"/admin/eventbus/outboxmessage/{row.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert OutboxMessage.objects.get().key == str(ada.pk)
