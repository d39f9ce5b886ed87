"""``resilient-kube doctor``: walk the path to an API server one phase at a time and time each.

Phases, in order (a failed phase skips the ones that need it)::

    kubeconfig -> dns -> tcp -> tls (https only) -> version -> list -> clock

Credentials are read from the kubeconfig the way ``kubernetes`` reads them and sent only to the API
server; no token, key or ``Authorization`` header is ever part of the report, and a password in the
server URL (``https://user:password@host``) is masked wherever the report shows it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import http.client
import ipaddress
import json
import math
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes.client
import kubernetes.config

from ._credentials import ExecCredentials, install_hook, kubeconfig_credentials
from ._events import EventSink
from ._redact import redact_url
from ._settings import DEFAULT_SETTINGS

__all__ = [
    "JSON_SCHEMA",
    "DoctorReport",
    "Phase",
    "default_kubeconfig",
    "embedded_kubeconfig",
    "run_doctor",
]

#: The ``schema`` field of ``--json`` output.
JSON_SCHEMA = "resilient-kube-doctor/1"
#: Time limits for each network step of the doctor itself.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
_RESOLV_CONF = "/etc/resolv.conf"
_FLOW_SCHEMA = "X-Kubernetes-PF-FlowSchema-UID"
_PRIORITY_LEVEL = "X-Kubernetes-PF-PriorityLevel-UID"
#: A clock further off than this breaks token and certificate validity checks.
CLOCK_SKEW_WARNING = 5.0
#: A serving certificate closer than this to its expiry gets a warning.
CERT_EXPIRY_WARNING_DAYS = 30


@dataclasses.dataclass(slots=True, kw_only=True)
class Phase:
    """One step of the walk; the fields are the keys of a ``--json`` phase object."""

    name: str
    #: ``ok``, ``warning`` (works, but see ``hint``), ``failed`` or ``skipped``.
    status: str = "ok"
    seconds: float | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    #: What to check (on failure) or what to change (on warning).
    hint: str | None = None


@dataclasses.dataclass(slots=True, kw_only=True)
class DoctorReport:
    server: str
    context: str | None
    kubeconfig: str | None
    #: True when no kubeconfig was found and the embedded fake API server was examined.
    embedded: bool
    phases: list[Phase]
    recommendations: dict[str, Any]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(phase.status in ("ok", "warning") for phase in self.phases)

    def failed_phase(self) -> Phase | None:
        return next((p for p in self.phases if p.status == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        from ._demo import versions

        return {
            "schema": JSON_SCHEMA,
            "ok": self.ok,
            "server": self.server,
            "context": self.context,
            "kubeconfig": self.kubeconfig,
            "embedded": self.embedded,
            "phases": [dataclasses.asdict(phase) for phase in self.phases],
            "recommendations": self.recommendations,
            "notes": self.notes,
            "versions": versions(),
        }


def default_kubeconfig() -> str | None:
    """The kubeconfig ``kubernetes`` would read (``KUBECONFIG``, then ``~/.kube/config``)."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return env
    path = Path("~/.kube/config").expanduser()
    return str(path) if path.exists() else None


@contextlib.contextmanager
def embedded_kubeconfig() -> Iterator[str]:
    """Start a ``FakeApiServer`` (TLS when ``trustme`` is installed) and yield its kubeconfig."""
    from .testing import FakeApiServer

    try:
        import trustme  # noqa: F401
    except ImportError:
        tls = False
    else:
        tls = True
    with (
        tempfile.TemporaryDirectory(prefix="resilient-kube-doctor-") as folder,
        FakeApiServer(tls=tls) as server,
    ):
        yield str(server.write_kubeconfig(Path(folder) / "kubeconfig"))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _describe(exc: BaseException) -> str:
    text = redact_url(str(exc)) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _resolv_conf(path: str = _RESOLV_CONF) -> tuple[list[str], int, list[str]]:
    """``(search domains, ndots, nameservers)`` from resolv.conf; glibc's defaults if absent."""
    search: list[str] = []
    nameservers: list[str] = []
    ndots = 1
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if not fields or fields[0].startswith(("#", ";")):
                continue
            if fields[0] in ("search", "domain"):
                search = fields[1:]  # the last search or domain line wins, as in glibc
            elif fields[0] == "nameserver" and len(fields) > 1:
                nameservers.append(fields[1])
            elif fields[0] == "options":
                for option in fields[1:]:
                    if option.startswith("ndots:") and option[6:].isdigit():
                        ndots = min(int(option[6:]), 15)
    return search, ndots, nameservers


