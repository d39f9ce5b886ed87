"""Several API servers behind one client: health checks, ejection, re-admission and spreading.

Production control planes run several kube-apiservers and restart them one by one. With
``endpoints=[...]`` the client knows them all (one identity: same CA, same credentials, the TLS
name of the configured host) and keeps, per endpoint, a small state machine with no I/O::

    healthy --(eject_after failures in a row: calls or checks)--> ejected
    ejected --(a check passes)--> probation --(readmit_after passes in a row)--> healthy
                                  probation --(a failure)--> ejected

``EndpointSet.pick`` spreads calls round-robin over the healthy endpoints and never hands a retry
the endpoint whose attempt just failed while another is healthy; when none is healthy it still
picks one (probation first), because failing every call without trying helps nobody.
``HealthChecker`` asks each endpoint's ``/readyz`` every ``health_interval`` seconds with a
``health_timeout``: with the defaults (2 s, 1 s, two failures) a dead endpoint is ejected within
about 5 s, as the original article's load balancer does, and sooner when calls see it fail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

__all__ = ["Endpoint", "EndpointSet", "EndpointStats", "HealthChecker", "parse_endpoint"]

log = logging.getLogger(__name__)


class EndpointStats(NamedTuple):
    """One endpoint's state and counts (``Stats.endpoints``)."""

    url: str
    #: ``healthy``, ``ejected`` or ``probation``.
    state: str
    #: Attempts sent to it, and those that failed (no answer, or a 503).
    attempts: int
    failures: int
    #: Health checks made, and those that failed.
    checks: int
    check_failures: int
    #: Times it was ejected.
    ejections: int


