import pytest
from django.db import IntegrityError

from follows.models import Follow

pytestmark = pytest.mark.django_db


def test_database_forbids_following_yourself(make_user):
    ada = make_user()

    with pytest.raises(IntegrityError, match="follow_not_self"):
        Follow.objects.create(follower=ada, followee=ada)


def test_database_forbids_a_duplicate_pair(make_user):
    ada, bob = make_user(), make_user()
    Follow.objects.create(follower=ada, followee=bob)

    with pytest.raises(IntegrityError, match="follow_unique_pair"):
        Follow.objects.create(follower=ada, followee=bob)
