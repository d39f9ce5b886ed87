"""Leader election against the fake API server: hand-over, a leader cut off, work that fails.

Each candidate has its own ``ClientFactory``; the one to be cut off reaches the server through a
loopback relay that can turn into a black hole (bytes in, nothing out), as a partition would.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from resilient_kube import ClientFactory, ConfigError, LeaderElector, Leadership
from resilient_kube.testing import FakeApiServer
from tests.helpers.loopback import Relay

LEASE = 2.0  # whole seconds: the Lease holds leaseDurationSeconds, rounded up
RENEW = 1.0
RETRY = 0.2
#: What scheduling and the calls' own time may add to a bound (two threads, a loaded machine).
SLACK = 0.5


class BlackHoleRelay:
    """Splices connections to ``port`` until ``dark`` is set; from then on, nothing gets through."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dark = threading.Event()
        self.relay = Relay(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}"

    def _handle(self, conn: socket.socket) -> None:
        upstream = self.relay.keep(socket.create_connection(("127.0.0.1", self.port)))
        threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()
        self._pipe(upstream, conn)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.dark.is_set():
                    self.relay.stop.wait()  # swallowed: the peer hears nothing, ever
                    return
                sink.sendall(data)


@dataclass
class Candidate:
    """One elector on its own client, and what happened to it (monotonic times)."""

    name: str
    factory: ClientFactory
    started: list[float] = field(default_factory=list)
    stopped: list[float] = field(default_factory=list)
    leading: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    elector: LeaderElector | None = None
    thread: threading.Thread | None = None
    work: Callable[[Leadership], None] | None = None

    def start(self) -> None:
        def on_started(term: Leadership) -> None:
            self.started.append(time.monotonic())
            self.lost.clear()
            self.leading.set()
            if self.work is not None:
                self.work(term)

        def on_stopped() -> None:
            self.stopped.append(time.monotonic())
            self.leading.clear()
            self.lost.set()

        self.elector = self.factory.leader_elector(
            "lock",
            namespace="default",
            identity=self.name,
            lease_duration=LEASE,
            renew_deadline=RENEW,
            retry_period=RETRY,
            on_started_leading=on_started,
            on_stopped_leading=on_stopped,
        )
        self.thread = threading.Thread(target=self.elector.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.elector is not None and self.thread is not None:
            self.elector.stop()
            self.thread.join(10)
            assert not self.thread.is_alive()


def intervals(candidate: Candidate) -> list[tuple[float, float]]:
    ends = [*candidate.stopped, float("inf")]
    return list(zip(candidate.started, ends, strict=False))


def assert_no_overlap(*candidates: Candidate) -> None:
    terms = sorted(term for c in candidates for term in intervals(c))
    for (_, end), (start, _) in itertools.pairwise(terms):
        assert end < start, terms


@pytest.fixture
def candidates(server: FakeApiServer) -> Iterator[list[Candidate]]:
    made: list[Candidate] = []
    yield made
    for candidate in made:
        candidate.stop()
        candidate.factory.close()


def make(candidates: list[Candidate], name: str, configuration: client.Configuration) -> Candidate:
    candidate = Candidate(name, ClientFactory(configuration))
    candidates.append(candidate)
    return candidate


def test_stop_hands_the_lease_over_at_once(
    server: FakeApiServer, candidates: list[Candidate]
) -> None:
    a = make(candidates, "a", server.configuration())
    b = make(candidates, "b", server.configuration())
    a.start()
    assert a.leading.wait(5)
    b.start()
    assert server.wait_for_requests(2, verb="get", timeout=5)  # b has seen a's lease
    assert not b.leading.is_set()
    a.stop()
    # a released the lease: b need not wait for it to expire.
    assert b.leading.wait(LEASE)
    assert a.stopped[0] < b.started[0]
    assert b.started[0] - a.stopped[0] < RETRY + SLACK
    assert_no_overlap(a, b)
    lease = client.CoordinationV1Api(b.factory.api_client).read_namespaced_lease("lock", "default")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1  # a -> b (the release keeps the count)


def test_a_leader_cut_off_stops_before_another_starts(
    server: FakeApiServer, candidates: list[Candidate]
) -> None:
    hole = BlackHoleRelay(server.port)
    try:
        cut = server.configuration()
        cut.host = hole.url
        a = make(candidates, "a", cut)
        b = make(candidates, "b", server.configuration())
        a.start()
        assert a.leading.wait(5)
        b.start()
        assert server.wait_for_requests(2, verb="get", timeout=5)
        dark_at = time.monotonic()
        hole.dark.set()
        # a's calls hang in the black hole; each is cut at what is left of its term.
        assert a.lost.wait(RENEW + SLACK)
        assert a.stopped[0] - dark_at <= RENEW + SLACK
        assert a.elector is not None
        assert not a.elector.leading
        assert b.leading.wait(LEASE + RETRY + SLACK)
        assert b.started[0] - dark_at <= LEASE + RETRY + SLACK
        assert a.stopped[0] < b.started[0]
        assert_no_overlap(a, b)
        # The transport errors were failed renewals, not a crash: a still campaigns, as a
        # follower once it can reach the server again.
        assert a.thread is not None
        assert a.thread.is_alive()
        hole.dark.clear()
        before = server.request_count("get")
        assert server.wait_for_requests(before + 3, verb="get", timeout=5)
        assert len(a.started) == 1
    finally:
        for candidate in candidates:
            candidate.stop()
        hole.relay.close()


def test_work_is_told_when_the_term_ends(
    server: FakeApiServer, candidates: list[Candidate]
) -> None:
    a = make(candidates, "a", server.configuration())
    noticed = threading.Event()

    def work(term: Leadership) -> None:
        assert term.is_leading()
        term.wait(10)
        assert not term.is_leading()
        noticed.set()

    a.work = work
    a.start()
    assert a.leading.wait(5)
    a.stop()
    assert noticed.wait(5)


def test_work_that_raises_resigns_and_campaigns_again(
    server: FakeApiServer, candidates: list[Candidate]
) -> None:
    a = make(candidates, "a", server.configuration())
    terms = threading.Semaphore(0)

    def work(term: Leadership) -> None:
        terms.release()
        raise RuntimeError("boom")

    a.work = work
    a.start()
    assert terms.acquire(timeout=5)
    assert terms.acquire(timeout=5)  # resigned, then won again
    assert len(a.stopped) >= 1
    assert_no_overlap(a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identity": ""}, r"identity='' must be a non-empty string"),
        ({"namespace": 3}, r"namespace=3 must be a non-empty string"),
        ({"on_started_leading": None}, r"on_started_leading=None must be callable"),
        ({"renew_deadline": 20.0}, r"renew_deadline=20.0 must be less than lease_duration=15.0"),
    ],
)
def test_bad_arguments_raise_config_error(
    configuration: client.Configuration, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "namespace": "default",
        "identity": "me",
        "on_started_leading": lambda term: None,
        "on_stopped_leading": lambda: None,
        **kwargs,
    }
    with ClientFactory(configuration) as kube, pytest.raises(ConfigError, match=message):
        kube.leader_elector("lock", **arguments)  # type: ignore[arg-type]
