"""What the fan-out loop asks of the owner of its handlers' changes (``feeds.effects``).

The loop knows Kafka, offsets, retries, dead letters and the breaker; what a batch's
handlers changed it merges and hands on, at fixed points, without looking inside.
"""

from typing import Protocol, Self


class Changes(Protocol):
    """What handlers return: merged with ``|=``, summed up in the batch's log line."""

    def __ior__(self, other: Self) -> Self: ...

    def log_fields(self) -> dict[str, int]: ...


class BatchEffects(Protocol):
    """Called by the loop at fixed points of every batch.

    Any method may raise a transient error (a database or Redis outage): the loop waits
    and calls it again, ``committed`` by retrying the batch, whose applied messages are
    then skipped, so it must keep what it has not made effective yet.
    """

    def changes(self) -> Changes:
        """An empty changes object, into which the batch's handler results are merged."""
        ...

    def recover(self) -> dict[str, int]:
        """On start: finish what a worker that died left; return counts for the log."""
        ...

    def record(self, changes: Changes) -> None:
        """Inside the batch's transaction, after the handlers ran."""
        ...

    def committed(self, changes: Changes) -> None:
        """After the batch's transaction committed, before the Kafka commit."""
        ...

    def tick(self) -> None:
        """Once per loop iteration, batch or not: periodic work."""
        ...
