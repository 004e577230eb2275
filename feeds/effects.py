"""What a fan-out batch changed in the feeds, made effective around the worker's transaction.

The fan-out worker (``consumers.loop``) knows Kafka, offsets, retries and dead letters; it
calls a ``FeedEffects`` at fixed points of each batch, with the ``FeedChanges`` its
handlers returned:

- ``record``, inside the batch's transaction: the users whose cached pages went stale, in
  a StalePages row, so that a crash before Redis took them leaves them to the next worker;
- ``committed``, after that transaction committed: invalidate the pages and forget the
  rows, note the feeds that grew beyond what they can hold for trimming, observe the
  post-to-feed latency;
- ``tick``, on every loop iteration: trim those feeds, a step at a time, and now and then
  drop a step of idle users' stored feeds (``feeds_vacuum``);
- ``recover``, when a worker starts: invalidate what a crashed one left stale.
"""

import logging
import time
from collections import Counter

from django.conf import settings
from django.db import close_old_connections
from django.db.utils import InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import RedisError

from core import metrics
from feeds.cache import pages_invalidate
from feeds.services import FeedChanges, feeds_trim_measured, feeds_vacuum
from feeds.stalepages import stale_pages_flush, stale_pages_forget, stale_pages_record
from posts.services import post_requests_prune

logger = logging.getLogger(__name__)

# Failures of the services feeds use: the worker waits and tries again.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisError)

# Feeds trimmed per loop iteration: each step holds up the next batch, and on the bench
# graph (800-entry bound) a step of 500 feeds took 170-290 ms, one of 100 about 35 ms.
TRIM_STEP = 100
# Expired Idempotency-Keys deleted per vacuum step.
PRUNE_STEP = 1000
# Seconds between vacuum steps while there is more to do.
VACUUM_PAUSE = 1.0


