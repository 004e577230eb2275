"""Usernames equal ignoring case are one name: a unique index on UPPER(username).

The signup check asks ``username__iexact``, which PostgreSQL answers with UPPER(); this
index makes the same rule hold for two signups that pass the check at the same time.
Creating it fails if the table already holds such twins: rename one of each pair first.
"""

from django.conf import settings
from django.db import migrations

INDEX = "follows_user_username_upper_uniq"


def _table(apps, schema_editor) -> tuple[str, str]:
    user = apps.get_model(settings.AUTH_USER_MODEL)
    quote = schema_editor.quote_name
    # Historical models carry no USERNAME_FIELD; the project's user model names it username.
    return quote(user._meta.db_table), quote(user._meta.get_field("username").column)


def create_index(apps, schema_editor) -> None:
    table, column = _table(apps, schema_editor)
    schema_editor.execute(f"CREATE UNIQUE INDEX {INDEX} ON {table} (UPPER({column}))")


def drop_index(apps, schema_editor) -> None:
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("follows", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_index, drop_index)]
