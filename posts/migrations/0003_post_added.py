from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

import posts.models


class Migration(migrations.Migration):
    """Posts carry the id of the transaction that wrote them (streams.selectors).

    The column is added without a default first, then given one: a volatile default on
    ADD COLUMN would rewrite the whole table under an exclusive lock, and posts written
    before the column existed stay null (streams start from what is new). The indexes are
    built concurrently, so that posting goes on while they are.
    """

    atomic = False

    dependencies = [
        ("posts", "0002_post_request"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    "ALTER TABLE posts_post ADD COLUMN added bigint NULL",
                    reverse_sql="ALTER TABLE posts_post DROP COLUMN added",
                ),
                migrations.RunSQL(
                    "ALTER TABLE posts_post ALTER COLUMN added"
                    " SET DEFAULT (pg_current_xact_id()::text)::bigint",
                    reverse_sql=migrations.RunSQL.noop,
                ),
            ],
            state_operations=[
                migrations.AddField(
                    model_name="post",
                    name="added",
                    field=models.BigIntegerField(
                        db_default=posts.models.ADDED_XACT, editable=False, null=True
                    ),
                ),
            ],
        ),
        AddIndexConcurrently(
            model_name="post",
            index=models.Index(fields=["added"], name="post_added"),
        ),
        AddIndexConcurrently(
            model_name="post",
            index=models.Index(fields=["author", "added"], name="post_author_added"),
        ),
    ]
