from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core.arguments import whole_number
from feeds.services import VacuumResult, feeds_vacuum

POSITIVE = whole_number(1)


class Command(BaseCommand):
    help = (
        "Delete the stored feed entries of users not seen for FEED_ACTIVE_SECONDS, in steps of "
        "--batch-size users, and report what was removed. Safe while the worker runs (which "
        "also runs it every FEED_VACUUM_INTERVAL_SECONDS); a user who comes back is read "
        "from the posts index until their feed is rebuilt."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--batch-size",
            type=POSITIVE,
            default=settings.FEED_VACUUM_BATCH,
            help=f"idle users per transaction (default FEED_VACUUM_BATCH, {settings.FEED_VACUUM_BATCH})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        total = VacuumResult()
        while True:
            step = feeds_vacuum(users=options["batch_size"])
            total.users += step.users
            total.entries += step.entries
            if step.users < options["batch_size"]:
                break
        self.stdout.write(f"Removed {total.entries} entries from the feeds of {total.users} idle users.")
