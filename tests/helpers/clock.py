"""A fake monotonic clock for tests that inject time instead of sleeping."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that moves only when told to: ``clock.now += 5`` or ``clock.set(5)``."""

    START = 1000.0

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def set(self, offset: float) -> None:
        """Set the time to ``offset`` seconds after the start."""
        self.now = self.START + offset
