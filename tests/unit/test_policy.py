"""The policy core as a table: verb x phase x outcome x Retry-After x budget x deadline.

No server and no sleeping: a state factory builds the call as it stands after some attempts
(tenacity's ``make_retry_state``, client-go's ``TestIsNextRetry``), a fake clock says what time it
is, and a fake budget says yes or no.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import urllib3.exceptions as u3

from resilient_kube import errors
from resilient_kube._policy import (
    READ_METHODS,
    REAUTHENTICATE,
    RETURN,
    WATCH_READ_MARGIN,
    AttemptError,
    Call,
    Failure,
    Policy,
    Raise,
    Retry,
    classify_error,
    final_error,
    stop_after_attempt,
    stop_before_deadline,
    stop_when_retry_after_exceeds,
)
from resilient_kube._settings import Settings
from tests.helpers.clock import FakeClock

VERBS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH")
WRITES = ("PUT", "DELETE", "POST", "PATCH")


@dataclass
class FakeBudget:
    allow: bool = True
    withdrawals: int = 0

    def try_withdraw(self) -> bool:
        if self.allow:
            self.withdrawals += 1
        return self.allow


@dataclass
class FakeAnswer:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    data: bytes = b""


def make_policy(
    budget: FakeBudget | None = None, clock: FakeClock | None = None, **tuning: Any
) -> Policy:
    return Policy(
        Settings.from_kwargs(**tuning),
        budget if budget is not None else FakeBudget(),
        clock=clock or FakeClock(),
        uniform=lambda low, high: high,  # the longest wait the spread allows
    )


def make_call(
    policy: Policy,
    method: str = "GET",
    *,
    attempts: int = 0,
    url: str = "https://api:6443/api/v1/namespaces/default/pods",
    request_timeout: float | tuple[float | None, float | None] | None = None,
    replayable: bool = True,
) -> Call:
    """The state factory: a planned call that has already made ``attempts`` attempts."""
    call = policy.plan(method, url, request_timeout, replayable=replayable)
    call.attempts = attempts
    return call


# --- the outcomes, each with the phase it belongs to -------------------------------------------

ERRORS_BEFORE_SEND = {
    "dns": u3.NameResolutionError("api", None, OSError("no such host")),  # type: ignore[arg-type]
    "connect_error": u3.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
    "connect_timeout": u3.ConnectTimeoutError(None, "timed out"),
    "tls": u3.SSLError(ssl.SSLEOFError("EOF in handshake")),
}
ERRORS_AFTER_SEND = {
    "read_timeout": u3.ReadTimeoutError(None, "/x", "read timed out"),  # type: ignore[arg-type]
    "reset": u3.ProtocolError("aborted", ConnectionResetError(104, "Connection reset by peer")),
    "disconnected": u3.ProtocolError("aborted", ConnectionError("Remote end closed")),
    "truncated": u3.ProtocolError("Connection broken: IncompleteRead(5 bytes read)"),
}
#: status, Retry-After header -> may every verb repeat it (the server did no work)?
STATUSES_BEFORE_SEND = {(429, None), (429, "1"), (503, "1")}
STATUSES_AFTER_SEND = {(500, None), (502, None), (503, None), (504, None)}
STATUSES_FINAL = {(200, None), (201, None), (301, None), (404, None), (409, None), (501, None)}


def attempt_error(reason: str) -> AttemptError:
    error = {**ERRORS_BEFORE_SEND, **ERRORS_AFTER_SEND}[reason]
    return AttemptError(classify_error(error), error)


def answer(status: int, retry_after: str | None) -> FakeAnswer:
    return FakeAnswer(status, {} if retry_after is None else {"Retry-After": retry_after})


# --- phase x verb --------------------------------------------------------------------------


@pytest.mark.parametrize(("verb", "reason"), list(itertools.product(VERBS, ERRORS_BEFORE_SEND)))
def test_every_verb_repeats_a_failure_before_sending(verb: str, reason: str) -> None:
    policy = make_policy()
    decision = policy.decide(make_call(policy, verb), attempt_error(reason))
    assert isinstance(decision, Retry)
    assert decision.reason == reason


@pytest.mark.parametrize(("verb", "reason"), list(itertools.product(VERBS, ERRORS_AFTER_SEND)))
def test_only_reads_repeat_a_failure_after_sending(verb: str, reason: str) -> None:
    policy = make_policy()
    call = make_call(policy, verb)
    decision = policy.decide(call, attempt_error(reason))
    if verb in READ_METHODS:
        assert isinstance(decision, Retry)
    else:
        assert isinstance(decision, Raise)
        assert call.stop == "final"
        assert decision.error.attempts == 1


@pytest.mark.parametrize(("verb", "reason"), list(itertools.product(WRITES, ERRORS_AFTER_SEND)))
def test_retry_non_idempotent_repeats_writes_after_sending(verb: str, reason: str) -> None:
    policy = make_policy(retry_non_idempotent=True)
    assert isinstance(policy.decide(make_call(policy, verb), attempt_error(reason)), Retry)


@pytest.mark.parametrize(
    ("verb", "status_and_header"),
    list(itertools.product(VERBS, sorted(STATUSES_BEFORE_SEND, key=str))),
)
def test_every_verb_repeats_a_refusal(verb: str, status_and_header: tuple[int, str | None]) -> None:
    status, header = status_and_header
    policy = make_policy()
    decision = policy.decide(make_call(policy, verb), answer(status, header))
    assert isinstance(decision, Retry)
    assert decision.reason == f"status_{status}"


@pytest.mark.parametrize(
    ("verb", "status_and_header"), list(itertools.product(VERBS, sorted(STATUSES_AFTER_SEND)))
)
def test_only_reads_repeat_a_5xx_that_may_have_done_work(
    verb: str, status_and_header: tuple[int, None]
) -> None:
    policy = make_policy()
    call = make_call(policy, verb)
    decision = policy.decide(call, answer(*status_and_header))
    if verb in READ_METHODS:
        assert isinstance(decision, Retry)
    else:
        assert decision is RETURN
        assert call.stop == "final"


@pytest.mark.parametrize(
    ("verb", "status_and_header"), list(itertools.product(VERBS, sorted(STATUSES_FINAL)))
)
def test_final_statuses_go_back_at_once(verb: str, status_and_header: tuple[int, None]) -> None:
    policy = make_policy()
    call = make_call(policy, verb)
    assert policy.decide(call, answer(*status_and_header)) is RETURN
    assert call.stop is None
    assert call.attempts == 1


@pytest.mark.parametrize("verb", VERBS)
def test_a_body_that_cannot_be_sent_again_is_not_repeated_after_sending(verb: str) -> None:
    policy = make_policy(retry_non_idempotent=True)
    call = make_call(policy, verb, replayable=False)
    assert isinstance(policy.decide(call, attempt_error("reset")), Raise)
    # ...but before sending it never left: every verb may go again.
    call = make_call(policy, verb, replayable=False)
    assert isinstance(policy.decide(call, attempt_error("connect_error")), Retry)


def test_a_certificate_that_does_not_verify_is_final() -> None:
    policy = make_policy()
    error = u3.SSLError(ssl.SSLCertVerificationError("CERTIFICATE_VERIFY_FAILED"))
    call = make_call(policy)
    decision = policy.decide(call, AttemptError(classify_error(error), error))
    assert isinstance(decision, Raise)
    assert type(decision.error) is errors.TLSError


# --- 401: refresh and replay once ------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_the_first_401_to_refreshable_credentials_replays_every_verb_once(verb: str) -> None:
    budget = FakeBudget()
    policy = make_policy(budget, max_attempts=1)
    call = policy.plan(verb, "https://api/api/v1/pods", None, replayable=True, authenticated=True)
    assert policy.decide(call, FakeAnswer(401)) is REAUTHENTICATE
    assert policy.decide(call, FakeAnswer(401)) is RETURN  # a second 401 is final
    assert budget.withdrawals == 0


@pytest.mark.parametrize(("authenticated", "replayable"), [(False, True), (True, False)])
def test_no_replay_without_refreshable_credentials_or_a_replayable_body(
    authenticated: bool, replayable: bool
) -> None:
    policy = make_policy()
    call = policy.plan(
        "GET", "https://api/x", None, replayable=replayable, authenticated=authenticated
    )
    assert policy.decide(call, FakeAnswer(401)) is RETURN


def test_a_403_is_final_even_with_credentials() -> None:
    policy = make_policy()
    call = policy.plan("GET", "https://api/x", None, replayable=True, authenticated=True)
    assert policy.decide(call, FakeAnswer(403)) is RETURN


# --- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "asked"),
    [
        ({"Retry-After": "3"}, b"", 3.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, b"", 0.0),  # a date in the past
        ({}, b'{"kind":"Status","details":{"retryAfterSeconds":2}}', 2.0),
        ({"Retry-After": "soon"}, b'{"details":{"retryAfterSeconds":4}}', 4.0),
    ],
)
def test_retry_after_in_every_form_sets_the_wait(
    headers: dict[str, str], body: bytes, asked: float
) -> None:
    policy = make_policy(backoff_base=0.1)
    call = make_call(policy, "POST")
    decision = policy.decide(call, FakeAnswer(429, headers, body))
    assert isinstance(decision, Retry)
    # Never earlier than asked; spread by up to max(backoff_base, asked / 4).
    assert decision.wait == asked + max(0.1, asked / 4)
    assert call.retry_after == asked


def test_retry_after_on_a_500_is_honoured_for_reads() -> None:
    policy = make_policy()
    body = b'{"details":{"retryAfterSeconds":1}}'
    decision = policy.decide(make_call(policy), FakeAnswer(500, {}, body))
    assert isinstance(decision, Retry)
    assert decision.wait >= 1


def test_a_retry_after_longer_than_retry_after_max_returns_the_answer() -> None:
    policy = make_policy(retry_after_max=5)
    call = make_call(policy)
    assert policy.decide(call, answer(429, "6")) is RETURN
    assert call.stop == "retry_after"


# --- budget ----------------------------------------------------------------------------------


def test_a_self_timed_retry_draws_on_the_budget() -> None:
    budget = FakeBudget()
    policy = make_policy(budget)
    assert isinstance(policy.decide(make_call(policy), answer(503, None)), Retry)
    assert budget.withdrawals == 1


def test_a_retry_paced_by_retry_after_does_not_draw_on_the_budget() -> None:
    budget = FakeBudget(allow=False)
    policy = make_policy(budget)
    assert isinstance(policy.decide(make_call(policy), answer(429, "1")), Retry)
    assert budget.withdrawals == 0


def test_a_refused_budget_returns_the_answer_or_raises_budget_exhausted() -> None:
    policy = make_policy(FakeBudget(allow=False))
    call = make_call(policy)
    assert policy.decide(call, answer(503, None)) is RETURN
    assert call.stop == "budget"
    call = make_call(policy)
    decision = policy.decide(call, attempt_error("reset"))
    assert isinstance(decision, Raise)
    assert type(decision.error) is errors.RetryBudgetExhausted
    assert "retry budget exhausted after connection reset" in str(decision.error)


def test_a_stop_is_checked_before_the_budget_so_a_refused_retry_costs_nothing() -> None:
    budget = FakeBudget()
    policy = make_policy(budget, max_attempts=2)
    call = make_call(policy, attempts=1)
    assert isinstance(policy.decide(call, attempt_error("reset")), Raise)
    assert call.stop == "attempts"
    assert budget.withdrawals == 0


# --- attempts and the deadline ---------------------------------------------------------------


@pytest.mark.parametrize(("made", "retried"), [(0, True), (3, True), (4, False)])
def test_max_attempts_counts_every_attempt(made: int, retried: bool) -> None:
    policy = make_policy(max_attempts=5)
    call = make_call(policy, attempts=made)
    decision = policy.decide(call, attempt_error("reset"))
    assert isinstance(decision, Retry) is retried
    if not retried:
        assert isinstance(decision, Raise)
        assert type(decision.error) is errors.ConnectionReset
        assert "failed after 5 attempt(s): connection reset" in str(decision.error)


def test_refused_connects_are_bounded_by_the_deadline_not_the_count_or_the_budget() -> None:
    clock = FakeClock()
    budget = FakeBudget(allow=False)
    policy = make_policy(budget, clock=clock, max_attempts=5, deadline=60)
    call = make_call(policy)
    for _ in range(20):  # an API server restarting: refused, refused, ...
        assert isinstance(policy.decide(call, attempt_error("connect_error")), Retry)
    assert call.attempts == 20
    budget.allow = True
    # ...while attempts that reached a server still count: four more end it.
    decisions = [policy.decide(call, attempt_error("reset")) for _ in range(5)]
    assert [type(d).__name__ for d in decisions] == ["Retry"] * 4 + ["Raise"]


def test_a_connect_timeout_counts_as_usual() -> None:
    policy = make_policy(max_attempts=3)
    call = make_call(policy, attempts=2)
    assert isinstance(policy.decide(call, attempt_error("connect_timeout")), Raise)


@pytest.mark.parametrize("tuning", [{"deadline": None}, {"max_attempts": 1}])
def test_without_a_deadline_or_with_retries_off_every_attempt_counts(
    tuning: dict[str, Any],
) -> None:
    policy = make_policy(**{"max_attempts": 3, **tuning})
    call = make_call(policy, attempts=policy.settings.max_attempts - 1)
    assert isinstance(policy.decide(call, attempt_error("connect_error")), Raise)


def test_backoff_is_full_jitter_doubling_to_the_cap() -> None:
    policy = make_policy(backoff_base=0.1, backoff_max=0.5, max_attempts=10)
    waits = []
    for made in range(6):
        call = make_call(policy, attempts=made)
        decision = policy.decide(call, attempt_error("connect_error"))
        assert isinstance(decision, Retry)
        waits.append(decision.wait)
    highs = [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]
    assert all(0 <= wait <= high for wait, high in zip(waits, highs, strict=True))


def test_a_wait_that_reaches_the_deadline_stops_with_deadline_exceeded() -> None:
    clock = FakeClock()
    policy = make_policy(clock=clock, deadline=1.0)
    call = make_call(policy)
    clock.now += 0.95
    decision = policy.decide(call, answer(429, "1"))  # the wait (>= 1 s) is past the deadline
    assert decision is RETURN
    assert call.stop == "deadline"
    call = make_call(policy)
    clock.now += 1.0 - 1e-9  # any backoff wait (uniform from 0) reaches the deadline
    decision = policy.decide(call, attempt_error("connect_timeout"))
    assert isinstance(decision, Raise)
    assert type(decision.error) is errors.DeadlineExceeded


def test_a_timeout_at_the_deadline_is_deadline_exceeded_even_when_final() -> None:
    clock = FakeClock()
    policy = make_policy(clock=clock, deadline=1.0)
    call = make_call(policy, "POST")
    clock.now += 1.0
    decision = policy.decide(call, attempt_error("read_timeout"))
    assert isinstance(decision, Raise)
    assert type(decision.error) is errors.DeadlineExceeded


def test_limits_cut_the_timeouts_to_the_deadline_and_raise_past_it() -> None:
    clock = FakeClock()
    policy = make_policy(clock=clock, connect_timeout=5, read_timeout=30, deadline=10)
    call = make_call(policy)
    limits = policy.limits(call)
    assert (limits.connect, limits.read, limits.remaining) == (5, 10, 10)
    clock.now += 7
    limits = policy.limits(call)
    assert (limits.connect, limits.read, limits.remaining) == (3, 3, 3)
    clock.now += 3
    with pytest.raises(errors.DeadlineExceeded, match="deadline exceeded"):
        policy.limits(call)
    assert call.stop == "deadline"


# --- the plan ----------------------------------------------------------------------------------


def test_request_timeout_number_bounds_the_whole_call_never_beyond_the_deadline() -> None:
    clock = FakeClock(100.0)
    policy = make_policy(clock=clock, deadline=60)
    assert make_call(policy, request_timeout=5).deadline_at == 105
    assert make_call(policy, request_timeout=500).deadline_at == 160
    call = make_call(policy, request_timeout=(1, 2))
    assert (call.connect, call.read, call.deadline_at) == (1, 2, 160)


def test_streams_have_no_deadline_and_read_for_the_servers_timeout_plus_margin() -> None:
    policy = make_policy()
    url = "https://api/api/v1/pods?watch=true&timeoutSeconds=300"
    call = make_call(policy, url=url)
    assert call.streaming
    assert call.deadline_at is None
    assert call.read == 300 + WATCH_READ_MARGIN
    call = make_call(policy, url="https://api/api/v1/namespaces/d/pods/p/log?follow=true")
    assert (call.streaming, call.read) == (True, None)
    call = make_call(policy, url=url, request_timeout=7)
    assert (call.read, call.connect, call.deadline_at) == (7, 5, None)
    assert not make_call(policy, url="https://api/api/v1/pods?watch=false").streaming


# --- stop strategies -------------------------------------------------------------------------


def test_stops_compose_in_order_and_name_their_reason() -> None:
    policy = make_policy()
    call = make_call(policy, attempts=5)
    call.retry_after = 100
    call.deadline_at = 0.5
    both = stop_after_attempt(5) | stop_when_retry_after_exceeds(60) | stop_before_deadline()
    assert both(call, 1.0, 0.0) == "attempts"
    assert (stop_when_retry_after_exceeds(60) | stop_after_attempt(5))(call, 1, 0) == "retry_after"
    assert (stop_before_deadline() | stop_after_attempt(6))(call, 1.0, 0.0) == "deadline"
    assert stop_after_attempt(6)(call, 1.0, 0.0) is None
    assert repr(both) == (
        "stop_after_attempt(5) | stop_when_retry_after_exceeds(60) | stop_before_deadline()"
    )


def test_a_stop_changes_nothing() -> None:
    policy = make_policy()
    call = make_call(policy, attempts=5)
    before = repr(call)
    policy.stop(call, 10.0, 0.0)
    assert repr(call) == before


# --- the error table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("dns", errors.NameResolutionError),
        ("connect_error", errors.ConnectError),
        ("connect_timeout", errors.ConnectTimeout),
        ("tls", errors.TLSError),
        ("read_timeout", errors.ReadTimeout),
        ("reset", errors.ConnectionReset),
        ("disconnected", errors.ConnectionReset),
        ("truncated", errors.ConnectionReset),
    ],
)
def test_each_failure_has_one_error_class(reason: str, kind: type[Exception]) -> None:
    policy = make_policy()
    call = make_call(policy, attempts=1)
    error = attempt_error(reason)
    raised = final_error(call, error.failure, error.cause, 0.0)
    assert type(raised) is kind
    assert raised.attempts == 1
    assert raised.method == "GET"
    if kind is errors.NameResolutionError:
        assert raised.host == "api"  # type: ignore[attr-defined]


def test_an_unknown_failure_is_a_plain_transport_error() -> None:
    policy = make_policy()
    call = make_call(policy, attempts=1)
    raised = final_error(call, Failure("ValueError", sent=True), ValueError("bug"), 0.0)
    assert type(raised) is errors.TransportError
    assert "ValueError: bug" in str(raised)
