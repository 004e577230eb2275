"""The outbox model, moved here from the consumers app: state only, the table stays."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    # The table was created by the consumers app, where the model lived first.
    dependencies = [("consumers", "0002_outbox_and_applied_offsets")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="OutboxMessage",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("topic", models.CharField(max_length=255)),
                        ("key", models.CharField(max_length=255)),
                        ("value", models.BinaryField()),
                        ("headers", models.JSONField(blank=True, default=list)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "consumers_outboxmessage",
                        "indexes": [
                            models.Index(
                                condition=models.Q(("sent_at__isnull", True)), fields=["id"], name="outbox_unsent"
                            ),
                            models.Index(
                                condition=models.Q(("sent_at__isnull", False)),
                                fields=["sent_at"],
                                name="outbox_sent",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
