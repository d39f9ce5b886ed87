"""Credentials that refresh themselves: token files, exec plugins, and what a 401 refreshes.

The official client puts ``Configuration.api_key["authorization"]`` on every call, after running
``Configuration.refresh_api_key_hook``. A source here installs itself as that hook, so every call
carries its current value, and keeps it fresh by its own rule (a token file that changed, an exec
credential near its expiry). Its hot path costs a clock read; at most once a second, a ``stat()``.

A 401 means the server no longer takes what was sent: the driver hands the rejected header to
``Credentials.refresh`` and replays the call once with what comes back. One refresh is shared by
every thread that hit the 401 at the same time.

Sources (``docs/credentials.md`` has the rules):

* ``ConfigurationCredentials``: whatever the configuration's own hook serves (a static token).
* ``AuthProviderCredentials``: the GCP and OIDC auth-providers, refreshed by the kubeconfig
  loader's hook when they expire and, here, on a 401 too.
* ``TokenFileCredentials``: a bearer token read from a file (the in-cluster service-account token,
  a kubeconfig ``tokenFile``), read again when the file changes and after a 401.
* ``ExecCredentials``: an exec plugin (``client.authentication.k8s.io/v1`` and ``v1beta1``), run
  once for every thread (single flight) within ``exec_timeout`` and the call's deadline, its
  credential cached until shortly before its ``expirationTimestamp``, or until a 401; its client
  certificate and key, if it gives them, written where new connections load them.
* ``CertificateFiles``: client certificate, key and CA files rotated on disk; pooled connections
  made with the old ones are retired.

No token ever appears in a log record, an error or a ``repr``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from kubernetes.config import kube_config

from ._events import EventSink, Fanout
from ._x509 import validity
from .errors import ConfigError, CredentialError

__all__ = [
    "CHECK_INTERVAL",
    "AuthProviderCredentials",
    "CertificateFiles",
    "ConfigurationCredentials",
    "CredentialSpec",
    "Credentials",
    "ExecConfig",
    "ExecCredentials",
    "TokenFileCredentials",
    "install_credentials",
    "kubeconfig_credentials",
    "retire_connections",
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


class AuthProviderCredentials(ConfigurationCredentials):
    """A kubeconfig ``auth-provider`` (``gcp``, ``oidc``): the loader's hook refreshes the token
    when it expires, by the loader's own rule; a 401 forces a refresh before that.

    Args:
        configuration: the client's configuration (the loader's hook stays on it).
        loader: the ``KubeConfigLoader`` that loaded it.
        events: where a refresh is reported (``credential_refresh("auth_provider", ...)``).
    """

    source = "auth_provider"

    def __init__(self, configuration: Any, loader: Any, events: EventSink) -> None:
        super().__init__(configuration, events)
        self._loader = loader

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        with self._lock:
            fresh = self.current()
            if fresh != rejected:
                return fresh  # the hook found it expired, or another thread refreshed it
            started = time.monotonic()
            loader = self._loader
            try:
                provider = loader._user["auth-provider"]
                name = provider.safe_get("name")
                if name == "gcp":
                    loader._refresh_gcp_token()
                elif name == "oidc":
                    loader._refresh_oidc(provider)
                loader._load_authentication()  # the refreshed token into the loader
                fresh = self.current()  # and, through its hook, into the configuration
            except Exception as exc:
                # The loader's messages may quote a helper's stderr: only the type is logged.
                log.warning(
                    "refreshing the kubeconfig auth-provider failed: %s", type(exc).__name__
                )
                fresh = None
            self._events.credential_refresh(
                self.source, time.monotonic() - started, fresh not in {None, rejected}
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

    refresh_api_key_hook.source = source  # type: ignore[attr-defined]  # what serves it
    configuration.refresh_api_key_hook = refresh_api_key_hook
    # kubernetes only asks for the header (and so runs the hook) when a key is there, and every
    # release looks for "authorization" (31 only for it): the loader's value moves there until
    # the hook first runs.
    api_key = configuration.api_key
    api_key["authorization"] = api_key.pop("BearerToken", None) or api_key.get("authorization", "")


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
                self._load(force=False)
                self._next_check = now + CHECK_INTERVAL  # after: others wait for the new token
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


#: The exec credential API versions client-go still speaks (v1alpha1 was removed in 1.24).
EXEC_API_VERSIONS: Final = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)

#: ``interactiveMode`` values; plugins run here never get a terminal.
_INTERACTIVE_MODES: Final = ("Never", "IfAvailable", "Always")

#: An exec credential is fetched again this long before it expires: a fifth of its lifetime, at
#: most ``_MAX_MARGIN`` (client-go uses none, the Python loader five minutes, which re-runs a
#: plugin on every call when its credentials live less than that).
_MARGIN_SHARE: Final = 0.2
_MAX_MARGIN: Final = 30.0
#: A credential is used at least this long, even one that arrives expired or about to: a plugin
#: that always hands out the same soon-expiring token must not run on every call.
_MIN_REUSE: Final = 1.0


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """A kubeconfig ``users[].user.exec`` section, checked.

    ``env`` and ``cluster`` stay out of the ``repr``: either may hold a secret.
    """

    command: str
    args: tuple[str, ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    #: ``Never``, ``IfAvailable`` or ``Always`` (which cannot work here: no terminal).
    interactive_mode: str = "IfAvailable"
    #: Added to the process environment.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: The ``spec.cluster`` sent in ``KUBERNETES_EXEC_INFO`` (``provideClusterInfo: true``).
    cluster: Mapping[str, Any] | None = field(default=None, repr=False)
    #: The directory the plugin runs in (the kubeconfig's, as the official client does).
    cwd: str | None = None

    @classmethod
    def from_kubeconfig(
        cls, section: Mapping[str, Any], cluster: Mapping[str, Any] | None, *, base_path: str
    ) -> ExecConfig:
        """Check an ``exec`` section and resolve it against the kubeconfig's directory.

        Raises:
            ConfigError: a field is missing or has a value client-go would refuse; the message
                names the field and the value.
        """
        command = section.get("command")
        if not isinstance(command, str) or not command:
            raise ConfigError(f"kubeconfig exec: command={command!r} must be a program to run")
        api_version = section.get("apiVersion")
        if api_version not in EXEC_API_VERSIONS:
            raise ConfigError(
                f"kubeconfig exec: apiVersion={api_version!r} is not supported; use one of"
                f" {', '.join(EXEC_API_VERSIONS)}"
            )
        args = section.get("args") or []
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise ConfigError("kubeconfig exec: args must be a list of strings")
        mode = section.get("interactiveMode") or "IfAvailable"
        if mode not in _INTERACTIVE_MODES:
            raise ConfigError(
                f"kubeconfig exec: interactiveMode={mode!r} must be one of"
                f" {', '.join(_INTERACTIVE_MODES)}"
            )
        env: dict[str, str] = {}
        for item in section.get("env") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConfigError("kubeconfig exec: every env entry needs a name and a value")
            env[item["name"]] = str(item.get("value", ""))
        # client-go resolves a command with a path separator against the kubeconfig's
        # directory; a bare name is looked up on PATH.
        if os.sep in command and not os.path.isabs(command) and base_path:
            command = os.path.normpath(os.path.join(base_path, command))
        cluster_info = (
            _exec_cluster(cluster, base_path)
            if section.get("provideClusterInfo") and cluster is not None
            else None
        )
        return cls(
            command=command,
            args=tuple(args),
            api_version=api_version,
            interactive_mode=mode,
            env=env,
            cluster=cluster_info,
            cwd=base_path or None,
        )

    @property
    def name(self) -> str:
        """The program, as errors name it (never its arguments: they may hold a secret)."""
        return os.path.basename(self.command)


def _exec_cluster(cluster: Mapping[str, Any], base_path: str) -> dict[str, Any]:
    """The kubeconfig cluster as client-go's ``ExecCredential.spec.cluster`` describes it."""
    info: dict[str, Any] = {"server": cluster.get("server", "")}
    if cluster.get("tls-server-name"):
        info["tlsServerName"] = cluster["tls-server-name"]
    if cluster.get("insecure-skip-tls-verify"):
        info["insecureSkipTLSVerify"] = True
    ca_data = cluster.get("certificate-authority-data")
    ca_file = cluster.get("certificate-authority")
    if ca_data:
        info["certificateAuthorityData"] = ca_data
    elif isinstance(ca_file, str) and ca_file:
        try:
            with open(os.path.join(base_path, ca_file), "rb") as file:
                info["certificateAuthorityData"] = base64.b64encode(file.read()).decode()
        except OSError:
            pass  # the loader reports a missing CA file itself
    if cluster.get("proxy-url"):
        info["proxyURL"] = cluster["proxy-url"]
    if cluster.get("disable-compression"):
        info["disableCompression"] = True
    for extension in cluster.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == _EXEC_EXTENSION:
            info["config"] = extension.get("extension")
    return info