def search_list_queries(host: str, search: list[str], ndots: int) -> int:
    """DNS queries glibc sends for ``host`` (A and AAAA) when the name exists only as given.

    A name with fewer than ``ndots`` dots is tried with each search domain first; one ending in a
    dot is never expanded. Each try is two queries, A and AAAA.
    """
    if host.endswith(".") or not search:
        return 2
    tries = len(search) + 1 if host.count(".") < ndots else 1
    return 2 * tries


class _Walk:
    """The state the phases share: the configuration, addresses, the live connection."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        split = urlsplit(configuration.host)
        self.scheme = split.scheme or "https"
        self.host = split.hostname or ""
        self.port = split.port or (443 if self.scheme == "https" else 80)
        self.base_path = split.path.rstrip("/")
        self.addresses: list[str] = []
        self.sock: socket.socket | None = None
        self.latencies: list[float] = []
        self.connect_seconds: list[float] = []
        self.date_skew: float | None = None
        self.flow_control = False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # --- phases ---------------------------------------------------------------------------------

    def dns(self, phase: Phase) -> None:
        host = self.host
        search, ndots, nameservers = _resolv_conf()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.addresses = [host]
            phase.details = {"host": host, "answers": [host], "note": "an IP address: no DNS"}
            return
        phase.details = {
            "host": host,
            "nameservers": nameservers,
            "search": search,
            "ndots": ndots,
            "system_resolver_queries": search_list_queries(host, search, ndots),
            "resilient_kube_queries": 2,
        }
        import dns.exception
        import dns.resolver

        from ._dns import _HostsFile  # the same /etc/hosts reading the DNS cache does

        began = time.monotonic()
        hosts = _HostsFile("/etc/hosts").lookup(host, began)
        if hosts:
            self.addresses = list(hosts)
            phase.seconds = time.monotonic() - began
            phase.details.update(answers=list(hosts), source="/etc/hosts", ttl=None)
            return
        resolver = dns.resolver.Resolver()
        resolver.lifetime = CONNECT_TIMEOUT
        ttls: list[int] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(host.rstrip(".") + ".", rdtype, search=False)
            except dns.resolver.NoAnswer:
                continue
            except dns.exception.DNSException as exc:
                errors.append(f"{rdtype}: {_describe(exc)}")
                continue
            self.addresses.extend(str(record) for record in answer)
            if answer.rrset is not None:
                ttls.append(answer.rrset.ttl)
        phase.seconds = time.monotonic() - began
        phase.details.update(answers=self.addresses, ttl=min(ttls) if ttls else None)
        if not self.addresses:
            raise LookupError("; ".join(errors) or f"{host} has no A or AAAA record")

    def tcp(self, phase: Phase) -> None:
        results: list[dict[str, Any]] = []
        for address in self.addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(CONNECT_TIMEOUT)
            began = time.monotonic()
            try:
                sock.connect((address, self.port))
            except OSError as exc:
                sock.close()
                results.append({"address": address, "error": _describe(exc)})
                continue
            seconds = time.monotonic() - began
            self.connect_seconds.append(seconds)
            results.append({"address": address, "connect_ms": _ms(seconds)})
            if self.sock is None:
                self.sock = sock  # the first address that works carries the requests
            else:
                sock.close()
        phase.details = {"port": self.port, "addresses": results}
        if self.connect_seconds:
            phase.seconds = min(self.connect_seconds)
        if self.sock is None:
            failures = "; ".join(f"{r['address']}: {r['error']}" for r in results)
            raise ConnectionError(
                f"no address of {self.host} accepted a connection on port {self.port} ({failures})"
            )
        if len(self.connect_seconds) < len(self.addresses):
            phase.status = "warning"
            phase.hint = (
                "some addresses do not accept connections; a client that tries them first waits"
                " (resilient_kube moves a failing address last)"
            )

    def tls(self, phase: Phase) -> None:
        config = self.configuration
        context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            phase.status = "warning"
            phase.hint = "insecure-skip-tls-verify is set: the server's identity is not checked"
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        server_name = getattr(config, "tls_server_name", None) or self.host
        assert self.sock is not None  # Defensive: tcp() succeeded
        began = time.monotonic()
        tls_sock = context.wrap_socket(self.sock, server_hostname=server_name)
        phase.seconds = time.monotonic() - began
        self.connect_seconds = [s + phase.seconds for s in self.connect_seconds]
        self.sock = tls_sock
        cipher = tls_sock.cipher()
        phase.details = {
            "server_name": server_name,
            "version": tls_sock.version(),
            "cipher": cipher[0] if cipher else None,
            "verified_with": "the kubeconfig's CA" if config.ssl_ca_cert else "the system CAs",
            "client_certificate": bool(config.cert_file),
        }
        # The peer-certificate dict is typed loosely (every value a union): read it as Any.
        cert: dict[str, Any] | None = tls_sock.getpeercert()
        if cert:
            subject = ", ".join("=".join(pair) for rdn in cert.get("subject", ()) for pair in rdn)
            expires = ssl.cert_time_to_seconds(str(cert["notAfter"]))
            days = (expires - time.time()) / 86400
            phase.details.update(
                subject=subject,
                san=[f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ())],
                not_after=datetime.fromtimestamp(expires, UTC).isoformat(),
                days_left=math.floor(days),
            )
            if days < CERT_EXPIRY_WARNING_DAYS:
                phase.status = "warning"
                phase.hint = f"the serving certificate expires in {days:.0f} days"

    def request(self, phase: Phase, path: str, *, authenticated: bool) -> dict[str, Any]:
        """Send ``GET path`` on the open connection; time to first byte and the JSON body."""
        assert self.sock is not None  # Defensive: tcp() succeeded
        conn = http.client.HTTPConnection(self.host, self.port, timeout=READ_TIMEOUT)
        conn.sock = self.sock  # reuse the connection the earlier phases opened and timed
        self.sock.settimeout(READ_TIMEOUT)
        headers = {"Accept": "application/json", "User-Agent": "resilient-kube-doctor"}
        if authenticated:
            headers.update(_auth_headers(self.configuration))
        began = time.monotonic()
        conn.request("GET", self.base_path + path, headers=headers)
        response = conn.getresponse()
        ttfb = time.monotonic() - began
        body = response.read()
        total = time.monotonic() - began
        conn.sock = None  # keep the socket: the next request goes on the same connection
        self.latencies.append(ttfb)
        phase.seconds = ttfb
        phase.details = {
            "path": path,
            "status": response.status,
            "ttfb_ms": _ms(ttfb),
            "total_ms": _ms(total),
            "bytes": len(body),
        }
        flow, level = response.getheader(_FLOW_SCHEMA), response.getheader(_PRIORITY_LEVEL)
        if flow or level:
            self.flow_control = True
            phase.details["flow_schema_uid"] = flow
            phase.details["priority_level_uid"] = level
        date = response.getheader("Date")
        if date:
            with contextlib.suppress(TypeError, ValueError):
                server_time = email.utils.parsedate_to_datetime(date).timestamp()
                # Date is stamped while we wait and cut to whole seconds: compare the middle of
                # the wait with the middle of the server's second.
                self.date_skew = server_time + 0.5 - (time.time() - total / 2)
        if response.status >= 400:
            raise _HttpError(response.status, body)
        try:
            document: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"the answer to {path} is not JSON ({len(body)} bytes)") from exc
        return document


class _HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(body).get("message", ""))
        super().__init__(f"HTTP {status}" + (f": {message}" if message else ""))
        self.status = status


def _auth_headers(configuration: kubernetes.client.Configuration) -> dict[str, str]:
    """The request headers the official client would add for the kubeconfig's credentials."""
    headers: dict[str, str] = {}
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[str(setting["key"])] = str(setting["value"])
    return headers


