"""The admin of accounts, tokens, follows, blocks and mutes."""

import json

import pytest
from rest_framework.authtoken.models import Token

from eventbus.models import OutboxMessage
from follows.models import Block, Follow, Mute
from follows.services import PULL_EVERYTHING

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


def event_types() -> list[str]:
    """The event type of every outbox row, oldest first."""
    return [dict(row.headers)["event_type"] for row in OutboxMessage.objects.order_by("pk")]


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_blocks_and_mutes_are_listed_by_username_and_found_by_either_end(
    staff_client, make_user, kind, model
):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    model.objects.create(user=bob, target=ada)
    model.objects.create(user=eve, target=bob)
    model.objects.create(user=ada, target=eve)

    listing = staff_client.get(f"/admin/follows/{kind}/")
    found = staff_client.get(f"/admin/follows/{kind}/", {"q": "bob"})

    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) == 3
    assert f'<a href="/admin/auth/user/{bob.pk}/change/">bob</a>'.encode() in listing.content
    assert f'<a href="/admin/auth/user/{ada.pk}/change/">ada</a>'.encode() in listing.content
    assert {(r.user.username, r.target.username) for r in found.context["cl"].result_list} == {
        ("bob", "ada"),
        ("eve", "bob"),
    }


def test_blocks_and_mutes_filtered_from_a_user_page_say_their_filter(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Block.objects.create(user=bob, target=ada)
    Mute.objects.create(user=bob, target=ada)

    titles = {
        (kind, end): staff_client.get(f"/admin/follows/{kind}/", {f"{end}__id__exact": user.pk}).content
        for kind in ("block", "mute")
        for end, user in (("user", bob), ("target", ada))
    }

    assert b"<h1>Accounts bob blocks</h1>" in titles["block", "user"]
    assert b"<h1>Accounts that block ada</h1>" in titles["block", "target"]
    assert b"<h1>Accounts bob mutes</h1>" in titles["mute", "user"]
    assert b"<h1>Accounts that mute ada</h1>" in titles["mute", "target"]


def test_a_user_page_links_to_their_blocks_and_mutes_both_ways(staff_client, make_user):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    Block.objects.create(user=bob, target=ada)
    Block.objects.create(user=bob, target=eve)
    Block.objects.create(user=eve, target=bob)
    Mute.objects.create(user=ada, target=bob)

    page = staff_client.get(f"/admin/auth/user/{bob.pk}/change/")

    for url, text in [
        (f"/admin/follows/block/?user__id__exact={bob.pk}", "2 accounts"),
        (f"/admin/follows/block/?target__id__exact={bob.pk}", "1 account"),
        (f"/admin/follows/mute/?user__id__exact={bob.pk}", "0 accounts"),
        (f"/admin/follows/mute/?target__id__exact={bob.pk}", "1 account"),
    ]:
        assert f'<a href="{url}">{text}</a>'.encode() in page.content


def test_a_block_added_in_the_admin_ends_the_follows_both_ways_and_is_announced(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    Follow.objects.create(follower=ada, followee=bob)
    OutboxMessage.objects.all().delete()

    response = staff_client.post("/admin/follows/block/add/", {"user": bob.pk, "target": ada.pk})

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    block = Block.objects.get()
    assert (block.user, block.target) == (bob, ada)
    assert not Follow.objects.exists()
    assert event_types() == ["block.created", "follow.deleted", "follow.deleted"]
    assert response["Location"] == "/admin/follows/block/"


def test_a_mute_added_in_the_admin_keeps_the_follow_and_is_announced(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Follow.objects.create(follower=bob, followee=ada)
    OutboxMessage.objects.all().delete()

    response = staff_client.post("/admin/follows/mute/add/", {"user": bob.pk, "target": ada.pk})

    assert response.status_code == 302
    assert Mute.objects.filter(user=bob, target=ada).exists()
    assert Follow.objects.filter(follower=bob, followee=ada).exists()
    assert event_types() == ["mute.created"]


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_blocking_or_muting_oneself_in_the_admin_is_a_form_error(staff_client, make_user, kind, model):
    bob = make_user("bob")

    response = staff_client.post(f"/admin/follows/{kind}/add/", {"user": bob.pk, "target": bob.pk})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"target": [f"A user cannot {kind} themselves."]}
    assert f"A user cannot {kind} themselves.".encode() in response.content
    assert not model.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_the_limit_in_the_admin_is_a_form_error(staff_client, make_user, settings, kind, model):
    setattr(settings, f"{kind.upper()}_LIMIT", 1)
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    model.objects.create(user=bob, target=eve)
    OutboxMessage.objects.all().delete()

    response = staff_client.post(f"/admin/follows/{kind}/add/", {"user": bob.pk, "target": ada.pk})

    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["__all__"]
    assert f"cannot {kind} more than 1 account" in error
    assert model.objects.count() == 1
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_an_existing_pair_in_the_admin_is_a_form_error(staff_client, make_user, kind, model):
    ada, bob = make_user("ada"), make_user("bob")
    model.objects.create(user=bob, target=ada)
    OutboxMessage.objects.all().delete()

    response = staff_client.post(f"/admin/follows/{kind}/add/", {"user": bob.pk, "target": ada.pk})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert model.objects.count() == 1
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_the_ends_of_a_block_or_mute_cannot_be_changed_after_it_was_made(
    staff_client, make_user, kind, model
):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    relation = model.objects.create(user=bob, target=ada)

    page = staff_client.get(f"/admin/follows/{kind}/{relation.pk}/change/")
    staff_client.post(f"/admin/follows/{kind}/{relation.pk}/change/", {"user": eve.pk, "target": eve.pk})
    add = staff_client.get(f"/admin/follows/{kind}/add/")

    relation.refresh_from_db()
    assert (relation.user, relation.target) == (bob, ada)
    assert f"bob {kind}s ada".encode() in page.content
    assert b'name="target"' not in page.content
    assert b'name="target"' in add.content
    assert b'class="vForeignKeyRawIdAdminField"' in add.content


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_a_block_or_mute_deleted_in_the_admin_is_announced(staff_client, make_user, kind, model):
    ada, bob = make_user("ada"), make_user("bob")
    relation = model.objects.create(user=bob, target=ada)
    OutboxMessage.objects.all().delete()

    page = staff_client.get(f"/admin/follows/{kind}/{relation.pk}/delete/")
    response = staff_client.post(f"/admin/follows/{kind}/{relation.pk}/delete/", {"post": "yes"})

    assert page.status_code == 200
    assert response.status_code == 302
    assert not model.objects.exists()
    assert event_types() == [f"{kind}.deleted"]


@pytest.mark.parametrize(("kind", "model"), [("block", Block), ("mute", Mute)])
def test_blocks_or_mutes_deleted_by_the_bulk_action_are_each_announced(staff_client, make_user, kind, model):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    relations = [model.objects.create(user=bob, target=ada), model.objects.create(user=eve, target=bob)]
    kept = model.objects.create(user=ada, target=eve)
    OutboxMessage.objects.all().delete()
    selected = {"action": "delete_selected", "_selected_action": [r.pk for r in relations]}

    confirm = staff_client.post(f"/admin/follows/{kind}/", selected)
    response = staff_client.post(f"/admin/follows/{kind}/", {**selected, "post": "yes"})

    assert confirm.status_code == 200
    assert response.status_code == 302
    assert list(model.objects.all()) == [kept]
    assert event_types() == [f"{kind}.deleted", f"{kind}.deleted"]
    payloads = [json.loads(bytes(row.value))["payload"] for row in OutboxMessage.objects.order_by("pk")]
    assert sorted((p["user_id"], p["target_id"]) for p in payloads) == sorted(
        (r.user_id, r.target_id) for r in relations
    )


def test_a_mute_deleted_in_the_admin_brings_the_muted_posts_back_as_unmuting_does(staff_client, make_user):
    ada, bob, eve = make_user("ada"), make_user("bob"), make_user("eve")
    Follow.objects.create(follower=bob, followee=ada)
    Follow.objects.create(follower=bob, followee=eve)
    mute = Mute.objects.create(user=bob, target=ada)
    other = Mute.objects.create(user=bob, target=eve)

    staff_client.post(f"/admin/follows/mute/{mute.pk}/delete/", {"post": "yes"})
    staff_client.post(
        "/admin/follows/mute/", {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"}
    )

    # Until the worker copies them back, reads pull every post of theirs from the posts index.
    assert set(Follow.objects.values_list("followee__username", "pull_below")) == {
        ("ada", PULL_EVERYTHING),
        ("eve", PULL_EVERYTHING),
    }


def test_a_follow_across_a_block_is_a_form_error_in_the_admin(staff_client, make_user):
    ada, bob = make_user("ada"), make_user("bob")
    Block.objects.create(user=ada, target=bob)

    for follower, followee in [(bob, ada), (ada, bob)]:
        response = staff_client.post(
            "/admin/follows/follow/add/", {"follower": follower.pk, "followee": followee.pk}
        )
        assert response.status_code == 200
        assert b"This account cannot be followed" in response.content

    assert not Follow.objects.exists()
