"""Leader election on a ``coordination.k8s.io/v1`` Lease that can never outlive its lease.

Two parts, as ``STYLE.md`` asks of a long-lived loop:

* ``ElectionRules``: the rules, with no I/O and no sleeping, driven by monotonic ``now`` values.
  They say when to try, what to write into the Lease, and when leadership ends.
* ``LeaderElector``: a thin loop that reads and writes the Lease through the client's transport
  and calls the user's callbacks when the rules say leadership started or ended.

Why it is safe (client-go's ``leaderelection`` argument, made to hold for every call):

* A leader is leader until ``renewed_at + renew_deadline``, where ``renewed_at`` is when its last
  successful attempt *started*. Every call of an attempt gets the time left before that instant as
  its whole-call deadline (``_request_timeout``, which the transport treats as a deadline for
  retries included), so no call returns later than it.
* Another candidate takes over only ``lease_duration`` after it *observed* the last change of the
  Lease, which came after that attempt started. ``renew_deadline < lease_duration``, so the old
  leader has stopped (and called ``on_stopped_leading``) before anyone else can start.
* Writes carry the ``resourceVersion`` that was read: two candidates cannot both win one term.
* Expiry is judged on the local monotonic clock, never on the wall-clock times in the Lease, so
  clock skew between machines does not matter (only their rates must agree).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import kubernetes
import kubernetes.client
from kubernetes.client.exceptions import ApiException

from ._settings import _seconds
from .errors import ConfigError

__all__ = ["ElectionRules", "ElectionTiming", "LeaderElector", "Leadership", "LeaseRecord"]

log = logging.getLogger(__name__)

#: Retry waits are drawn from ``retry_period * [1 - RETRY_JITTER, 1]``: candidates that started
#: together drift apart, and no wait is longer than ``retry_period``, so a candidate notices an
#: expired lease within ``lease_duration + retry_period`` of the old leader's last renewal.
RETRY_JITTER = 0.25
#: A call with less time than this left before the renew deadline is not started.
MIN_CALL_SECONDS = 0.001

#: kubernetes 31-35 apply ``_request_timeout`` only when it is an int: a float is ignored and the
#: call gets no time limit at all.
_FLOAT_TIMEOUTS = int(str(kubernetes.__version__).split(".")[0]) >= 36


class _ExactSeconds(int):
    """An int that passes kubernetes 31-35's ``isinstance(_request_timeout, int)`` test and whose
    ``float()`` is the exact deadline, which is what urllib3 and the transport read."""

    _exact: float

    def __new__(cls, seconds: float) -> _ExactSeconds:
        whole = super().__new__(cls, math.ceil(seconds))
        whole._exact = seconds
        return whole

    def __float__(self) -> float:
        return self._exact


Change = Literal["none", "started", "renewed", "lost"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ElectionTiming:
    """The three durations of an election, validated (client-go's ``LeaderElectionConfig``).

    Args:
        lease_duration: how long candidates wait after the Lease last changed before taking it.
        renew_deadline: how long a leader keeps leading without a successful renewal; every
            call it makes is bounded by what is left of it. Must be less than ``lease_duration``.
        retry_period: the time between attempts (jittered down by up to 25 %). Must be less than
            ``renew_deadline``, so a leader gets more than one try before it steps down.

    Raises:
        ConfigError: a duration is not a positive number of seconds, or the order is wrong.
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        for name in ("lease_duration", "renew_deadline", "retry_period"):
            value = _seconds(name, getattr(self, name), allow_none=False)
            object.__setattr__(self, name, value)
        if self.renew_deadline >= self.lease_duration:
            raise ConfigError(
                f"renew_deadline={self.renew_deadline!r} must be less than"
                f" lease_duration={self.lease_duration!r}: the leader must stop before another"
                " candidate may take the lease"
            )
        if self.retry_period >= self.renew_deadline:
            raise ConfigError(
                f"retry_period={self.retry_period!r} must be less than"
                f" renew_deadline={self.renew_deadline!r}: a leader needs more than one try"
            )

    @property
    def lease_seconds(self) -> int:
        """``leaseDurationSeconds`` as written into the Lease (whole seconds, rounded up)."""
        return math.ceil(self.lease_duration)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRecord:
    """What a Lease says: its holder, its times, and the version it was read at."""

    holder: str = ""
    lease_seconds: float | None = None
    acquire_time: datetime.datetime | None = None
    renew_time: datetime.datetime | None = None
    transitions: int = 0
    #: ``metadata.resourceVersion``; writes carry it, so a stale write gets 409 Conflict.
    version: str | None = None


class Step(NamedTuple):
    """What the loop does next: ``wait`` ``seconds``, ``attempt`` (read, then maybe write), or
    ``stop`` leading now (``reason`` says why)."""

    action: Literal["wait", "attempt", "stop"]
    seconds: float = 0.0
    reason: str = ""


class ElectionRules:
    """The rules of one candidate's campaign; pure, every method takes the monotonic ``now``.

    The loop asks ``next_step``; for an attempt it calls ``begin_attempt``, then ``observed``
    with the Lease it read (or None when there is none), which returns the record to write (or
    None), then ``written`` with the Lease the server stored, or ``failed`` if a call failed.
    Each of these returns a ``Change`` the loop acts on.

    Args:
        timing: the election's durations.
        identity: this candidate's name in the Lease.
        random: a ``[0, 1)`` source for the retry jitter (tests make it fixed).
    """

    def __init__(
        self,
        timing: ElectionTiming,
        identity: str,
        *,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.timing = timing
        self.identity = identity
        self._random = random
        self.leading = False
        #: When the last successful attempt started (valid while leading).
        self.renewed_at = -math.inf
        #: The last Lease seen, and when it was first seen with that version (local clock).
        self.observed_record: LeaseRecord | None = None
        self.observed_at = -math.inf
        self._next_attempt_at = -math.inf
        #: The running attempt: when it started, and the instant its calls must be done by.
        self._attempt_started_at = -math.inf
        self._attempt_deadline = -math.inf
        #: Why leadership ended, for the logs and the loop.
        self.lost_reason = ""

    # --- what to do next ---------------------------------------------------------------------

    @property
    def leading_until(self) -> float:
        """The monotonic instant leadership ends unless renewed (``-inf`` when not leading)."""
        return self.renewed_at + self.timing.renew_deadline if self.leading else -math.inf

    def next_step(self, now: float) -> Step:
        """Stop leading, wait, or start an attempt."""
        if self.leading and now >= self.leading_until:
            return Step("stop", reason=self._lose("renew deadline passed"))
        if now < self._next_attempt_at:
            until = self._next_attempt_at
            if self.leading:
                until = min(until, self.leading_until)
            return Step("wait", until - now)
        return Step("attempt")

    def begin_attempt(self, now: float) -> None:
        """An attempt starts: its calls must end before the renew deadline it is judged by."""
        self._attempt_started_at = now
        # A leader's calls share what is left of its term; a candidate's attempt is held to the
        # same rule, so a win that took longer than renew_deadline does not count.
        base = self.renewed_at if self.leading else now
        self._attempt_deadline = base + self.timing.renew_deadline

    def call_timeout(self, now: float) -> float | None:
        """Seconds the next call of this attempt may take, or None when too little is left."""
        left = self._attempt_deadline - now
        return left if left >= MIN_CALL_SECONDS else None

    # --- what came back ----------------------------------------------------------------------

    def observed(
        self, now: float, record: LeaseRecord | None, wall: datetime.datetime
    ) -> tuple[Change, LeaseRecord | None]:
        """The Lease was read (None: it does not exist). Returns the change, and what to write."""
        if record is None:
            return "none", LeaseRecord(
                holder=self.identity,
                lease_seconds=self.timing.lease_seconds,
                acquire_time=wall,
                renew_time=wall,
                transitions=0,
            )
        previous = self.observed_record
        if previous is None or previous.version != record.version or record.version is None:
            self.observed_record, self.observed_at = record, now
        if record.holder and record.holder != self.identity:
            expires_at = self.observed_at + (record.lease_seconds or self.timing.lease_duration)
            if now < expires_at:
                change: Change = "none"
                if self.leading:
                    # Someone else holds it: whatever our clock says, we are not the leader.
                    self._lose(f"lease taken by {record.holder}")
                    change = "lost"
                # Come back when it would expire, if that is sooner than the next retry.
                self._next_attempt_at = min(now + self._retry_wait(), expires_at)
                return change, None
        keep_term = self.leading and record.holder == self.identity
        return "none", LeaseRecord(
            holder=self.identity,
            lease_seconds=self.timing.lease_seconds,
            acquire_time=record.acquire_time if keep_term else wall,
            renew_time=wall,
            transitions=record.transitions + (record.holder != self.identity),
            version=record.version,
        )

    def written(self, now: float, stored: LeaseRecord) -> Change:
        """The write succeeded and the server stored ``stored``."""
        self.observed_record, self.observed_at = stored, now
        self._next_attempt_at = now + self._retry_wait()
        if now >= self._attempt_deadline:
            # Too late to count: the term it would start (or extend) is already over.
            return self.failed(now, "lease written after the renew deadline")
        self.renewed_at = self._attempt_started_at
        if self.leading:
            return "renewed"
        self.leading = True
        self.lost_reason = ""
        return "started"

    def failed(self, now: float, reason: str) -> Change:
        """A call of the attempt failed (``reason`` says how); try again after the retry wait."""
        self._next_attempt_at = now + self._retry_wait()
        if self.leading and now >= self.leading_until:
            self._lose(f"renew deadline passed ({reason})")
            return "lost"
        return "none"

    def resign(self, reason: str) -> Change:
        """Stop leading now (the elector is stopping, or the leader's work failed)."""
        if not self.leading:
            return "none"
        self._lose(reason)
        return "lost"

    def release(self, wall: datetime.datetime) -> LeaseRecord | None:
        """What to write to hand the Lease back (client-go's ``ReleaseOnCancel``), if we hold it."""
        record = self.observed_record
        if record is None or record.holder != self.identity:
            return None
        return dataclasses.replace(
            record, holder="", lease_seconds=1, acquire_time=wall, renew_time=wall
        )

    # --- helpers ---------------------------------------------------------------------------

    def _lose(self, reason: str) -> str:
        self.leading = False
        self.renewed_at = -math.inf
        self.lost_reason = reason
        return reason

    def _retry_wait(self) -> float:
        """``retry_period × (1 - RETRY_JITTER × U[0, 1))``: never longer than ``retry_period``."""
        return self.timing.retry_period * (1.0 - RETRY_JITTER * self._random())


class Leadership:
    """One term as leader, handed to ``on_started_leading``: the work's way to notice its end.

    ``lost`` is set when the term ends (the renew deadline passed, another candidate holds the
    Lease, or the elector stopped); ``is_leading()`` also turns False at the renew deadline even
    before the election loop gets to run.
    """

    def __init__(self, elector: LeaderElector) -> None:
        self._elector = elector
        self.lost = threading.Event()

    def is_leading(self) -> bool:
        """Whether this term is still on."""
        return not self.lost.is_set() and self._elector._clock() < self._elector._until

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the term ends or ``timeout`` passes; True if it ended."""
        return self.lost.wait(timeout)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    """Campaigns for a Lease and runs the user's work while it holds it.

    Built by ``ClientFactory.leader_elector``; see there for the arguments. ``run()`` blocks and
    campaigns until ``stop()``: it leads, loses, and campaigns again as often as that happens.

    ``on_started_leading(leadership)`` runs on a thread of its own at the start of each term;
    ``leadership.lost`` is set when the term ends. ``on_stopped_leading()`` runs on the election
    thread when a term ends, always, and before another candidate can start its term. If
    ``on_started_leading`` raises, the elector resigns (and campaigns again).
    """

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        lease_name: str,
        *,
        namespace: str,
        identity: str,
        timing: ElectionTiming,
        on_started_leading: Callable[[Leadership], object],
        on_stopped_leading: Callable[[], object],
        release_on_stop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        for name, value in (
            ("lease_name", lease_name),
            ("namespace", namespace),
            ("identity", identity),
        ):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}={value!r} must be a non-empty string")
        for name, callback in (
            ("on_started_leading", on_started_leading),
            ("on_stopped_leading", on_stopped_leading),
        ):
            if not callable(callback):
                raise ConfigError(f"{name}={callback!r} must be callable")
        self.lease_name = lease_name
        self.namespace = namespace
        self.identity = identity
        self.timing = timing
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._release_on_stop = release_on_stop
        self._clock = clock
        self._wall = wall
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._rules = ElectionRules(timing, identity)
        self._wake = threading.Event()
        self._stopping = False
        self._work_failed = False
        self._term: Leadership | None = None
        #: ``leading_until`` of the current term, read by ``Leadership`` from other threads.
        self._until = -math.inf

    @property
    def leading(self) -> bool:
        """Whether this elector leads now (False from the renew deadline on, at the latest)."""
        term = self._term
        return term is not None and term.is_leading()

    def stop(self) -> None:
        """Make ``run()`` end: a leader stops leading (callbacks run) and hands the Lease back."""
        self._stopping = True
        self._wake.set()

    def run(self) -> None:
        """Campaign until ``stop()``; blocks."""
        rules = self._rules
        log.info("%s: campaigning for lease %s/%s", self.identity, self.namespace, self.lease_name)
        while not self._stopping:
            if self._work_failed:
                self._work_failed = False
                if rules.resign("the leader's work raised") == "lost":
                    self._end_term()
                    self._release()
            step = rules.next_step(self._clock())
            if step.action == "stop":
                self._end_term()
            elif step.action == "wait":
                self._wake.wait(step.seconds)
                self._wake.clear()
            else:
                self._act(self._attempt())
        if rules.resign("the elector stopped") == "lost":
            self._end_term()
            if self._release_on_stop:
                self._release()

    # --- one attempt -----------------------------------------------------------------------

    def _attempt(self) -> Change:
        rules = self._rules
        rules.begin_attempt(self._clock())
        try:
            timeout = self._timeout()
            try:
                lease = self._api.read_namespaced_lease(
                    self.lease_name, self.namespace, _request_timeout=timeout
                )
                current: LeaseRecord | None = _record(lease)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                current = None
            change, wanted = rules.observed(self._clock(), current, self._wall())
            if wanted is None:
                return change
            timeout = self._timeout()
            body = _body(self.lease_name, self.namespace, wanted)
            if current is None:
                stored = self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=timeout
                )
            else:
                stored = self._api.replace_namespaced_lease(
                    self.lease_name, self.namespace, body, _request_timeout=timeout
                )
        except Exception as exc:  # transport errors, API errors, anything: a failed attempt
            reason = _describe(exc)
            log.info("%s: lease attempt failed: %s", self.identity, reason)
            return rules.failed(self._clock(), reason)
        return rules.written(self._clock(), _record(stored))

    def _timeout(self) -> float:
        """The next call's whole-call deadline: what is left before the renew deadline."""
        left = self._rules.call_timeout(self._clock())
        if left is None:
            raise _NoTimeLeft("no time left before the renew deadline")
        return left if _FLOAT_TIMEOUTS else _ExactSeconds(left)

    def _act(self, change: Change) -> None:
        if change == "started":
            self._start_term()
        elif change == "renewed":
            self._until = self._rules.leading_until
        elif change == "lost":
            self._end_term()

    # --- terms -----------------------------------------------------------------------------

    def _start_term(self) -> None:
        self._until = self._rules.leading_until
        term = self._term = Leadership(self)
        log.info("%s: started leading %s/%s", self.identity, self.namespace, self.lease_name)
        threading.Thread(
            target=self._work, args=(term,), name=f"leader:{self.lease_name}", daemon=True
        ).start()

    def _work(self, term: Leadership) -> None:
        try:
            self._on_started(term)
        except Exception:
            log.exception("%s: on_started_leading raised; resigning", self.identity)
            if not term.lost.is_set():
                self._work_failed = True
                self._wake.set()

    def _end_term(self) -> None:
        term = self._term
        self._until = -math.inf
        if term is None:  # Defensive: the rules only lose a term that started
            return
        term.lost.set()
        self._term = None
        log.log(
            logging.INFO if self._stopping else logging.WARNING,
            "%s: stopped leading %s/%s: %s",
            self.identity,
            self.namespace,
            self.lease_name,
            self._rules.lost_reason,
        )
        try:
            self._on_stopped()
        except Exception:
            log.exception("%s: on_stopped_leading raised", self.identity)

    def _release(self) -> None:
        """Hand the Lease back so the next candidate need not wait for it to expire."""
        record = self._rules.release(self._wall())
        if record is None:
            return
        try:
            self._api.replace_namespaced_lease(
                self.lease_name,
                self.namespace,
                _body(self.lease_name, self.namespace, record),
                _request_timeout=1,
            )
        except Exception as exc:  # someone else took it, or the server is gone: it will expire
            log.info("%s: could not release the lease: %s", self.identity, _describe(exc))


class _NoTimeLeft(Exception):
    """Too little time is left before the renew deadline to start another call."""


def _record(lease: Any) -> LeaseRecord:
    """The ``LeaseRecord`` of a ``V1Lease`` (kubernetes 31-37 models alike)."""
    spec = lease.spec
    metadata = lease.metadata
    if spec is None:
        return LeaseRecord(version=metadata.resource_version)
    return LeaseRecord(
        holder=spec.holder_identity or "",
        lease_seconds=spec.lease_duration_seconds or None,
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=spec.lease_transitions or 0,
        version=metadata.resource_version,
    )


def _micro_time(value: datetime.datetime | None) -> str | None:
    """A MicroTime as the API server writes it: RFC 3339 with microseconds, in UTC."""
    if value is None:
        return None
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _body(name: str, namespace: str, record: LeaseRecord) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.version is not None:
        metadata["resourceVersion"] = record.version
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": None if record.lease_seconds is None else int(record.lease_seconds),
        "acquireTime": _micro_time(record.acquire_time),
        "renewTime": _micro_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
