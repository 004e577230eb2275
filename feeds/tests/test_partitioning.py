"""The feed table as hash partitions on user_id: the migration that converts a populated
table, manage.py partition_feeds, and the feed's paths on the partitioned table."""

import io
import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext

from feeds.models import FeedEntry
from feeds.partitioning import TABLE, feed_partitions, feed_table_convert, partition_name
from feeds.services import feed_fanout_posts, feeds_trim
from follows.models import Follow
from posts.models import Post

User = get_user_model()
BEFORE = ("feeds", "0005_feedentry_inspect_permission")
PARTITIONED = ("feeds", "0006_partition_feed_entries")


def migrate_to(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


def migrate_back() -> None:
    """Back to the app's newest migration, as every other test expects the schema."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("feeds"))


def rows() -> list[tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT user_id, post_id FROM {TABLE} ORDER BY 1, 2")
        return cursor.fetchall()


def per_partition() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text, count(*) FROM {TABLE} GROUP BY 1")
        return dict(cursor.fetchall())


def table_shape() -> dict[str, object]:
    """What the conversion must keep: the constraints and index by name, and how they are made."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
            [TABLE],
        )
        constraints = dict(cursor.fetchall())
        cursor.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = %s::regclass",
            [TABLE],
        )
        indexes = {name: definition.replace(" ONLY ", " ") for name, definition in cursor.fetchall()}
    return {"constraints": constraints, "indexes": indexes}


@pytest.fixture
def graph(make_user):
    """40 users following each other in a ring of 10, 3 posts each, fanned out: 40 * 3 * 11 rows."""
    users = [make_user(f"u{n}") for n in range(40)]
    Follow.objects.bulk_create(
        Follow(follower=user, followee=users[(n + step) % len(users)])
        for n, user in enumerate(users)
        for step in range(1, 11)
    )
    posts = Post.objects.bulk_create(Post(author=user, content=f"{k}") for user in users for k in range(3))
    feed_fanout_posts(post_ids=[post.pk for post in posts])
    return users, posts


@pytest.mark.django_db
def test_the_suites_database_has_the_partitioned_table():
    assert feed_partitions() == settings.FEED_PARTITIONS == 16


@pytest.mark.django_db
def test_rows_land_in_the_partition_of_their_user(graph):
    users, _ = graph

    counts = per_partition()

    assert sum(counts.values()) == 40 * 3 * 11
    assert len(counts) > 8, "40 users over 16 partitions: hashing spreads them"
    assert set(counts) <= {partition_name(16, r) for r in range(16)}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT tableoid) FROM {TABLE} WHERE user_id = %s", [users[0].pk])
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db
def test_a_feed_read_touches_one_partition(graph):
    users, _ = graph
    with connection.cursor() as cursor:
        query = f"SELECT post_id FROM {TABLE} WHERE user_id = %s ORDER BY post_id DESC LIMIT 20"
        cursor.execute(f"EXPLAIN {query}", [users[0].pk])
        plan = "\n".join(line for (line,) in cursor.fetchall())
    assert len(set(re.findall(rf"\b{TABLE}_16_\d\d\b", plan))) == 1, plan


@pytest.mark.django_db(transaction=True)
def test_the_migration_converts_a_populated_table_without_losing_or_doubling_a_row(graph):
    migrate_to(BEFORE)
    try:
        assert feed_partitions() == 0
        plain = rows()
        shape = table_shape()
        assert len(plain) == 40 * 3 * 11

        migrate_to(PARTITIONED)

        assert feed_partitions() == settings.FEED_PARTITIONS
        assert rows() == plain
        assert table_shape() == shape, "same names, same definitions"
    finally:
        migrate_back()


@pytest.mark.django_db(transaction=True)
def test_the_migration_back_copies_the_rows_into_one_plain_table(graph):
    partitioned = rows()

    migrate_to(BEFORE)
    try:
        assert feed_partitions() == 0
        assert rows() == partitioned
        assert per_partition() == {TABLE: len(partitioned)}
    finally:
        migrate_back()
    assert rows() == partitioned


