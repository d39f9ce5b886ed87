"""The reconnect backoff of watches and informers: client-go's reflector, with full jitter.

client-go's reflector waits 0.8 s before the first re-watch, doubles that up to 30 s, and starts
over once the stream has stayed up for 2 minutes (``NewExponentialBackoffManager(800ms, 30s, 2m,
2.0, 1.0)``). Here every wait is drawn with full jitter, uniform(0, ceiling), so that many
watches broken by one event (an API server restart) come back spread over the whole interval.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["DEFAULT_BACKOFF", "Backoff", "BackoffPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """How long to wait before the n-th re-open after a break: uniform(0, min(cap, base * 2**(n-1))).

    Args:
        base: the first ceiling, in seconds (client-go: 0.8).
        cap: the largest ceiling (client-go: 30).
        reset_after: a break more than this long after the previous one starts over at ``base``
            (client-go: 120): the stream was healthy in between.
    """

    base: float = 0.8
    cap: float = 30.0
    reset_after: float = 120.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "reset_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}={value!r} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a finite number of seconds > 0")
        if self.base > self.cap:
            raise ConfigError(f"base={self.base!r} must not exceed cap={self.cap!r}")


#: client-go's reflector: 0.8 s doubling to 30 s, reset after 2 healthy minutes.
DEFAULT_BACKOFF = BackoffPolicy()


class Backoff:
    """The backoff state of one watch or informer: how many failures since it was last healthy.

    Every wire attempt that failed counts as one step: a re-open that the transport already tried
    five times in a second moves the ceiling five doublings on, so that the transport's quick
    retries and these slow ones together stay near client-go's pace (one attempt per step).

    Args:
        policy: the base, cap and reset interval.
        clock: monotonic seconds.
        rng: the source of the jitter (seeded in tests).
    """

    __slots__ = ("_clock", "_last", "_policy", "_rng", "_steps")

    def __init__(
        self,
        policy: BackoffPolicy = DEFAULT_BACKOFF,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._steps = 0
        self._last = -math.inf

    @classmethod
    def of(
        cls,
        backoff: BackoffPolicy | Backoff,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> Backoff:
        """``backoff`` itself when it is a ``Backoff`` (shared with an informer), else a new one.

        Raises:
            ConfigError: ``backoff`` is neither.
        """
        if isinstance(backoff, Backoff):
            return backoff
        if not isinstance(backoff, BackoffPolicy):
            raise ConfigError(f"backoff={backoff!r} must be a BackoffPolicy or a Backoff")
        return cls(backoff, clock=clock, rng=rng)

    @property
    def policy(self) -> BackoffPolicy:
        return self._policy

    @property
    def steps(self) -> int:
        """Failed attempts counted since the last reset."""
        return self._steps

    def ceiling(self) -> float:
        """The largest wait the next failure can draw (before it is counted)."""
        policy = self._policy
        steps = self._steps + 1
        if self._clock() - self._last >= policy.reset_after:
            steps = 1
        # min() before the power would overflow on a long outage: cap the exponent first.
        return min(policy.cap, policy.base * 2.0 ** min(steps - 1, 64))

    def failure(self, attempts: int = 1) -> float:
        """Count ``attempts`` failed wire attempts; return the seconds to wait before the next.

        The wait is uniform(0, min(cap, base * 2**(n - 1))), n the failures counted since the
        last healthy stretch (``reset_after`` without a failure).
        """
        policy = self._policy
        now = self._clock()
        if now - self._last >= policy.reset_after:
            self._steps = 0
        self._steps += max(1, attempts)
        self._last = now
        ceiling = min(policy.cap, policy.base * 2.0 ** min(self._steps - 1, 64))
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start over at ``base`` (a list or a watch got through)."""
        self._steps = 0
        self._last = -math.inf
