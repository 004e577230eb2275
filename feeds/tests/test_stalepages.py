"""Stale page records: written with the batch, forgotten without waiting on the disk."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from core import sql
from feeds.models import StalePages
from feeds.stalepages import stale_pages_forget, stale_pages_record

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_unflushed_condition_turns_synchronous_commit_off_for_its_transaction_only():
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 WHERE {sql.UNFLUSHED}")
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_forgetting_commits_without_waiting_for_the_wal_flush():
    with transaction.atomic():
        first = stale_pages_record(user_ids=[1, 2])
        second = stale_pages_record(user_ids=[3])

    with CaptureQueriesContext(connection) as queries:
        stale_pages_forget(ids=[first])

    assert list(StalePages.objects.values_list("pk", flat=True)) == [second]
    # A forget lost to a crash of PostgreSQL only invalidates those pages once more; the
    # batch's own commit is what must be durable.
    [delete] = [q["sql"] for q in queries if "DELETE" in q["sql"]]
    assert sql.UNFLUSHED in delete


def test_forgetting_inside_a_transaction_leaves_its_durability_alone():
    row = stale_pages_record(user_ids=[1])
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            stale_pages_forget(ids=[row])
        assert not any(sql.UNFLUSHED in q["sql"] for q in queries)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    assert not StalePages.objects.exists()
