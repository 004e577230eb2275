"""The feed table as FEED_PARTITIONS hash partitions on user_id (feeds/partitioning.py).

On a populated table the rows are copied in this migration's transaction: reads go on
while they are copied and wait only for the final renames; writes wait for the whole copy
(docs/OPERATING.md, "Partitioning the feed table"). Reversible: the way back copies the
rows into one plain table.
"""

from django.conf import settings
from django.db import migrations

from feeds.partitioning import feed_table_convert


def user_table(apps) -> str:
    return apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table


def partition(apps, schema_editor) -> None:
    feed_table_convert(settings.FEED_PARTITIONS, user_table=user_table(apps))


def unpartition(apps, schema_editor) -> None:
    feed_table_convert(0, user_table=user_table(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("feeds", "0005_feedentry_inspect_permission"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(partition, unpartition)]