def parse_endpoint(url: str) -> tuple[str, str, int]:
    """``scheme://host[:port]`` -> (scheme, host, port); ValueError names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("scheme must be http or https")
    if not parts.hostname:
        raise ValueError("no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in an endpoint URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an endpoint is scheme://host[:port], without a path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port


class Endpoint:
    """One API server: where to send, and its health."""

    __slots__ = (
        "attempts",
        "check_failures",
        "checks",
        "ejections",
        "failures",
        "host",
        "in_a_row",
        "passes",
        "pool",
        "port",
        "prefix",
        "scheme",
        "state",
        "url",
    )

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parse_endpoint(url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        #: ``scheme://host:port``, what replaces the configured host's prefix in a URL.
        self.prefix = f"{self.scheme}://{host}:{self.port}"
        self.state = "healthy"
        #: Consecutive failures (calls or checks), and consecutive passes while not healthy.
        self.in_a_row = 0
        self.passes = 0
        self.attempts = self.failures = self.checks = self.check_failures = self.ejections = 0
        #: The driver's connection pool for this endpoint (kept here, built on first use).
        self.pool: Any = None

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, state={self.state!r})"

    def stats(self) -> EndpointStats:
        return EndpointStats(
            self.url,
            self.state,
            self.attempts,
            self.failures,
            self.checks,
            self.check_failures,
            self.ejections,
        )


class EndpointSet:
    """The endpoints of one client and the rules that eject and re-admit them (no I/O).

    Args:
        urls: the endpoints, ``scheme://host[:port]``.
        eject_after: consecutive failures (calls or checks) that eject an endpoint.
        readmit_after: consecutive passing checks that bring an ejected one back.
        on_eject: called (outside the lock) with an endpoint just ejected: the driver cuts the
            streams it carries, so that watches move to a healthy endpoint.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        eject_after: int = 2,
        readmit_after: int = 2,
        on_eject: Callable[[Endpoint], None] = lambda endpoint: None,
    ) -> None:
        self.endpoints = tuple(Endpoint(url) for url in urls)
        self._eject_after = eject_after
        self._readmit_after = readmit_after
        #: Called with an endpoint just ejected (the driver sets it: it cuts that endpoint's
        #: streams).
        self.on_eject = on_eject
        self._lock = threading.Lock()
        self._next = 0

    def pick(self, avoid: Endpoint | None = None) -> Endpoint:
        """The next endpoint for an attempt: round-robin over the healthy ones, not ``avoid``."""
        with self._lock:
            endpoints = self.endpoints
            count = len(endpoints)
            fallback: Endpoint | None = None
            for step in range(count):
                endpoint = endpoints[(self._next + step) % count]
                if endpoint.state == "healthy" and endpoint is not avoid:
                    self._next = (self._next + step + 1) % count
                    return endpoint
                if fallback is None or _rank(endpoint, avoid) < _rank(fallback, avoid):
                    fallback = endpoint
            assert fallback is not None  # Defensive: Settings never allows an empty list
            self._next = (self._next + 1) % count
            return fallback

    def succeeded(self, endpoint: Endpoint) -> None:
        """An attempt on ``endpoint`` got an answer from a working server."""
        with self._lock:
            endpoint.attempts += 1
            endpoint.in_a_row = 0

    def failed(self, endpoint: Endpoint) -> None:
        """An attempt on ``endpoint`` got no answer, or a 503."""
        with self._lock:
            endpoint.attempts += 1
            endpoint.failures += 1
            ejected = self._fail(endpoint)
        if ejected:
            self._ejected(endpoint)

    def checked(self, endpoint: Endpoint, ready: bool) -> None:
        """A health check of ``endpoint`` passed (``ready``) or failed."""
        with self._lock:
            endpoint.checks += 1
            ejected = False
            if ready:
                endpoint.in_a_row = 0
                if endpoint.state != "healthy":
                    endpoint.passes += 1
                    endpoint.state = "probation"
                    if endpoint.passes >= self._readmit_after:
                        endpoint.state = "healthy"
                        endpoint.passes = 0
                        log.warning("API server %s is back: re-admitted", endpoint.url)
            else:
                endpoint.check_failures += 1
                ejected = self._fail(endpoint)
        if ejected:
            self._ejected(endpoint)

    def _fail(self, endpoint: Endpoint) -> bool:
        """Count one failure (lock held); True when it ejects the endpoint now."""
        endpoint.in_a_row += 1
        endpoint.passes = 0
        if endpoint.state == "probation" or (
            endpoint.state == "healthy" and endpoint.in_a_row >= self._eject_after
        ):
            endpoint.state = "ejected"
            endpoint.ejections += 1
            return True
        return False

    def _ejected(self, endpoint: Endpoint) -> None:
        log.warning("API server %s ejected after %d failures", endpoint.url, endpoint.in_a_row)
        try:
            self.on_eject(endpoint)
        except Exception:  # Defensive: cutting streams must never break the caller
            log.exception("cutting the streams of %s failed", endpoint.url)

    def stats(self) -> tuple[EndpointStats, ...]:
        with self._lock:
            return tuple(endpoint.stats() for endpoint in self.endpoints)


def _rank(endpoint: Endpoint, avoid: Endpoint | None) -> tuple[int, int]:
    """Order of preference when no endpoint is healthy: probation, then not the one to avoid."""
    return (0 if endpoint.state == "probation" else 1, 1 if endpoint is avoid else 0)


class HealthChecker:
    """A thread that asks every endpoint's ``/readyz`` every ``interval`` seconds.

    Args:
        endpoints: the set to report to.
        probe: ``probe(endpoint, timeout) -> bool``, one check (the driver's I/O).
        interval, timeout: seconds between rounds, and for one check.
        sleep: waits between rounds; returns True when the checker should stop (an Event's wait).
    """

    def __init__(
        self,
        endpoints: EndpointSet,
        probe: Callable[[Endpoint, float], bool],
        *,
        interval: float,
        timeout: float,
    ) -> None:
        self._endpoints = endpoints
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resilient-kube-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: the parent's thread is gone; check from a new one."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resilient-kube-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._timeout + 1)

    def check_once(self) -> None:
        """One round: every endpoint, one after the other (each bounded by the timeout)."""
        for endpoint in self._endpoints.endpoints:
            started = time.monotonic()
            ready = False
            with contextlib.suppress(Exception):  # any failure to answer is a failed check
                ready = self._probe(endpoint, self._timeout)
            if time.monotonic() - started > self._timeout + 0.5:  # Defensive: a probe overran
                ready = False
            self._endpoints.checked(endpoint, ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(self._interval)
