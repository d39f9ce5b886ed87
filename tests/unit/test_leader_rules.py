"""The election rules on a fake clock: when to try, what to write, when leadership ends."""

from __future__ import annotations

import dataclasses
import datetime
import math

import pytest
import urllib3

from resilient_kube import ConfigError, ElectionTiming
from resilient_kube._leader import RETRY_JITTER, ElectionRules, LeaseRecord, Step, _ExactSeconds
from tests.helpers.clock import FakeClock

WALL = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TIMING = ElectionTiming(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


def rules(identity: str = "me", *, jitter: float = 0.0) -> ElectionRules:
    return ElectionRules(TIMING, identity, random=lambda: jitter)


def other(version: str = "1", holder: str = "other", seconds: float | None = 15) -> LeaseRecord:
    return LeaseRecord(holder=holder, lease_seconds=seconds, transitions=3, version=version)


def win(r: ElectionRules, clock: FakeClock, version: str = "2") -> None:
    """Run one attempt that finds no Lease and creates it."""
    assert r.next_step(clock()) == Step("attempt")
    r.begin_attempt(clock())
    change, wanted = r.observed(clock(), None, WALL)
    assert change == "none"
    assert wanted is not None
    assert r.written(clock(), LeaseRecord(holder="me", lease_seconds=15, version=version)) == (
        "started"
    )


# --- timing validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_duration": 0}, r"lease_duration=0 must be > 0"),
        ({"renew_deadline": -1}, r"renew_deadline=-1 must be > 0"),
        ({"retry_period": True}, r"retry_period=True must be a number"),
        ({"retry_period": math.nan}, r"retry_period=nan must be finite"),
        ({"lease_duration": None}, r"lease_duration=None is not allowed"),
        ({"renew_deadline": 15.0}, r"renew_deadline=15.0 must be less than lease_duration=15.0"),
        ({"retry_period": 10.0}, r"retry_period=10.0 must be less than renew_deadline=10.0"),
    ],
)
def test_bad_timing_names_the_argument_and_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ElectionTiming(**kwargs)  # type: ignore[arg-type]


def test_timing_rounds_the_lease_up_to_whole_seconds() -> None:
    timing = ElectionTiming(lease_duration=2.5, renew_deadline=2, retry_period=0.5)
    assert timing.renew_deadline == 2.0
    assert isinstance(timing.renew_deadline, float)
    assert timing.lease_seconds == 3


# --- acquiring -----------------------------------------------------------------------------


def test_creates_a_missing_lease_and_leads() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    change, wanted = r.observed(clock(), None, WALL)
    assert (change, wanted) == (
        "none",
        LeaseRecord(holder="me", lease_seconds=15, acquire_time=WALL, renew_time=WALL),
    )
    clock.now += 0.1
    assert r.written(clock(), LeaseRecord(holder="me", version="7")) == "started"
    assert r.leading
    # The term is counted from when the attempt started, not from when the answer came.
    assert r.leading_until == FakeClock.START + 10.0


def test_waits_for_a_held_lease_to_expire_counted_from_its_own_observation() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    assert r.observed(clock(), other("1"), WALL) == ("none", None)
    # Retry after the retry period while the lease is fresh.
    assert r.next_step(clock()) == Step("wait", 2.0)
    clock.now += 14.0
    r.begin_attempt(clock())
    # Same version 14 s later: still counted from the first sighting, so it expires at +15.
    assert r.observed(clock(), other("1"), WALL) == ("none", None)
    assert r.next_step(clock()) == Step("wait", 1.0)
    clock.now += 1.0
    r.begin_attempt(clock())
    change, wanted = r.observed(clock(), other("1"), WALL)
    assert change == "none"
    assert wanted == LeaseRecord(
        holder="me",
        lease_seconds=15,
        acquire_time=WALL,
        renew_time=WALL,
        transitions=4,  # the holder changes
        version="1",  # the write is conditional on what was read
    )


def test_a_renewed_lease_restarts_the_wait() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    r.observed(clock(), other("1"), WALL)
    clock.now += 14.0
    r.begin_attempt(clock())
    r.observed(clock(), other("2"), WALL)  # the leader renewed
    clock.now += 14.0
    r.begin_attempt(clock())
    assert r.observed(clock(), other("2"), WALL) == ("none", None)


def test_expiry_uses_the_lease_duration_written_in_the_lease() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    r.observed(clock(), other("1", seconds=40), WALL)
    clock.now += 20.0
    r.begin_attempt(clock())
    assert r.observed(clock(), other("1", seconds=40), WALL) == ("none", None)
    clock.now += 20.0
    r.begin_attempt(clock())
    assert r.observed(clock(), other("1", seconds=40), WALL)[1] is not None


def test_wall_clock_times_in_the_lease_do_not_count() -> None:
    # A holder whose clock is a day behind wrote renewTime yesterday: still fresh.
    clock, r = FakeClock(), rules()
    stale = LeaseRecord(
        holder="other",
        lease_seconds=15,
        renew_time=WALL - datetime.timedelta(days=1),
        version="1",
    )
    r.begin_attempt(clock())
    assert r.observed(clock(), stale, WALL) == ("none", None)


