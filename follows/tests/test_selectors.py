import pytest

from follows.models import Block, Follow, Mute
from follows.selectors import _most_followed, follow_suggestions

pytestmark = pytest.mark.django_db


def test_suggestions_leave_out_followed_blocked_and_muted_accounts_in_one_query(
    make_user, django_assert_num_queries
):
    ada = make_user("ada")
    accounts = {name: make_user(name) for name in ("followed", "blocked", "blocker", "muted", "star")}
    for account in accounts.values():
        Follow.objects.create(follower=make_user(), followee=account)
    Follow.objects.create(follower=ada, followee=accounts["followed"])
    Block.objects.create(user=ada, target=accounts["blocked"])
    Block.objects.create(user=accounts["blocker"], target=ada)
    Mute.objects.create(user=ada, target=accounts["muted"])
    _most_followed()

    with django_assert_num_queries(1):
        suggestions = follow_suggestions(user_id=ada.pk, limit=5)

    assert [s.username for s in suggestions] == ["star"]
