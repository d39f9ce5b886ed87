"""The default client: make resilient_kube the client behind ``CoreV1Api()`` built with no argument.

Code that builds an API class with no argument, and libraries that do it for the user (the stock
``kubernetes.leaderelection`` locks build ``CoordinationV1Api()``), get the *default* client. How
the generated classes find it differs across the supported releases:

* kubernetes 37: ``__init__`` asks ``kubernetes.client.ApiClient._get_default_or_new()``, which
  reads ``_default`` on the *base* class. ``set_default`` called on a subclass stores it on the
  subclass, where that lookup never looks; installing stores it on the base class.
* kubernetes 31-36: ``__init__`` calls ``ApiClient()``, a new stock client every time; there is no
  default at all. Installing rebinds the name ``ApiClient`` in each generated API module to a
  function that returns the installed client (or a new stock one when none is installed). Nothing
  else in those modules uses the name.

Uninstalling puts back exactly what was there before.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import kubernetes.client
import kubernetes.client.api_client

from .errors import ConfigError

if TYPE_CHECKING:
    from ._client import ApiClient, ClientFactory

__all__ = ["DefaultClient", "get_default", "install_default", "uninstall_default"]

_STOCK = kubernetes.client.api_client.ApiClient
#: kubernetes 37 has a registered default; 31-36 build a new client in every API class.
_HAS_DEFAULT = hasattr(_STOCK, "_get_default_or_new")
_API_MODULES = "kubernetes.client.api."
_MISSING = object()


class _State:
    """What is installed now, and what was there before it (one per process, under ``_lock``)."""

    def __init__(self) -> None:
        #: The client installed now, or None.
        self.current: ApiClient | None = None
        #: What the stock base class held as ``_default`` before the first install (kubernetes 37).
        self.saved_default: Any = _MISSING
        #: API module -> the ``ApiClient`` name it had before the first install (kubernetes 31-36).
        self.saved_names: dict[ModuleType, Any] = {}


_lock = threading.RLock()
_state = _State()


class DefaultClient:
    """What ``install_default`` returns: the installed client, and a context manager.

    Leaving the ``with`` block puts back the default that was there before (another installed
    client, or the stock behaviour).
    """

    __slots__ = ("_previous", "api_client")

    def __init__(self, api_client: ApiClient, previous: ApiClient | None) -> None:
        self.api_client = api_client
        self._previous = previous

    def __enter__(self) -> ApiClient:
        return self.api_client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with _lock:
            if self._previous is None:
                uninstall_default()
            else:
                _install(self._previous)

    def __repr__(self) -> str:
        return f"<DefaultClient {self.api_client!r}>"


def install_default(api_client_or_factory: ApiClient | ClientFactory) -> DefaultClient:
    """Make ``api_client_or_factory`` the client of every API class built with no argument.

    Afterwards ``kubernetes.client.CoreV1Api()`` (and every other generated API class) runs on
    that client, on kubernetes 31 to 37. The client is shared, not owned: closing an API object
    does not close it, and uninstalling does not either.

    Args:
        api_client_or_factory: a ``resilient_kube.ApiClient``, or a ``ClientFactory`` (its shared
            client is installed).

    Returns:
        A ``DefaultClient``; used as a context manager, leaving it restores the previous default.

    Raises:
        ConfigError: the argument is neither a resilient_kube ``ApiClient`` nor a ``ClientFactory``.

    Example:
        >>> with install_default(ClientFactory(kubeconfig="kubeconfig")):  # doctest: +SKIP
        ...     kubernetes.client.CoreV1Api().list_namespace()
    """
    from ._client import ApiClient, ClientFactory

    if isinstance(api_client_or_factory, ClientFactory):
        api_client = api_client_or_factory.api_client
    elif isinstance(api_client_or_factory, ApiClient):
        api_client = api_client_or_factory
    else:
        raise ConfigError(
            f"install_default(api_client_or_factory={api_client_or_factory!r}) needs a"
            " resilient_kube.ApiClient or ClientFactory"
        )
    with _lock:
        previous = _state.current
        _install(api_client)
    return DefaultClient(api_client, previous)


def uninstall_default() -> None:
    """Put back the stock default: API classes built with no argument get a stock client again."""
    state = _state
    with _lock:
        if state.current is None:
            return
        if _HAS_DEFAULT:
            saved = state.saved_default
            _STOCK._default = None if saved is _MISSING else saved
            state.saved_default = _MISSING
        else:
            for module, name in state.saved_names.items():
                if module.__dict__.get("ApiClient") is _default_or_new:
                    module.ApiClient = name  # type: ignore[attr-defined]
            state.saved_names.clear()
        state.current = None


def get_default() -> ApiClient | None:
    """The installed default client, or None when the stock behaviour is in place."""
    return _state.current


def _install(api_client: ApiClient) -> None:
    """Install ``api_client`` (the lock is held)."""
    state = _state
    if _HAS_DEFAULT:
        if state.current is None:
            state.saved_default = _STOCK.__dict__.get("_default")
        # On the base class: kubernetes 37's generated classes look it up there.
        _STOCK._default = api_client
    else:
        # Modules imported since the last install are patched too; kubernetes.client imports
        # every API module eagerly, so in practice this is every module at the first install.
        for name, module in list(sys.modules.items()):
            if (
                name.startswith(_API_MODULES)
                and module is not None
                and module.__dict__.get("ApiClient") is _STOCK
            ):
                state.saved_names[module] = _STOCK
                module.ApiClient = _default_or_new  # type: ignore[attr-defined]
    state.current = api_client


def _default_or_new() -> Any:
    """What ``ApiClient()`` means in a generated API module of kubernetes 31-36, once installed."""
    current = _state.current
    return _STOCK() if current is None else current