#: The cluster extension whose value a plugin gets as ``spec.cluster.config``.
_EXEC_EXTENSION: Final = "client.authentication.k8s.io/exec"


@dataclass(frozen=True, slots=True)
class _ExecResult:
    """What one plugin run gave, and until when it is good (monotonic seconds)."""

    header: str | None = field(repr=False)
    certificate: bytes | None = field(repr=False)
    key: bytes | None = field(repr=False)
    #: Fetch a new one from here on; None: keep it until a 401.
    refresh_at: float | None
    #: The server takes it until here; None: no expiry given.
    expires_at: float | None


class _Flight:
    """One plugin run that every thread needing it waits for (single flight)."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: _ExecResult | None = None
        self.error: CredentialError | None = None


class ExecCredentials(EventSink):
    """Credentials from an exec plugin, run once for every thread and cached until they expire.

    A credential with an ``expirationTimestamp`` is fetched again a little before it (a fifth
    of its lifetime, at most 30 s); until then threads keep using it, and inside that margin
    one thread fetches while the others still send the old one. One without an expiry is kept
    until a 401. One run at a time: every thread that needs a credential while the plugin runs
    waits for that run and takes its outcome, success or failure.

    A run is bounded by ``timeout`` (``Settings.exec_timeout``) and, after a 401, by the call's
    deadline; a plugin that does not finish is killed with its process group. The plugin gets
    no terminal: ``interactiveMode: Always`` fails clearly. ``KUBERNETES_EXEC_INFO`` carries
    ``spec.interactive: false`` and, with ``provideClusterInfo``, ``spec.cluster``. Its stderr is
    discarded and its stdout is parsed, never logged or put in an error.

    Args:
        config: the plugin (``ExecConfig.from_kubeconfig``).
        events: where each run is reported (``credential_refresh("exec", seconds, ok)``).
        timeout: the longest a run may take.
        on_certificate: called with (certificate PEM, key PEM) when a run returns client
            certificate data that differs from the last.
        clock: monotonic time; wall: epoch time (to read ``expirationTimestamp``).
    """

    source = "exec"

    def __init__(
        self,
        config: ExecConfig,
        events: EventSink,
        *,
        timeout: float = 30.0,
        on_certificate: Callable[[bytes, bytes], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._events = events
        self._timeout = timeout
        self._on_certificate = on_certificate
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._result: _ExecResult | None = None
        self._flight: _Flight | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(command={self.config.name!r})"

    def call_started(self, method: str, host: str, headers: dict[str, str]) -> None:
        # A plugin that gives a client certificate and no token leaves the official client no
        # header to ask for (and so no hook to run): its expiry is watched here.
        result = self._result
        if result is not None and result.header is None:
            self.current()

    def current(self) -> str | None:
        """The header to send now, running the plugin when there is none or it is due.

        None when the plugin gives a client certificate and no token.

        Raises:
            CredentialError: the plugin failed, hung or printed no ExecCredential.
        """
        result = self._result
        if result is not None:
            now = self._clock()
            if result.refresh_at is None or now < result.refresh_at:
                return result.header
            if result.expires_at is not None and now < result.expires_at:
                # Due but still good: one thread fetches, the others keep sending this one.
                fresh = self._fetch(result, None, wait=False)
                return (fresh or result).header
        fresh = self._fetch(result, None, wait=True)
        assert fresh is not None  # Defensive: a waiting fetch returns a result or raises
        return fresh.header

    def refresh(self, rejected: str | None, deadline_at: float | None) -> str | None:
        result = self._result
        if result is not None and result.header != rejected:
            return result.header  # another thread fetched after this call's header was made
        fresh = self._fetch(result, deadline_at, wait=True)
        assert fresh is not None  # Defensive: a waiting fetch returns a result or raises
        return fresh.header if fresh.header != rejected else None

    def _fetch(
        self, seen: _ExecResult | None, deadline_at: float | None, *, wait: bool
    ) -> _ExecResult | None:
        """A result newer than ``seen``: the one a finished flight left, the running flight's,
        or a new run's. Without ``wait``, None while another thread runs the plugin."""
        with self._lock:
            if self._result is not seen:
                return self._result
            flight = self._flight
            runner = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if runner:
            try:
                flight.result = self._run(deadline_at)
            except CredentialError as exc:
                flight.error = exc
            finally:
                with self._lock:
                    if flight.result is not None:
                        self._result = flight.result
                    self._flight = None
                flight.done.set()
        elif not wait:
            return None
        else:
            limit = self._timeout + 1.0  # the runner's own timeout ends it before this
            if deadline_at is not None:
                limit = min(limit, deadline_at - self._clock())
            if not flight.done.wait(max(limit, 0.0)):
                raise CredentialError(
                    f"exec plugin {self.config.name!r} did not finish within the call's deadline",
                    command=self.config.name,
                )
        if flight.error is not None:
            raise copy.copy(flight.error)  # each thread its own: a traceback is per raise
        if flight.result is None:  # Defensive: the runner met something else; it raised it
            raise CredentialError(
                f"exec plugin {self.config.name!r} failed", command=self.config.name
            )
        return flight.result

    def _run(self, deadline_at: float | None) -> _ExecResult:
        """Run the plugin once and read its ExecCredential; report the run."""
        started = self._clock()
        ok = False
        try:
            result = self._execute(deadline_at)
            ok = True
            return result
        finally:
            self._events.credential_refresh(self.source, self._clock() - started, ok)

    def _execute(self, deadline_at: float | None) -> _ExecResult:
        config = self.config
        name = config.name
        if config.interactive_mode == "Always":
            raise CredentialError(
                f"exec plugin {name!r} asks for a terminal (interactiveMode: Always);"
                " resilient_kube runs plugins without one",
                command=name,
            )
        timeout, limit = self._timeout, f"exec_timeout={self._timeout:g}s"
        if deadline_at is not None and deadline_at - self._clock() < timeout:
            timeout, limit = deadline_at - self._clock(), "the call's deadline"
            if timeout <= 0:
                raise CredentialError(
                    f"exec plugin {name!r} was not run: the call's deadline has passed",
                    command=name,
                )
        info: dict[str, Any] = {
            "apiVersion": config.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        if config.cluster is not None:
            info["spec"]["cluster"] = dict(config.cluster)
        env = {**os.environ, **config.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            process = subprocess.Popen(  # the user's kubeconfig names the plugin
                [config.command, *config.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # may hold the credential: never read
                cwd=config.cwd,
                env=env,
                start_new_session=True,  # its own process group, killed whole on timeout
            )
        except OSError as exc:
            self._events.exec_plugin_call(1, "plugin_not_found_error")  # client-go's labels
            raise CredentialError(
                f"exec plugin {name!r} could not start: {exc.strerror}", command=name
            ) from None
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(process)
            self._events.exec_plugin_call(-1, "plugin_execution_error")
            raise CredentialError(
                f"exec plugin {name!r} did not finish within {limit}; it was killed",
                command=name,
            ) from None
        status = process.returncode
        # As Go's ExitCode(): -1 for a process a signal ended.
        self._events.exec_plugin_call(
            max(status, -1), "no_error" if status == 0 else "plugin_execution_error"
        )
        if status != 0:
            how = (
                f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            )
            raise CredentialError(
                f"exec plugin {name!r} {how} (its output is not shown: it may hold credentials)",
                command=name,
                exit_status=status,
            )
        return self._parse(stdout)

    def _new_certificate(self, pem: bytes, replaced: bytes | None) -> None:
        """Report a new client certificate: its expiry, and the age of the one it replaces."""
        dates = validity(pem)
        if dates is None:
            return  # not readable here; still used (the TLS layer is the judge)
        old = None if replaced is None else validity(replaced)
        age = None if old is None else self._wall() - old[0]
        self._events.exec_certificate(self, dates[1], age)

    def _parse(self, stdout: bytes) -> _ExecResult:
        name = self.config.name

        def bad(what: str) -> CredentialError:
            return CredentialError(
                f"exec plugin {name!r} printed {what} (its output is not shown: it may hold"
                " credentials)",
                command=name,
                exit_status=0,
            )

        try:
            document = json.loads(stdout)
        except ValueError:
            raise bad("no JSON") from None
        if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
            raise bad("no ExecCredential")
        if document.get("apiVersion") != self.config.api_version:
            raise bad(f"an ExecCredential of another apiVersion than {self.config.api_version}")
        status = document.get("status")
        if not isinstance(status, dict):
            raise bad("an ExecCredential without a status")
        token = status.get("token")
        certificate = status.get("clientCertificateData")
        key = status.get("clientKeyData")
        if bool(certificate) != bool(key):
            raise bad("a client certificate without its key, or a key without its certificate")
        if not (isinstance(token, str) and token) and not certificate:
            raise bad("neither a token nor a client certificate")
        if certificate and not (isinstance(certificate, str) and isinstance(key, str)):
            raise bad("client certificate data that is not text")
        refresh_at = expires_at = None
        expiry = status.get("expirationTimestamp")
        if expiry is not None:
            try:
                when = datetime.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
                if when.tzinfo is None:
                    raise ValueError("no time zone")
            except ValueError:
                raise bad("an expirationTimestamp that is not RFC 3339") from None
            now = self._clock()
            lifetime = when.timestamp() - self._wall()
            margin = min(_MAX_MARGIN, max(lifetime, 0.0) * _MARGIN_SHARE)
            refresh_at = max(now + lifetime - margin, now + _MIN_REUSE)
            expires_at = max(now + lifetime, refresh_at)
        if certificate:
            assert isinstance(key, str)  # Defensive: checked above
            last = self._result
            pem, key_pem = certificate.encode(), key.encode()
            if last is None or (last.certificate, last.key) != (pem, key_pem):
                self._new_certificate(pem, None if last is None else last.certificate)
                if self._on_certificate is not None:
                    self._on_certificate(pem, key_pem)
        return _ExecResult(
            header=f"Bearer {token}" if isinstance(token, str) and token else None,
            certificate=certificate.encode() if isinstance(certificate, str) else None,
            key=key.encode() if isinstance(key, str) else None,
            refresh_at=refresh_at,
            expires_at=expires_at,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a plugin that ran out of time, with whatever it started, and reap it."""
    with contextlib.suppress(ProcessLookupError):  # it ended on its own just now
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def retire_connections(manager: Any) -> None:
    """Every connection pooled now is closed at its next checkout (``_connection``'s pools) and
    connects again with the certificate, key and CA files as they are then.

    A connection busy with a call finishes it first: retired gracefully, like client-go's
    certificate rotation but without cutting calls in flight. Pools of other classes (SOCKS)
    are closed: their idle connections now, busy ones when they come back.
    """
    pools = manager.pools
    # keys() copies the keys under the container's lock; iterating it directly would not.
    for key in pools.keys():  # noqa: SIM118
        pool = pools.get(key)
        if pool is None:  # Defensive: evicted since keys() was read
            continue
        if hasattr(pool, "rk_generation"):
            pool.rk_generation += 1
        else:
            pool.close()


class CertificateFiles(EventSink):
    """Client certificate, key and CA files rotated on disk (cert-manager, a projected volume).

    urllib3 reads the files on every new connection; what goes stale are the pooled ones. Looked
    at (``stat``) when a call starts, at most once every ``CHECK_INTERVAL`` seconds: when one
    changed, every pooled connection is retired (``retire_connections``) and a
    ``credential_refresh("certificate_files", ...)`` is reported.

    Args:
        paths: the files (``Configuration.cert_file``, ``key_file``, ``ssl_ca_cert``).
        manager: the pool manager whose connections use them.
        events: where a change is reported.
        clock: monotonic time.
    """

    source = "certificate_files"

    def __init__(
        self,
        paths: tuple[str, ...],
        manager: Any,
        events: EventSink,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = paths
        self._manager = manager
        self._events = events
        self._clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._next_check = clock() + CHECK_INTERVAL

    def __repr__(self) -> str:
        return f"{type(self).__name__}(paths={self.paths!r})"

    def call_started(self, method: str, host: str, headers: dict[str, str]) -> None:
        self.check()

    def check(self) -> bool:
        """Retire pooled connections if a file changed since the last look; True if one did."""
        if self._clock() < self._next_check:
            return False
        with self._lock:
            now = self._clock()
            if now < self._next_check:
                return False
            started = time.monotonic()
            signature = self._stat()
            changed = signature != self._signature
            if changed:
                self._signature = signature
                retire_connections(self._manager)
            # Only now: a thread that sees the new time goes on without the lock, and must not
            # take a connection that is about to be retired.
            self._next_check = now + CHECK_INTERVAL
        if not changed:
            return False
        log.info("client certificate or CA files changed: pooled connections are retired")
        self._events.credential_refresh(self.source, time.monotonic() - started, True)
        return True

    def _stat(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        signatures: list[tuple[int, int, int, int] | None] = []
        for path in self.paths:
            try:
                signatures.append(_file_signature(os.stat(path)))
            except OSError:
                signatures.append(None)  # mid-rotation: the next look sees the new file
        return tuple(signatures)


class _ClientCertificateFiles:
    """Where an exec plugin's client certificate and key are written for urllib3 to load.

    Two files at fixed paths in a private directory (mode 0700, removed when this is collected
    or at exit): the first certificate points the pool manager at them; later ones replace the
    files and retire pooled connections.
    """

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._directory: str | None = None

    def update(self, certificate: bytes, key: bytes) -> None:
        first = self._directory is None
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="resilient-kube-exec-")
            weakref.finalize(self, shutil.rmtree, self._directory, ignore_errors=True)
        cert_path = os.path.join(self._directory, "client.crt")
        key_path = os.path.join(self._directory, "client.key")
        for path, data in ((key_path, key), (cert_path, certificate)):
            staged = path + ".tmp"
            descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(staged, path)
        if first:
            pool_kw = self._manager.connection_pool_kw
            pool_kw["cert_file"], pool_kw["key_file"] = cert_path, key_path
            # Pools keep the files they were built with: none may outlive the change.
            self._manager.clear()
        else:
            retire_connections(self._manager)


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """Where a loaded configuration's credentials come from, when a source can refresh them.

    ``ClientFactory`` builds one from the kubeconfig or the in-cluster config; ``ApiClient``
    turns it into the live source (``install_credentials``).
    """

    #: A bearer token file (in-cluster, or a kubeconfig ``tokenFile``).
    token_file: str | None = None
    #: A kubeconfig exec plugin.
    exec_config: ExecConfig | None = None
    #: The kubeconfig loader of a user with an ``auth-provider`` (gcp, oidc).
    auth_provider_loader: Any = field(default=None, repr=False)


def install_credentials(
    configuration: Any,
    spec: CredentialSpec | None,
    events: Fanout,
    manager: Any,
    *,
    exec_timeout: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> Credentials:
    """Build the source ``spec`` names, install it as the configuration's hook and return it.

    Without a spec, the configuration's own hook stays (``ConfigurationCredentials``). Client
    certificate, key and CA files named by the configuration are watched in every case.

    Args:
        configuration: the client's configuration (its hook and ``api_key`` are set).
        spec: where the credentials come from, or None.
        events: the client's fanout: sources report there, and watchers subscribe to it.
        manager: the pool manager (new client certificates retire its pooled connections).
        exec_timeout: the longest an exec plugin may run.
        clock: monotonic time.
    """
    paths = tuple(
        path
        for path in (configuration.cert_file, configuration.key_file, configuration.ssl_ca_cert)
        if isinstance(path, str) and path
    )
    if paths:
        events.add(CertificateFiles(paths, manager, events, clock=clock))
    if spec is not None and spec.token_file is not None:
        source: _HeaderSource = TokenFileCredentials(spec.token_file, events, clock=clock)
        install_hook(configuration, source)
        return source
    if spec is not None and spec.exec_config is not None:
        exec_source = ExecCredentials(
            spec.exec_config,
            events,
            timeout=exec_timeout,
            on_certificate=_ClientCertificateFiles(manager).update,
            clock=clock,
        )
        install_hook(configuration, exec_source)
        events.add(exec_source)
        return exec_source
    if spec is not None and spec.auth_provider_loader is not None:
        return AuthProviderCredentials(configuration, spec.auth_provider_loader, events)
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
    if user is None:
        return None
    provider = user.safe_get("auth-provider")
    if isinstance(provider, dict) and provider.get("name") in {"gcp", "oidc"}:
        return CredentialSpec(auth_provider_loader=loader)  # its hook serves it
    if user.safe_get("token"):
        return None  # a static token: the configuration's own
    token_file = user.safe_get("tokenFile")
    if isinstance(token_file, str) and token_file:
        base = loader._get_base_path(user.path)
        return CredentialSpec(token_file=os.path.normpath(os.path.join(base, token_file)))
    exec_section = user.safe_get("exec")
    if isinstance(exec_section, dict):
        cluster = loader._cluster
        config = ExecConfig.from_kubeconfig(
            exec_section,
            cluster.value if cluster is not None else None,
            base_path=loader._get_base_path(cluster.path if cluster is not None else None),
        )
        # The loader would run the plugin now, with no timeout: the source runs it on the first
        # call instead. The loader gets a copy of the user without it (the file is untouched).
        user_section = {key: value for key, value in user.value.items() if key != "exec"}
        loader._user = type(user)(user.name, user_section, user.path)
        return CredentialSpec(exec_config=config)
    return None
