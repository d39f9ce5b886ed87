"""``resilient-kube demo``: one controller-like workload, stock client and resilient_kube side by side.

Both clients run under the same controller: a call that fails is requeued and made again, with
the backoff of client-go's default controller rate limiter, as controllers do.

Everything runs in this process on loopback: a ``FakeApiServer`` over TLS that misbehaves on a
seeded schedule, a small DNS server (``resilient_kube.testing.FakeDnsServer``) that serves the
name resilient_kube connects to, and a server that accepts and never answers (a hung API server)
for the time-to-fail probe. Each client gets a fresh server with the same fault rules and the
same seeds, so a run is comparable with itself.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import kubernetes
import kubernetes.client
import urllib3
from kubernetes.client.rest import ApiException

from ._client import ApiClient
from ._limiter import TokenBucket
from .testing import (
    FakeApiServer,
    FakeDnsServer,
    Overload,
    ResetConnection,
    Stall,
    StatusFault,
    TruncatedBody,
)

__all__ = [
    "CLIENTS",
    "DEMO_NAME",
    "JSON_SCHEMA",
    "ClientResult",
    "DemoOptions",
    "DemoResult",
    "run_demo",
]

#: The ``schema`` field of ``--json`` output; bumped on any incompatible change.
JSON_SCHEMA = "resilient-kube-demo/3"
#: The name resilient_kube connects to, served by the demo's own DNS server.
DEMO_NAME = "api.demo.test"
#: The demo DNS answer's TTL, in seconds.
DEMO_TTL = 30
#: The two clients, in the order they run.
CLIENTS = ("stock", "resilient_kube")
#: The fault mix: (fault, probability per request, at most this many times or None).
#: Rules are tried in this order and the first that draws its fault serves it.
FAULTS: tuple[
    tuple[StatusFault | ResetConnection | TruncatedBody | Stall, float, int | None], ...
] = (
    # A stalled response or two: a request that the server never answers.
    (Stall(), 0.01, 2),
    (StatusFault(503), 0.05, None),
    (ResetConnection(), 0.02, None),
    (TruncatedBody(), 0.01, None),
)
#: An overload episode: when resync burst number ``OVERLOAD_TICK`` (from 0) starts, the server is
#: short of capacity for ``OVERLOAD_SECONDS``, as when etcd slows down or other tenants fill the
#: client's API Priority and Fairness priority level. Each request then takes
#: ``OVERLOAD_WORK`` seconds of the server's time, a sixth of a burst's requests at a time, as
#: many more wait, and the rest are refused with 429 and a Retry-After that starts at 1 s and
#: grows with the refusals as kube-apiserver's does (``DemoOptions.overload``). Requests that draw
#: one of the ``FAULTS`` get that instead: their rules come first. How many are refused depends
#: on how the clients send, as on a real server.
OVERLOAD_TICK = 2
OVERLOAD_SECONDS = 3.0
OVERLOAD_WORK = 0.1
#: Calls per second the whole workload aims at: a busy controller, below the 50 qps default
#: limiter, so both clients see the same offered load and the limiter does not shape it. Also
#: below half of it: after a 429 the limiter halves its rate, and grows it back within seconds.
TARGET_QPS = 20.0
#: The controller's requeue backoff, client-go's ``DefaultTypedControllerRateLimiter``: the later
#: of 5 ms doubled for each failure of the same item, and a token bucket of 10/s (burst 100)
#: shared by every requeue.
REQUEUE_BASE = 0.005
REQUEUE_QPS = 10.0
REQUEUE_BURST = 100
#: A real controller requeues a failed item forever; the demo must end, so it gives up after
#: this many tries (the per-item backoff alone adds up to 10 s by then), more than the overload
#: episode takes of a call the stock client does not retry itself.
MAX_TRIES = 12
#: The resilient client's settings in the demo: everything default except these.
RESILIENT_SETTINGS: dict[str, Any] = {
    # A healthy call here takes milliseconds; 2 s is what `resilient-kube doctor` advises.
    "read_timeout": 2.0,
    # Creates use fixed names: a repeat that meets 409 AlreadyExists is safe (see Settings).
    "retry_non_idempotent": True,
}
#: The default number of workers is this many times the stock client's pool, within the bounds.
_THREADS_PER_POOLED_CONNECTION = 3
_THREADS_BOUNDS = (16, 64)
_NAMESPACE = "default"
_OPERATIONS = ("list", "get", "update", "create")

#: progress(client, calls done, calls in all)
Progress = Callable[[str, int, int], None]


def stock_pool_size() -> int:
    """Connections per host the stock client keeps: ``kubernetes`` sizes it ``cpu_count() * 5``."""
    return int(kubernetes.client.Configuration().connection_pool_maxsize)


def default_threads() -> int:
    """Three workers per connection the stock client keeps (16 to 64).

    A resync burst then has more calls in flight than the stock pool holds, as in a controller
    with many workers or a tool with many threads on a small machine: the case where the stock
    client opens and throws away connections.
    """
    low, high = _THREADS_BOUNDS
    return min(high, max(low, _THREADS_PER_POOLED_CONNECTION * stock_pool_size()))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """What ``resilient-kube demo`` was asked to run.

    Args:
        seed: seeds the fault schedule; the same seed serves the same draws to both clients.
        threads: worker threads per client, each reconciling its own ConfigMaps (by default
            three per connection the stock client's pool keeps, see ``default_threads``).
        calls: API calls the work needs per client, split across the threads; a call the
            controller requeues is made again, and counts once here.
        stock_timeout: the bound put on each stock call (``_request_timeout``) and on the stock
            client's dead-server probe; the stock client has no timeout of its own.
    """

    seed: int = 7
    threads: int = dataclasses.field(default_factory=default_threads)
    calls: int = 360
    stock_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("threads", "calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not 1.0 <= self.stock_timeout <= 600.0:
            raise ValueError(f"stock_timeout={self.stock_timeout!r} must be between 1 and 600")

    @property
    def bursts(self) -> int:
        """How many resync bursts the workload makes: every worker calls once per burst."""
        return math.ceil(self.calls / self.threads)

    @property
    def burst_interval(self) -> float:
        """Seconds from one burst to the next: TARGET_QPS calls per second on average."""
        return self.threads / TARGET_QPS

    @property
    def expected_seconds(self) -> float:
        """About how long the demo takes when nothing stalls: the bursts of both clients, or the
        stock client's dead-server probe, which runs meanwhile, if that is longer."""
        return max(len(CLIENTS) * self.bursts * self.burst_interval, self.stock_timeout)

    @property
    def overloads(self) -> bool:
        """Whether the run reaches the burst that meets the overload episode."""
        return self.bursts > OVERLOAD_TICK

    @property
    def overload(self) -> Overload:
        """The server during the overload episode: it serves a sixth of a burst's requests at a
        time and queues as many; a burst of ``threads`` calls sent at once overflows it."""
        seats = max(1, round(self.threads / 6))
        return Overload(seats, queue=seats, work=OVERLOAD_WORK)

    @property
    def probe_deadline(self) -> float:
        """resilient_kube's deadline in the dead-server probe: 3 s, less for a short bound."""
        return min(3.0, self.stock_timeout / 3)


@dataclasses.dataclass(slots=True, kw_only=True)
class ClientResult:
    """What one client did; the fields are the keys of its ``--json`` object."""

    client: str
    #: Calls the work needs, and calls made: a requeued call is made again.
    calls: int
    calls_made: int
    #: Calls that got a good answer in the end (requeues included), and their share.
    succeeded: int
    success_rate: float
    #: Calls whose first try got a good answer (no error reached the controller), and their share.
    first_try_succeeded: int
    first_try_success_rate: float
    #: Time to a good answer in ms, from a call's first try, requeues included; None when
    #: fewer than that share of calls got one.
    p50_ms: float | None
    p99_ms: float | None
    slowest_ms: float | None
    #: Requests the server saw, the client's retries and the controller's requeues included,
    #: and per call the work needs.
    wire_requests: int
    wire_requests_per_call: float
    #: Calls the controller requeued at least once, requeues in all, and calls given up.
    requeued: int
    requeues: int
    given_up: int
    #: TCP connections the server accepted.
    connections_opened: int
    dns_queries: int
    #: True when counted by the DNS server; False when estimated (2 per connection).
    dns_queries_measured: bool
    #: Seconds until the call to a dead server failed, or until the demo gave up waiting.
    dead_server_seconds: float
    dead_server_gave_up: bool
    dead_server_error: str
    #: Failed calls by exception (class name, plus the HTTP status for ApiException).
    errors: dict[str, int]
    #: Faults the server served, by kind.
    faults_served: dict[str, int]
    #: Responses the server sent, by HTTP status ("200", "429", "503", ...).
    responses_by_status: dict[str, int]
    elapsed_seconds: float


@dataclasses.dataclass(slots=True, kw_only=True)
class DemoResult:
    options: DemoOptions
    results: dict[str, ClientResult]
    elapsed_seconds: float

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (see docs/cli.md for the schema)."""
        return {
            "schema": JSON_SCHEMA,
            "seed": self.options.seed,
            "threads": self.options.threads,
            "stock_pool_size": stock_pool_size(),
            "calls": self.options.calls,
            "stock_timeout_seconds": self.options.stock_timeout,
            "probe_deadline_seconds": self.options.probe_deadline,
            "versions": versions(),
            "faults": [
                {"fault": repr(fault), "probability": probability, "times": times}
                for fault, probability, times in FAULTS
            ],
            # None when the run ends before the burst that meets it.
            "overload_episode": {
                "fault": repr(self.options.overload),
                "tick": OVERLOAD_TICK,
                "seconds": OVERLOAD_SECONDS,
            }
            if self.options.overloads
            else None,
            "resilient_settings": dict(RESILIENT_SETTINGS),
            "requeue": {
                "base_seconds": REQUEUE_BASE,
                "qps": REQUEUE_QPS,
                "burst": REQUEUE_BURST,
                "max_tries": MAX_TRIES,
            },
            "clients": {name: dataclasses.asdict(r) for name, r in self.results.items()},
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


def versions() -> dict[str, str]:
    from . import __version__

    return {
        "resilient_kube": __version__,
        "kubernetes": str(kubernetes.__version__),
        "urllib3": urllib3.__version__,  # type: ignore[attr-defined]
        "python": platform.python_version(),
    }


def percentile(samples: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest sample with ``share`` of all at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"ApiException({exc.status})"
    return type(exc).__name__


class _Workload:
    """The controller: ``threads`` workers, each listing, reading, updating and creating.

    A call that fails is requeued and made again after a backoff, as a controller built on
    client-go's workqueue does with a failed reconcile; both clients run under this controller.
    """

    def __init__(
        self,
        api: kubernetes.client.CoreV1Api,
        options: DemoOptions,
        call_kwargs: dict[str, Any],
        on_call: Callable[[], None],
        overload: Callable[[], None],
    ) -> None:
        self.api = api
        self.options = options
        self.call_kwargs = call_kwargs
        self.on_call = on_call
        #: Starts the overload episode, just before burst ``OVERLOAD_TICK``.
        self.overload = overload
        #: Seconds to a good answer from the first try, one per call that got one.
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.calls_made = 0
        self.requeued = 0
        self.requeues = 0
        self.given_up = 0
        self._requeue_bucket = TokenBucket(qps=REQUEUE_QPS, burst=REQUEUE_BURST)
        self._lock = threading.Lock()

    def setup(self) -> None:
        for worker in range(self.options.threads):
            self.api.create_namespaced_config_map(_NAMESPACE, self._body(worker, None, 0))

    def run(self) -> None:
        # The first tick a little ahead, so that every worker is waiting for it.
        start = time.monotonic() + 0.05
        threads = [
            threading.Thread(
                target=self._worker, args=(w, start), name=f"demo-worker-{w}", daemon=True
            )
            for w in range(self.options.threads)
        ]
        for thread in threads:
            thread.start()
        if self.options.overloads:
            # Set just ahead of the burst, so that the burst's first requests meet it.
            pause = start + OVERLOAD_TICK * self.options.burst_interval - 0.01 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self.overload()
        for thread in threads:
            # Defensive: every call is bounded (stock_timeout or the deadline) and so are its
            # tries, so this returns.
            thread.join()

    @staticmethod
    def _body(worker: int, index: int | None, value: int) -> dict[str, Any]:
        name = f"demo-{worker}" if index is None else f"demo-{worker}-{index}"
        meta = {"name": name, "labels": {"demo-worker": str(worker)}}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"value": str(value)}}  # fmt: skip

    def _worker(self, worker: int, start: float) -> None:
        options = self.options
        interval = options.burst_interval
        for step, index in enumerate(range(worker, options.calls, options.threads)):
            # A controller's resync: on every tick each worker reconciles its object, all at once;
            # TARGET_QPS on average, in bursts as wide as the worker pool. A call still being
            # requeued (or stalled) when the next tick comes delays it.
            pause = start + step * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._reconcile(worker, index)
            self.on_call()

    def _reconcile(self, worker: int, index: int) -> None:
        """Make call ``index`` until it succeeds, requeued with the controller's backoff."""
        began = time.monotonic()
        for tries in range(1, MAX_TRIES + 1):
            if self._call(worker, index):
                # Time to a good answer as the controller sees it: from the first try.
                with self._lock:
                    self.latencies.append(time.monotonic() - began)
                return
            with self._lock:
                if tries == 1:
                    self.requeued += 1
                if tries == MAX_TRIES:
                    self.given_up += 1
                    return
                self.requeues += 1
            # client-go's default controller rate limiter: the later of the item's own
            # exponential backoff and its turn in the bucket every requeue shares.
            waited = self._requeue_bucket.acquire()
            time.sleep(max(0.0, REQUEUE_BASE * 2 ** (tries - 1) - waited))

    def _call(self, worker: int, index: int) -> bool:
        """Make one try of call ``index``; False when it failed."""
        api, kw = self.api, self.call_kwargs
        operation = _OPERATIONS[index % len(_OPERATIONS)]
        try:
            if operation == "list":
                api.list_namespaced_config_map(
                    _NAMESPACE, label_selector=f"demo-worker={worker}", **kw
                )
            elif operation == "get":
                api.read_namespaced_config_map(f"demo-{worker}", _NAMESPACE, **kw)
            elif operation == "update":
                body = self._body(worker, None, index)
                api.replace_namespaced_config_map(f"demo-{worker}", _NAMESPACE, body, **kw)
            else:
                try:
                    api.create_namespaced_config_map(_NAMESPACE, self._body(worker, index, 0), **kw)
                except ApiException as exc:
                    # A create repeated after it landed meets 409: the object is there.
                    if exc.status != 409:
                        raise
        except Exception as exc:  # every failure is a data point, whatever its type
            with self._lock:
                self.calls_made += 1
                self.errors[_error_name(exc)] += 1
            return False
        with self._lock:
            self.calls_made += 1
        return True


class _DeadServerProbe:
    """Call ``/version`` on a server that accepts and never answers, from a daemon thread.

    A hung API server (or a dead backend behind a load balancer that still accepts) looks like
    this. ``finish`` waits until the call ends or ``give_up`` seconds have passed since ``start``,
    then stops the server, which releases a call still waiting.
    """

    def __init__(self, make_client: Callable[[str], Any], give_up: float) -> None:
        self.make_client = make_client
        self.give_up = give_up
        self.seconds = 0.0
        self.gave_up = False
        self.error = ""
        self._server = FakeApiServer()
        self._thread = threading.Thread(target=self._probe, name="demo-probe", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._server.start()
        self._server.inject(Stall(), times=None)
        self._started = time.monotonic()
        self._thread.start()

    def _probe(self) -> None:
        client = self.make_client(self._server.url)
        began = time.monotonic()
        try:
            kubernetes.client.VersionApi(client).get_code()
            self.error = "answered"  # Defensive: the server only stalls
        except Exception as exc:  # the outcome to report, whatever it is
            self.error = _error_name(exc)
        finally:
            self.seconds = time.monotonic() - began
            client.close()

    def finish(self) -> None:
        self._thread.join(max(0.0, self._started + self.give_up - time.monotonic()))
        self.gave_up = self._thread.is_alive()
        self._server.stop()
        self._thread.join(10)
        if self.gave_up:
            self.seconds, self.error = self.give_up, "still waiting"


def _make_client(
    name: str, url: str, resolver: FakeDnsServer, ca_cert: str | None = None, **tuning: Any
) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration(host=url)
    config.ssl_ca_cert = ca_cert
    if name == "resilient_kube":
        settings = {**RESILIENT_SETTINGS, **tuning}
        return ApiClient(config, dns_nameservers=[resolver.nameserver], **settings)
    return kubernetes.client.ApiClient(config)


def _run_client(
    name: str, options: DemoOptions, resolver: FakeDnsServer, progress: Progress
) -> ClientResult:
    """Run the workload through client ``name`` against a fresh, misbehaving server."""
    resilient = name == "resilient_kube"
    done = 0
    done_lock = threading.Lock()

    def on_call() -> None:
        nonlocal done
        with done_lock:
            done += 1
            count = done
        progress(name, count, options.calls)

    # TLS, as every API server speaks it: a new connection costs a handshake.
    with FakeApiServer(tls=True, tls_names=[DEMO_NAME]) as server:
        ca_cert = str(server.configuration().ssl_ca_cert)
        dns_before = resolver.queries
        if resilient:
            # By name, through the demo's DNS server: the cache's queries are counted there.
            client = _make_client(name, f"https://{DEMO_NAME}:{server.port}", resolver, ca_cert)
            call_kwargs: dict[str, Any] = {}
        else:
            # The system resolver cannot see the demo's DNS server: the stock client gets the
            # address, and its DNS cost is estimated from its connections.
            client = _make_client(name, server.url, resolver, ca_cert)
            # Stock as users run it has no timeout at all; the demo must end, so it is bounded.
            call_kwargs = {"_request_timeout": options.stock_timeout}
        try:

            def overload() -> None:
                server.inject(options.overload, times=None, seconds=OVERLOAD_SECONDS)

            workload = _Workload(
                kubernetes.client.CoreV1Api(client), options, call_kwargs, on_call, overload
            )
            workload.setup()
            server.reset_stats()
            for index, (fault, probability, times) in enumerate(FAULTS):
                server.inject_random(
                    fault, probability, seed=f"{options.seed}:{index}", times=times
                )
            began = time.monotonic()
            workload.run()
            elapsed = time.monotonic() - began
            stats = server.stats()
        finally:
            client.close()
        # Setup's first connection (and first lookups) are left out of the connection count,
        # which starts at reset_stats(), but DNS counts from the client's start: a cache's
        # first lookups are part of its cost.
        dns_queries = resolver.queries - dns_before
    latencies, calls = workload.latencies, options.calls
    succeeded = len(latencies)
    # A call given up never got a good answer: it counts as infinitely slow.
    samples = latencies + [math.inf] * (calls - succeeded)
    p50, p99, slowest = (percentile(samples, share) for share in (0.50, 0.99, 1.0))
    connections = stats.connections
    return ClientResult(
        client=name,
        calls=calls,
        calls_made=workload.calls_made,
        succeeded=succeeded,
        success_rate=succeeded / calls,
        first_try_succeeded=calls - workload.requeued,
        first_try_success_rate=(calls - workload.requeued) / calls,
        p50_ms=None if math.isinf(p50) else round(p50 * 1000, 3),
        p99_ms=None if math.isinf(p99) else round(p99 * 1000, 3),
        slowest_ms=None if math.isinf(slowest) else round(slowest * 1000, 3),
        wire_requests=stats.requests,
        wire_requests_per_call=round(stats.requests / calls, 4),
        requeued=workload.requeued,
        requeues=workload.requeues,
        given_up=workload.given_up,
        connections_opened=connections,
        dns_queries=dns_queries if resilient else 2 * connections,
        dns_queries_measured=resilient,
        dead_server_seconds=0.0,
        dead_server_gave_up=False,
        dead_server_error="",
        errors=dict(workload.errors),
        faults_served=dict(stats.faults_by_kind),
        responses_by_status={str(code): n for code, n in sorted(stats.responses_by_status.items())},
        elapsed_seconds=round(elapsed, 3),
    )


def run_demo(options: DemoOptions, progress: Progress | None = None) -> DemoResult:
    """Run the workload through both clients, one after the other, and return the numbers.

    The dead-server probes run in the background meanwhile: they only wait on sockets.
    """
    began = time.monotonic()
    report: Progress = progress or (lambda name, done, total: None)
    results: dict[str, ClientResult] = {}
    # urllib3 logs every retry and discarded connection of the stock client as a warning; the
    # numbers tell that story, so keep the log quiet for the length of the demo.
    quiet = [logging.getLogger(name) for name in ("urllib3", "resilient_kube")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        with FakeDnsServer({DEMO_NAME: ["127.0.0.1"]}, ttl=DEMO_TTL) as resolver:
            probes: dict[str, _DeadServerProbe] = {}
            for name in CLIENTS:
                if name == "resilient_kube":
                    # Its probe must end at its deadline; the margin only catches a bug.
                    give_up = options.probe_deadline + 5.0
                    tuning: dict[str, Any] = {"deadline": options.probe_deadline}
                else:
                    give_up, tuning = options.stock_timeout, {}
                probes[name] = _DeadServerProbe(
                    functools.partial(_make_client, name, resolver=resolver, **tuning), give_up
                )
            try:
                for probe in probes.values():
                    probe.start()
                for name in CLIENTS:
                    results[name] = _run_client(name, options, resolver, report)
            finally:
                for probe in probes.values():
                    probe.finish()
            for name, result in results.items():
                probe = probes[name]
                result.dead_server_seconds = round(probe.seconds, 3)
                result.dead_server_gave_up = probe.gave_up
                result.dead_server_error = probe.error
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return DemoResult(options=options, results=results, elapsed_seconds=time.monotonic() - began)


def _ms(value: float | None, failed: float) -> str:
    if value is None:
        return f"never ({failed:.1%} of calls given up)"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _better(stock: float, resilient: float, *, lower: bool, slack: float = 0.0) -> str:
    """Which client did better on a row; ``≈`` within ``slack`` (noise) of each other."""
    if abs(stock - resilient) <= slack:
        return "≈"
    return "resilient_kube" if (resilient < stock) == lower else "stock"


def comparison_rows(result: DemoResult) -> list[tuple[str, str, str, str]]:
    """(metric, stock, resilient_kube, better) for the table."""
    stock, rk = result.results["stock"], result.results["resilient_kube"]
    inf = math.inf
    rows: list[tuple[str, str, str, str]] = []

    def add(metric: str, s: str, r: str, better: str) -> None:
        rows.append((metric, s, r, better))

    def succeeded(r: ClientResult) -> str:
        text = f"{r.first_try_success_rate:.1%} ({r.first_try_succeeded}/{r.calls})"
        return text + (f", {r.given_up} given up" if r.given_up else "")

    add(
        "calls that succeeded first time³",
        succeeded(stock),
        succeeded(rk),
        _better(stock.first_try_success_rate, rk.first_try_success_rate, lower=False),
    )
    for label, s_ms, r_ms in (
        ("p50 time to a good answer³", stock.p50_ms, rk.p50_ms),
        ("p99 time to a good answer³", stock.p99_ms, rk.p99_ms),
        ("slowest call³", stock.slowest_ms, rk.slowest_ms),
    ):
        s_value = inf if s_ms is None else s_ms
        r_value = inf if r_ms is None else r_ms
        # Under a millisecond apart is scheduling noise on a shared machine, not a difference.
        slack = 0.0 if inf in (s_value, r_value) else max(1.0, 0.25 * min(s_value, r_value))
        add(
            label,
            _ms(s_ms, 1 - stock.success_rate),
            _ms(r_ms, 1 - rk.success_rate),
            _better(s_value, r_value, lower=True, slack=slack),
        )
    add(
        "requests on the wire per call⁴",
        f"{stock.wire_requests_per_call:.3f}",
        f"{rk.wire_requests_per_call:.3f}",
        _better(stock.wire_requests_per_call, rk.wire_requests_per_call, lower=True),
    )
    add(
        "connections opened",
        str(stock.connections_opened),
        str(rk.connections_opened),
        _better(stock.connections_opened, rk.connections_opened, lower=True),
    )
    add(
        "DNS queries",
        f"{stock.dns_queries} (est.²)"
        if not stock.dns_queries_measured
        else str(stock.dns_queries),
        str(rk.dns_queries),
        _better(stock.dns_queries, rk.dns_queries, lower=True),
    )

    def dead(r: ClientResult) -> str:
        if r.dead_server_gave_up:
            return f"> {r.dead_server_seconds:.0f} s (gave up)"
        return f"{r.dead_server_seconds:.1f} s ({r.dead_server_error})"

    add(
        "time to fail on a dead server",
        dead(stock),
        dead(rk),
        _better(stock.dead_server_seconds, rk.dead_server_seconds, lower=True, slack=0.5),
    )
    return rows


def footnotes(result: DemoResult) -> list[str]:
    options = result.options
    settings = ", ".join(f"{k}={v!r}" for k, v in RESILIENT_SETTINGS.items())
    return [
        f"{options.calls} calls (list, get, update, create ConfigMaps) from {options.threads}"
        f" threads in resync bursts (every worker at once), {TARGET_QPS:.0f} calls/s on average,"
        f" over TLS, seed {options.seed}; the stock client keeps {stock_pool_size()} connections"
        " (cpu_count() x 5). Both clients run under the same controller: a failed call is"
        " requeued and made again with client-go's default controller backoff"
        f" ({REQUEUE_BASE * 1000:g} ms doubling per item, {REQUEUE_QPS:g}/s overall, burst"
        f" {REQUEUE_BURST}; given up after {MAX_TRIES} tries). Each client gets a fresh fake API"
        " server with the same seeded faults: 503s, resets, truncated bodies, up to two stalled"
        " responses"
        + (
            f", and an overload episode: from burst {OVERLOAD_TICK + 1} on, for"
            f" {OVERLOAD_SECONDS:g} s, the server takes {options.overload.seats} requests at a"
            f" time, {OVERLOAD_WORK * 1000:g} ms each, queues {options.overload.queue} more and"
            " refuses the rest with 429 and a Retry-After that starts at 1 s and grows with the"
            " refusals, as kube-apiserver's API Priority and Fairness does."
            if options.overloads
            else "."
        ),
        f"¹ The stock client as users run it has no timeout; here each call has"
        f" _request_timeout={options.stock_timeout:g} so that the demo ends. resilient_kube runs"
        f" with its defaults plus {settings}; the dead-server probe uses"
        f" deadline={options.probe_deadline:g}.",
        "² The stock client resolves through the system resolver on every new connection,"
        " with no cache: estimated as 2 queries (A + AAAA) per connection opened, more with a"
        " resolv.conf search list. resilient_kube's queries are counted by the demo's DNS"
        f" server ({DEMO_NAME}, TTL {DEMO_TTL} s).",
        "³ A call that failed was requeued by the controller and made again until it succeeded"
        f" (or was given up after {MAX_TRIES} tries): first time means no error reached the"
        " controller. Times run from a call's first try to its good answer, requeues included;"
        " a call given up never got one and counts as infinitely slow.",
        f"⁴ Requests the server saw, per call the work needs ({options.calls}): a client's"
        " retry adds one, and so does each time the controller makes a requeued call again.",
    ]
