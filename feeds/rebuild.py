"""Feed rebuilds as operators run them (``rebuild_feeds``): in batches, retried on lock
conflicts with the worker, with cached pages invalidated once each batch has committed,
several batches at once if asked. The user admin's action queues them instead, as
``feeds.rebuild`` events that the fan-out worker applies (``feeds_rebuild_enqueue``).

The statement that rebuilds one batch is ``feeds.services.feeds_rebuild``.
"""

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import OperationalError, connections, transaction
from redis.exceptions import RedisError

from eventbus.events import FEEDS_REBUILD, FeedsRebuild, event_build
from eventbus.outbox import outbox_enqueue
from feeds.cache import pages_invalidate
from feeds.services import RebuildResult, feeds_rebuild

logger = logging.getLogger(__name__)

ATTEMPTS = 5
# Feeds rebuilt per transaction unless told otherwise (rebuild_feeds), and per queued
# feeds.rebuild event (the admin action).
BATCH_SIZE = 200
# Ids beyond bigint cannot exist; PostgreSQL would refuse them as parameters.
MAX_ID = 2**63 - 1


class CacheNotInvalidated(Exception):
    """The feeds were rebuilt, but Redis refused to invalidate their cached pages."""


class UnknownUsers(Exception):
    """Some of the users asked for do not exist; ``args[0]`` lists their ids, sorted."""


@dataclass
class RebuildSummary:
    """What a rebuild of many feeds did, added up over its batches."""

    dry_run: bool = False
    checked: int = 0
    added: int = 0
    removed: int = 0
    # How many feeds changed (or would, in a dry run).
    changed: int = 0
    # One message per batch rebuilt whose cached pages Redis did not invalidate: those
    # refresh within FEED_CACHE_TTL.
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0


# Called with each batch's user ids once that batch is rebuilt (pages invalidated or not),
# in the caller's thread.
Progress = Callable[[list[int]], None]


def feeds_rebuild_batch(user_ids: Iterable[int], *, dry_run: bool = False) -> RebuildResult:
    """Rebuild these feeds in one transaction, then invalidate the pages of those that changed.

    A deadlock with the fan-out worker (both may insert the same entry) aborts one side;
    this side retries. Raises CacheNotInvalidated, after the rebuild committed, when Redis
    is unreachable: the pages then refresh within FEED_CACHE_TTL.
    """
    user_ids = list(user_ids)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = feeds_rebuild(user_ids=user_ids, dry_run=dry_run)
            break
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                raise
            logger.warning("feed rebuild of %d users failed (%s); retrying", len(user_ids), exc)
            time.sleep(0.1 * attempt)
    if result.changed and not dry_run:
        try:
            pages_invalidate(result.changed)
        except RedisError as exc:
            raise CacheNotInvalidated(
                f"{len(result.changed)} rebuilt feeds kept their cached pages: {exc}"
            ) from exc
    return result


def feeds_rebuild_enqueue(*, user_ids: Iterable[int]) -> int:
    """Queue the rebuild of these users' feeds for the fan-out worker: ``feeds.rebuild``
    events of BATCH_SIZE users each, stored in the outbox in one transaction (all or none),
    published like any event. Returns how many events were queued.

    The worker applies each like ``feeds_rebuild`` and invalidates the pages of the feeds
    that changed; an operator's request thus never runs in a web request.
    """
    ids = sorted(set(user_ids))
    chunks = [ids[start : start + BATCH_SIZE] for start in range(0, len(ids), BATCH_SIZE)]
    with transaction.atomic():
        for chunk in chunks:
            event = event_build(event_type=FEEDS_REBUILD, payload=FeedsRebuild(user_ids=chunk))
            # Keyed by the first user: the chunks spread over the partitions.
            outbox_enqueue(event=event, key=str(chunk[0]))
    return len(chunks)


def rebuild_targets(*, user_ids: Iterable[int] | None) -> tuple[Iterator[int], int]:
    """The ids of the feeds to rebuild, ascending, and how many there are: these users',
    or with None every user's (streamed, so that never all are held at once).

    Raises UnknownUsers naming the ids that are not users.
    """
    User = get_user_model()
    if user_ids is None:
        total = User.objects.count()
        return User.objects.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=10_000), total
    wanted = set(user_ids)
    possible = [pk for pk in wanted if pk <= MAX_ID]
    known = set(User.objects.filter(pk__in=possible).values_list("pk", flat=True))
    if unknown := sorted(wanted - known):
        raise UnknownUsers(unknown)
    return iter(sorted(known)), len(known)


def feeds_rebuild_users(
    user_ids: Iterable[int],
    *,
    concurrency: int = 1,
    batch_size: int = BATCH_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RebuildSummary:
    """Rebuild these users' feeds, ``batch_size`` per transaction (feeds_rebuild_batch),
    ``concurrency`` batches at once, and add up what changed.

    With a concurrency of 1 the batches run one after another in the caller's thread and
    transaction; above it, in a pool of threads with their own connections, with at most two
    batches per thread in flight, so that ``user_ids`` is read only as fast as the work
    goes. A batch whose pages Redis did not invalidate is counted and reported in the
    summary's ``stale``; any other error of a batch propagates, after the batches running
    beside it have finished.
    """
    if concurrency < 1 or batch_size < 1:
        raise ValueError("concurrency and batch_size must be at least 1")
    ids = iter(user_ids)
    batches = iter(lambda: list(itertools.islice(ids, batch_size)), [])
    summary = RebuildSummary(dry_run=dry_run)
    started = time.monotonic()

    def settle(batch: list[int], result: Callable[[], RebuildResult]) -> None:
        try:
            done = result()
        except CacheNotInvalidated as exc:
            summary.stale.append(str(exc))
        else:
            summary.added += done.added
            summary.removed += done.removed
            summary.changed += len(done.changed)
        summary.checked += len(batch)
        if progress is not None:
            progress(batch)

    if concurrency == 1:
        for batch in batches:
            settle(batch, lambda batch=batch: feeds_rebuild_batch(batch, dry_run=dry_run))
    else:
        _rebuild_in_threads(batches, concurrency=concurrency, dry_run=dry_run, settle=settle)
    summary.seconds = time.monotonic() - started
    return summary


def _rebuild_in_threads(
    batches: Iterator[list[int]],
    *,
    concurrency: int,
    dry_run: bool,
    settle: Callable[[list[int], Callable[[], RebuildResult]], None],
) -> None:
    with ThreadPoolExecutor(concurrency, thread_name_prefix="rebuild") as pool:
        running: dict[Future, list[int]] = {}
        for batch in itertools.chain(batches, [None]):
            while running and (batch is None or len(running) >= 2 * concurrency):
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    settle(running.pop(future), future.result)
            if batch is not None:
                running[pool.submit(_in_thread, batch, dry_run)] = batch


def _in_thread(batch: list[int], dry_run: bool) -> RebuildResult:
    try:
        return feeds_rebuild_batch(batch, dry_run=dry_run)
    finally:
        connections.close_all()  # This thread's connection; the pool's threads end with the batches.
