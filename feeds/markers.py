"""Read markers (as Mastodon's markers API): where a user stopped reading their home feed,
and how many entries of the feed lie above it."""

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from feeds.models import Marker
from feeds.selectors import feed_post_ids
from follows.activity import reader_feed_trusted

# Unread entries are counted up to this many; past it the count says so (``capped``).
UNREAD_CAP = 100


class MarkerConflict(Exception):
    """The marker's version is no longer the one the client named; ``args[0]`` is the
    current marker (None: there is none yet)."""


def marker_get(*, user_id: int, timeline: str = Marker.HOME) -> Marker | None:
    return Marker.objects.filter(user_id=user_id, timeline=timeline).first()


def marker_set(
    *, user_id: int, last_read_id: int, version: int | None = None, timeline: str = Marker.HOME
) -> Marker:
    """Move the user's marker to ``last_read_id``, its version one higher (1 for a new one).

    With ``version``, only if that is the current version (0 while there is no marker);
    otherwise MarkerConflict. The row is locked, so of two moves naming the same version
    one wins and the other conflicts.
    """
    for _ in range(2):
        try:
            with transaction.atomic():
                marker = Marker.objects.select_for_update().filter(user_id=user_id, timeline=timeline).first()
                current = marker.version if marker is not None else 0
                if version is not None and version != current:
                    raise MarkerConflict(marker)
                now = timezone.now()
                if marker is None:
                    return Marker.objects.create(
                        user_id=user_id,
                        timeline=timeline,
                        last_read_id=last_read_id,
                        version=1,
                        updated_at=now,
                    )
                marker.last_read_id, marker.version, marker.updated_at = last_read_id, current + 1, now
                marker.save(update_fields=["last_read_id", "version", "updated_at"])
                return marker
        except IntegrityError:
            # A first marker created at the same moment: read it and decide again.
            continue
    raise MarkerConflict(marker_get(user_id=user_id, timeline=timeline))


@dataclass(frozen=True)
class Unread:
    count: int
    capped: bool


def feed_unread(*, user_id: int) -> Unread:
    """The entries of the user's feed above their home marker, as reads see them, counted
    up to UNREAD_CAP (one read of the feed's newest UNREAD_CAP + 1 entries). Without a
    marker every entry is unread."""
    marker = marker_get(user_id=user_id)
    after = marker.last_read_id if marker is not None else 0
    ids = feed_post_ids(user_id=user_id, count=UNREAD_CAP + 1, stored=reader_feed_trusted(user_id=user_id))
    newer = sum(1 for post_id in ids if post_id > after)
    return Unread(count=min(newer, UNREAD_CAP), capped=newer > UNREAD_CAP)
