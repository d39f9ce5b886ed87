"""The token bucket, driven by a fake clock: nothing here really sleeps."""

from __future__ import annotations

import doctest
import logging
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_kube import _limiter
from resilient_kube._limiter import DECREASE_HOLD, LimiterStats, TokenBucket
from resilient_kube.errors import RateLimitTimeout, TimeoutException

START = 1000.0


class FakeClock:
    """Monotonic time that moves only when told to, safe to share between threads.

    With ``advance_on_sleep`` (the default) ``sleep(d)`` moves time to the sleeper's slot, i.e. the
    instant it read plus ``d``: a closed loop, each caller waiting for its token before the next
    call. Without it ``sleep`` only records, which models many callers arriving at chosen instants
    (an open loop) and lets a test place arrivals with ``advance``.
    """

    def __init__(self, *, advance_on_sleep: bool = True, oversleep: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._advance_on_sleep = advance_on_sleep
        self._oversleep = oversleep
        self._random = random.Random(7)
        self.now = START
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            now = self.now
        self._local.read = now
        return now

    def last_read(self) -> float:
        """The time this thread last read (the ``now`` of its last ``acquire``)."""
        read: float = self._local.read
        return read

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self._advance_on_sleep:
                late = self._random.uniform(0.0, self._oversleep)
                self.now = max(self.now, self._local.read + seconds + late)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make(
    qps: float = 10.0, burst: int = 1, clock: FakeClock | None = None
) -> tuple[TokenBucket, FakeClock]:
    clock = clock or FakeClock()
    return TokenBucket(qps, burst, clock=clock, sleep=clock.sleep), clock


def slot_of(bucket: TokenBucket, clock: FakeClock, timeout: float | None = None) -> float:
    waited = bucket.acquire(timeout)
    return clock.last_read() + waited


def max_in_window(slots: list[float], window: float) -> int:
    """The most slots in any closed window of length ``window`` (two pointers over sorted slots)."""
    ordered = sorted(slots)
    best, first = 0, 0
    for last, slot in enumerate(ordered):
        while slot - ordered[first] > window + 1e-9:
            first += 1
        best = max(best, last - first + 1)
    return best


def assert_window_bound(slots: list[float], qps: float, burst: int) -> None:
    """No window of length W holds more than ``burst + qps·W`` slots, for every W that matters."""
    ordered = sorted(slots)
    for i, start in enumerate(ordered):
        for j in range(i + burst, len(ordered)):
            # j - i + 1 slots lie in [start, ordered[j]]
            assert j - i + 1 <= burst + qps * (ordered[j] - start) + 1e-6, (i, j)


# --- burst and steady rate -------------------------------------------------------------------


def test_starts_full_and_hands_out_the_burst_at_once() -> None:
    bucket, clock = make(qps=10.0, burst=5)
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert clock.sleeps == []
    assert bucket.acquire() == pytest.approx(0.1)
    assert clock.now == pytest.approx(START + 0.1)


@pytest.mark.parametrize(("qps", "burst"), [(5.0, 1), (50.0, 1), (100.0, 10), (0.5, 3)])
def test_steady_rate_is_exact(qps: float, burst: int) -> None:
    bucket, clock = make(qps, burst)
    n = 1000
    slots = [slot_of(bucket, clock) for _ in range(n)]
    assert slots[:burst] == [START] * burst
    # After the burst, token k (counting from 0) starts at START + (k - burst + 1)/qps.
    assert slots[-1] == pytest.approx(START + (n - burst) / qps, abs=1e-9)
    gaps = [b - a for a, b in zip(slots[burst:], slots[burst + 1 :], strict=False)]
    assert min(gaps) == pytest.approx(1 / qps) == max(gaps)


def test_sleeping_late_does_not_lose_rate() -> None:
    # Real sleeps wake up late; the schedule must not drift by the oversleep.
    clock = FakeClock(oversleep=0.004)
    bucket, _ = make(qps=100.0, burst=1, clock=clock)
    n = 2000
    for _ in range(n):
        bucket.acquire()
    # 1999 intervals of 10 ms; only the last token's own lateness (< 4 ms) is visible.
    assert START + (n - 1) / 100.0 <= clock.now <= START + (n - 1) / 100.0 + 0.004


def test_idle_refills_but_never_beyond_burst() -> None:
    bucket, clock = make(qps=10.0, burst=3)
    for _ in range(3):
        bucket.acquire()
    clock.advance(3600.0)
    assert [bucket.acquire() for _ in range(3)] == [0.0] * 3
    assert bucket.acquire() == pytest.approx(0.1)


def test_partial_refill_waits_only_for_the_missing_fraction() -> None:
    bucket, clock = make(qps=10.0, burst=2)
    bucket.acquire()
    bucket.acquire()
    clock.advance(0.25)  # 2.5 tokens accrued, capped at 2
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.1)


