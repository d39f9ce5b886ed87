"""``ApiClient``, the drop-in subclass, and ``ClientFactory``, which hands out ready API objects."""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import kubernetes.dynamic
import kubernetes.watch

from ._connection import PoolContext, install_pools
from ._dns import DnsCache
from ._events import EventSink, Fanout
from ._informer import SharedInformer
from ._limiter import TokenBucket
from ._retry import RetryBudget
from ._settings import Settings
from ._stats import Counters, Stats
from ._transport import Transport
from ._watch import Watch
from .errors import ConfigError

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
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        **tuning: Any,
    ) -> None:
        # Validate first: a typo must fail before any socket or thread exists.
        self.settings = Settings.from_kwargs(settings, **tuning)
        super().__init__(configuration, header_name, header_value, cookie, pool_threads)
        settings = self.settings
        self._counters = Counters(clock=clock)
        #: Where every layer reports what it did: the counters behind ``stats()``, and whatever
        #: ``subscribe`` adds.
        self.events = Fanout([self._counters])
        self._limiter = (
            None
            if settings.qps is None
            else TokenBucket(settings.qps, settings.burst, clock=clock, sleep=sleep)
        )
        self._dns = (
            DnsCache(
                nameservers=settings.dns_nameservers,
                min_ttl=settings.dns_min_ttl,
                max_ttl=settings.dns_max_ttl,
                negative_ttl=settings.dns_negative_ttl,
                stale_ttl=settings.dns_stale_ttl,
                timeout=settings.dns_timeout,
                clock=clock,
            )
            if settings.dns_cache
            else None
        )
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
        watching = install_pools(
            manager,
            PoolContext(settings=settings, counters=self._counters, dns=self._dns, clock=clock),
            keep_socket_options=getattr(self.configuration, "socket_options", None) is not None,
        )
        rest.pool_manager = Transport(
            manager,
            settings,
            self._counters,
            limiter=self._limiter,
            watching=watching,
            budget=RetryBudget(
                settings.retry_budget_ratio,
                settings.retry_budget_min_per_second,
                settings.retry_budget_window,
                calls=functools.partial(self._counters.value, "requests"),
                clock=clock,
            ),
            clock=clock,
            sleep=sleep,
        )

    def stats(self) -> Stats:
        """A snapshot of this client's counters: transport, retries, limiter and DNS."""
        return Stats(
            transport=self._counters.transport_stats(),
            retry=self._counters.retry_stats(),
            limiter=None if self._limiter is None else self._limiter.stats(),
            dns=None if self._dns is None else self._dns.stats(),
            watch=self._counters.watch_stats(),
        )

    def subscribe(self, sink: EventSink) -> None:
        """Send this client's events (attempts, retries, waits, watch restarts, ...) to ``sink``.

        ``sink`` overrides the ``EventSink`` methods it cares about; see ``_events``.
        """
        self.events.add(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop sending events to ``sink``."""
        self.events.remove(sink)

    def close(self) -> None:
        """Close the thread pool, every pooled socket and the DNS cache's background work."""
        super().close()
        # kubernetes <= 36 leaves the pool open on close().
        self.rest_client.pool_manager.clear()
        if self._dns is not None:
            self._dns.close()


def _load_configuration(
    configuration: kubernetes.client.Configuration | None,
    kubeconfig: str | os.PathLike[str] | None,
    context: str | None,
    in_cluster: bool | None,
) -> kubernetes.client.Configuration:
    """Load configuration the way the official client does, in the same order of preference."""
    if configuration is not None:
        if kubeconfig is not None or context is not None or in_cluster:
            raise ConfigError(
                "configuration= was given together with kubeconfig=, context= or in_cluster=True;"
                " pass one source of configuration"
            )
        return configuration
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
    else:
        # kubernetes reads KUBECONFIG once, at import; read it now so a later change counts.
        # The value may list several files; kubernetes merges them.
        config_file = os.environ.get("KUBECONFIG") if kubeconfig is None else os.fspath(kubeconfig)
        kubernetes.config.load_kube_config(
            config_file=config_file or None,
            context=context,
            client_configuration=loaded,
        )
    return loaded


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
        **tuning: Any,
    ) -> None:
        settings = Settings.from_kwargs(settings, **tuning)
        self.configuration = _load_configuration(configuration, kubeconfig, context, in_cluster)
        self.api_client = ApiClient(self.configuration, settings=settings)
        self._apis: dict[type[Any], Any] = {}
        self._dynamic: kubernetes.dynamic.DynamicClient | None = None
        self._lock = threading.Lock()

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
