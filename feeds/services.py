"""Fan-out on write: copy each new post into its author's and followers' feeds."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction

from feeds.models import FeedEntry
from follows.models import Follow
from posts.models import Post

INSERT_BATCH_SIZE = 5000


@dataclass
class FanoutResult:
    rows: int = 0
    users: set[int] = field(default_factory=set)


# Joins the worker's transaction, whose handler savepoint already isolates a failure.
@transaction.atomic(savepoint=False)
def feed_fanout_posts(*, post_ids: Iterable[int]) -> FanoutResult:
    """Add each post to its author's feed and to every follower's feed.

    Safe to run twice: existing (user, post) pairs are skipped by the primary key. Posts
    that no longer exist are skipped. Followers are read for the whole batch at once.
    """
    authors = dict(Post.objects.filter(pk__in=set(post_ids)).values_list("pk", "author_id"))
    if not authors:
        return FanoutResult()
    followers: dict[int, list[int]] = defaultdict(list)
    for followee_id, follower_id in Follow.objects.filter(followee_id__in=set(authors.values())).values_list(
        "followee_id", "follower_id"
    ):
        followers[followee_id].append(follower_id)

    rows = []
    users = set()
    for post_id, author_id in authors.items():
        audience = [author_id, *followers[author_id]]
        users.update(audience)
        rows.extend(FeedEntry(user_id=user_id, post_id=post_id) for user_id in audience)
    FeedEntry.objects.bulk_create(rows, ignore_conflicts=True, batch_size=INSERT_BATCH_SIZE)
    return FanoutResult(rows=len(rows), users=users)
