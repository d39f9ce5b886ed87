"""exec, attach and port-forward over a websocket dialled the way the transport dials.

``kubernetes.stream.stream(api_method, ...)`` makes the generated method build the request, then
sends it over websocket-client instead of urllib3. It has two problems on a resilient client:

* It swaps ``call_api`` (kubernetes 37) or ``request`` (31-36) *on the shared ApiClient* while
  the call runs, so an ordinary call from another thread at that moment goes out as a websocket,
  or the exec as plain HTTP (kubernetes-client/python #928). Here the swap happens on a private
  shallow copy of the client, made for the one call; the shared client is never touched.
* websocket-client dials on its own: no connect timeout, no DNS cache, ``getaddrinfo`` on every
  connect, no keepalive, and every failure comes back as ``ApiException(status=0)``. Here the
  socket comes from the transport's dialer (``_dialer.create_connection``: the client's DNS cache,
  Happy Eyeballs, ``connect_timeout``, TCP keepalive and ``TCP_USER_TIMEOUT``), goes through the
  configuration's HTTP proxy with ``CONNECT``, and gets TLS from the configuration (CA, client
  certificate, ``verify_ssl``, ``assert_hostname``, ``tls_server_name``); websocket-client only
  does the handshake and the framing on that socket.

Errors: a failure to reach or hear the server raises the transport's own errors
(``NameResolutionError``, ``ConnectError``, ``ConnectTimeout``, ``TLSError``, ``ReadTimeout``,
``ConnectionReset``); an HTTP answer that refuses the upgrade (403, 404, ...) raises
``kubernetes.client.ApiException`` with that status, body and headers, as any other call would.
Nothing is retried: an exec that may have started must not run twice.
"""

from __future__ import annotations

import base64
import copy
import functools
import socket
import ssl
import time
from collections.abc import Callable
from io import BytesIO, StringIO
from typing import Any, NoReturn
from urllib.parse import urlsplit

import kubernetes.client
import urllib3.exceptions as u3
import websocket
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import ws_client
from kubernetes.stream.stream import _websocket_request

from . import errors
from ._connection import socket_options
from ._dialer import create_connection
from ._events import NO_CODE, EventSink
from ._settings import DEFAULT_SETTINGS, Settings

__all__ = ["portforward", "stream"]

#: The subprotocols kube-apiserver speaks for exec and attach, newest first (as upstream asks).
_PROTOCOLS = (
    f"{ws_client.V5_CHANNEL_PROTOCOL},{ws_client.V4_CHANNEL_PROTOCOL}"
    if hasattr(ws_client, "V5_CHANNEL_PROTOCOL")
    else "v4.channel.k8s.io"
)