_HINTS = {
    "kubeconfig": "check the file, its current-context and --context; `kubectl config view` shows"
    " what kubernetes reads",
    "dns": "check the server name in the kubeconfig, /etc/resolv.conf and that the resolver"
    " answers (`dig NAME`)",
    "tcp": "check that the API server runs and listens on that address and port, and firewalls"
    " or security groups between here and there",
    "tls": "check certificate-authority(-data) in the kubeconfig, the server name against the"
    " certificate's SAN, and the client certificate",
    "version": "the server accepted the connection but did not answer HTTP as an API server:"
    " check the URL (scheme, port, path) and any proxy in between",
    "list": "401: the credentials are wrong or expired; 403: they lack `list namespaces` (the"
    " doctor's LIST needs it); 429/5xx: the server is overloaded",
}


def _recommend(walk: _Walk, report_notes: list[str]) -> dict[str, Any]:
    """Settings for the observed latencies: generous multiples, so a slow moment is no error."""
    settings: dict[str, Any] = {}
    if walk.connect_seconds:
        # 10x the slowest connect (TCP + TLS), between 1 s and 5 s (the default).
        settings["connect_timeout"] = min(5.0, max(1.0, math.ceil(10 * max(walk.connect_seconds))))
    if walk.latencies:
        slowest = max(walk.latencies)
        # 20x the slowest first byte: small LISTs and GETs; between 2 s and 30 s (the default).
        read = min(30.0, max(2.0, float(math.ceil(20 * slowest))))
        settings["read_timeout"] = read
        settings["deadline"] = min(60.0, max(10.0, 3 * read))
        report_notes.append(
            f"read_timeout={read:g} is for calls like these; give large LISTs their own"
            " _request_timeout, and watches need none (resilient_kube sets theirs)."
        )
    # The limiter's default either way; what differs is how the server pushes back.
    settings.update(qps=50.0, burst=100)
    if walk.flow_control:
        report_notes.append(
            "API Priority and Fairness is on: keep the limiter (qps=50, burst=100, the default);"
            " resilient_kube halves it when the server answers 429."
        )
    else:
        report_notes.append(
            "No API Priority and Fairness headers seen (APF off, or a proxy strips them): the"
            " server only has max-in-flight limits; keep the limiter (qps=50, burst=100)."
        )
    return settings


