from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import tenacity
import urllib3.exceptions as u3
from hypothesis import given
from hypothesis import strategies as st

from resilient_kube._policy import (
    READ_METHODS,
    classify_error,
    classify_status,
    parse_retry_after,
    retry_after,
)
from resilient_kube._retry import RetryBudget
from tests.helpers.clock import FakeClock


def test_only_reads_are_repeated_after_sending() -> None:
    assert {"GET", "HEAD", "OPTIONS"} == READ_METHODS


@pytest.mark.parametrize(
    ("error", "reason", "sent", "retryable"),
    [
        (u3.NameResolutionError("h", None, OSError("x")), "dns", False, True),  # type: ignore[arg-type]
        (u3.NewConnectionError(None, "refused"), "connect_error", False, True),  # type: ignore[arg-type]
        (u3.ConnectTimeoutError(None, "t"), "connect_timeout", False, True),
        (
            u3.SSLError(ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED")),
            "tls",
            False,
            False,
        ),
        (u3.SSLError(ssl.SSLEOFError("EOF in handshake")), "tls", False, True),
        (u3.ReadTimeoutError(None, "/x", "read timed out"), "read_timeout", True, True),  # type: ignore[arg-type]
        (
            u3.ProtocolError(
                "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
            ),
            "reset",
            True,
            True,
        ),
        (
            u3.ProtocolError("Connection aborted.", ConnectionError("Remote end closed")),
            "disconnected",
            True,
            True,
        ),
        (
            u3.ProtocolError("Connection broken: IncompleteRead(5 bytes read, 5 more expected)"),
            "truncated",
            True,
            True,
        ),
        (ValueError("bug"), "ValueError", True, False),
    ],
)
def test_errors_are_classified_by_phase(
    error: BaseException, reason: str, sent: bool, retryable: bool
) -> None:
    failure = classify_error(error)
    assert (failure.reason, failure.sent, failure.retryable) == (reason, sent, retryable)


@pytest.mark.parametrize(
    ("status", "has_retry_after", "expected"),
    [
        (429, False, ("status_429", False)),
        (429, True, ("status_429", False)),
        (503, True, ("status_503", False)),
        (503, False, ("status_503", True)),
        (500, False, ("status_500", True)),
        (502, False, ("status_502", True)),
        (504, False, ("status_504", True)),
    ],
)
def test_retryable_statuses(status: int, has_retry_after: bool, expected: tuple[str, bool]) -> None:
    failure = classify_status(status, has_retry_after=has_retry_after)
    assert failure is not None
    assert (failure.reason, failure.sent) == expected


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 409, 410, 422, 501])
def test_final_statuses_are_never_retried(status: int) -> None:
    assert classify_status(status, has_retry_after=True) is None


@given(st.integers(min_value=0, max_value=10**12))
def test_retry_after_seconds_form(seconds: int) -> None:
    # Past a year an ask is read as a year: still longer than retry_after_max allows.
    expected = float(min(seconds, 365 * 86400))
    assert parse_retry_after(str(seconds)) == expected
    assert parse_retry_after(f"  {seconds} ") == expected


def test_hostile_retry_after_values_are_long_asks_not_crashes() -> None:
    year = 365 * 86400.0
    assert parse_retry_after("9" * 400) == year
    assert retry_after({}, b'{"details":{"retryAfterSeconds":' + b"9" * 400 + b"}}") == year
    # A 429 body nested deeper than Python recurses is no Status: no ask, no RecursionError.
    assert retry_after({}, b'{"a":' * 100_000 + b"1" + b"}" * 100_000) is None


@given(st.integers(min_value=-86400, max_value=86400))
def test_retry_after_http_date_form(offset: int) -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp) == max(0.0, float(offset))


@given(st.text())
def test_retry_after_never_raises_and_never_goes_negative(value: str) -> None:
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


@pytest.mark.parametrize("value", ["-1", "1.5", "soon", "", "Wed, 99 Foo 2026"])
def test_retry_after_rejects_malformed_values(value: str) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_from_a_status_body() -> None:
    body = b'{"kind":"Status","code":429,"details":{"retryAfterSeconds":3}}'
    assert retry_after({}, body) == 3.0
    assert retry_after({"Retry-After": "1"}, body) == 1.0  # the header wins
    assert retry_after({}, b'{"details":{"retryAfterSeconds":true}}') is None
    assert retry_after({}, b"not json") is None
    assert retry_after({}, b"{broken") is None


def _state(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return state


@given(st.integers(min_value=1, max_value=60), st.floats(0.001, 1.0), st.floats(1.0, 60.0))
def test_full_jitter_stays_within_its_bounds(attempt: int, base: float, cap: float) -> None:
    # The transport's backoff: wait = uniform(0, min(cap, base * 2 ** (attempt - 1))).
    wait = tenacity.wait_random_exponential(multiplier=base, max=cap)
    value = wait(_state(attempt))
    assert 0 <= value <= min(cap, base * 2 ** (attempt - 1)) + 1e-9


class Calls:
    """The transport's running count of calls, as the budget reads it."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self) -> int:
        return self.total


def test_budget_allows_the_floor_then_a_share_of_calls() -> None:
    clock, calls = FakeClock(), Calls()
    budget = RetryBudget(ratio=0.3, min_per_second=1.0, window=10.0, calls=calls, clock=clock)
    # With no calls, only the floor (1/s over 10 s) is available.
    assert sum(budget.try_withdraw() for _ in range(20)) == 10
    calls.total += 100
    assert sum(budget.try_withdraw() for _ in range(100)) == 30


def test_budget_window_slides() -> None:
    clock, calls = FakeClock(), Calls()
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, window=10.0, calls=calls, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10
    clock.now += 5
    assert not budget.try_withdraw()
    clock.now += 5  # the first retries fall out of the window
    assert budget.try_withdraw()


def test_budget_forgets_calls_older_than_the_window() -> None:
    clock, calls = FakeClock(), Calls()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10.0, calls=calls, clock=clock)
    calls.total += 100
    clock.now += 1
    assert budget.try_withdraw()  # a snapshot is taken now, with the 100 calls in it
    clock.now += 11  # those calls (and the retry) are out of the window; no new calls came
    assert not budget.try_withdraw()


@given(st.floats(0.0, 1.0), st.integers(0, 500), st.floats(0.0, 0.1))
def test_budget_bounds_wire_load_under_total_outage(
    ratio: float, offered: int, seconds_per_call: float
) -> None:
    clock, calls = FakeClock(), Calls()
    budget = RetryBudget(ratio=ratio, min_per_second=1.0, window=10.0, calls=calls, clock=clock)
    retries = 0
    for _ in range(offered):
        calls.total += 1
        # Every call fails on every attempt and would retry four times.
        retries += sum(budget.try_withdraw() for _ in range(4))
        clock.now += seconds_per_call
    # Per window of 10 s: ratio x its calls + the floor of 10; the budget's one-second snapshots
    # may count up to one more second of calls at the window's start.
    windows = 1 + int(offered * seconds_per_call / 10.0)
    calls_per_second = offered if seconds_per_call == 0 else min(offered, 1 / seconds_per_call)
    assert retries <= ratio * (offered + windows * calls_per_second) + 10 * windows
