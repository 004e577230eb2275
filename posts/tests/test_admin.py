"""The admin of posts."""

import pytest

from posts.models import Post

pytestmark = pytest.mark.django_db


def test_posts_are_titled_and_linked_by_their_author(staff_client, make_user):
    ada = make_user("ada")
    post = Post.objects.create(author=ada, content="hello")

    listing = staff_client.get("/admin/posts/post/")
    page = staff_client.get(f"/admin/posts/post/{post.pk}/change/")

    assert str(post) == f"Post {post.pk} by ada"
    assert f'<a href="/admin/auth/user/{ada.pk}/change/">ada</a>'.encode() in listing.content
    assert f"Post {post.pk} by ada".encode() in page.content
    assert f'href="/admin/inspect/?post={post.pk}"'.encode() in page.content


def test_a_posts_author_cannot_be_changed_after_it_was_made(staff_client, make_user):
    ada, eve = make_user("ada"), make_user("eve")
    post = Post.objects.create(author=ada, content="hello")

    page = staff_client.get(f"/admin/posts/post/{post.pk}/change/")
    staff_client.post(
        f"/admin/posts/post/{post.pk}/change/",
        {"author": eve.pk, "content": "edited", "created_at_0": "2026-01-01", "created_at_1": "00:00:00"},
    )

    post.refresh_from_db()
    assert post.author == ada
    assert post.content == "edited", "the content may still be edited"
    assert b'name="author"' not in page.content
