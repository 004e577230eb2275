from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from feedsite import metrics
from posts.models import Post


@transaction.atomic
def post_create(*, author: AbstractBaseUser, content: str) -> Post:
    """Save a post; its ``post.created`` event is published when the transaction commits."""
    post = Post(author=author, content=content)
    post.save(force_insert=True)
    transaction.on_commit(metrics.POSTS_CREATED.inc)
    return post