# --- the window bound, over random arrival patterns ------------------------------------------

arrivals = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=2.0, allow_nan=False)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(
    gaps=arrivals,
    qps=st.floats(min_value=0.5, max_value=500.0),
    burst=st.integers(min_value=1, max_value=20),
)
def test_no_window_exceeds_burst_plus_rate(gaps: list[float], qps: float, burst: int) -> None:
    # Open loop: callers arrive at the given instants whatever the earlier ones are waiting for.
    bucket, clock = make(qps, burst, FakeClock(advance_on_sleep=False))
    slots: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        slot = slot_of(bucket, clock)
        # Work-conserving: a caller never starts before it arrives, and slots never go backwards.
        assert slot >= clock.now
        assert not slots or slot >= slots[-1]
        slots.append(slot)
    assert_window_bound(slots, qps, burst)
    assert bucket.stats().admitted == len(gaps)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.5, allow_nan=False),
            st.sampled_from(["acquire", "acquire", "acquire", "throttled", "success"]),
        ),
        min_size=1,
        max_size=150,
    ),
    qps=st.floats(min_value=1.0, max_value=200.0),
    burst=st.integers(min_value=1, max_value=10),
)
def test_rate_changes_never_make_a_burst(
    events: list[tuple[float, str]], qps: float, burst: int
) -> None:
    bucket, clock = make(qps, burst, FakeClock(advance_on_sleep=False))
    slots: list[float] = []
    for gap, event in events:
        clock.advance(gap)
        if event == "throttled":
            bucket.on_throttled()
        elif event == "success":
            bucket.on_success()
        else:
            queued = bool(slots) and slots[-1] > clock.now
            slot = slot_of(bucket, clock)
            assert not slots or slot >= slots[-1] - 1e-9  # reserved slots are never overtaken
            if queued:
                # Behind a caller still waiting, the slot is one current interval after its slot.
                assert slot - slots[-1] >= 1 / bucket.stats().effective_qps - 1e-9
            slots.append(slot)
        effective = bucket.stats().effective_qps
        assert min(qps, max(qps / 16, 1.0)) - 1e-9 <= effective <= qps
    assert_window_bound(slots, qps, burst)


# --- threads ---------------------------------------------------------------------------------


def run_threads(bucket: TokenBucket, clock: FakeClock, threads: int, each: int) -> list[float]:
    slots: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        mine = [slot_of(bucket, clock) for _ in range(each)]
        with lock:
            slots.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return slots


@pytest.mark.parametrize("threads", [2, 4, 8])
def test_threads_get_distinct_evenly_spaced_slots(threads: int) -> None:
    bucket, clock = make(qps=50.0, burst=1)
    each = 250
    slots = sorted(run_threads(bucket, clock, threads, each))
    total = threads * each
    assert len(slots) == total
    assert bucket.stats().admitted == total
    expected = [START + k / 50.0 for k in range(total)]
    assert slots == pytest.approx(expected, abs=1e-6)


