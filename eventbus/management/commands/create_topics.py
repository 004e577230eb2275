from typing import Any

from django.core.management.base import BaseCommand

from eventbus.topics import topics_ensure


class Command(BaseCommand):
    help = "Create the Kafka topics the feed system uses, if they are missing."

    def handle(self, *args: Any, **options: Any) -> None:
        created = topics_ensure()
        self.stdout.write("created: " + ", ".join(created) if created else "topics already exist")
