"""The dead-letter circuit breaker: stop the worker rather than dead-letter everything."""

from collections import deque

from core import metrics


class BreakerOpen(Exception):
    """Too many dead letters recently: stop rather than dead-letter everything."""


class DeadLetterBreaker:
    """Trips when dead letters exceed ``max_ratio`` of the last ``window`` messages."""

    def __init__(self, *, max_ratio: float, window: int) -> None:
        self.max_ratio = max_ratio
        self.window = window
        self._recent: deque[bool] = deque(maxlen=window)

    def check(self, *, total: int, dead: int) -> None:
        """Raise BreakerOpen if a batch of ``total`` with ``dead`` letters would trip it."""
        if not dead:
            return
        recent = [*self._recent, *([False] * (total - dead)), *([True] * dead)][-self.window :]
        ratio = sum(recent) / len(recent)
        if len(recent) >= max(1, self.window // 10) and ratio > self.max_ratio:
            metrics.FANOUT_BREAKER_OPEN.set(1)
            raise BreakerOpen(
                f"{sum(recent)} of the last {len(recent)} messages would be dead letters "
                f"(limit {self.max_ratio:.0%})"
            )

    def record(self, *, total: int, dead: int) -> None:
        self._recent.extend([False] * (total - dead) + [True] * dead)
