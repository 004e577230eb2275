import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from consumers.models import DeadLetter
from eventbus import producer
from tests.helpers import free_port, topic_read

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_letter(settings):
    def make(value: bytes = b"{broken", **fields) -> DeadLetter:
        offset = DeadLetter.objects.count()
        defaults = {
            "topic": settings.FEED_EVENTS_TOPIC,
            "partition": 0,
            "offset": offset,
            "key": b"42",
            "value": value,
            "headers": [["event_type", "post.created"], ["dlq.error.class", "X"]],
            "error_class": "UndecodableEvent",
            "error_message": "not valid JSON",
            "traceback": "Traceback ...",
            "consumer_group": settings.FANOUT_GROUP_ID,
            "failed_at": timezone.now(),
        }
        return DeadLetter.objects.create(**(defaults | fields))

    return make


def run(*args: str) -> str:
    out = StringIO()
    call_command("dlq", *args, stdout=out)
    return out.getvalue()


def test_list_shows_pending_dead_letters(dead_letter):
    pending = dead_letter()
    discarded = dead_letter(status=DeadLetter.Status.DISCARDED)

    listed = run("list")

    assert listed.startswith(f"{pending.pk}\t")
    assert f"\n{discarded.pk}\t" not in listed
    assert f"{discarded.pk}\t" in run("list", "--status", "discarded")


def test_show_prints_the_message_and_error(dead_letter):
    dl = dead_letter(value=b'{"half": ')

    shown = run("show", str(dl.pk))

    fields = json.loads(shown[: shown.rindex("}") + 1])
    assert fields["value"] == '{"half": '
    assert fields["key"] == "42"
    assert fields["error_class"] == "UndecodableEvent"
    assert "Traceback" in shown


@pytest.mark.broker
def test_replay_republishes_to_the_original_topic_and_marks_replayed(dead_letter, settings):
    first, second = dead_letter(value=b"one"), dead_letter(value=b"two")

    assert run("replay", str(second.pk)) == "replayed 1\n"

    [message] = topic_read(settings.FEED_EVENTS_TOPIC, count=1)
    assert message.value() == b"two"
    assert message.key() == b"42"
    # The DLQ's headers stripped; one names the dead letter replayed.
    assert message.headers() == [("event_type", b"post.created"), ("dlq.replay_of", str(second.pk).encode())]
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.status == DeadLetter.Status.REPLAYED
    assert second.status_changed_at is not None
    assert first.status == DeadLetter.Status.PENDING


@pytest.mark.broker
def test_replay_all_takes_every_pending_one(dead_letter, settings):
    dead_letter(value=b"a")
    dead_letter(value=b"b")
    dead_letter(value=b"c", status=DeadLetter.Status.DISCARDED)

    assert run("replay", "--all") == "replayed 2\n"

    values = sorted(m.value() for m in topic_read(settings.FEED_EVENTS_TOPIC, count=2))
    assert values == [b"a", b"b"]
    assert DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).count() == 0


def test_replay_with_the_broker_down_fails_and_marks_nothing(dead_letter, settings):
    dl = dead_letter()
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"
    settings.KAFKA_PRODUCER_FLUSH_TIMEOUT = 2
    producer.producer_reset()

    with pytest.raises(CommandError, match="nothing marked replayed"):
        run("replay", str(dl.pk))

    dl.refresh_from_db()
    assert dl.status == DeadLetter.Status.PENDING
    producer.producer_reset()


def test_discard(dead_letter):
    dl = dead_letter()

    assert run("discard", str(dl.pk)) == "discarded 1\n"

    dl.refresh_from_db()
    assert dl.status == DeadLetter.Status.DISCARDED


@pytest.mark.parametrize("args", [["show", "999"], ["replay", "999"], ["discard", "999"], ["replay"]])
def test_bad_arguments_are_command_errors(args):
    with pytest.raises(CommandError):
        run(*args)
