"""``ApiClient``, the drop-in subclass, and ``ClientFactory``, which hands out ready API objects."""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import kubernetes.client
import kubernetes.config
import kubernetes.dynamic
import kubernetes.watch
import urllib3

from . import _fork
from ._connection import PoolContext, install_pools
from ._credentials import CredentialSpec, install_credentials, kubeconfig_credentials
from ._dns import DnsCache
from ._driver import host_label
from ._endpoints import EndpointSet, HealthChecker
from ._events import EventSink, Fanout
from ._informer import SharedInformer
from ._limiter import TokenBucket
from ._policy import Policy
from ._retry import RetryBudget
from ._search import SearchingDnsCache, system_search
from ._settings import Settings, Tuning
from ._stats import Counters, Stats
from ._transport import Transport
from ._warnings import LogOnce, WarningHandler, WarningSink
from ._watch import Watch
from .errors import ConfigError

if TYPE_CHECKING:
    from ._leader import LeaderElector, Leadership

__all__ = ["ApiClient", "ClientFactory"]

_Api = TypeVar("_Api")


class ApiClient(kubernetes.client.ApiClient):  # type: ignore[misc]
    """``kubernetes.client.ApiClient`` with timeouts, a deadline, retries, a limiter and a DNS cache.

    Takes the same arguments as the official client plus keyword-only tuning arguments (the
    fields of ``Settings``). Every API class, ``kubernetes.watch.Watch`` and the dynamic client
    work unchanged on top of it.

    Args:
        configuration: a ``kubernetes.client.Configuration``; None uses the default one.
        header_name, header_value, cookie, pool_threads: as in the official client.
        settings: a ``Settings`` object to start from (keyword arguments override it).
        credential_spec: where the credentials come from when a source can refresh them (a
            token file, an exec plugin; ``ClientFactory`` finds it); None: the configuration's
            own ``refresh_api_key_hook``.
        clock, sleep: monotonic time and how to wait; tests inject fakes.
        **tuning: any ``Settings`` field, e.g. ``read_timeout=10, qps=None``.

    Raises:
        ConfigError: an unknown tuning keyword or a bad value; the message names both.

    Example:
        >>> from kubernetes.client import Configuration, CoreV1Api
        >>> api = CoreV1Api(ApiClient(Configuration(host="http://127.0.0.1:1"), read_timeout=10))
    """

    def __init__(
        self,
        configuration: kubernetes.client.Configuration | None = None,
        header_name: str | None = None,
        header_value: str | None = None,
        cookie: str | None = None,
        pool_threads: int = 1,
        *,
        settings: Settings | None = None,
        credential_spec: CredentialSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        **tuning: Unpack[Tuning],
    ) -> None:
        # Validate first: a typo must fail before any socket or thread exists.
        self.settings = Settings.from_kwargs(settings, **tuning)
        super().__init__(configuration, header_name, header_value, cookie, pool_threads)
        settings = self.settings
        self._counters = Counters(clock=clock)
        #: Where every layer reports what it did: the counters behind ``stats()``, and whatever
        #: ``subscribe`` adds.
        #: The server's ``Warning`` headers, logged once per distinct text unless turned off.
        self._warnings = WarningSink(LogOnce())
        self.events = Fanout(
            [self._counters, self._warnings] if settings.server_warnings else [self._counters]
        )
        self._limiter = (
            None
            if settings.qps is None
            else TokenBucket(
                settings.qps,
                settings.burst,
                clock=clock,
                sleep=sleep,
                events=self.events,
                host=host_label(self.configuration.host),
            )
        )
        self._dns = _dns_cache(settings, clock, self.events) if settings.dns_cache else None
        rest = self.rest_client
        # The official client's own retry layers must not stack on ours. urllib3's `retries` is
        # turned off in the pools (install_pools); kubernetes 37 also reads `retries` and
        # `client_go_retries` per request from the REST layer's configuration, so that layer
        # gets a copy without them (the user's configuration stays as it was).
        if hasattr(rest, "configuration"):
            rest_configuration = copy.copy(rest.configuration)
            rest_configuration.retries = None
            rest_configuration.client_go_retries = False
            rest.configuration = rest_configuration
        manager = rest.pool_manager
        timed = install_pools(
            manager,
            PoolContext(settings=settings, events=self.events, dns=self._dns, clock=clock),
            keep_socket_options=getattr(self.configuration, "socket_options", None) is not None,
        )
        budget = RetryBudget(
            settings.retry_budget_ratio,
            settings.retry_budget_min_per_second,
            settings.retry_budget_window,
            calls=functools.partial(self._counters.value, "requests"),
            clock=clock,
        )
        self._budget = budget
        credentials = install_credentials(
            self.configuration,
            credential_spec,
            self.events,
            manager,
            exec_timeout=settings.exec_timeout,
            clock=clock,
        )
        self._endpoints: EndpointSet | None = None
        self._health: HealthChecker | None = None
        if settings.endpoints is not None:
            self._endpoints = EndpointSet(settings.endpoints, eject_after=settings.eject_after)
        rest.pool_manager = transport = Transport(
            manager,
            Policy(settings, budget, clock=clock),
            self.events,
            self._counters.ticker("requests"),
            limiter=self._limiter,
            credentials=credentials,
            endpoints=self._endpoints,
            origin=self.configuration.host,
            timed=timed,
            sleep=sleep,
        )
        if self._endpoints is not None:
            # An ejected endpoint's watches are cut, so that they re-open on a healthy one.
            self._endpoints.on_eject = transport.cut_streams
            self._health = HealthChecker(
                self._endpoints,
                functools.partial(_ready, transport, self.configuration),
                interval=settings.health_interval,
                timeout=settings.health_timeout,
            )
            self._health.start()
        _fork.register(self, _after_fork)  # locks and the thread pool, in a forked child

    @classmethod
    def set_default(cls, default: ApiClient | None) -> None:
        """Make ``default`` the client of every API class built with no argument.

        The same as ``resilient_kube.install_default(default)``, on kubernetes 31 to 37; None puts
        back the stock default. (The official ``set_default`` of kubernetes 37, called on a
        subclass, stores the client where the API classes never look.)
        """
        from ._default import install_default, uninstall_default

        if default is None:
            uninstall_default()
        else:
            install_default(default)

    @classmethod
    def get_default(cls) -> kubernetes.client.ApiClient:
        """The client API classes built with no argument use, or a new client if none is set."""
        from ._default import get_default

        # kubernetes 37 keeps a default of its own, which kubernetes.client.ApiClient.set_default
        # may have set directly.
        current = get_default() or getattr(kubernetes.client.ApiClient, "_default", None)
        return cls() if current is None else current

    def update_params_for_auth(self, headers: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """The official client's, without an ``authorization`` header that has no value.

        An exec plugin may hand out a client certificate and no token: its source then has no
        header to give, where kubernetes would put None.
        """
        super().update_params_for_auth(headers, *args, **kwargs)
        if "authorization" in headers and headers["authorization"] is None:
            del headers["authorization"]

    def stats(self) -> Stats:
        """A snapshot of this client's counters: transport, retries, limiter, DNS, watches and
        credentials."""
        return Stats(
            transport=self._counters.transport_stats(),
            retry=self._counters.retry_stats(),
            limiter=None if self._limiter is None else self._limiter.stats(),
            dns=None if self._dns is None else self._dns.stats(),
            watch=self._counters.watch_stats(),
            endpoints=() if self._endpoints is None else self._endpoints.stats(),
            credentials=self._counters.credential_stats(),
        )

    def subscribe(self, sink: EventSink) -> None:
        """Send this client's events (attempts, retries, waits, watch restarts, ...) to ``sink``.

        ``sink`` overrides the ``EventSink`` methods it cares about; see ``_events``.
        """
        self.events.add(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop sending events to ``sink``."""
        self.events.remove(sink)

    def on_server_warning(self, handler: WarningHandler | None) -> None:
        """Hand each warning the API server sends (``Warning: 299 - "..."``) to ``handler``.

        Replaces the default, which logs each distinct text once on ``resilient_kube.warnings``
        (client-go's ``WarningHandler``); None drops warnings. ``handler`` gets a
        ``ServerWarning(code, agent, text, host)`` per warning, on the calling thread.
        """
        if handler is None:
            self.events.remove(self._warnings)
            return
        self._warnings.handler = handler
        self.events.add(self._warnings)

    def close(self) -> None:
        """Close the thread pool, every pooled socket and the DNS cache's background work."""
        if self._health is not None:
            self._health.close()
        super().close()
        # kubernetes <= 36 leaves the pool open on close().
        self.rest_client.pool_manager.clear()
        if self._dns is not None:
            self._dns.close()


def _dns_cache(settings: Settings, clock: Callable[[], float], events: EventSink) -> DnsCache:
    """The client's DNS cache; one that walks the search list when there is one."""
    kwargs: dict[str, Any] = {
        "nameservers": settings.dns_nameservers,
        "min_ttl": settings.dns_min_ttl,
        "max_ttl": settings.dns_max_ttl,
        "negative_ttl": settings.dns_negative_ttl,
        "stale_ttl": settings.dns_stale_ttl,
        "timeout": settings.dns_timeout,
        "clock": clock,
        "events": events,
    }
    search, ndots = system_search()
    if settings.dns_search is not None:
        search = settings.dns_search
    if settings.dns_ndots is not None:
        ndots = settings.dns_ndots
    if search:
        return SearchingDnsCache(search=search, ndots=ndots, **kwargs)
    return DnsCache(**kwargs)


def ready(api_client: ApiClient, *, timeout: float) -> bool:
    """Whether the first of ``api_client``'s endpoints answers its health check now."""
    assert api_client._endpoints is not None  # Defensive: only called with endpoints
    transport = api_client.rest_client.pool_manager
    return _ready(transport, api_client.configuration, api_client._endpoints.endpoints[0], timeout)


def _ready(transport: Transport, configuration: Any, endpoint: Any, timeout: float) -> bool:
    """One health check: ``GET /readyz`` on ``endpoint`` answers 200 within ``timeout``, with
    the credentials a call would carry now (the installed source's hook runs here)."""
    headers = {}
    authorization = configuration.auth_settings().get("BearerToken", {}).get("value")
    if isinstance(authorization, str) and authorization:
        headers["authorization"] = authorization
    pool, uri = transport.endpoint_route(endpoint, "/readyz")
    response = pool.urlopen(
        "GET",
        uri,
        headers=headers,
        retries=False,
        redirect=False,
        timeout=urllib3.Timeout(connect=timeout, read=timeout),
    )
    return bool(response.status == 200)


def _load_configuration(
    configuration: kubernetes.client.Configuration | None,
    kubeconfig: str | os.PathLike[str] | None,
    context: str | None,
    in_cluster: bool | None,
) -> tuple[kubernetes.client.Configuration, CredentialSpec | None]:
    """Load configuration the way the official client does, in the same order of preference,
    and say where its credentials come from when a source can refresh them."""
    if configuration is not None:
        if kubeconfig is not None or context is not None or in_cluster:
            raise ConfigError(
                "configuration= was given together with kubeconfig=, context= or in_cluster=True;"
                " pass one source of configuration"
            )
        return configuration, None
    if in_cluster and (kubeconfig is not None or context is not None):
        raise ConfigError("in_cluster=True cannot be combined with kubeconfig= or context=")
    loaded = kubernetes.client.Configuration()
    use_cluster = in_cluster
    if use_cluster is None:
        # Auto: inside a pod (the service host is set) unless a kubeconfig was asked for.
        use_cluster = (
            kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ
        )
    if use_cluster:
        kubernetes.config.load_incluster_config(client_configuration=loaded)
        # The loader re-reads the token once a minute; the kubelet rotates it when it likes.
        token_file = kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME
        return loaded, CredentialSpec(token_file=token_file)
    # kubernetes reads KUBECONFIG once, at import; read it now so a later change counts.
    # The value may list several files; kubernetes merges them.
    config_file = os.environ.get("KUBECONFIG") if kubeconfig is None else os.fspath(kubeconfig)
    spec = kubeconfig_credentials(config_file or None, context, loaded)
    return loaded, spec


class ClientFactory:
    """Owns one resilient ``ApiClient`` and hands out ready API objects that share it.

    Everything handed out shares one connection pool, one limiter and one DNS cache.

    Args:
        configuration: an explicit ``kubernetes.client.Configuration``.
        kubeconfig: a kubeconfig file (default: ``KUBECONFIG`` or ``~/.kube/config``).
        context: the kubeconfig context to use (default: its current context).
        in_cluster: True for the pod's service account, False to never use it, None to use it
            when running in a pod and no kubeconfig or context was given.
        **tuning: any ``Settings`` field.

    Example:
        >>> with ClientFactory(kubeconfig="~/.kube/config", qps=20) as kube:  # doctest: +SKIP
        ...     pods = kube.core_v1().list_namespaced_pod("default")
    """

    def __init__(
        self,
        configuration: kubernetes.client.Configuration | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        settings: Settings | None = None,
        **tuning: Unpack[Tuning],
    ) -> None:
        settings = Settings.from_kwargs(settings, **tuning)
        self.configuration, spec = _load_configuration(
            configuration, kubeconfig, context, in_cluster
        )
        self.api_client = ApiClient(self.configuration, settings=settings, credential_spec=spec)
        self._apis: dict[type[Any], Any] = {}
        self._dynamic: kubernetes.dynamic.DynamicClient | None = None
        self._lock = threading.Lock()
        _fork.register(self, _factory_after_fork)

    @property
    def settings(self) -> Settings:
        return self.api_client.settings

    def api(self, api_class: type[_Api]) -> _Api:
        """The one instance of ``api_class`` (e.g. ``kubernetes.client.CoreV1Api``) on this client."""
        with self._lock:
            api: _Api | None = self._apis.get(api_class)
            if api is None:
                # Every generated API class takes the ApiClient as its one argument.
                api = self._apis[api_class] = api_class(self.api_client)  # type: ignore[call-arg]
            return api

    def core_v1(self) -> kubernetes.client.CoreV1Api:
        return self.api(kubernetes.client.CoreV1Api)

    def apps_v1(self) -> kubernetes.client.AppsV1Api:
        return self.api(kubernetes.client.AppsV1Api)

    def batch_v1(self) -> kubernetes.client.BatchV1Api:
        return self.api(kubernetes.client.BatchV1Api)

    def custom_objects(self) -> kubernetes.client.CustomObjectsApi:
        return self.api(kubernetes.client.CustomObjectsApi)

    def dynamic(self) -> kubernetes.dynamic.DynamicClient:
        """The dynamic client (built on first use: it reads the server's discovery documents)."""
        with self._lock:
            if self._dynamic is None:
                self._dynamic = kubernetes.dynamic.DynamicClient(self.api_client)
            return self._dynamic

    def watch(self, return_type: Any = None) -> Watch:
        """A new ``resilient_kube.Watch`` (one per stream; pass it this factory's API methods).

        It resumes after a break from the last resourceVersion it delivered (docs/watches.md).
        """
        return Watch(return_type)

    def informer(self, list_func: Callable[..., Any] | str, **kwargs: Any) -> SharedInformer:
        """A ``resilient_kube.SharedInformer`` over ``list_func`` on this factory's client.

        ``list_func`` is a list method of this factory's API objects, or its name on
        ``core_v1()`` (``"list_namespaced_pod"``); ``kwargs`` are the informer's (namespace,
        label_selector, resync_period, ...). Start it with ``start()``.
        """
        func = getattr(self.core_v1(), list_func) if isinstance(list_func, str) else list_func
        return SharedInformer(func, **kwargs)

    def stats(self) -> Stats:
        """A snapshot of the shared client's counters."""
        return self.api_client.stats()

    def leader_elector(
        self,
        lease_name: str,
        *,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[Leadership], object],
        on_stopped_leading: Callable[[], object],
        release_on_stop: bool = True,
    ) -> LeaderElector:
        """A leader elector on the ``coordination.k8s.io/v1`` Lease ``namespace/lease_name``.

        Every call it makes is bounded by what is left before the renew deadline, a failed call
        (a transport error included) is a failed renewal, and losing the lease always calls
        ``on_stopped_leading`` before another candidate can start (docs/leader-election.md).

        Args:
            lease_name, namespace: the Lease (created if missing).
            identity: this candidate's unique name (e.g. the pod name).
            lease_duration: seconds candidates wait after the Lease last changed before taking
                it over.
            renew_deadline: seconds a leader keeps leading without a successful renewal; less
                than ``lease_duration``.
            retry_period: seconds between attempts (jittered down by up to 25 %); less than
                ``renew_deadline``.
            on_started_leading: called with a ``Leadership`` on a new thread when a term starts;
                ``leadership.lost`` is set when it ends.
            on_stopped_leading: called when a term ends, always.
            release_on_stop: on ``stop()``, hand the Lease back so the next leader starts at once.

        Raises:
            ConfigError: a bad argument; the message names it and its value.

        Example:
            >>> elector = kube.leader_elector(  # doctest: +SKIP
            ...     "my-controller", namespace="default", identity=os.environ["POD_NAME"],
            ...     on_started_leading=work, on_stopped_leading=stop_work)
            >>> elector.run()  # doctest: +SKIP
        """
        from ._leader import ElectionTiming, LeaderElector

        return LeaderElector(
            self.api_client,
            lease_name,
            namespace=namespace,
            identity=identity,
            timing=ElectionTiming(
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            ),
            on_started_leading=on_started_leading,
            on_stopped_leading=on_stopped_leading,
            release_on_stop=release_on_stop,
        )

    def close(self) -> None:
        """Release every socket and background thread."""
        self.api_client.close()

    def __enter__(self) -> ClientFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _after_fork(api_client: ApiClient) -> None:
    """In a forked child: fresh locks (counters, events, limiter, retry budget), no thread pool.

    A lock held by a parent thread at the fork stays held in the child. The workers of the
    official client's ``async_req`` thread pool did not survive the fork: a request handed to
    them would never run, so the child builds its own pool on first use.
    """
    api_client._counters._after_fork()
    api_client.events._after_fork()
    if api_client._limiter is not None:
        api_client._limiter._after_fork()
    api_client._budget._after_fork()
    if api_client._health is not None:  # its thread did not survive the fork
        api_client._health.after_fork()
    if getattr(api_client, "_pool", None) is not None:
        # Kept, never used: its finalizer would write to a pipe the parent's pool still reads.
        api_client._rk_parent_pool = api_client._pool
        api_client._pool = None
    if hasattr(api_client, "_pool_lock"):  # kubernetes 37 guards the pool with it
        api_client._pool_lock = threading.Lock()


def _factory_after_fork(factory: ClientFactory) -> None:
    """In a forked child: a new lock (``dynamic()`` holds it while it reads discovery)."""
    factory._lock = threading.Lock()
