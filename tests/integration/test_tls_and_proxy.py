"""TLS and proxy settings of the Configuration keep working behind the transport (issue: core)."""

from __future__ import annotations

import http.client
import http.server
import socketserver
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from kubernetes import client

from resilient_kube import ApiClient, TLSError
from resilient_kube.testing import FakeApiServer


@pytest.fixture
def tls_server() -> Iterator[FakeApiServer]:
    with FakeApiServer(tls=True, tls_names=["api.kube.test"]) as server:
        yield server


def list_namespaces(configuration: client.Configuration, **tuning: Any) -> None:
    api_client = ApiClient(configuration, max_attempts=1, **tuning)
    try:
        client.CoreV1Api(api_client).list_namespace()
    finally:
        api_client.close()


def test_ca_file_verifies(tls_server: FakeApiServer) -> None:
    list_namespaces(tls_server.configuration())


@pytest.mark.skipif(
    not hasattr(client.Configuration(), "ca_cert_data"), reason="ca_cert_data came in kubernetes 37"
)
def test_ca_data_verifies(tls_server: FakeApiServer) -> None:
    configuration = tls_server.configuration()
    assert tls_server.ca_cert_path is not None
    configuration.ca_cert_data = tls_server.ca_cert_path.read_text()
    configuration.ssl_ca_cert = None
    list_namespaces(configuration)


def test_without_the_ca_verification_fails_and_verify_ssl_false_skips_it(
    tls_server: FakeApiServer,
) -> None:
    configuration = tls_server.configuration()
    configuration.ssl_ca_cert = None
    with pytest.raises(TLSError):
        list_namespaces(configuration)
    configuration.verify_ssl = False
    with pytest.warns(urllib3.exceptions.InsecureRequestWarning):  # as with the stock client
        list_namespaces(configuration)


def test_tls_server_name_checks_the_certificate_against_that_name(
    tls_server: FakeApiServer,
) -> None:
    configuration = tls_server.configuration()
    configuration.tls_server_name = "api.kube.test"  # in the certificate: accepted
    list_namespaces(configuration)
    configuration.tls_server_name = "other.kube.test"  # not in the certificate: refused
    with pytest.raises(TLSError):
        list_namespaces(configuration)


def test_assert_hostname_false_accepts_a_certificate_for_another_name() -> None:
    with FakeApiServer(tls=True, tls_names=["api.kube.test"]) as server:
        configuration = server.configuration()
        configuration.host = f"https://localhost:{server.port}"
        configuration.assert_hostname = False
        list_namespaces(configuration, dns_cache=False)


def test_client_certificates_are_sent() -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        list_namespaces(server.configuration())
        configuration = server.configuration()
        configuration.cert_file = configuration.key_file = None
        with pytest.raises((TLSError, client.ApiException)):
            list_namespaces(configuration)


class _ForwardProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A plain-HTTP forward proxy on loopback that relays absolute-form GETs and counts them."""

    daemon_threads = True

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ForwardProxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        self.server.forwarded.append(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=5)
        headers = {
            key: value for key, value in self.headers.items() if key.lower() != "proxy-connection"
        }
        upstream.request(
            "GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers
        )
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy() -> Iterator[_ForwardProxy]:
    server = _ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_proxy_is_used_and_no_proxy_bypasses_it(
    server: FakeApiServer, proxy: _ForwardProxy
) -> None:
    configuration = server.configuration()
    configuration.proxy = f"http://127.0.0.1:{proxy.server_address[1]}"
    list_namespaces(configuration)
    assert proxy.forwarded == [f"{server.url}/api/v1/namespaces"]
    assert server.request_count("list") == 1

    configuration.no_proxy = "127.0.0.1"
    list_namespaces(configuration)
    assert len(proxy.forwarded) == 1  # bypassed
    assert server.request_count("list") == 2


def test_endpoints_go_through_the_proxy_and_no_proxy_still_bypasses_it(
    proxy: _ForwardProxy,
) -> None:
    with FakeApiServer() as first, FakeApiServer() as second:
        configuration = first.configuration()
        configuration.host = f"http://kubernetes.invalid:{first.port}"  # the identity, not dialed
        configuration.proxy = f"http://127.0.0.1:{proxy.server_address[1]}"
        api_client = ApiClient(configuration, endpoints=[first.url, second.url])
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()
        v1.list_namespace()
        calls = [url for url in proxy.forwarded if url.endswith("/api/v1/namespaces")]
        assert sorted(calls) == sorted(
            [f"{first.url}/api/v1/namespaces", f"{second.url}/api/v1/namespaces"]
        )
        # The health checks went through the proxy too, as whole URLs.
        assert any(url.endswith("/readyz") for url in proxy.forwarded)
        assert all(e.state == "healthy" for e in api_client.stats().endpoints)
        api_client.close()
        # no_proxy is matched against the configured host, as the official client does.
        configuration.no_proxy = "kubernetes.invalid"
        forwarded = len(proxy.forwarded)
        api_client = ApiClient(
            configuration, endpoints=[first.url, second.url], health_interval=3600
        )
        client.CoreV1Api(api_client).list_namespace()
        api_client.close()
        assert first.request_count("list") + second.request_count("list") == 3
        assert len(proxy.forwarded) == forwarded  # bypassed