def test_threads_respect_burst_and_window_bound() -> None:
    bucket, clock = make(qps=100.0, burst=10)
    slots = run_threads(bucket, clock, 8, 100)
    assert sum(slot == START for slot in slots) == 10
    assert_window_bound(slots, 100.0, 10)
    assert max(slots) == pytest.approx(START + (800 - 10) / 100.0, abs=1e-6)
    stats = bucket.stats()
    assert (stats.admitted, stats.waited) == (800, 790)


# --- deadline refusal ------------------------------------------------------------------------


def test_refuses_a_wait_longer_than_the_timeout_without_taking_the_token() -> None:
    bucket, clock = make(qps=10.0, burst=2)
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=0.05)
    assert isinstance(info.value, TimeoutException)
    assert info.value.wait == pytest.approx(0.1)
    assert "client-side throttling" in str(info.value)
    assert "0.100s" in str(info.value)
    assert clock.sleeps == []
    assert clock.now == START
    stats = bucket.stats()
    assert (stats.admitted, stats.waited, stats.wait_seconds) == (2, 0, 0.0)
    # The refused token is still there: the next caller gets the same slot.
    assert bucket.acquire(timeout=0.1) == pytest.approx(0.1)


def test_timeout_zero_or_negative_still_takes_a_free_token() -> None:
    bucket, _ = make(qps=10.0, burst=2)
    assert bucket.acquire(timeout=0.0) == 0.0
    assert bucket.acquire(timeout=-1.0) == 0.0
    with pytest.raises(RateLimitTimeout, match=r"longer than the 0\.000s left"):
        bucket.acquire(timeout=-1.0)


def test_refusal_does_not_disturb_queued_slots() -> None:
    bucket, clock = make(qps=10.0, burst=1, clock=FakeClock(advance_on_sleep=False))
    first = [slot_of(bucket, clock) for _ in range(3)]
    with pytest.raises(RateLimitTimeout) as info:
        bucket.acquire(timeout=0.25)
    assert info.value.wait == pytest.approx(0.3)
    assert slot_of(bucket, clock) == pytest.approx(first[-1] + 0.1)


# --- pushback --------------------------------------------------------------------------------


def test_throttled_halves_the_rate_once_per_hold() -> None:
    bucket, clock = make(qps=50.0, burst=1)
    bucket.on_throttled()
    assert bucket.stats().effective_qps == 25.0
    for _ in range(5):  # answers to requests already in flight: one signal
        bucket.on_throttled()
    assert bucket.stats().effective_qps == 25.0
    clock.advance(DECREASE_HOLD)
    bucket.on_throttled()
    assert bucket.stats().effective_qps == 12.5
    assert bucket.stats().throttled == 7


@pytest.mark.parametrize(("qps", "floor"), [(50.0, 50.0 / 16), (5.0, 1.0), (0.5, 0.5)])
def test_throttled_stops_at_the_floor(qps: float, floor: float) -> None:
    bucket, clock = make(qps=qps, burst=1)
    for _ in range(20):
        bucket.on_throttled()
        clock.advance(DECREASE_HOLD)
    assert bucket.stats().effective_qps == pytest.approx(floor)


def test_throttled_rate_spaces_the_following_slots() -> None:
    bucket, _clock = make(qps=10.0, burst=1)
    bucket.acquire()
    bucket.on_throttled()
    assert bucket.acquire() == pytest.approx(0.2)
    assert bucket.acquire() == pytest.approx(0.2)


def test_success_recovers_a_halving_in_two_seconds() -> None:
    bucket, clock = make(qps=50.0, burst=1)
    bucket.acquire()
    bucket.on_throttled()
    began = clock.now
    while bucket.stats().effective_qps < 50.0:
        bucket.acquire()  # the fake clock moves by each wait: 25/s, then faster
        bucket.on_success()
    assert clock.now - began == pytest.approx(2.0, abs=0.05)


