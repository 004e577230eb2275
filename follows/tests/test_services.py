import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from follows.models import Follow
from follows.services import FollowError, follow_create
from tests.helpers import wait_for

User = get_user_model()


@pytest.mark.django_db(transaction=True)
def test_two_follows_at_once_cannot_both_pass_the_limit(make_user, settings):
    settings.FOLLOW_LIMIT = 2
    bob, first, second, third = make_user(), make_user(), make_user(), make_user()
    Follow.objects.create(follower=bob, followee=first)
    outcomes = []

    def follow(followee) -> None:
        try:
            follow_create(follower=bob, followee_id=followee.pk)
            outcomes.append("created")
        except FollowError:
            outcomes.append("refused")
        finally:
            connection.close()

    def both_wait_for_the_follower() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                # Backends, not lock entries: a waiter may hold several ungranted ones.
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid IN"
                " (SELECT pid FROM pg_stat_activity WHERE datname = current_database())"
            )
            return cursor.fetchone()[0] == 2

    threads = [threading.Thread(target=follow, args=(user,)) for user in (second, third)]
    with transaction.atomic():
        # Holding the follower's row puts both follows in flight at the same time.
        User.objects.select_for_update().get(pk=bob.pk)
        for thread in threads:
            thread.start()
        wait_for(both_wait_for_the_follower, timeout=30, what="both follows to wait for the follower")
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["created", "refused"]
    assert Follow.objects.filter(follower=bob).count() == 2