class FeedEffects:
    """The fan-out worker's hook into the feeds: page invalidation, trimming, latency."""

    def __init__(self, *, trim_interval: float = 0.0, vacuum_interval: float = 0.0) -> None:
        self.trim_interval = trim_interval
        # Seconds between steps of dropping idle users' feeds; 0: never (vacuum_feeds does it).
        self.vacuum_interval = vacuum_interval
        self._vacuumed_at = time.monotonic()
        # Kept until Redis took them: a retry after a failure skips the applied messages,
        # so it would otherwise never invalidate these pages. Their rows cover a crash.
        self._stale: set[int] = set()
        self._stale_rows: list[int] = []
        # The row ``record`` wrote in the transaction under way, adopted once it committed.
        self._recorded: int | None = None
        self._untrimmed: set[int] = set()
        self._trimming: list[int] = []
        self._trimmed_at = time.monotonic()
        # Feeds' sizes as last trimmed, plus what this worker added since: a feed is trimmed
        # again only once it may hold more than FEED_MAX_ENTRIES. (Counting a small feed
        # costs as much as trimming it, and most feeds are far below the bound.) Other
        # workers add to the same feeds unseen, so what is known expires.
        self._sizes: dict[int, int] = {}
        self._sizes_since = time.monotonic()

    def changes(self) -> FeedChanges:
        """Nothing changed yet: what a batch's handlers' changes are merged into."""
        return FeedChanges()

    def recover(self) -> dict[str, int]:
        """Invalidate the pages a worker that died left stale; raise if Redis or PostgreSQL
        is down (the rows are kept). Returns what it did, for the log."""
        return {"pages_invalidated": stale_pages_flush()}

    def record(self, changes: FeedChanges) -> None:
        """Inside the batch's transaction: keep the users whose pages went stale."""
        self._recorded = stale_pages_record(user_ids=changes.changed) if changes.changed else None

    def committed(self, changes: FeedChanges) -> None:
        """After the batch's transaction committed: make its changes effective.

        Raises RedisError (or a database error) with the stale pages kept, to be
        invalidated by the next call, which the worker makes when it retries the batch.
        """
        committed_at = timezone.now()
        self._stale |= changes.changed
        if self._recorded is not None:
            self._stale_rows.append(self._recorded)
            self._recorded = None
        if self._stale:
            pages_invalidate(self._stale)
            self._stale = set()
        if self._stale_rows:
            stale_pages_forget(ids=self._stale_rows)
            self._stale_rows = []
        self._note_growth(changes.grown)
        for occurred_at in changes.posted_at:
            latency = (committed_at - occurred_at).total_seconds()
            metrics.POST_TO_FEED_LATENCY.observe(max(latency, 0.0))

    # Seconds a feed's known size is trusted: it bounds by how much the feeds of several
    # workers may exceed FEED_MAX_ENTRIES between their trims.
    SIZES_KEPT_SECONDS = 60.0

    def _note_growth(self, grown: Counter[int]) -> None:
        if time.monotonic() - self._sizes_since >= self.SIZES_KEPT_SECONDS:
            self._sizes, self._sizes_since = {}, time.monotonic()
        bound = settings.FEED_MAX_ENTRIES
        for user_id, rows in grown.items():
            size = self._sizes.pop(user_id, None)
            if size is not None and size + rows <= bound:
                self._sizes[user_id] = size + rows
            else:
                self._untrimmed.add(user_id)

    def tick(self) -> None:
        """Trim the grown feeds, once a round is due or while one is under way; drop a step
        of idle users' feeds once one is due."""
        due = self._untrimmed and time.monotonic() - self._trimmed_at >= self.trim_interval
        if self._trimming or due:
            self._trim()
        if self.vacuum_interval and time.monotonic() - self._vacuumed_at >= self.vacuum_interval:
            self._vacuum()

    def _vacuum(self) -> None:
        """One step of vacuum_feeds (FEED_VACUUM_BATCH users), and of deleting expired
        Idempotency-Keys (PRUNE_STEP); the next one at the next interval, or VACUUM_PAUSE
        later while this one found a full step to do."""
        started = time.monotonic()
        try:
            result = feeds_vacuum(users=settings.FEED_VACUUM_BATCH)
            keys = post_requests_prune(limit=PRUNE_STEP)
        except TRANSIENT_ERRORS as exc:
            logger.warning("feed vacuum failed (%s: %s); will retry", type(exc).__name__, exc)
            close_old_connections()
            self._vacuumed_at = time.monotonic()
            return
        full = result.users == settings.FEED_VACUUM_BATCH or keys == PRUNE_STEP
        # More to do: the next step in a second, so that steps do not crowd out batches.
        self._vacuumed_at = time.monotonic() - (self.vacuum_interval - VACUUM_PAUSE if full else 0.0)
        metrics.FEED_VACUUMED.inc(result.entries)
        if result.users or keys:
            logger.info(
                "idle feeds vacuumed",
                extra={
                    "users": result.users,
                    "entries": result.entries,
                    "expired_idempotency_keys": keys,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    def _trim(self) -> None:
        """Trim the feeds that grew since the last round back to FEED_MAX_ENTRIES.

        A round takes the feeds that grew, then trims TRIM_STEP of them per call, so that a
        round over many feeds does not hold up fan-out for seconds. Trimming is idempotent
        and may lag: a feed that was not trimmed before a crash is trimmed when it grows again.
        """
        if not self._trimming:
            self._trimmed_at = time.monotonic()
            self._trimming, self._untrimmed = sorted(self._untrimmed), set()
        users, self._trimming = self._trimming[:TRIM_STEP], self._trimming[TRIM_STEP:]
        started = time.monotonic()
        try:
            deleted, sizes = feeds_trim_measured(user_ids=users)
        except TRANSIENT_ERRORS as exc:
            logger.warning("feed trim failed (%s: %s); will retry", type(exc).__name__, exc)
            self._untrimmed.update(users)
            close_old_connections()
            return
        self._sizes.update(sizes)
        metrics.FEED_TRIMMED.inc(deleted)
        logger.info(
            "feeds trimmed",
            extra={"feeds": len(users), "deleted": deleted, "seconds": round(time.monotonic() - started, 3)},
        )
