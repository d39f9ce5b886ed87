"""The retry budget: how many retries the traffic can afford, shared by a client's calls.

The policy (``_policy.Policy.decide``) asks ``RetryBudget.try_withdraw`` before every retry it
times itself: do retries still make up less than their allowed share?
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries may add only ``ratio`` of the calls of the last ``window`` seconds, plus a floor.

    Over any window: ``retries <= ratio * calls + min_per_second * window`` (Finagle's
    RetryBudget, Envoy's retry_budget). Under a total outage the wire load is therefore at most
    ``(1 + ratio) * offered + min_per_second``, instead of ``max_attempts * offered``.

    Calls are not counted here: ``calls`` reads the transport's running total (a lock-free
    counter), so the hot path takes no lock for the budget. The budget keeps a snapshot of that
    total at most once a second, when a retry is asked for, and measures the window from the
    latest snapshot at or before its start: one-second resolution while retries happen, and a
    more generous count (never a stricter one) after a quiet spell.
    """

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        window: float,
        *,
        calls: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._floor = min_per_second * window
        self._window = window
        self._calls = calls
        self._clock = clock
        self._lock = threading.Lock()
        #: (time, calls so far), oldest first; the first is the latest at or before the window.
        self._snapshots: deque[tuple[float, int]] = deque([(clock(), calls())])
        #: When each retry in the window was granted.
        self._retries: deque[float] = deque()

    def try_withdraw(self) -> bool:
        """Count one retry if the budget allows it; False means the retry must not be sent."""
        with self._lock:
            now = self._clock()
            start = now - self._window
            total = self._calls()
            snapshots = self._snapshots
            if now - snapshots[-1][0] >= 1.0:
                snapshots.append((now, total))
            while len(snapshots) > 1 and snapshots[1][0] <= start:
                snapshots.popleft()
            retries = self._retries
            while retries and retries[0] <= start:
                retries.popleft()
            if len(retries) + 1 > self._ratio * (total - snapshots[0][1]) + self._floor:
                return False
            retries.append(now)
            return True

    def _after_fork(self) -> None:
        """In a forked child: a new lock (one a parent thread held at the fork stays held)."""
        self._lock = threading.Lock()
