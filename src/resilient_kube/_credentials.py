"""Credentials that refresh themselves: token files, exec plugins, and what a 401 refreshes.

The official client puts ``Configuration.api_key["authorization"]`` on every call, after running
``Configuration.refresh_api_key_hook``. A source here installs itself as that hook, so every call
carries its current value, and keeps it fresh by its own rule (a token file that changed, an exec
credential near its expiry). Its hot path costs a clock read; at most once a second, a ``stat()``.

A 401 means the server no longer takes what was sent: the driver hands the rejected header to
``Credentials.refresh`` and replays the call once with what comes back. One refresh is shared by
every thread that hit the 401 at the same time.

Sources (``docs/credentials.md`` has the rules):

* ``ConfigurationCredentials``: whatever the configuration's own hook serves (a static token, the
  GCP and OIDC auth-providers of the kubeconfig loader).
* ``TokenFileCredentials``: a bearer token read from a file (the in-cluster service-account token,
  a kubeconfig ``tokenFile``), read again when the file changes and after a 401.

No token ever appears in a log record, an error or a ``repr``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kubernetes.config import kube_config

from ._events import EventSink
from .errors import CredentialError

__all__ = [
    "CHECK_INTERVAL",
    "ConfigurationCredentials",
    "CredentialSpec",
    "Credentials",
    "TokenFileCredentials",
    "install_credentials",
]

log = logging.getLogger(__name__)

#: How often the hot path looks at a file behind the credentials: one ``stat()`` a second at most.
CHECK_INTERVAL: Final = 1.0

#: Where kubernetes looks for the bearer token: 37 reads ``BearerToken`` (``authorization`` is
#: its alias), 31 reads ``authorization``. A source writes the whole header value to both.
_API_KEYS: Final = ("BearerToken", "authorization")


class Credentials(Protocol):
    """A source of the ``Authorization`` header that can be asked for a fresh one."""

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        """The server answered 401 to ``rejected``: return a fresh ``Authorization`` value.

        One fetch is shared by every thread that hit the 401 at the same time: a caller whose
        ``rejected`` is already replaced gets the new value without a fetch. None means nothing
        newer can be had, and the 401 goes back to the caller. ``deadline_at`` (monotonic) bounds
        the fetch.
        """
        ...


class ConfigurationCredentials:
    """The credentials of a ``kubernetes.client.Configuration``, refreshed by its own hook.

    Args:
        configuration: the client's configuration.
        events: where a refresh is reported (``credential_refresh``).
    """

    source = "configuration"

    def __init__(self, configuration: Any, events: EventSink) -> None:
        self._configuration = configuration
        self._events = events
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def current(self) -> str | None:
        """The ``Authorization`` value the official client would send now."""
        # auth_settings() runs the refresh hook and knows where this release keeps the token
        # (kubernetes 37: "BearerToken" with the alias "authorization"; 31: "authorization").
        value = self._configuration.auth_settings().get("BearerToken", {}).get("value")
        return value if isinstance(value, str) else None

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        with self._lock:
            started = time.monotonic()
            # The hook runs inside: an expired token from a loader is fetched anew here.
            fresh = self.current()
            self._events.credential_refresh(
                self.source, time.monotonic() - started, fresh is not None
            )
        return fresh if fresh != rejected else None


class _HeaderSource(Protocol):
    """A source that serves the header itself: ``current()`` on every call, ``refresh`` on 401."""

    source: str

    def current(self) -> str | None: ...

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None: ...


def _publish(configuration: Any, value: str | None) -> None:
    """Put ``value`` where this kubernetes release reads the ``Authorization`` header from."""
    api_key = configuration.api_key
    for key in _API_KEYS:
        if value is None:
            api_key.pop(key, None)
        else:
            api_key[key] = value


def install_hook(configuration: Any, source: _HeaderSource) -> None:
    """Make ``source`` the configuration's ``refresh_api_key_hook``: every call sends its value.

    The value is the whole header (``Bearer ...``), so any prefix the loader set goes.
    """
    for key in _API_KEYS:
        configuration.api_key_prefix.pop(key, None)

    def refresh_api_key_hook(configuration: Any) -> None:
        _publish(configuration, source.current())

    configuration.refresh_api_key_hook = refresh_api_key_hook
    # kubernetes only asks for the header (and so runs the hook) when a key is there; every
    # release looks for "authorization".
    if not any(key in configuration.api_key for key in _API_KEYS):
        configuration.api_key["authorization"] = ""


def _file_signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    # The inode changes when kubelet swaps the `..data` symlink (stat follows it); mtime and size
    # when a file is rewritten in place.
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


class TokenFileCredentials:
    """A bearer token read from a file, read again when the file changes and after a 401.

    The in-cluster service-account token is rotated by the kubelet, which writes a new file and
    swaps a ``..data`` symlink; a kubeconfig ``tokenFile`` is rotated by whatever wrote it. The
    file is looked at (``stat``) at most once every ``CHECK_INTERVAL`` seconds, and read when its
    inode, mtime or size changed. A file that cannot be read keeps the last token it gave.

    Args:
        path: the token file (a symlink is followed each time).
        events: where every read is reported (``credential_refresh("token_file", ...)``).
        clock: monotonic time (tests inject a fake).
    """

    source = "token_file"

    def __init__(
        self,
        path: str | os.PathLike[str],
        events: EventSink,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self._events = events
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._signature: tuple[int, int, int, int] | None = None
        self._next_check = -math.inf
        self._failing = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

    def current(self) -> str:
        """The header to send now (``Bearer <token>``), reading the file if it changed.

        Raises:
            CredentialError: the file has never been readable.
        """
        value = self._value
        if value is not None and self._clock() < self._next_check:
            return value
        with self._lock:
            now = self._clock()
            if now >= self._next_check:
                self._next_check = now + CHECK_INTERVAL
                self._load(force=False)
            if self._value is None:
                raise CredentialError(f"the token file {self.path} cannot be read")
            return self._value

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        with self._lock:
            if self._value is not None and self._value != rejected:
                return self._value  # another thread read the new token already
            # Read even an unchanged-looking file: a rewrite within the filesystem's mtime
            # granularity keeps inode, mtime and size.
            self._load(force=True)
            self._next_check = self._clock() + CHECK_INTERVAL
            return self._value if self._value != rejected else None

    def _load(self, *, force: bool) -> None:
        """Read the file if it changed (or ``force``); the caller holds the lock."""
        started = time.monotonic()
        try:
            signature = _file_signature(os.stat(self.path))
            if not force and signature == self._signature:
                return
            with open(self.path, encoding="utf-8") as file:
                token = file.read().strip()
            if not token:
                raise ValueError("the file is empty")
        except (OSError, ValueError) as exc:
            self._events.credential_refresh(self.source, time.monotonic() - started, False)
            if not self._failing:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                log.warning("cannot read the token file %s: %s", self.path, reason)
                self._failing = True
            return
        self._signature = signature
        self._value = f"Bearer {token}"
        if self._failing:
            log.warning("the token file %s can be read again", self.path)
            self._failing = False
        self._events.credential_refresh(self.source, time.monotonic() - started, True)


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """Where a loaded configuration's credentials come from, when a source can refresh them.

    ``ClientFactory`` builds one from the kubeconfig or the in-cluster config; ``ApiClient``
    turns it into the live source (``install_credentials``).
    """

    #: A bearer token file (in-cluster, or a kubeconfig ``tokenFile``).
    token_file: str | None = None


def install_credentials(
    configuration: Any,
    spec: CredentialSpec | None,
    events: EventSink,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Credentials:
    """Build the source ``spec`` names, install it as the configuration's hook and return it.

    Without a spec, the configuration's own hook stays (``ConfigurationCredentials``).
    """
    if spec is not None and spec.token_file is not None:
        source = TokenFileCredentials(spec.token_file, events, clock=clock)
        install_hook(configuration, source)
        return source
    return ConfigurationCredentials(configuration, events)


def kubeconfig_credentials(
    config_file: str | None, context: str | None, configuration: Any
) -> CredentialSpec | None:
    """Load a kubeconfig into ``configuration`` as ``load_kube_config`` does, and return the
    spec of a source that keeps its credentials fresh (None: the loader's own hook does).

    The user's credentials are chosen in the loader's order: an auth-provider, a ``token``,
    a ``tokenFile``, an exec plugin, a username and password.
    """
    loader = kube_config._get_kube_config_loader(
        filename=config_file or kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
        active_context=context,
        persist_config=True,  # as load_kube_config: a refreshed GCP or OIDC token is saved
    )
    spec = _spec_for_user(loader)
    loader.load_and_set(configuration)
    return spec


def _spec_for_user(loader: Any) -> CredentialSpec | None:
    user = loader._user
    if user is None or "auth-provider" in user or user.safe_get("token"):
        return None  # the loader's hook serves (and refreshes) these
    token_file = user.safe_get("tokenFile")
    if isinstance(token_file, str) and token_file:
        base = loader._get_base_path(user.path)
        return CredentialSpec(token_file=os.path.normpath(os.path.join(base, token_file)))
    return None
