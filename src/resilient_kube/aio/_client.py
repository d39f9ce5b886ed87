"""``resilient_kube.aio.ApiClient``, the drop-in for ``kubernetes.aio``, and its ``ClientFactory``."""

from __future__ import annotations

import copy
import functools
import os
import time
from collections.abc import Callable
from types import SimpleNamespace, TracebackType
from typing import Any, TypeVar, Unpack

import kubernetes.aio.client
import kubernetes.aio.config
import kubernetes.aio.dynamic

from .._driver import host_label
from .._events import EventSink
from .._settings import Settings, Tuning
from .._stats import Stats
from ..errors import ConfigError
from ._core import Parts, env_proxy
from ._informer import SharedInformer
from ._pool import make_connector
from ._transport import REQUEST_TIMEOUT
from ._watch import Watch

__all__ = ["ApiClient", "ClientFactory"]

_Api = TypeVar("_Api")

#: Position of ``_request_timeout`` in ``kubernetes.aio``'s ``ApiClient.call_api`` (after self).
_REQUEST_TIMEOUT_ARG = 5


class ApiClient(kubernetes.aio.client.ApiClient):  # type: ignore[misc]
    """``kubernetes.aio.client.ApiClient`` with timeouts, a deadline, retries, a limiter and a DNS cache.

    Takes the same arguments as the official asyncio client plus keyword-only tuning arguments
    (the fields of ``Settings``, as for the sync ``resilient_kube.ApiClient``). Every API class of
    ``kubernetes.aio.client`` and ``kubernetes.aio.watch.Watch`` work unchanged on top of it.
    It may be built outside a running loop; its aiohttp session is made on the first call.

    Args:
        configuration: a ``kubernetes.aio.client.Configuration``; None uses the default one.
        header_name, header_value, cookie: as in the official client.
        settings: a ``Settings`` object to start from (keyword arguments override it).
        clock: monotonic time; tests inject a fake.
        **tuning: any ``Settings`` field, e.g. ``read_timeout=10, qps=None``.

    Raises:
        ConfigError: an unknown tuning keyword or a bad value; the message names both.

    Example:
        >>> from kubernetes.aio.client import Configuration, CoreV1Api
        >>> api = CoreV1Api(ApiClient(Configuration(host="http://127.0.0.1:1"), read_timeout=10))
    """

    _rk: Parts

    def __init__(
        self,
        configuration: kubernetes.aio.client.Configuration | None = None,
        header_name: str | None = None,
        header_value: str | None = None,
        cookie: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
        **tuning: Unpack[Tuning],
    ) -> None:
        # Validate first: a typo must fail before anything is built.
        self.settings = Settings.from_kwargs(settings, **tuning)
        super().__init__(configuration, header_name, header_value, cookie)
        settings = self.settings
        self._rk = parts = Parts(settings, host_label(self.configuration.host), clock)
        #: Where every layer reports what it did (``subscribe`` adds to it).
        self.events = parts.events
        rest = self.rest_client
        # The official client's own retry layers must not stack on ours: aiohttp-retry, built
        # from `retries` when the REST layer was made, and the client-go style 429 retries read
        # per request from `client_go_retries`. The REST layer gets a copy of the configuration
        # without them (the user's configuration stays as it was) and no retry options.
        rest_configuration = copy.copy(rest.configuration)
        rest_configuration.retries = None
        rest_configuration.client_go_retries = False
        # The proxy the environment names is looked up once (env_proxy says why); a trust_env
        # the caller set in client_session_kwargs is kept as it is.
        session_kwargs = dict(getattr(rest.configuration, "client_session_kwargs", None) or {})
        proxy = None
        if "trust_env" not in session_kwargs:
            session_kwargs["trust_env"] = False
            if rest.proxy is None:
                proxy = env_proxy(rest_configuration.host)
        rest_configuration.client_session_kwargs = session_kwargs
        rest.configuration = rest_configuration
        rest._effective_retry_options = None
        # The stock session (trust_env, buffer size, trace configs, client_session_kwargs) with
        # resilient_kube's connector; an explicit client_session_kwargs["connector"] still wins.
        rest._create_connector = functools.partial(
            make_connector,
            settings,
            parts.dns,
            ssl=rest.ssl_context,
            limit_per_host=getattr(rest_configuration, "tcp_connector_limit_per_host", None),
            events=parts.events,
        )
        self.transport = parts.transport(rest._create_pool_manager, proxy)
        rest.pool_manager = self.transport

    async def call_api(self, *args: Any, **kwargs: Any) -> Any:
        """The official ``call_api``, with the caller's ``_request_timeout`` kept for the driver.

        The stock REST layer passes ``_request_timeout or 300`` on, which loses "none given".
        """
        given = (
            kwargs.get("_request_timeout")
            if len(args) <= _REQUEST_TIMEOUT_ARG
            else args[_REQUEST_TIMEOUT_ARG]
        )
        token = REQUEST_TIMEOUT.set(given)
        try:
            return await super().call_api(*args, **kwargs)
        finally:
            REQUEST_TIMEOUT.reset(token)

    def stats(self) -> Stats:
        """A snapshot of this client's counters: transport, retries, limiter and DNS."""
        return self._rk.stats()

    def subscribe(self, sink: EventSink) -> None:
        """Send this client's events (attempts, retries, waits, ...) to ``sink``."""
        self._rk.subscribe(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        """Stop sending events to ``sink``."""
        self._rk.unsubscribe(sink)

    async def close(self) -> None:
        """Close the session, every pooled connection and the DNS cache's background work."""
        try:
            await super().close()
        finally:  # cancelled while the connections were ending: the DNS cache stops all the same
            self._rk.close()


async def _load_configuration(
    configuration: kubernetes.aio.client.Configuration | None,
    kubeconfig: str | os.PathLike[str] | None,
    context: str | None,
    in_cluster: bool | None,
) -> kubernetes.aio.client.Configuration:
    """Load configuration the way ``kubernetes.aio`` does, in the sync factory's order."""
    if configuration is not None:
        return configuration
    loaded = kubernetes.aio.client.Configuration()
    use_cluster = in_cluster
    if use_cluster is None:
        # Auto: inside a pod (the service host is set) unless a kubeconfig was asked for.
        use_cluster = (
            kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ
        )
    if use_cluster:
        kubernetes.aio.config.load_incluster_config(client_configuration=loaded)
    else:
        # Read KUBECONFIG now, so a change after import counts; it may list several files.
        config_file = os.environ.get("KUBECONFIG") if kubeconfig is None else os.fspath(kubeconfig)
        await kubernetes.aio.config.load_kube_config(
            config_file=config_file or None, context=context, client_configuration=loaded
        )
    return loaded


class ClientFactory:
    """Owns one resilient asyncio ``ApiClient`` and hands out ready API objects that share it.

    An async context manager: the configuration is loaded (kubeconfig files are read with
    ``kubernetes.aio.config``, whose loader is async) on entry, and everything is closed on exit.
    Arguments are checked at once, before any file is read.

    Args:
        configuration: an explicit ``kubernetes.aio.client.Configuration``.
        kubeconfig: a kubeconfig file (default: ``KUBECONFIG`` or ``~/.kube/config``).
        context: the kubeconfig context to use (default: its current context).
        in_cluster: True for the pod's service account, False to never use it, None to use it
            when running in a pod and no kubeconfig or context was given.
        **tuning: any ``Settings`` field.

    Example:
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with ClientFactory(kubeconfig="~/.kube/config", qps=20) as kube:
        ...         pods = await kube.core_v1().list_namespaced_pod("default")
    """

    def __init__(
        self,
        configuration: kubernetes.aio.client.Configuration | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        settings: Settings | None = None,
        **tuning: Unpack[Tuning],
    ) -> None:
        self.settings = Settings.from_kwargs(settings, **tuning)
        if configuration is not None and (
            kubeconfig is not None or context is not None or in_cluster
        ):
            raise ConfigError(
                "configuration= was given together with kubeconfig=, context= or in_cluster=True;"
                " pass one source of configuration"
            )
        if in_cluster and (kubeconfig is not None or context is not None):
            raise ConfigError("in_cluster=True cannot be combined with kubeconfig= or context=")
        self._source = SimpleNamespace(
            configuration=configuration,
            kubeconfig=kubeconfig,
            context=context,
            in_cluster=in_cluster,
        )
        self._client: ApiClient | None = None
        self._apis: dict[type[Any], Any] = {}
        self._dynamic: kubernetes.aio.dynamic.DynamicClient | None = None

    @property
    def api_client(self) -> ApiClient:
        """The shared client (after ``async with`` or ``await factory.open()``)."""
        if self._client is None:
            raise RuntimeError("ClientFactory is not open: use 'async with ClientFactory(...)'")
        return self._client

    @property
    def configuration(self) -> kubernetes.aio.client.Configuration:
        return self.api_client.configuration

    async def open(self) -> ClientFactory:
        """Load the configuration and build the client (``async with`` does this)."""
        if self._client is None:
            source = self._source
            configuration = await _load_configuration(
                source.configuration, source.kubeconfig, source.context, source.in_cluster
            )
            self._client = ApiClient(configuration, settings=self.settings)
        return self

    def api(self, api_class: type[_Api]) -> _Api:
        """The one instance of ``api_class`` (e.g. ``kubernetes.aio.client.CoreV1Api``)."""
        api: _Api | None = self._apis.get(api_class)
        if api is None:
            # Every generated API class takes the ApiClient as its one argument. No lock: the
            # event loop runs one task at a time, and this never awaits.
            api = self._apis[api_class] = api_class(self.api_client)  # type: ignore[call-arg]
        return api

    def core_v1(self) -> kubernetes.aio.client.CoreV1Api:
        return self.api(kubernetes.aio.client.CoreV1Api)

    def apps_v1(self) -> kubernetes.aio.client.AppsV1Api:
        return self.api(kubernetes.aio.client.AppsV1Api)

    def batch_v1(self) -> kubernetes.aio.client.BatchV1Api:
        return self.api(kubernetes.aio.client.BatchV1Api)

    def custom_objects(self) -> kubernetes.aio.client.CustomObjectsApi:
        return self.api(kubernetes.aio.client.CustomObjectsApi)

    async def dynamic(self) -> kubernetes.aio.dynamic.DynamicClient:
        """The dynamic client (built on first use: it reads the server's discovery documents)."""
        if self._dynamic is None:
            self._dynamic = await kubernetes.aio.dynamic.DynamicClient(self.api_client)
        return self._dynamic

    def watch(self, return_type: Any = None) -> Watch:
        """A new ``resilient_kube.aio.Watch`` (one per stream; pass it this factory's methods).

        It resumes after a break from the last resourceVersion it delivered (docs/asyncio.md).
        """
        return Watch(return_type)

    def informer(self, list_func: Callable[..., Any] | str, **kwargs: Any) -> SharedInformer:
        """A ``resilient_kube.aio.SharedInformer`` over ``list_func`` on this factory's client.

        ``list_func`` is a list method of this factory's API objects, or its name on
        ``core_v1()`` (``"list_namespaced_pod"``); ``kwargs`` are the informer's (namespace,
        label_selector, resync_period, ...). Start it with ``start()`` or ``async with``.
        """
        func = getattr(self.core_v1(), list_func) if isinstance(list_func, str) else list_func
        return SharedInformer(func, **kwargs)

    def stats(self) -> Stats:
        """A snapshot of the shared client's counters."""
        return self.api_client.stats()

    async def close(self) -> None:
        """Release every socket and background thread."""
        client, self._client = self._client, None
        self._apis.clear()
        self._dynamic = None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> ClientFactory:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
