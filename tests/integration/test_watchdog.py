"""The watchdog keeps ordinary calls' time on every path a connection can take.

Connecting (TCP, a proxy's CONNECT, TLS) is bounded by the connect timeout; once the request goes
out, the watchdog bounds the server's silence. Each test is a server that goes quiet somewhere
along that path, over loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from kubernetes import client

from resilient_kube import ApiClient, ConnectTimeout, ReadTimeout
from resilient_kube.testing import FakeApiServer, Stall
from tests.helpers.loopback import Relay, elapsed, raw_server

from .conftest import configmap


def connect_proxy(
    relays: list[Relay], *, delay: float = 0.0, tls: ssl.SSLContext | None = None
) -> str:
    """An HTTP CONNECT proxy (HTTPS with ``tls``) that answers CONNECT after ``delay`` seconds."""

    def handle(conn: socket.socket) -> None:
        if tls is not None:
            conn = relay.keep(tls.wrap_socket(conn, server_side=True))
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        port = int(request.split(b" ")[1].rsplit(b":", 1)[1])
        if relay.stop.wait(delay):
            return
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        relay.splice(conn, port)

    relay = Relay(handle)
    relays.append(relay)
    return f"{'https' if tls else 'http'}://127.0.0.1:{relay.port}"


def test_headers_that_stop_halfway_time_out_and_a_get_is_retried(relays: list[Relay]) -> None:
    # Shut down mid-headers, http.client may read the end of the stream as an empty answer.
    url = raw_server(relays, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    api_client = ApiClient(client.Configuration(host=url), read_timeout=0.3, max_attempts=2)
    took, error = elapsed(lambda: client.CoreV1Api(api_client).read_namespace("default"))
    assert isinstance(error, ReadTimeout)
    assert error.attempts == 2
    assert took < 2.0
    api_client.close()


def test_a_body_that_stalls_on_a_closing_connection_times_out(relays: list[Relay]) -> None:
    # With "Connection: close" http.client lets go of the connection's socket while the body
    # is still being read: the watch holds it.
    url = raw_server(
        relays,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nline 1\n",
    )
    api_client = ApiClient(client.Configuration(host=url), read_timeout=0.3, max_attempts=1)
    took, error = elapsed(
        lambda: client.CoreV1Api(api_client).read_namespaced_pod_log("pod", "default")
    )
    assert isinstance(error, ReadTimeout)
    assert took < 1.5
    api_client.close()


def test_a_slow_tls_handshake_is_connecting_not_silence(relays: list[Relay]) -> None:
    with FakeApiServer(tls=True) as server:

        def slow_handshake(conn: socket.socket) -> None:
            if not relay.stop.wait(0.8):  # longer than read_timeout, shorter than connect_timeout
                relay.splice(conn, server.port)

        relay = Relay(slow_handshake)
        relays.append(relay)
        configuration = server.configuration()
        configuration.host = f"https://127.0.0.1:{relay.port}"
        api_client = ApiClient(configuration, connect_timeout=5, read_timeout=0.5, max_attempts=1)
        took, error = elapsed(lambda: client.CoreV1Api(api_client).list_namespace())
        assert error is None
        assert took >= 0.8
        api_client.close()
        # Silence after such a handshake is still timed.
        server.inject(Stall(), verb="list", times=None)
        api_client = ApiClient(configuration, connect_timeout=5, read_timeout=0.5, max_attempts=1)
        took, error = elapsed(lambda: client.CoreV1Api(api_client).list_namespace())
        assert isinstance(error, ReadTimeout)
        assert 0.8 + 0.5 <= took < 3.0
        api_client.close()


def test_a_slow_proxy_connect_is_connecting_not_silence(relays: list[Relay]) -> None:
    with FakeApiServer(tls=True) as server:
        configuration = server.configuration()
        configuration.proxy = connect_proxy(relays, delay=0.8)
        api_client = ApiClient(configuration, connect_timeout=5, read_timeout=0.5, max_attempts=3)
        v1 = client.CoreV1Api(api_client)
        took, error = elapsed(lambda: v1.create_namespaced_config_map("default", configmap("p")))
        assert error is None
        assert server.request_count("create") == 1
        assert took >= 0.8
        api_client.close()


def test_through_an_https_proxy_to_an_https_server(relays: list[Relay], tmp_path: Path) -> None:
    # TLS inside TLS: the connection's socket is urllib3's SSLTransport, not a socket.
    proxy_ca = trustme.CA()
    proxy_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    proxy_ca.issue_cert("127.0.0.1").configure_cert(proxy_tls)
    with FakeApiServer(tls=True) as server:
        server.inject(Stall(), verb="list", times=None)
        configuration = server.configuration()
        bundle = tmp_path / "cas.pem"
        bundle.write_bytes(
            Path(str(configuration.ssl_ca_cert)).read_bytes() + proxy_ca.cert_pem.bytes()
        )
        configuration.ssl_ca_cert = str(bundle)
        configuration.proxy = connect_proxy(relays, tls=proxy_tls)
        api_client = ApiClient(configuration, read_timeout=0.5, max_attempts=1)
        v1 = client.CoreV1Api(api_client)
        assert v1.read_namespace("default").metadata.name == "default"  # through the proxy
        took, error = elapsed(v1.list_namespace)
        assert isinstance(error, ReadTimeout)
        assert took < 2.0
        api_client.close()
        # And the watchdog still keeps everyone else's time.
        direct = ApiClient(server.configuration(), read_timeout=0.5, max_attempts=1)
        took, error = elapsed(client.CoreV1Api(direct).list_namespace)
        assert isinstance(error, ReadTimeout)
        assert took < 2.0
        direct.close()


def slow_reader(relays: list[Relay], *, rate: float | None, think: float) -> str:
    """A server that takes request bodies in at ``rate`` bytes/s (None: never) and thinks."""

    def handle(conn: socket.socket) -> None:
        while True:
            head = b""
            while b"\r\n\r\n" not in head:
                if not (data := conn.recv(65536)):
                    return
                head += data
            head, _, body = head.partition(b"\r\n\r\n")
            length = next(
                (int(line.split(b":")[1]) for line in head.split(b"\r\n")[1:]
                 if line.lower().startswith(b"content-length:")),
                0,
            )  # fmt: skip
            while len(body) < length:
                if rate is None or relay.stop.wait(16384 / rate):
                    relay.stop.wait()
                    return
                body += conn.recv(16384)
            if relay.stop.wait(think):
                return
            answer = b'{"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "big"}}'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )

    relay = Relay(handle)
    relays.append(relay)
    return f"http://127.0.0.1:{relay.port}"


def big_configmap() -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name="big"), data={"x": "a" * 4_000_000})


def test_an_upload_the_server_takes_in_slowly_is_not_silence(relays: list[Relay]) -> None:
    # The request goes out for about 2 s, then the server thinks for most of read_timeout.
    url = slow_reader(relays, rate=2_000_000, think=0.6)
    api_client = ApiClient(client.Configuration(host=url), read_timeout=1.0, max_attempts=1)
    v1 = client.CoreV1Api(api_client)
    took, error = elapsed(lambda: v1.create_namespaced_config_map("default", big_configmap()))
    assert error is None
    assert took > 1.0 + 0.6  # longer than read_timeout in all
    api_client.close()


def test_an_upload_the_server_stops_taking_times_out(relays: list[Relay]) -> None:
    url = slow_reader(relays, rate=None, think=0)
    api_client = ApiClient(client.Configuration(host=url), read_timeout=0.5, max_attempts=3)
    v1 = client.CoreV1Api(api_client)
    took, error = elapsed(lambda: v1.create_namespaced_config_map("default", big_configmap()))
    assert isinstance(error, ReadTimeout)
    assert error.attempts == 1  # part of the POST may have arrived: never sent again
    assert took < 2.5
    api_client.close()


#: Runs in a network namespace of its own (``unshare -n``): its loopback only, where an iptables
#: rule can make the server go dark without touching the machine's network.
_GONE_DARK = """
import json, socket, subprocess, sys, threading, time
from kubernetes import client
from resilient_kube import ApiClient
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]
answer = b'{"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "default"}}'
def serve():
    conn, _ = listener.accept()
    while conn.recv(65536):
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                     b"Content-Length: %d\\r\\n\\r\\n%s" % (len(answer), answer))
threading.Thread(target=serve, daemon=True).start()
api = client.CoreV1Api(ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"),
    read_timeout=1.5, deadline=None, tcp_user_timeout=None, max_attempts=1))
