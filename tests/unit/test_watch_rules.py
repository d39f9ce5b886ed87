"""The watch's rules without I/O: backoff, resume point, timeouts and what is raised."""

from __future__ import annotations

import random

import pytest
import urllib3.exceptions as u3
from kubernetes.client.exceptions import ApiException

from resilient_kube import ConfigError, ConnectError, ResourceExpired
from resilient_kube._backoff import Backoff, BackoffPolicy
from resilient_kube._watch_rules import (
    MAX_SERVER_TIMEOUT,
    MIN_SERVER_TIMEOUT,
    WatchRules,
    classify_break,
)
from tests.helpers.clock import FakeClock


class _Top(random.Random):
    """Always draws the top of the range: the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_from_base_to_cap() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=_Top())
    waits = [backoff.failure() for _ in range(8)]
    assert waits == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]


def test_backoff_is_full_jitter() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=random.Random(7))
    waits = [backoff.failure() for _ in range(200)]
    assert all(0 <= w <= 30 for w in waits)
    late = waits[10:]
    # Spread over the whole interval.
    assert min(late) < 3
    assert max(late) > 27


def test_backoff_counts_every_wire_attempt() -> None:
    backoff = Backoff(clock=FakeClock(), rng=_Top())
    assert backoff.failure(5) == 0.8 * 2**4
    assert backoff.steps == 5


def test_backoff_starts_over_after_a_healthy_stretch() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(reset_after=120), clock=clock, rng=_Top())
    assert [backoff.failure() for _ in range(3)] == [0.8, 1.6, 3.2]
    clock.now += 119
    assert backoff.failure() == 6.4
    clock.now += 120
    assert backoff.ceiling() == 0.8
    assert backoff.failure() == 0.8


def test_backoff_never_overflows() -> None:
    backoff = Backoff(clock=FakeClock(), rng=_Top())
    for _ in range(5000):
        assert backoff.failure(10) == 30.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"base": 0}, "base=0"),
        ({"cap": float("inf")}, "cap=inf"),
        ({"reset_after": True}, "reset_after=True"),
        ({"base": 5, "cap": 1}, "base=5 must not exceed cap=1"),
    ],
)
def test_backoff_policy_is_validated(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BackoffPolicy(**changes)  # type: ignore[arg-type]


def _rules(
    clock: FakeClock, *, version: str | None = "10", timeout: float | None = None
) -> WatchRules:
    return WatchRules(
        resource_version=version,
        timeout_seconds=timeout,
        backoff=Backoff(clock=clock, rng=_Top()),
        clock=clock,
        rng=random.Random(1),
    )


def test_first_request_asks_for_five_to_ten_minutes() -> None:
    seen = set()
    for seed in range(50):
        rules = WatchRules(
            resource_version=None,
            timeout_seconds=None,
            backoff=Backoff(),
            clock=FakeClock(),
            rng=random.Random(seed),
        )
        first = rules.first()
        assert first.action == "reopen"
        assert first.wait == 0
        assert first.resource_version is None
        assert first.timeout_seconds is not None
        assert MIN_SERVER_TIMEOUT <= first.timeout_seconds <= MAX_SERVER_TIMEOUT
        seen.add(first.timeout_seconds)
    assert len(seen) > 20


def test_a_break_resumes_from_the_last_delivered_version() -> None:
    clock = FakeClock()
    rules = _rules(clock)
    rules.first()
    rules.opened()
    rules.delivered("11")
    rules.delivered("15")  # a bookmark counts the same
    rules.delivered(None)  # an event without a version does not move the resume point
    decision = rules.failed(u3.ProtocolError("Connection broken", ConnectionResetError(104)))
    assert (decision.action, decision.reason, decision.resource_version, decision.wait) == (
        "reopen",
        "reset",
        "15",
        0.8,
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (u3.ProtocolError("Connection broken", ConnectionResetError(104)), "reset"),
        (u3.ProtocolError("Connection broken", u3.IncompleteRead(3, 4)), "truncated"),
        (u3.ProtocolError("Response ended prematurely"), "reset"),
        (u3.ReadTimeoutError(None, "/", "Read timed out."), "idle"),  # type: ignore[arg-type]
        (ConnectError("refused", attempts=5), "connect"),
        (ApiException(status=503), "status_503"),
        (ApiException(status=429), "status_429"),
        (ApiException(status=500), "status_500"),
        (ConnectionResetError(104), "reset"),
        (ResourceExpired(), None),
        (ApiException(status=410), None),
        (ApiException(status=401), None),
        (ApiException(status=403), None),
        (ApiException(status=404), None),
        (ValueError("a bug"), None),
    ],
)
def test_classify_break(error: BaseException, reason: str | None) -> None:
    assert classify_break(error) == reason


@pytest.mark.parametrize(
    "error", [ResourceExpired(), ApiException(status=401), ApiException(status=403), KeyError("x")]
)
def test_final_errors_are_raised_even_on_an_established_stream(error: BaseException) -> None:
    rules = _rules(FakeClock())
    rules.first()
    rules.opened()
    assert rules.failed(error).action == "raise"


def test_failures_before_the_first_stream_are_raised() -> None:
    rules = _rules(FakeClock())
    rules.first()
    assert rules.failed(ConnectError("refused", attempts=5)).action == "raise"


def test_a_failed_reopen_counts_its_wire_attempts() -> None:
    clock = FakeClock()
    rules = _rules(clock)
    rules.first()
    rules.opened()
    assert rules.broke("reset").wait == 0.8
    decision = rules.failed(ConnectError("refused", attempts=5))
    assert (decision.reason, decision.wait) == ("connect", 0.8 * 2**5)


def test_end_at_the_server_timeout_reopens_at_once() -> None:
    clock = FakeClock()
    rules = _rules(clock)
    first = rules.first()
    rules.opened()
    assert first.timeout_seconds is not None
    clock.now += first.timeout_seconds
    decision = rules.ended()
    assert (decision.action, decision.reason, decision.wait) == ("reopen", "timeout", 0.0)


def test_early_end_backs_off() -> None:
    clock = FakeClock()
    rules = _rules(clock)
    rules.first()
    rules.opened()
    clock.now += 3
    decision = rules.ended()
    assert (decision.action, decision.reason, decision.wait) == ("reopen", "ended", 0.8)


def test_caller_timeout_ends_the_stream_and_bounds_reopens() -> None:
    clock = FakeClock()
    rules = _rules(clock, timeout=60)
    first = rules.first()
    assert first.timeout_seconds == 60
    rules.opened()
    clock.now += 20.5
    decision = rules.broke("reset")
    # The re-open asks only for what is left of the caller's 60 s.
    assert decision.timeout_seconds == 39
    clock.now += decision.wait
    rules.opened()
    clock.now += 39
    assert rules.ended().action == "stop"


def test_caller_timeout_stops_instead_of_waiting_past_it() -> None:
    clock = FakeClock()
    rules = _rules(clock, timeout=2)
    rules.first()
    rules.opened()
    clock.now += 1.5
    for _ in range(3):
        rules.broke("reset")  # the ceilings grow past what is left
    assert rules.broke("reset").action == "stop"