@pytest.mark.django_db(transaction=True)
def test_partition_feeds_changes_the_count_and_keeps_every_row_and_constraint(graph):
    users, posts = graph
    before = rows()
    out = io.StringIO()
    try:
        call_command("partition_feeds", "--partitions", "4", stdout=out)

        assert f"{TABLE}: 4 hash partitions (was 16); {len(before)} rows copied" in out.getvalue()
        assert feed_partitions() == 4
        assert rows() == before
        assert set(per_partition()) <= {partition_name(4, r) for r in range(4)}
        # The primary key still makes a repeated fan-out a no-op, the foreign key still holds.
        assert feed_fanout_posts(post_ids=[p.pk for p in posts]).rows == 0
        assert rows() == before
        with pytest.raises(IntegrityError), transaction.atomic():
            FeedEntry.objects.bulk_create([FeedEntry(user_id=10**9, post_id=posts[0].pk)])
        User.objects.filter(pk=users[0].pk).delete()
        assert not FeedEntry.objects.filter(user_id=users[0].pk).exists()
    finally:
        call_command("partition_feeds", "--partitions", str(settings.FEED_PARTITIONS), stdout=io.StringIO())
    assert feed_partitions() == settings.FEED_PARTITIONS


@pytest.mark.django_db
def test_partition_feeds_prints_the_layout_and_refuses_a_negative_count():
    out = io.StringIO()
    call_command("partition_feeds", stdout=out)
    assert out.getvalue().strip() == "16 hash partitions on user_id"

    with pytest.raises(CommandError, match="must be at least 0"):
        call_command("partition_feeds", "--partitions", "-1")


@pytest.mark.django_db
def test_the_same_count_changes_nothing():
    out = io.StringIO()
    call_command("partition_feeds", "--partitions", "16", stdout=out)
    assert out.getvalue().strip() == "unchanged: 16 hash partitions on user_id"


@pytest.mark.django_db(transaction=True)
def test_a_conversion_outside_a_transaction_is_refused():
    with pytest.raises(transaction.TransactionManagementError):
        feed_table_convert(4, user_table="auth_user")
    assert feed_partitions() == 16


@pytest.mark.django_db
def test_a_trim_finds_each_feeds_cutoff_once_not_once_per_entry(settings):
    """On the partitioned table the planner folded the cutoff's subquery into the DELETE's
    join filter, where it ran (over all 16 partitions) for every entry of the feeds it cut:
    the bench's trim took 7x the plain table's. Nothing in it may run more than once per
    feed, whichever join the planner picks. A batch as the worker's: a quarter of the feeds
    over the bound, in a table of 30,000 other entries."""
    settings.FEED_MAX_ENTRIES = 50
    users = User.objects.bulk_create(User(username=f"u{n}") for n in range(400))
    readers = users[:100]
    posts = Post.objects.bulk_create(Post(author=users[0], content=str(n)) for n in range(100))
    FeedEntry.objects.bulk_create(
        FeedEntry(user=user, post=post)
        for n, user in enumerate(users)
        for post in (posts[:60] if n < 25 else posts[:10] if n < 100 else posts)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {TABLE}")
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert feeds_trim(user_ids=[r.pk for r in readers]) == 25 * 10
        transaction.set_rollback(True)
    [trim] = [q["sql"] for q in queries.captured_queries if "DELETE" in q["sql"]]
    with transaction.atomic(), connection.cursor() as cursor:
        # The join the planner picked on the bench's table; on this small one it may pick
        # a nested loop, where the cutoff runs once per feed either way.
        cursor.execute("SET LOCAL enable_nestloop = off")
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {trim}")
        plan = "\n".join(line for (line,) in cursor.fetchall())
        transaction.set_rollback(True)

    loops = [int(n) for n in re.findall(r"loops=(\d+)", plan)]
    assert max(loops) <= len(readers), plan