def test_a_released_lease_is_taken_at_once() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    released = LeaseRecord(holder="", lease_seconds=1, transitions=5, version="9")
    change, wanted = r.observed(clock(), released, WALL)
    assert change == "none"
    assert wanted is not None
    assert wanted.transitions == 6


def test_a_failed_write_does_not_lead() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    r.observed(clock(), None, WALL)
    assert r.failed(clock(), "HTTP 409 Conflict") == "none"
    assert not r.leading
    assert r.next_step(clock()) == Step("wait", 2.0)


def test_a_win_that_came_back_after_the_renew_deadline_does_not_count() -> None:
    clock, r = FakeClock(), rules()
    r.begin_attempt(clock())
    r.observed(clock(), None, WALL)
    clock.now += 10.0
    assert r.written(clock(), LeaseRecord(holder="me", version="2")) == "none"
    assert not r.leading


# --- leading -------------------------------------------------------------------------------


def test_a_leader_renews_keeping_its_acquire_time() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    assert r.next_step(clock()) == Step("wait", 2.0)
    clock.now += 2.0
    r.begin_attempt(clock())
    mine = LeaseRecord(holder="me", lease_seconds=15, acquire_time=WALL, version="2")
    later = WALL + datetime.timedelta(seconds=2)
    change, wanted = r.observed(clock(), mine, later)
    assert change == "none"
    assert wanted == LeaseRecord(
        holder="me",
        lease_seconds=15,
        acquire_time=WALL,
        renew_time=later,
        transitions=0,
        version="2",
    )
    assert r.written(clock(), dataclasses.replace(wanted, version="3")) == "renewed"
    assert r.leading_until == clock() + 10.0


def test_every_call_gets_only_what_is_left_of_the_term() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    clock.now += 2.0
    r.begin_attempt(clock())
    assert r.call_timeout(clock()) == 8.0
    clock.now += 7.5  # the read took 7.5 s
    assert r.call_timeout(clock()) == 0.5
    clock.now += 0.5
    assert r.call_timeout(clock()) is None


def test_failed_renewals_end_the_term_at_the_renew_deadline() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    for _ in range(4):  # fail at +2, +4, +6, +8
        clock.now += 2.0
        assert r.next_step(clock()) == Step("attempt")
        r.begin_attempt(clock())
        assert r.failed(clock(), "ConnectTimeout") == "none"
        assert r.leading
    # The next retry would be at +10, which is also the renew deadline: the wait ends there.
    assert r.next_step(clock()) == Step("wait", 2.0)
    clock.now += 2.0
    step = r.next_step(clock())
    assert step.action == "stop"
    assert "renew deadline" in step.reason
    assert not r.leading


def test_the_wait_between_renewals_never_passes_the_renew_deadline() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    clock.now += 9.5
    r.begin_attempt(clock())
    r.failed(clock(), "ReadTimeout")
    assert r.next_step(clock()) == Step("wait", 0.5)


def test_a_failure_that_ends_after_the_deadline_loses_at_once() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    clock.now += 2.0
    r.begin_attempt(clock())
    clock.now += 8.0  # a call that ran to its deadline
    assert r.failed(clock(), "DeadlineExceeded") == "lost"
    assert "DeadlineExceeded" in r.lost_reason


def test_a_leader_that_sees_another_holder_stops_at_once() -> None:
    clock, r = FakeClock(), rules()
    win(r, clock)
    clock.now += 2.0
    r.begin_attempt(clock())
    assert r.observed(clock(), other("5"), WALL) == ("lost", None)
    assert not r.leading
    assert r.lost_reason == "lease taken by other"


def test_resign_and_release() -> None:
    clock, r = FakeClock(), rules()
    assert r.resign("stopping") == "none"
    win(r, clock, version="4")
    assert r.resign("stopping") == "lost"
    released = r.release(WALL)
    assert released is not None
    assert (released.holder, released.lease_seconds, released.version) == ("", 1, "4")
    r.begin_attempt(clock())
    r.observed(clock(), other("6"), WALL)
    assert r.release(WALL) is None  # not ours any more


# --- jitter --------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_retry_waits_are_jittered_down_never_up(draw: float) -> None:
    clock, r = FakeClock(), rules(jitter=draw)
    r.begin_attempt(clock())
    r.failed(clock(), "ConnectError")
    wait = r.next_step(clock()).seconds
    assert wait == pytest.approx(2.0 * (1 - RETRY_JITTER * draw))
    assert 2.0 * (1 - RETRY_JITTER) < wait <= 2.0


def test_the_call_deadline_passes_old_int_checks_and_keeps_its_exact_value() -> None:
    # kubernetes 31-35 apply _request_timeout only if isinstance(..., int); urllib3 and the
    # transport then read float() of it.
    seconds = _ExactSeconds(0.37)
    assert isinstance(seconds, int)
    assert seconds  # truthy: the REST layer skips a falsy timeout
    timeout = urllib3.Timeout(total=seconds)
    assert float(timeout.total) == 0.37  # type: ignore[arg-type]
