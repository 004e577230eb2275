"""The admin of accounts, tokens and follows."""

import pytest
from rest_framework.authtoken.models import Token

from follows.models import Follow

pytestmark = pytest.mark.django_db


def test_users_are_listed_with_their_id_and_found_by_exact_id(staff_client, make_user):
    users = [make_user(f"name{n}") for n in range(12)]
    wanted = users[3]

    listing = staff_client.get("/admin/auth/user/")
    found = staff_client.get("/admin/auth/user/", {"q": str(wanted.pk)})
    by_name = staff_client.get("/admin/auth/user/", {"q": "name1"})

    assert (
        f'<th class="field-id"><a href="/admin/auth/user/{wanted.pk}/change/">{wanted.pk}</a></th>'.encode()
        in (listing.content)
    )
    assert wanted in found.context["cl"].result_list
    assert {u.username for u in by_name.context["cl"].result_list} == {"name1", "name10", "name11"}


def test_a_user_page_links_to_their_feed_in_the_inspector(staff_client, make_user):
    bob = make_user("bob")

    page = staff_client.get(f"/admin/auth/user/{bob.pk}/change/")

    assert f'href="/admin/inspect/?user={bob.pk}"'.encode() in page.content


def test_follows_are_titled_and_linked_by_username(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    follow = Follow.objects.create(follower=bob, followee=ada)

    listing = staff_client.get("/admin/follows/follow/")
    page = staff_client.get(f"/admin/follows/follow/{follow.pk}/change/")

    assert str(follow) == "bob follows ada"
    assert f'<a href="/admin/auth/user/{bob.pk}/change/">bob</a>'.encode() in listing.content
    assert f'<a href="/admin/auth/user/{ada.pk}/change/">ada</a>'.encode() in listing.content
    assert b"bob follows ada" in page.content


def test_follows_filtered_from_a_user_page_say_their_filter(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)

    following = staff_client.get("/admin/follows/follow/", {"follower__id__exact": bob.pk})
    followers = staff_client.get("/admin/follows/follow/", {"followee__id__exact": ada.pk})
    unfiltered = staff_client.get("/admin/follows/follow/")

    assert b"<h1>Accounts bob follows</h1>" in following.content
    assert b"<h1>Followers of ada</h1>" in followers.content
    assert b"<h1>Select follow to change</h1>" in unfiltered.content


def test_the_ends_of_a_follow_cannot_be_changed_after_it_was_made(staff_client, make_user):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    follow = Follow.objects.create(follower=bob, followee=ada)

    page = staff_client.get(f"/admin/follows/follow/{follow.pk}/change/")
    staff_client.post(f"/admin/follows/follow/{follow.pk}/change/", {"follower": eve.pk, "followee": eve.pk})
    add = staff_client.get("/admin/follows/follow/add/")

    follow.refresh_from_db()
    assert (follow.follower, follow.followee) == (bob, ada)
    assert b'name="follower"' not in page.content
    assert b'name="follower"' in add.content, "a new follow still chooses its ends"


def test_tokens_are_listed_by_prefix_only_and_added_without_a_list_of_every_user(staff_client, make_user):
    bob = make_user("bob")
    token = Token.objects.create(user=bob)

    listing = staff_client.get("/admin/follows/usertoken/")
    page = staff_client.get(f"/admin/follows/usertoken/{bob.pk}/change/")
    add = staff_client.get("/admin/follows/usertoken/add/")

    assert token.key[:6].encode() in listing.content
    assert token.key.encode() not in listing.content
    assert token.key.encode() not in page.content
    assert b"<select" not in add.content.split(b'id="id_user"')[0][-200:]
    assert b'class="vForeignKeyRawIdAdminField"' in add.content
    assert staff_client.get("/admin/authtoken/tokenproxy/").status_code == 404


def test_a_token_deleted_in_the_admin_is_gone(staff_client, make_user):
    bob = make_user("bob")
    Token.objects.create(user=bob)

    page = staff_client.get(f"/admin/follows/usertoken/{bob.pk}/delete/")
    staff_client.post(f"/admin/follows/usertoken/{bob.pk}/delete/", {"post": "yes"})

    assert page.status_code == 200
    assert not Token.objects.filter(user=bob).exists()
