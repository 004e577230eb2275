from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from core.arguments import whole_number
from feeds.partitioning import feed_partitions, feed_table_convert


def layout(partitions: int) -> str:
    return f"{partitions} hash partitions on user_id" if partitions else "one plain table"


class Command(BaseCommand):
    help = (
        "Rebuild the feed table as --partitions hash partitions on user_id (0: one plain "
        "table), copying every row in one transaction: reads go on during the copy and wait "
        "only for the final renames; writes (fan-out, rebuilds, trims) wait for the whole copy. "
        "Without --partitions, print the current layout."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--partitions",
            type=whole_number(0),
            help=f"the new number of partitions (FEED_PARTITIONS is {settings.FEED_PARTITIONS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["partitions"] is None:
            self.stdout.write(layout(feed_partitions()))
            return
        with transaction.atomic():
            conversion = feed_table_convert(options["partitions"], user_table=get_user_model()._meta.db_table)
        if conversion.before == conversion.after:
            self.stdout.write(f"unchanged: {layout(conversion.after)}")
        else:
            self.stdout.write(str(conversion))
