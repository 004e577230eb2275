"""Keep the token cache honest: a deleted token or a changed user is looked up afresh."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token

from feedsite.cache_keys import auth_token_key


def forget_cached_token(sender: type[Token], instance: Token, **kwargs: Any) -> None:
    key = auth_token_key(instance.key)
    transaction.on_commit(lambda: get_redis_connection("default").delete(key))


def forget_cached_tokens_of_user(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, created: bool, **kwargs: Any
) -> None:
    if created or kwargs.get("raw"):
        return
    keys = [auth_token_key(k) for k in Token.objects.filter(user=instance).values_list("key", flat=True)]
    if keys:
        transaction.on_commit(lambda: get_redis_connection("default").delete(*keys))
