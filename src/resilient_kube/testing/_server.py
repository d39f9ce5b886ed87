"""``FakeApiServer``: a real HTTP/1.1 Kubernetes API server in a thread, with fault injection."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import re
import select
import socket
import socketserver
import struct
import termios
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from ._faults import (
    CloseConnection,
    Delay,
    EndWatch,
    Fault,
    FaultRules,
    Overload,
    RequestInfo,
    ResetConnection,
    ResetWatch,
    SilentWatch,
    Stall,
    StatusFault,
    TruncatedBody,
    check_verb,
    verb_matches,
)
from ._resources import CustomResource, Registry, ResourceType
from ._selectors import Matcher, parse_field_selector, parse_label_selector
from ._status import ApiStatusError, status_body
from ._store import ListResult, Object, Store, filter_events
from ._tls import TlsMaterial, make_tls_material, require_trustme
from ._websocket import is_websocket, serve_websocket

if TYPE_CHECKING:
    from kubernetes.client import Configuration

__all__ = [
    "DEFAULT_BOOKMARK_INTERVAL",
    "DEFAULT_EVENT_WINDOW",
    "DEFAULT_TOKEN",
    "FakeApiServer",
    "ServerStats",
]

log = logging.getLogger(__name__)

#: The bearer token ``configuration()`` and ``write_kubeconfig()`` hand out.
DEFAULT_TOKEN = "resilient-kube-fake-token"
#: Watches replay from the last 1000 changes; an older ``resourceVersion`` gets 410 Gone.
DEFAULT_EVENT_WINDOW = 1000
#: Watches that ask for bookmarks get one every second.
DEFAULT_BOOKMARK_INTERVAL = 1.0

#: A stalled watch or a request waiting for events checks the client and the clock this often.
_POLL_SECONDS = 0.1
_HANDSHAKE_SECONDS = 10.0
_JOIN_SECONDS = 5.0
_HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/livez"})
_VERSION = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-resilient-kube-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class ServerStats(NamedTuple):
    """A snapshot of what the fake server saw (see ``FakeApiServer.stats()``)."""

    #: TCP connections accepted.
    connections: int
    #: Requests whose headers arrived, faulted ones included.
    requests: int
    #: Requests by Kubernetes verb: ``get``, ``list``, ``watch``, ``create``, ``update``,
    #: ``patch``, ``delete``, ``deletecollection``; non-resource paths count by lowercase method.
    requests_by_verb: Counter[str]
    #: Requests by HTTP method.
    requests_by_method: Counter[str]
    #: Requests by path, without the query string.
    requests_by_path: Counter[str]
    #: Faults served, by class name: ``StatusFault``, ``ResetConnection``, ...
    faults_by_kind: Counter[str]
    #: Responses sent, by HTTP status code (injected ``StatusFault`` answers included).
    responses_by_status: Counter[int]


@dataclass(frozen=True, slots=True)
class _Route:
    """What a request path and method mean to the API."""

    verb: str
    #: ``resource``, ``discovery``, ``health`` or ``unknown``.
    kind: str
    rt: ResourceType | None = None
    #: None lists or watches across all namespaces; "" is cluster scope.
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    document: dict[str, Any] | None = None


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._connections = 0
            self._requests: list[RequestInfo] = []
            self._faults: Counter[str] = Counter()
            self._statuses: Counter[int] = Counter()

    def connection(self) -> None:
        with self._lock:
            self._connections += 1

    def request(self, info: RequestInfo) -> None:
        with self._lock:
            self._requests.append(info)
            self._lock.notify_all()

    def fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults[type(fault).__name__] += 1

    def response(self, code: int) -> None:
        with self._lock:
            self._statuses[code] += 1

    def snapshot(self) -> ServerStats:
        with self._lock:
            requests = list(self._requests)
            return ServerStats(
                connections=self._connections,
                requests=len(requests),
                requests_by_verb=Counter(r.verb for r in requests),
                requests_by_method=Counter(r.method for r in requests),
                requests_by_path=Counter(r.path for r in requests),
                faults_by_kind=Counter(self._faults),
                responses_by_status=Counter(self._statuses),
            )

    def count(self, verb: str | None, path: str | None) -> int:
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            return self._count(verb, pattern)

    def _count(self, verb: str | None, pattern: re.Pattern[str] | None) -> int:
        return sum(
            1
            for r in self._requests
            if verb_matches(verb, r) and (pattern is None or pattern.search(r.path))
        )

    def wait(self, count: int, verb: str | None, path: str | None, timeout: float) -> bool:
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            return self._lock.wait_for(lambda: self._count(verb, pattern) >= count, timeout)


def _seconds(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} must be a number of seconds")
    if not 0 <= value < float("inf") or (positive and value == 0):
        raise ValueError(f"{name}={value!r} must be a finite number of seconds > 0")
    return float(value)


class FakeApiServer:
    """A fault-injecting Kubernetes API server on loopback, for tests.

    It speaks real HTTP/1.1 with keep-alive (optionally TLS and mutual TLS) from a background
    thread, serves enough of the API for a controller (CRUD, three kinds of patch, label and
    field selectors, pagination, watches with bookmarks and 410 Gone, discovery for
    ``DynamicClient``) and, on request, misbehaves: see ``inject`` and ``inject_random``.

    Args:
        host: a loopback address to listen on.
        port: 0 picks a free port.
        tls: serve HTTPS with a throwaway CA (needs ``trustme``, in the ``testing`` extra).
        tls_names: extra DNS names or IPs for the serving certificate.
        client_cert: require a client certificate (mutual TLS); ``configuration()`` has one.
        custom_resources: custom resources to serve as if their CRDs were installed.
        token: the bearer token ``configuration()`` and ``write_kubeconfig()`` hand out.
        authenticate: answer 401 to resource requests without ``Authorization: Bearer <token>``.
        event_window: how many changes watches can replay; older versions get 410 Gone.
        bookmark_interval: seconds between BOOKMARK events on ``allowWatchBookmarks`` watches.

    Example:
        >>> import urllib.request
        >>> with FakeApiServer() as server:
        ...     server.inject(Delay(0.01), path="^/healthz$")
        ...     with urllib.request.urlopen(server.url + "/healthz") as response:
        ...         response.read()
        ...     server.request_count(path="^/healthz$")
        b'ok'
        1
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        tls_names: Sequence[str] = (),
        client_cert: bool = False,
        custom_resources: Iterable[CustomResource] = (),
        token: str = DEFAULT_TOKEN,
        authenticate: bool = False,
        event_window: int = DEFAULT_EVENT_WINDOW,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"host={host!r} must be a loopback address (127.0.0.0/8 or ::1)")
        if client_cert and not tls:
            raise ValueError("client_cert=True needs tls=True")
        if isinstance(tls_names, str):
            raise TypeError(f"tls_names={tls_names!r} must be a list of names, not a string")
        if isinstance(event_window, bool) or not isinstance(event_window, int) or event_window < 1:
            raise ValueError(f"event_window={event_window!r} must be an int >= 1")
        if tls:
            require_trustme()
        self._host = host
        self._requested_port = port
        self._tls_enabled = tls
        self._tls_names = list(tls_names)
        self._client_cert = client_cert
        self._registry = Registry(custom_resources)
        self._token = token
        self._authenticate = authenticate
        self._event_window = event_window
        self._bookmark_interval = _seconds("bookmark_interval", bookmark_interval, positive=True)
        self._faults = FaultRules()
        self._stats = _Stats()
        self._store = Store(self._registry, event_window=event_window)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._httpd: _HttpServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._tls: TlsMaterial | None = None
        self._by_client: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        """Listen and serve from a background thread; returns the server itself."""
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("a FakeApiServer can be started once")
        if self._tls_enabled:
            self._tls = make_tls_material(self._tls_names, client_cert=self._client_cert)
        try:
            self._httpd = _HttpServer((self._host, self._requested_port), self)
        except OSError:
            if self._tls is not None:
                self._tls.cleanup()
            raise
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-api-server:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        log.debug("fake API server listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, release stalled requests, close every connection and join threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._store.close()
        httpd = self._httpd
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            _shutdown(conn)
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._serve_thread is not None:
            self._serve_thread.join(_JOIN_SECONDS)
        if self._tls is not None:
            self._tls.cleanup()
        log.debug("fake API server on %s stopped", self.url)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and client configuration -------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started: call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` or ``https://...``."""
        scheme = "https" if self._tls_enabled else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ca_cert_path(self) -> Path | None:
        """The PEM file of the CA that signed the serving certificate (TLS only)."""
        return self._tls.ca_cert if self._tls is not None else None

    @property
    def token(self) -> str:
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        """Rotate the bearer token: from now on only ``value`` is accepted (``authenticate``)."""
        self._token = value

    def issue_client_cert(
        self, cert: str | Path, key: str | Path, *, common_name: str = "resilient-kube-test"
    ) -> None:
        """Write a new client certificate and key, signed by this server's CA (``client_cert``),
        each file replaced atomically: a certificate rotated on disk, as cert-manager does."""
        if self._tls is None or not self._client_cert:
            raise RuntimeError("issue_client_cert needs a started server with client_cert=True")
        self._tls.issue_client_cert(Path(cert), Path(key), common_name)

    def requests_by_client(self) -> dict[str, int]:
        """Requests served by the common name of the client certificate they came with."""
        with self._lock:
            return dict(self._by_client)

    def accepts(self, authorization: str | None) -> bool:
        """Whether ``authenticate`` lets in a request with this ``Authorization`` header.

        Only ``Bearer <token>``; a subclass may take more (tokens that carry their own expiry).
        """
        return authorization == f"Bearer {self._token}"

    def configuration(self) -> Configuration:
        """Return a ready ``kubernetes.client.Configuration`` for this server."""
        from kubernetes.client import Configuration

        config = Configuration(
            host=self.url,
            # "authorization" is the key every release reads: kubernetes 37 keeps "BearerToken"
            # with "authorization" as its alias, 31-36 know only "authorization".
            api_key={"authorization": self._token},
            api_key_prefix={"authorization": "Bearer"},
        )
        if self._tls is not None:
            config.ssl_ca_cert = str(self._tls.ca_cert)
            if self._tls.client_cert is not None and self._tls.client_key is not None:
                config.cert_file = str(self._tls.client_cert)
                config.key_file = str(self._tls.client_key)
        return config

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (JSON, which is YAML) and return its path."""
        cluster: dict[str, str] = {"server": self.url}
        user: dict[str, str] = {"token": self._token}
        if self._tls is not None:
            cluster["certificate-authority"] = str(self._tls.ca_cert)
            if self._tls.client_cert is not None and self._tls.client_key is not None:
                user["client-certificate"] = str(self._tls.client_cert)
                user["client-key"] = str(self._tls.client_key)
        context = {"cluster": "fake", "user": "fake", "namespace": namespace}
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
            "preferences": {},
        }
        target = Path(path)
        target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return target

    # -- faults and counters ----------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        *,
        verb: str | None = None,
        path: str | None = None,
        resource: str | None = None,
        times: int | None = 1,
        seconds: float | None = None,
    ) -> None:
        """Serve ``fault`` to the next ``times`` matching requests (``None``: forever).

        Args:
            fault: a ``StatusFault``, ``Delay``, ``Stall``, ``ResetConnection``,
                ``CloseConnection``, ``TruncatedBody``, ``SilentWatch`` or ``Overload``.
            verb: an HTTP method in upper case (``"GET"``) or a Kubernetes verb in lower
                case (``"get"``, ``"list"``, ``"watch"``, ``"create"``, ``"update"``,
                ``"patch"``, ``"delete"``, ``"deletecollection"``).
            path: a regular expression searched in the request path (no query string).
            resource: a resource plural such as ``"configmaps"``.
            times: how many requests get the fault.
            seconds: the rule is gone this many seconds from now, ``times`` or not: an
                outage or an overload that lasts a while (``None``: until used up).

        Rules apply in the order they were injected and the first match wins. Safe to call
        from any thread while the server runs.
        """
        self._faults.add(
            fault, verb=verb, path=path, resource=resource, times=times, seconds=seconds
        )

    def inject_random(
        self,
        fault: Fault,
        probability: float,
        *,
        seed: int | str,
        verb: str | None = None,
        path: str | None = None,
        resource: str | None = None,
        times: int | None = None,
        seconds: float | None = None,
    ) -> None:
        """Serve ``fault`` to each matching request with ``probability``, reproducibly.

        The draws come from ``random.Random(seed)``, one per matching request, so the same
        requests in the same order get the same faults. ``times`` caps how many are served,
        ``seconds`` how long the rule lasts.
        """
        self._faults.add(
            fault, verb=verb, path=path, resource=resource, times=times,
            probability=probability, seed=seed, seconds=seconds,
        )  # fmt: skip

    def clear_faults(self) -> None:
        """Forget every injected fault (requests already stalled stay stalled)."""
        self._faults.clear()

    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    def request_count(self, verb: str | None = None, path: str | None = None) -> int:
        """Count requests by ``verb`` (as in ``inject``) and ``path`` (a regex searched)."""
        check_verb(verb)
        return self._stats.count(verb, path)

    def wait_for_requests(
        self,
        count: int,
        *,
        verb: str | None = None,
        path: str | None = None,
        timeout: float = 5.0,
    ) -> bool:
        """Wait until ``request_count(verb, path)`` reaches ``count``; False on timeout.

        The bounded way for a test to know a request from another thread has arrived
        (for example one that is now stalled), instead of sleeping.
        """
        check_verb(verb)
        return self._stats.wait(count, verb, path, _seconds("timeout", timeout, positive=False))

    def reset_stats(self) -> None:
        """Zero every counter."""
        self._stats.reset()

    def compact(self) -> int:
        """Forget every change so far, as an etcd compaction does; return the compacted version.

        Watches from an older ``resourceVersion`` then get 410 Gone (an ``ERROR`` event), and so
        do ``continue`` tokens of lists begun before it. Lists and new watches are unaffected.
        """
        return self._store.compact()

    # -- connection bookkeeping for the handler ---------------------------------------------

    def _register(self, conn: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections.add(conn)
            return True

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.add(thread)
        self._stats.connection()

    def _untrack(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(thread)

    # -- the API ----------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str]) -> _Route:
        if path in _HEALTH_PATHS or path.startswith(("/healthz/", "/readyz/", "/livez/")):
            return _Route(method.lower(), "health")
        parts = [unquote(p) for p in path.split("/") if p]
        registry = self._registry
        document: dict[str, Any] | None = None
        if parts == ["version"]:
            document = dict(_VERSION)
        elif parts == ["api"]:
            document = registry.api_versions(f"{self._host}:{self.port}")
        elif parts == ["apis"]:
            document = registry.api_group_list()
        elif len(parts) == 2 and parts[0] == "apis":
            document = registry.api_group(parts[1])
        elif parts == ["api", "v1"]:
            document = registry.api_resource_list("", "v1")
        elif len(parts) == 3 and parts[0] == "apis":
            document = registry.api_resource_list(parts[1], parts[2])
        if document is not None:
            return _Route(method.lower(), "discovery", document=document)
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) > 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return _Route(method.lower(), "unknown")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            scoped = registry.find(group, version, rest[2])
            if scoped is not None and scoped.namespaced:
                namespace, rest = rest[1], rest[2:]
        rt = registry.find(group, version, rest[0])
        if rt is None or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status"):
            return _Route(method.lower(), "unknown")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if not rt.namespaced:
            namespace = ""
        elif name is not None and namespace is None:
            return _Route(method.lower(), "unknown")
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        if method == "GET":
            watching = query.get("watch", "").lower() in ("true", "1")
            verb = "get" if name is not None else "watch" if watching else "list"
        elif method == "DELETE" and name is None:
            verb = "deletecollection"
        return _Route(verb, "resource", rt, namespace, name, subresource)

    def _respond(
        self, method: str, route: _Route, query: dict[str, str], content_type: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Do one non-watch API request; returns the status code and the JSON body."""
        if route.kind == "discovery" and route.document is not None:
            return 200, route.document
        rt = route.rt
        if route.kind != "resource" or rt is None:
            raise ApiStatusError(404, "the server could not find the requested resource")
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise ApiStatusError(400, f"the request body is not valid JSON: {exc}") from exc
        store, name = self._store, route.name
        namespace = route.namespace if route.namespace is not None else ""
        if route.verb == "get" and name is not None:
            return 200, store.get(rt, namespace, name)
        if route.verb == "list":
            return 200, self._list(rt, route.namespace, query)
        if route.verb == "create" and name is None:
            if rt.namespaced and route.namespace is None:
                raise ApiStatusError(405, f"create of {rt.plural} needs a namespace in the path")
            return 201, store.create(rt, namespace, payload)
        if route.verb == "update" and name is not None:
            return 200, store.replace(rt, namespace, name, payload, subresource=route.subresource)
        if route.verb == "patch" and name is not None:
            return 200, store.patch(
                rt, namespace, name, content_type, payload, subresource=route.subresource
            )
        if route.verb == "delete" and name is not None and route.subresource is None:
            deleted = store.delete(
                rt, namespace, name, payload if isinstance(payload, dict) else None
            )
            return 200, self._deleted_body(rt, deleted)
        if route.verb == "deletecollection":
            selected = self._matcher(query)
            items = store.delete_collection(rt, route.namespace, selected)
            meta = {"resourceVersion": str(store.resource_version)}
            return 200, {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                         "items": items}  # fmt: skip
        raise ApiStatusError(405, f"the server does not allow {method} on this path")

    def _deleted_body(self, rt: ResourceType, deleted: Object) -> dict[str, Any]:
        meta = deleted["metadata"]
        if rt.delete_returns_object or meta.get("finalizers"):
            return deleted
        details: dict[str, Any] = {"name": meta["name"], "kind": rt.plural, "uid": meta["uid"]}
        if rt.group:
            details["group"] = rt.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details}  # fmt: skip

    @staticmethod
    def _matcher(query: dict[str, str]) -> Matcher:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"))
        except ValueError as exc:
            raise ApiStatusError(400, f"unable to parse requirement: {exc}") from exc
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> Object:
        limit: int | None = None
        if query.get("limit"):
            try:
                limit = int(query["limit"])
            except ValueError as exc:
                raise ApiStatusError(400, f"limit={query['limit']!r} is not an integer") from exc
        page: ListResult = self._store.list_page(
            rt,
            namespace,
            self._matcher(query),
            selected=bool(query.get("labelSelector") or query.get("fieldSelector")),
            limit=limit if limit and limit > 0 else None,
            continue_token=query.get("continue") or None,
        )
        meta: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta,
                "items": page.items}  # fmt: skip


def _shutdown(conn: socket.socket) -> None:
    """Wake a thread blocked on ``conn`` without closing the file descriptor under it.

    ``socket.socket.shutdown`` skips ``SSLSocket.shutdown``, which would drop the TLS state
    another thread is reading with.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(conn, socket.SHUT_RDWR)


def _drain(conn: socket.socket, timeout: float = 1.0) -> None:
    """Wait (bounded) until the kernel has sent and seen acknowledged everything written.

    A reset (``SO_LINGER`` 0) throws away unsent data: the events before it must reach the client.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            unsent = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return
        if not unsent:
            return
        time.sleep(0.001)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: a burst of new connections overflows it and the
    # kernel drops SYNs, which costs the client a 1 s retransmit. A real API server listens
    # with the system's maximum.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], app: FakeApiServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the address: a DNS query we never want.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"fake-api-server:{self.server_address[1]}:conn",
            daemon=True,
        )
        self.app._track(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.app._untrack(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fake API server: connection from %s ended", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "resilient-kube-fake-apiserver"
    sys_version = ""
    # Headers and body go out as separate writes; with Nagle on, delayed ACKs add 40 ms.
    disable_nagle_algorithm = True
    server: _HttpServer
    #: The common name of the client certificate this connection came with (mutual TLS).
    client_name: str | None = None

    # -- connection -------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        # Every answer, errors from http.server included, starts here.
        self.server.app._stats.response(code)
        super().send_response(code, message)

    def setup(self) -> None:
        app = self.server.app
        raw: socket.socket = self.request
        if not app._register(raw):
            raw.close()
            raise ConnectionAbortedError("the server is stopping")
        if app._tls is not None:
            raw.settimeout(_HANDSHAKE_SECONDS)
            try:
                tls = app._tls.context.wrap_socket(raw, server_side=True)
            finally:
                app._unregister(raw)
            tls.settimeout(None)
            self.request = tls
            self.client_name = _common_name(tls.getpeercert())
            if not app._register(tls):
                tls.close()
                raise ConnectionAbortedError("the server is stopping")
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.app._unregister(self.connection)
            self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake API server: %s " + format, self.client_address[0], *args)

    def _drop(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        _shutdown(self.connection)

    # -- requests ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        route = app._route(self.command, path, query)
        resource = route.rt.plural if route.rt is not None else None
        info = RequestInfo(self.command, route.verb, path, resource)
        app._stats.request(info)
        if self.client_name is not None:
            with app._lock:
                app._by_client[self.client_name] = app._by_client.get(self.client_name, 0) + 1
        body = self._read_body()
        if body is None:
            return
        picked = app._faults.pick(info)
        fault, capacity = picked if picked is not None else (None, None)
        if fault is not None:
            app._stats.fault(fault)
            log.debug("fake API server: %s %s gets %r", self.command, path, fault)
        if isinstance(fault, Overload):
            assert capacity is not None  # every Overload rule has its capacity
            if not capacity.take():
                self._send_status_fault(fault.refusal(capacity.refuse()))
                return
            try:
                stopping = app._stopping.wait(fault.work)
            finally:
                capacity.give_back()
            if stopping:
                self._drop()
                return
        if isinstance(fault, StatusFault):
            self._send_status_fault(fault)
            return
        if isinstance(fault, Stall):
            app._stopping.wait()
            self._drop()
            return
        if isinstance(fault, ResetConnection):
            # SO_LINGER with a zero timeout turns close() into a RST (RFC 793 ABORT).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if isinstance(fault, CloseConnection):
            self._drop()
            return
        if isinstance(fault, Delay) and app._stopping.wait(fault.seconds):
            self._drop()
            return
        if route.kind == "health":
            self._send(200, b"ok", content_type="text/plain; charset=utf-8")
            return
        if app._authenticate and not app.accepts(self.headers.get("Authorization")):
            self._send_json(401, status_body(401, "Unauthorized"))
            return
        if is_websocket(self):  # exec, attach, port-forward (_websocket.py)
            serve_websocket(self)
            return
        truncate = isinstance(fault, TruncatedBody)
        if route.verb == "watch":
            cut = fault if isinstance(fault, (SilentWatch, ResetWatch, EndWatch)) else None
            self._watch(route, query, truncate=truncate, cut=cut)
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            code, document = app._respond(self.command, route, query, content_type, body)
        except ApiStatusError as exc:
            code, document = exc.code, exc.body
        self._send_json(code, document, truncate=truncate)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return None

    # -- answers ----------------------------------------------------------------------------

    def _send(
        self,
        code: int,
        data: bytes,
        *,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        truncate: bool = False,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if truncate:
            self.wfile.write(data[: len(data) // 2])
            self._drop()
        else:
            self.wfile.write(data)

    def _send_json(
        self,
        code: int,
        document: dict[str, Any],
        *,
        headers: Iterable[tuple[str, str]] = (),
        truncate: bool = False,
    ) -> None:
        self._send(code, json.dumps(document).encode(), headers=headers, truncate=truncate)

    def _send_status_fault(self, fault: StatusFault) -> None:
        headers = []
        retry_after = fault.retry_after_header()
        if retry_after is not None:
            headers.append(("Retry-After", retry_after))
        details = None
        if fault.details_retry_after_seconds is not None:
            details = {"retryAfterSeconds": fault.details_retry_after_seconds}
        message = fault.message or f"injected fault: HTTP {fault.code}"
        body = status_body(fault.code, message, reason=fault.reason, details=details)
        self._send_json(fault.code, body, headers=headers)

    # -- watch ------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    def _client_gone(self) -> bool:
        """A watch client never sends anything, so readable means it closed or reset."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable)

    def _watch(
        self,
        route: _Route,
        query: dict[str, str],
        *,
        truncate: bool,
        cut: SilentWatch | ResetWatch | EndWatch | None,
    ) -> None:
        app, rt = self.server.app, route.rt
        assert rt is not None  # Defensive: only resource routes have the watch verb
        store = app._store
        try:
            matches = app._matcher(query)
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            since = query.get("resourceVersion", "")
            cursor = int(since) if since not in ("", "0") else None
        except ApiStatusError as exc:
            self._send_json(exc.code, exc.body)
            return
        except ValueError as exc:
            self._send_json(400, status_body(400, f"invalid watch parameter: {exc}"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if truncate:
            piece = b'{"type":"ADDED","object":{"kind":"'
            self.wfile.write(b"%x\r\n%b" % (len(piece) * 2, piece))
            self._drop()
            return
        pending: list[tuple[str, Object]] = []
        if cursor is None:
            objects, cursor = store.snapshot(rt, route.namespace, matches)
            pending = [("ADDED", obj) for obj in objects]
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        now = time.monotonic()
        deadline = now + timeout if timeout else None
        next_bookmark = now + app._bookmark_interval if bookmarks else None
        sent = 0
        cut_after = cut.after_events if cut is not None else None
        try:
            while True:
                for kind, obj in pending:
                    if cut_after is not None and sent >= cut_after:
                        break
                    self._event(kind, obj)
                    sent += 1
                if cut_after is not None and sent >= cut_after:
                    self._cut(cut)
                    return
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break  # timeoutSeconds: end the stream cleanly
                if next_bookmark is not None and now >= next_bookmark:
                    meta = {"resourceVersion": str(cursor)}
                    self._event("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                             "metadata": meta})  # fmt: skip
                    next_bookmark = now + app._bookmark_interval
                    sent += 1  # a fault's after_events counts bookmarks too
                    if cut_after is not None and sent >= cut_after:
                        self._cut(cut)
                        return
                if app._stopping.is_set() or self._client_gone():
                    self._drop()
                    return
                wait = min(
                    _POLL_SECONDS,
                    deadline - now if deadline is not None else _POLL_SECONDS,
                    next_bookmark - now if next_bookmark is not None else _POLL_SECONDS,
                )
                events, cursor = store.wait_for_events(rt, route.namespace, cursor, max(wait, 0))
                pending = filter_events(events, matches)
            self.wfile.write(b"0\r\n\r\n")
        except ApiStatusError as exc:
            # Upstream answers an expired resourceVersion inside the stream (HTTP 200).
            self._end_with_error(exc)
        except OSError:
            self.close_connection = True

    def _cut(self, cut: SilentWatch | ResetWatch | EndWatch | None) -> None:
        """End a watch the way ``cut`` says: silence, a TCP reset, or a clean early end."""
        if isinstance(cut, EndWatch):
            self.wfile.write(b"0\r\n\r\n")
            return
        if isinstance(cut, ResetWatch):
            _drain(self.connection)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        self.server.app._stopping.wait()
        self._drop()

    def _end_with_error(self, exc: ApiStatusError) -> None:
        try:
            self._event("ERROR", exc.body)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


def _common_name(certificate: Any) -> str | None:
    """The subject's common name of a peer certificate as ``getpeercert()`` gives it."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