def _load(
    kubeconfig: str | None, context: str | None
) -> tuple[kubernetes.client.Configuration, str | None]:
    config = kubernetes.client.Configuration()
    # As ClientFactory loads it: an exec plugin is not run by the loader (no timeout, its stderr
    # logged) but on the first request, within exec_timeout, its output never shown.
    spec = kubeconfig_credentials(kubeconfig, context, config)
    if spec is not None and spec.exec_config is not None:
        source = ExecCredentials(
            spec.exec_config, EventSink(), timeout=DEFAULT_SETTINGS.exec_timeout
        )
        install_hook(config, source)
    if context is None:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        context = active.get("name") if active else None
    return config, context


def run_doctor(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    embedded: bool = False,
    endpoints: Sequence[str] = (),
) -> DoctorReport:
    """Walk every phase against the kubeconfig's server and return the report (never raises).

    ``endpoints``: API servers given as ``endpoints=[...]``; each gets a phase of its own, the
    client's health check (``GET /readyz`` with the configured host's identity).
    """
    phases: list[Phase] = []
    notes: list[str] = []
    if embedded:
        notes.append(
            "No kubeconfig was found (no --kubeconfig, no KUBECONFIG, no ~/.kube/config): this is"
            " the embedded fake API server, to show what the doctor reports."
        )
    first = Phase(name="kubeconfig")
    phases.append(first)
    began = time.monotonic()
    try:
        configuration, context = _load(kubeconfig, context)
    except Exception as exc:  # kubernetes raises ConfigException, OSError, yaml errors, ...
        first.status, first.error, first.hint = "failed", _describe(exc), _HINTS["kubeconfig"]
        return DoctorReport(server="", context=context, kubeconfig=kubeconfig, embedded=embedded,
                            phases=phases, recommendations={}, notes=notes)  # fmt: skip
    first.seconds = time.monotonic() - began
    walk = _Walk(configuration)
    first.details = {
        "server": redact_url(configuration.host),
        "context": context,
        "credentials": _credential_kind(configuration),
        "certificate_authority": "set" if configuration.ssl_ca_cert else "system CAs",
    }
    proxy = getattr(configuration, "proxy", None)
    if proxy:
        notes.append("A proxy is configured; the doctor connects directly to the server.")
    steps: list[tuple[str, Any]] = [("dns", walk.dns), ("tcp", walk.tcp)]
    if walk.scheme == "https":
        steps.append(("tls", walk.tls))
    steps += [
        ("version", lambda phase: _version(walk, phase)),
        ("list", lambda phase: walk.request(phase, "/api/v1/namespaces?limit=1",
                                            authenticated=True)),
    ]  # fmt: skip
    failed = False
    try:
        for name, step in steps:
            phase = Phase(name=name)
            phases.append(phase)
            if failed:
                phase.status = "skipped"
                continue
            try:
                step(phase)
            except Exception as exc:  # a failed phase is the report, whatever went wrong
                phase.status, phase.error = "failed", _describe(exc)
                phase.hint = _HINTS[name]
                failed = True
    finally:
        walk.close()
    phases.extend(_endpoint_phase(configuration, url) for url in endpoints)
    clock = Phase(name="clock")
    phases.append(clock)
    if walk.date_skew is None:
        clock.status = "skipped"
    else:
        skew = walk.date_skew
        clock.details = {"skew_seconds": round(skew, 1), "resolution_seconds": 1}
        if abs(skew) > CLOCK_SKEW_WARNING:
            clock.status = "warning"
            clock.hint = (
                f"this clock is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the"
                " server's: tokens and certificates may look expired or not yet valid; run NTP"
            )
    recommendations = _recommend(walk, notes) if not failed else {}
    return DoctorReport(
        server=redact_url(configuration.host),
        context=context,
        kubeconfig=kubeconfig,
        embedded=embedded,
        phases=phases,
        recommendations=recommendations,
        notes=notes,
    )


