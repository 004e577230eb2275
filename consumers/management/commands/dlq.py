import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from consumers.deadletters import dead_letters_discard, dead_letters_replay
from consumers.models import DeadLetter
from eventbus.producer import DeliveryFailed


class Command(BaseCommand):
    help = "Inspect, replay or discard dead-lettered messages."

    def add_arguments(self, parser: Any) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="list dead letters")
        listing.add_argument("--status", choices=DeadLetter.Status.values, default=DeadLetter.Status.PENDING)
        listing.add_argument("--limit", type=int, default=50)
        show = actions.add_parser("show", help="show one dead letter in full")
        show.add_argument("id", type=int)
        replay = actions.add_parser("replay", help="republish to the original topic")
        replay.add_argument("ids", type=int, nargs="*")
        replay.add_argument("--all", action="store_true", help="every pending dead letter")
        discard = actions.add_parser("discard", help="mark as discarded")
        discard.add_argument("ids", type=int, nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")(options)

    def _list(self, options: dict) -> None:
        rows = DeadLetter.objects.filter(status=options["status"])[: options["limit"]]
        for dl in rows:
            self.stdout.write(
                f"{dl.pk}\t{dl.failed_at:%Y-%m-%d %H:%M:%S}\t{dl.topic}[{dl.partition}]@{dl.offset}"
                f"\t{dl.error_class}: {dl.error_message[:80]}"
            )
        if not rows:
            self.stdout.write(f"no {options['status']} dead letters")

    def _show(self, options: dict) -> None:
        dl = self._get([options["id"]])[0]
        fields = {
            "id": dl.pk,
            "status": dl.status,
            "topic": dl.topic,
            "partition": dl.partition,
            "offset": dl.offset,
            "consumer_group": dl.consumer_group,
            "failed_at": dl.failed_at.isoformat(),
            "error_class": dl.error_class,
            "error_message": dl.error_message,
            "key": dl.key_text(),
            "value": dl.value_text(),
            "headers": dl.headers,
        }
        self.stdout.write(json.dumps(fields, indent=2, ensure_ascii=False))
        self.stdout.write(dl.traceback)

    def _replay(self, options: dict) -> None:
        if options["all"] == bool(options["ids"]):
            raise CommandError("give dead letter ids or --all, not both")
        if options["all"]:
            rows = list(DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).order_by("pk"))
        else:
            rows = self._get(options["ids"])
        try:
            count = dead_letters_replay(dead_letters=rows)
        except DeliveryFailed as exc:
            raise CommandError(f"nothing marked replayed: {exc}") from None
        self.stdout.write(f"replayed {count}")

    def _discard(self, options: dict) -> None:
        count = dead_letters_discard(dead_letters=self._get(options["ids"]))
        self.stdout.write(f"discarded {count}")

    def _get(self, ids: list[int]) -> list[DeadLetter]:
        rows = list(DeadLetter.objects.filter(pk__in=ids).order_by("pk"))
        missing = sorted(set(ids) - {dl.pk for dl in rows})
        if missing:
            raise CommandError(f"no dead letter with id {', '.join(map(str, missing))}")
        return rows