def test_a_silent_client_regains_the_rate_but_not_the_burst() -> None:
    bucket, clock = make(qps=10.0, burst=10, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()
    clock.advance(60.0)
    bucket.on_success()
    assert bucket.stats().effective_qps == 10.0
    # One answer since the 429: the bucket may save up two tokens, not ten.
    clock.advance(60.0)
    assert [bucket.acquire(), bucket.acquire()] == [0.0, 0.0]
    assert bucket.acquire() == pytest.approx(0.1)


def test_a_429_every_second_drives_the_rate_to_the_floor() -> None:
    bucket, clock = make(qps=50.0, burst=10)
    for _ in range(12):
        bucket.on_throttled()
        for _ in range(5):  # answers in between, 0.2 s apart
            clock.advance(0.2)
            bucket.on_success()
    # Halved at each, grown by √2 between: down by √2 a second, to the floor.
    bucket.on_throttled()
    assert bucket.stats().effective_qps == pytest.approx(50.0 / 16)


def test_success_at_full_rate_changes_nothing() -> None:
    bucket, _clock = make(qps=20.0, burst=4)
    bucket.on_success()
    assert bucket.stats().effective_qps == 20.0
    assert [bucket.acquire() for _ in range(4)] == [0.0] * 4
    assert bucket.acquire() == pytest.approx(0.05)


def test_throttle_empties_a_full_bucket_and_halves_the_rate() -> None:
    bucket, clock = make(qps=10.0, burst=3, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()  # 5/s now, and the saved-up burst is gone
    slots = [slot_of(bucket, clock) for _ in range(5)]
    assert slots == pytest.approx([START, START + 0.2, START + 0.4, START + 0.6, START + 0.8])


def test_increase_keeps_reserved_slots_and_spaces_the_next() -> None:
    bucket, clock = make(qps=10.0, burst=2, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()  # 5/s: interval 0.2
    clock.advance(DECREASE_HOLD)
    slots = [slot_of(bucket, clock) for _ in range(6)]  # no burst while recovering: 0.2 s apart
    assert slots[-1] == pytest.approx(clock.now + 1.0)
    for _ in range(30):
        bucket.on_success()
    rate = bucket.stats().effective_qps
    assert rate > 5.0
    nxt = slot_of(bucket, clock)
    assert nxt == pytest.approx(slots[-1] + 1 / rate)
    assert nxt > slots[-1]


def test_no_burst_is_saved_up_while_the_rate_recovers() -> None:
    """Calls that waited out a Retry-After go out paced, not at once into the server."""
    bucket, clock = make(qps=10.0, burst=5, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()  # 5/s
    clock.advance(3.0)  # a pause: a bucket at full rate would have refilled
    slots = [slot_of(bucket, clock) for _ in range(4)]
    assert slots == pytest.approx([clock.now + 0.2 * k for k in range(4)])


def test_answers_grow_the_burst_back_one_token_each() -> None:
    bucket, clock = make(qps=10.0, burst=50, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()
    clock.advance(DECREASE_HOLD)
    for _ in range(4):
        bucket.on_success()
    # An hour would refill any bucket: this one may save up five tokens.
    clock.advance(3600.0)
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.acquire() > 0.0


def test_answers_right_after_a_429_do_not_grow_the_burst() -> None:
    """They answer requests sent before it; the threads refused come back paced."""
    bucket, clock = make(qps=50.0, burst=100, clock=FakeClock(advance_on_sleep=False))
    for _ in range(30):
        bucket.acquire()
    for _ in range(20):
        bucket.on_throttled()
    clock.advance(0.2)
    for _ in range(10):  # the answers to requests that were queued at the server
        bucket.on_success()
    clock.advance(1.0)  # Retry-After: 1
    slots = [slot_of(bucket, clock) for _ in range(20)]
    assert sum(slot == clock.now for slot in slots) == 1
    assert slots == sorted(slots)


def test_a_long_silence_after_a_429_recovers_without_overflow() -> None:
    bucket, clock = make(qps=50.0, burst=5, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()
    clock.advance(3600.0)  # √2 ** 3600 is beyond any float
    bucket.on_success()
    assert bucket.stats().effective_qps == 50.0


def test_a_grown_burst_is_earned_at_the_rate_not_handed_out() -> None:
    bucket, clock = make(qps=10.0, burst=5, clock=FakeClock(advance_on_sleep=False))
    bucket.on_throttled()
    clock.advance(2.0)  # the rate is back at 10/s with the first answer ...
    for _ in range(4):  # ... and the bucket may save up five tokens after four
        bucket.on_success()
    assert bucket.stats().effective_qps == 10.0
    # Room for five again, but no token was created: paced at 10/s at first ...
    assert [bucket.acquire(), bucket.acquire()] == pytest.approx([0.0, 0.1])
    # ... and the burst is back once the bucket has had time to refill.
    clock.advance(1.0)
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.acquire() > 0.0


def test_throttle_spends_a_partly_full_bucket() -> None:
    bucket, _clock = make(qps=10.0, burst=4, clock=FakeClock(advance_on_sleep=False))
    bucket.acquire()
    bucket.acquire()  # 2 tokens left
    bucket.on_throttled()  # ... and spent: the server has no room for a burst
    assert [bucket.acquire(), bucket.acquire()] == pytest.approx([0.0, 0.2])


# --- stats, flow control, logging, validation -----------------------------------------------


def test_stats_snapshot() -> None:
    bucket, _ = make(qps=10.0, burst=1)
    for _ in range(3):
        bucket.acquire()
    bucket.on_throttled()
    stats = bucket.stats()
    assert isinstance(stats, LimiterStats)
    assert stats == LimiterStats(
        admitted=3,
        waited=2,
        wait_seconds=pytest.approx(0.2),  # type: ignore[arg-type]
        effective_qps=5.0,
        throttled=1,
        flow_schemas={},
        priority_levels={},
    )


def test_flow_control_headers_are_counted() -> None:
    bucket, _ = make()
    bucket.record_flow_control("fs-1", "pl-1")
    bucket.record_flow_control("fs-1", "pl-2")
    bucket.record_flow_control(None, "pl-1")
    bucket.record_flow_control("", None)
    stats = bucket.stats()
    assert stats.flow_schemas == {"fs-1": 2}
    assert stats.priority_levels == {"pl-1": 2, "pl-2": 1}
    stats.flow_schemas["fs-1"] = 99  # a copy
    assert bucket.stats().flow_schemas == {"fs-1": 2}


def test_flow_control_keys_are_capped() -> None:
    bucket, _ = make()
    for n in range(300):
        bucket.record_flow_control(f"fs-{n}", None)
    bucket.record_flow_control("fs-0", None)
    schemas = bucket.stats().flow_schemas
    assert len(schemas) == 257
    assert schemas["other"] == 44
    assert schemas["fs-0"] == 2


def test_long_waits_are_logged_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resilient_kube")
    bucket, _clock = make(qps=2.0, burst=1)
    bucket.acquire()
    bucket.acquire()  # waits 0.5 s: logged
    bucket.acquire()  # waits 0.5 s, only 0.5 s after the last line: not logged
    bucket.acquire()  # 1 s later: logged
    messages = [r.getMessage() for r in caplog.records if r.name == "resilient_kube._limiter"]
    assert len(messages) == 2
    assert messages[0].startswith(
        "Waited for 0.500s due to client-side throttling, not priority and fairness"
    )
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_short_waits_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="resilient_kube")
    bucket, _ = make(qps=25.0, burst=1)  # 40 ms waits
    for _ in range(10):
        bucket.acquire()
    assert caplog.records == []


def test_repr_and_properties() -> None:
    bucket = TokenBucket(50, 100)
    assert repr(bucket) == "TokenBucket(qps=50.0, burst=100)"
    assert (bucket.qps, bucket.burst) == (50.0, 100)


def test_default_clock_fast_path_does_not_sleep() -> None:
    bucket = TokenBucket(1e9, 1_000_000)
    assert all(bucket.acquire(timeout=0.0) == 0.0 for _ in range(1000))


def test_docstring_examples() -> None:
    assert doctest.testmod(_limiter).failed == 0