def _endpoint_phase(configuration: kubernetes.client.Configuration, url: str) -> Phase:
    """One API server of ``endpoints=[...]``, checked as the client checks it."""
    from ._client import ApiClient, ready

    phase = Phase(name=f"endpoint {redact_url(url)}")
    began = time.monotonic()
    try:
        api_client = ApiClient(configuration, endpoints=[url], health_interval=3600.0)
    except Exception as exc:  # a bad URL: ConfigError names it
        phase.status, phase.error = "failed", _describe(exc)
        phase.hint = "endpoints are scheme://host[:port], all http or all https"
        return phase
    try:
        answered = ready(api_client, timeout=READ_TIMEOUT)
    except Exception as exc:  # the check's own failure is the finding
        answered, phase.error = False, _describe(exc)
    finally:
        api_client.close()
    phase.seconds = time.monotonic() - began
    phase.details = {"ready": answered}
    if not answered:
        phase.status = "warning"
        phase.hint = (
            "this API server is not ready (GET /readyz with the configured host's TLS name and"
            " credentials): calls go to the others until it passes its checks"
        )
    return phase


def _version(walk: _Walk, phase: Phase) -> None:
    document = walk.request(phase, "/version", authenticated=True)
    phase.details["git_version"] = document.get("gitVersion")


def _credential_kind(configuration: kubernetes.client.Configuration) -> str:
    """What kind of credentials the kubeconfig gives, never their value."""
    kinds = []
    hook = configuration.refresh_api_key_hook
    if isinstance(getattr(hook, "source", None), ExecCredentials):
        kinds.append(f"exec plugin {hook.source.config.name}")  # not run here: in the list phase
    elif _auth_headers(configuration):
        kinds.append("bearer token")
    if configuration.cert_file:
        kinds.append("client certificate")
    if configuration.username:
        kinds.append("basic auth")
    return " + ".join(kinds) or "none"