def stream(api_method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.stream`` through resilient_kube's dialer; thread safe on a shared client.

    Same arguments and results as the official function: ``_preload_content=False`` returns the
    ``WSClient``, otherwise the output once the command ends (``_request_timeout`` bounds that
    wait, as upstream).

    Raises:
        TransportError: the websocket could not be opened (a subclass says why).
        kubernetes.client.ApiException: the API server refused the upgrade with that status.

    Example:
        >>> out = stream(core.connect_get_namespaced_pod_exec, "web-0", "default",  # doctest: +SKIP
        ...              command=["date"], stderr=True, stdin=False, stdout=True, tty=False)
    """
    return _request(_exec_call, None, api_method, *args, **kwargs)


def portforward(api_method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.portforward`` through resilient_kube's dialer (see ``stream``)."""
    return _request(_portforward_call, {"_preload_content": False}, api_method, *args, **kwargs)


def _request(
    call: Callable[..., Any],
    force_kwargs: dict[str, Any] | None,
    api_method: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Run upstream's request building on a private copy of the client and of the API object."""
    api = api_method.__self__  # type: ignore[attr-defined]
    shared = api.api_client
    # Upstream assigns call_api / request on the client it finds: give it one of its own. A
    # shallow copy shares the configuration, pool and caches, and closes nothing when dropped.
    private_api = copy.copy(api)
    private_api.api_client = copy.copy(shared)
    if hasattr(private_api, "_owned_api_client"):  # kubernetes 37: never close the shared one
        private_api._owned_api_client = None
    bound = api_method.__func__.__get__(private_api)  # type: ignore[attr-defined]
    return _websocket_request(functools.partial(call, shared), force_kwargs, bound, *args, **kwargs)


# --- what the generated method's request becomes ----------------------------------------------


def _exec_call(
    api_client: kubernetes.client.ApiClient,
    configuration: kubernetes.client.Configuration,
    method: str,
    url: str,
    **kwargs: Any,
) -> Any:
    """Upstream's ``websocket_call`` on our websocket."""
    url = ws_client.get_websocket_url(url, kwargs.get("query_params"))
    timeout = kwargs.get("_request_timeout")
    binary = bool(kwargs.get("binary", False))
    sock = _open(api_client, configuration, method, url, kwargs.get("headers"), timeout)
    client = _WSClient(sock, capture_all=kwargs.get("capture_all", True), binary=binary)
    if not kwargs.get("_preload_content", True):
        return client
    shown = url.partition("?")[0]
    try:
        client.run_forever(timeout=timeout if isinstance(timeout, (int, float)) else None)
        output = client.read_all()
    except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
        sock.shutdown()  # type: ignore[no-untyped-call]  # no closing handshake with a mute peer
        _fail(method, shown, errors.ReadTimeout, "the session stopped mid-frame", exc)
    except (websocket.WebSocketException, OSError) as exc:
        sock.shutdown()  # type: ignore[no-untyped-call]
        _fail(method, shown, errors.ConnectionReset, f"the session broke ({exc})", exc)
    client.close()
    data = output if binary else "".join(output)
    if hasattr(ws_client.WSResponse, "_fields"):  # kubernetes 31-36: a namedtuple of the data
        return ws_client.WSResponse(data)
    return ws_client.WSResponse(data=data, status=200)


def _portforward_call(
    api_client: kubernetes.client.ApiClient,
    configuration: kubernetes.client.Configuration,
    method: str,
    url: str,
    **kwargs: Any,
) -> Any:
    """Upstream's ``portforward_call`` on our websocket."""
    query_params = kwargs.get("query_params")
    if query_params is None:
        from urllib.parse import parse_qsl

        query_params = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    ports: list[int] = []
    for name, value in query_params:
        if name == "ports":
            for port in str(value).split(","):
                try:
                    number = int(port)
                except ValueError:
                    raise kubernetes.client.ApiValueError(f"Invalid port number: {port}") from None
                if not 0 < number < 65536 or number in ports:
                    raise kubernetes.client.ApiValueError(f"Invalid or repeated port: {port}")
                ports.append(number)
    if not ports:
        raise kubernetes.client.ApiValueError("Missing required parameter `ports`")
    url = ws_client.get_websocket_url(url, query_params)
    sock = _open(api_client, configuration, method, url, kwargs.get("headers"), None)
    return ws_client.PortForward(sock, ports)


class _WSClient(ws_client.WSClient):  # type: ignore[misc]
    """Upstream's channel client over a websocket that is already open.

    ``WSClient.__init__`` dials itself; this sets the same fields (those of every release from
    31 to 37) around the given socket instead.
    """

    def __init__(self, sock: websocket.WebSocket, *, capture_all: bool, binary: bool) -> None:
        self._connected = False
        self._channels: dict[int, Any] = {}
        self._closed_channels: set[int] = set()
        self.binary = binary
        self.newline = b"\n" if binary else "\n"
        if capture_all:
            self._all: Any = BytesIO() if binary else StringIO()
        else:
            self._all = ws_client._IgnoredIO() if hasattr(ws_client, "_IgnoredIO") else StringIO()
        self.sock = sock
        self.subprotocol = getattr(sock, "subprotocol", None)
        if not self.subprotocol:
            for name, value in (sock.getheaders() or {}).items():
                if name.lower() == "sec-websocket-protocol":
                    self.subprotocol = value
        self._connected = True
        self._returncode = None

    def close(self, **kwargs: Any) -> None:
        """Close the session, and the socket even when the server closed the websocket first."""
        super().close(**kwargs)
        # websocket-client's close() leaves the socket open once it is no longer "connected".
        self.sock.shutdown()  # type: ignore[no-untyped-call]


# --- opening the websocket ---------------------------------------------------------------------


def _open(  # noqa: PLR0917  the websocket request's own arguments
    api_client: kubernetes.client.ApiClient,
    configuration: kubernetes.client.Configuration,
    method: str,
    url: str,
    headers: dict[str, str] | None,
    request_timeout: object,
) -> websocket.WebSocket:
    """Open the websocket; the client's event sink hears the attempt, as for any call."""
    sink: EventSink = getattr(api_client, "events", None) or EventSink()
    parts = urlsplit(url)
    label = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"
    started = time.monotonic()
    code = NO_CODE
    try:
        ws = _upgrade(api_client, configuration, method, url, headers, request_timeout, sink)
        code = "101"
    except ApiException as exc:
        code = str(exc.status)
        raise
    finally:
        sink.attempt(method, label, code, time.monotonic() - started, 0, 0)
    return ws


def _upgrade(  # noqa: PLR0917  one call site
    api_client: kubernetes.client.ApiClient,
    configuration: kubernetes.client.Configuration,
    method: str,
    url: str,
    headers: dict[str, str] | None,
    request_timeout: object,
    sink: EventSink,
) -> websocket.WebSocket:
    """Dial, tunnel, TLS and the websocket handshake, each phase bounded and mapped to an error."""
    settings: Settings = getattr(api_client, "settings", DEFAULT_SETTINGS)
    connect, read = settings.connect_timeout, settings.read_timeout
    if isinstance(request_timeout, (int, float)) and not isinstance(request_timeout, bool):
        connect = request_timeout if connect is None else min(connect, float(request_timeout))
        read = float(request_timeout)
    elif isinstance(request_timeout, tuple) and len(request_timeout) == 2:
        connect, read = request_timeout
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"  # the query may carry a command
    fail = functools.partial(_fail, method, shown)
    started = time.monotonic()
    proxy = _proxy_for(configuration, host)
    dial_host, dial_port = (proxy.hostname or "", proxy.port or 80) if proxy else (host, port)
    try:
        sock = create_connection(
            getattr(api_client, "_dns", None),
            dial_host,
            dial_port,
            timeout=connect,
            socket_options=socket_options(settings),
        )
    except socket.gaierror as exc:
        fail(
            errors.NameResolutionError,
            f"name resolution failed for {dial_host}",
            exc,
            host=dial_host,
        )
    except TimeoutError as exc:
        fail(errors.ConnectTimeout, f"connect timeout ({connect} s)", exc)
    except OSError as exc:
        fail(errors.ConnectError, f"connection failed ({exc})", exc)
    sink.connection(f"{dial_host}:{dial_port}", "opened")
    try:
        left = None if connect is None else max(connect - (time.monotonic() - started), 0.001)
        sock.settimeout(left)
        if proxy is not None:
            _tunnel(sock, host, port, configuration, fail)
        if secure:
            server_name = getattr(configuration, "tls_server_name", None) or host
            sock = _tls_context(configuration).wrap_socket(sock, server_hostname=server_name)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        sock.close()
        fail(errors.TLSError, f"TLS handshake failed ({exc})", exc)
    except TimeoutError as exc:
        sock.close()
        fail(errors.ConnectTimeout, f"connect timeout ({connect} s) in the TLS handshake", exc)
    except OSError as exc:
        sock.close()
        fail(errors.ConnectError, f"connection failed ({exc})", exc)
    # The handshake is the server's answer to a request: read_timeout, as for any call. From
    # then on the same timeout bounds a frame that stops halfway and a send the peer does not
    # take; an idle session waits in poll(), where keepalive notices a dead peer.
    sock.settimeout(read)
    ws = websocket.WebSocket(skip_utf8_validation=False)
    try:
        ws.connect(  # type: ignore[no-untyped-call]
            url,
            socket=sock,
            header=_headers(headers),
            timeout=read,
            redirect_limit=0,
            suppress_origin=True,
        )
    except websocket.WebSocketBadStatusException as exc:
        sock.close()
        raise _api_exception(exc) from exc
    except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
        sock.close()
        fail(errors.ReadTimeout, f"no answer to the websocket upgrade in {read} s", exc)
    except (websocket.WebSocketException, OSError) as exc:
        sock.close()
        fail(errors.ConnectionReset, f"the websocket upgrade failed ({exc})", exc)
    return ws


def _headers(headers: dict[str, str] | None) -> list[str]:
    """The headers the API server needs: credentials and the subprotocols (as upstream sends)."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    out = []
    if "authorization" in lowered:
        out.append(f"authorization: {lowered['authorization']}")
    out.append(f"sec-websocket-protocol: {lowered.get('sec-websocket-protocol', _PROTOCOLS)}")
    return out


def _proxy_for(configuration: kubernetes.client.Configuration, host: str) -> Any:
    """The configuration's proxy URL (parsed) unless ``no_proxy`` exempts ``host``."""
    proxy = getattr(configuration, "proxy", None)
    if not proxy:
        return None
    for raw in (getattr(configuration, "no_proxy", None) or "").split(","):
        entry = raw.strip().lstrip(".")
        if entry and (entry in ("*", host) or host.endswith("." + entry)):
            return None
    return urlsplit(proxy)


def _tunnel(
    sock: socket.socket,
    host: str,
    port: int,
    configuration: kubernetes.client.Configuration,
    fail: Callable[..., NoReturn],
) -> None:
    """HTTP ``CONNECT host:port`` through the proxy ``sock`` is connected to."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    proxy_headers = dict(getattr(configuration, "proxy_headers", None) or {})
    proxy = urlsplit(configuration.proxy)
    if proxy.username and not any(k.lower() == "proxy-authorization" for k in proxy_headers):
        token = base64.b64encode(f"{proxy.username}:{proxy.password or ''}".encode()).decode()
        proxy_headers["Proxy-Authorization"] = f"Basic {token}"
    lines += [f"{k}: {v}" for k, v in proxy_headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            sock.close()
            fail(errors.ConnectError, "the proxy closed the connection during CONNECT", None)
        answer += chunk
    status = answer.split(b" ", 2)[1:2]
    if status != [b"200"]:
        sock.close()
        line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        fail(errors.ConnectError, f"the proxy refused CONNECT ({line})", None)


def _tls_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext:
    """TLS as the official REST client sets it up from the configuration."""
    if not configuration.verify_ssl:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        cafile = configuration.ssl_ca_cert
        if cafile is None:
            import certifi

            cafile = certifi.where()
        context = ssl.create_default_context(cafile=cafile)
        if configuration.assert_hostname is False:
            context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _api_exception(exc: websocket.WebSocketBadStatusException) -> ApiException:
    """The API server answered the upgrade with an HTTP error: the same exception as any call."""
    error = ApiException(status=exc.status_code, reason=exc.status_message or "")
    body = exc.resp_body
    error.body = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    error.headers = exc.resp_headers
    return error


def _fail(
    method: str,
    url: str,
    kind: type[errors.TransportError],
    what: str,
    cause: BaseException | None,
    **extra: Any,
) -> NoReturn:
    message = f"{method} {url}: {what}"
    # Derived from urllib3's errors like every TransportError: keep the reason urllib3 would give.
    reason = cause if isinstance(cause, Exception) else u3.ProtocolError(what)
    raise kind(message, method=method, url=url, attempts=1, last_error=reason, **extra) from cause