api.read_namespace("default")  # the connection is pooled
subprocess.run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
               check=True)
began = time.monotonic()
try:
    api.read_namespace("default")
    error = None
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({"error": error, "took": time.monotonic() - began}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("iptables")),
    reason="needs root, unshare and iptables for a network namespace of its own",
)
def test_a_server_gone_dark_is_cut_at_read_timeout() -> None:
    # Nothing is acknowledged: the kernel retransmits the request, which is no sign of a server.
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _GONE_DARK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["error"] == "ReadTimeout"
    assert 1.5 <= result["took"] < 1.5 + 1.0


def test_a_stalled_tls_handshake_is_a_connect_timeout_retried_for_post(
    relays: list[Relay],
) -> None:
    # Issue 22, item 3: urllib3 reports a handshake that never completes as a read timeout
    # quoting the connect value, after sending; nothing was sent, and the limit is the connect
    # timeout.
    def silent(conn: socket.socket) -> None:
        relay.stop.wait(10)  # TCP accepted, TLS never answered

    relay = Relay(silent)
    relays.append(relay)
    configuration = client.Configuration(host=f"https://127.0.0.1:{relay.port}")
    api_client = ApiClient(configuration, connect_timeout=0.2, max_attempts=3, backoff_base=0.01)
    took, error = elapsed(
        lambda: client.CoreV1Api(api_client).create_namespaced_config_map("default", configmap("h"))
    )
    assert isinstance(error, ConnectTimeout)
    assert error.attempts == 3  # before sending: a POST may repeat it
    assert "connect timeout" in str(error)
    assert "read timeout" not in str(error)
    assert took < 3.0
    api_client.close()
