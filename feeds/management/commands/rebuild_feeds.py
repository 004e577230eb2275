from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.arguments import whole_number
from feeds.rebuild import BATCH_SIZE, UnknownUsers, feeds_rebuild_users, rebuild_targets

POSITIVE = whole_number(1)


class Command(BaseCommand):
    help = (
        "Recompute stored feeds from follows and posts and invalidate their cached pages. "
        "Safe while the fan-out worker runs: each batch of feeds is replaced in one "
        "transaction, and a second run changes nothing."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--user", dest="users", type=POSITIVE, nargs="+", action="extend", default=[], metavar="ID",
            help="rebuild the feeds of these user ids",
        )  # fmt: skip
        parser.add_argument("--all", action="store_true", help="rebuild every user's feed")
        parser.add_argument(
            "--concurrency", type=POSITIVE, default=2, help="batches rebuilt at once (default 2)"
        )
        parser.add_argument(
            "--batch-size",
            type=POSITIVE,
            default=BATCH_SIZE,
            help=f"feeds per transaction (default {BATCH_SIZE})",
        )
        parser.add_argument("--dry-run", action="store_true", help="count what would change; write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        users, everyone, dry_run = options["users"], options["all"], options["dry_run"]
        if bool(users) == everyone:
            raise CommandError("give either --user ID ... or --all")
        for name in ("concurrency", "batch_size"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        try:
            ids, total = rebuild_targets(user_ids=users or None)
        except UnknownUsers as exc:
            raise CommandError(f"no such users: {', '.join(map(str, exc.args[0]))}") from None

        bar = tqdm(total=total, desc="feeds", unit="feed", disable=None, leave=False, file=self.stderr._out)
        with bar:
            summary = feeds_rebuild_users(
                ids,
                concurrency=options["concurrency"],
                batch_size=options["batch_size"],
                dry_run=dry_run,
                progress=lambda batch: bar.update(len(batch)),
            )
        for message in summary.stale:
            self.stderr.write(message)
        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            f"{'dry run: ' if dry_run else ''}{summary.checked} feeds checked in {summary.seconds:.1f} s; "
            f"{verb} {summary.changed}: {summary.added} entries added, {summary.removed} removed"
        )
        if summary.stale:
            raise CommandError(
                f"{len(summary.stale)} batches were rebuilt but their cached pages were not invalidated "
                "(Redis unreachable); they refresh within FEED_CACHE_TTL"
            )
