"""Seeding: accounts, tokens, follows and posts written in bulk, for the demo data
(``seed_demo``), the benchmark and the chaos drill. Each caller draws its own graph;
the writing is here. Table names come from the models, so they follow the models.
"""

import datetime
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from tqdm import tqdm

from follows.models import Follow, Reader
from posts.models import Post
from posts.services import post_create

User = get_user_model()

BULK_BATCH = 5000
# Posts per transaction: each still gets its own event, published when the chunk commits.
POST_CHUNK = 200

# A tqdm-like factory: wraps an iterable, or counts by hand as a context manager.
Progress = Callable[..., tqdm]
SILENT = functools.partial(tqdm, disable=True)


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def users_ensure(
    usernames: Sequence[str], *, password: str | None, progress: Progress = SILENT
) -> tuple[list[int], int]:
    """The ids of these accounts, in the order given, creating the missing ones; and how
    many were created. Every new account gets the same ``password`` (None: unusable)."""
    ids = dict(User.objects.filter(username__in=usernames).values_list("username", "pk"))
    missing = [name for name in usernames if name not in ids]
    if missing:
        hashed = make_password(password)  # One hash for every account: hashing is slow.
        for batch in progress(list(batches(missing, BULK_BATCH)), desc="users", unit="batch"):
            User.objects.bulk_create(
                [User(username=name, password=hashed) for name in batch], ignore_conflicts=True
            )
        ids = dict(User.objects.filter(username__in=usernames).values_list("username", "pk"))
        readers_ensure(list(ids.values()))
    return [ids[name] for name in usernames], len(missing)


def readers_ensure(user_ids: Sequence[int], *, seen_at: datetime.datetime | None = None) -> None:
    """These users seen at ``seen_at`` (default now), their feeds complete, unless already
    recorded: active, as if they had just signed up (``follows.activity``)."""
    seen_at = seen_at or timezone.now()
    for batch in batches(list(user_ids), BULK_BATCH):
        Reader.objects.bulk_create(
            [Reader(user_id=pk, seen_at=seen_at, feed_complete=True) for pk in batch], ignore_conflicts=True
        )


def tokens_ensure(user_ids: Sequence[int]) -> tuple[dict[int, str], int]:
    """Each user's API token key, created where missing; and how many were created."""
    keys = dict(Token.objects.filter(user_id__in=user_ids).values_list("user_id", "key"))
    tokens = [Token(key=Token.generate_key(), user_id=pk) for pk in dict.fromkeys(user_ids) if pk not in keys]
    Token.objects.bulk_create(tokens, batch_size=BULK_BATCH, ignore_conflicts=True)
    if tokens:
        keys = dict(Token.objects.filter(user_id__in=user_ids).values_list("user_id", "key"))
    return keys, len(tokens)


def follows_copy(pairs: Iterable[tuple[int, int]], *, progress: Progress = SILENT) -> int:
    """Write (follower id, followee id) pairs; return how many were new.

    Copied in and inserted by PostgreSQL: a million follows take seconds, not minutes.
    No post_save is sent, so these follows publish no events: posts made later reach
    these followers through the ordinary fan-out.
    """
    pairs = list(pairs)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE seed_follows (follower_id bigint, followee_id bigint) ON COMMIT DROP"
        )
        with cursor.copy("COPY seed_follows (follower_id, followee_id) FROM STDIN") as copy:
            for batch in progress(list(batches(pairs, BULK_BATCH)), desc="follows", unit="batch"):
                for pair in batch:
                    copy.write_row(pair)
        cursor.execute(
            f"INSERT INTO {Follow._meta.db_table} (follower_id, followee_id, created_at)"
            " SELECT follower_id, followee_id, now() FROM seed_follows ON CONFLICT DO NOTHING"
        )
        return cursor.rowcount


def posts_history(author_ids: Sequence[int], *, per_author: int) -> int:
    """``per_author`` posts by each author, dated a day back, inserted by PostgreSQL in one
    statement (round by round, so ids interleave the authors). They have no outbox row,
    no event and no feed entry: a history for a benchmark to fan out its own way."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Post._meta.db_table} (author_id, content, created_at)"
            " SELECT u, 'seed post ' || n, now() - interval '1 day'"
            " FROM unnest(%s::bigint[]) u, generate_series(1, %s) n ORDER BY n, u",
            [list(author_ids), per_author],
        )
        return cursor.rowcount


def posts_publish(posts: Sequence[tuple[int, str]], *, progress: Progress = SILENT) -> int:
    """Create (author id, content) posts through ``post_create``, a chunk per transaction:
    each gets its outbox row, which the outbox relay publishes as its Kafka event."""
    authors = User.objects.in_bulk({author for author, _ in posts})
    with progress(total=len(posts), desc="posts", unit="post") as bar:
        for chunk in batches(posts, POST_CHUNK):
            with transaction.atomic():
                for author, content in chunk:
                    post_create(author=authors[author], content=content)
            bar.update(len(chunk))
    return len(posts)
