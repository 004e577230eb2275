import itertools
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from tqdm import tqdm

from core.arguments import whole_number
from feeds.rebuild import BATCH_SIZE, CacheNotInvalidated, feeds_rebuild_batch
from feeds.services import RebuildResult

User = get_user_model()
POSITIVE = whole_number(1)
MAX_ID = 2**63 - 1


def _in_thread(batch: list[int], dry_run: bool) -> RebuildResult:
    try:
        return feeds_rebuild_batch(batch, dry_run=dry_run)
    finally:
        connections.close_all()  # This thread's connection; the pool's threads end with the command.


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
        if users:
            # Ids beyond bigint cannot exist; PostgreSQL would refuse them as parameters.
            possible = [pk for pk in users if pk <= MAX_ID]
            known = set(User.objects.filter(pk__in=possible).values_list("pk", flat=True))
            unknown = sorted(set(users) - known)
            if unknown:
                raise CommandError(f"no such users: {', '.join(map(str, unknown))}")
            ids: Iterator[int] = iter(sorted(known))
            total = len(known)
        else:
            total = User.objects.count()
            ids = User.objects.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=10_000)
        batches = iter(lambda: list(itertools.islice(ids, options["batch_size"])), [])

        started = time.monotonic()
        added = removed = changed = stale = 0
        bar = tqdm(total=total, desc="feeds", unit="feed", disable=None, leave=False, file=self.stderr._out)
        with bar, ThreadPoolExecutor(options["concurrency"], thread_name_prefix="rebuild") as pool:
            running: dict[Future, int] = {}
            # At most two batches per thread in flight: --all never holds every id at once.
            for batch in itertools.chain(batches, [None]):
                while running and (batch is None or len(running) >= 2 * options["concurrency"]):
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        size = running.pop(future)
                        try:
                            result = future.result()
                        except CacheNotInvalidated as exc:
                            self.stderr.write(str(exc))
                            stale += 1
                            continue
                        finally:
                            bar.update(size)
                        added += result.added
                        removed += result.removed
                        changed += len(result.changed)
                if batch is not None:
                    running[pool.submit(_in_thread, batch, dry_run)] = len(batch)

        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            f"{'dry run: ' if dry_run else ''}{total} feeds checked in {time.monotonic() - started:.1f} s; "
            f"{verb} {changed}: {added} entries added, {removed} removed"
        )
        if stale:
            raise CommandError(
                f"{stale} batches were rebuilt but their cached pages were not invalidated (Redis "
                "unreachable); they refresh within FEED_CACHE_TTL"
            )
