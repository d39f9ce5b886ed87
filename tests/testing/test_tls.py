"""TLS and mutual TLS with the server's throwaway CA, and the kubeconfig it writes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from resilient_kube.testing import FakeApiServer

from .conftest import close, stock_client


def test_tls_fixture_serves_https(fake_api_server_tls: FakeApiServer) -> None:
    assert fake_api_server_tls.url.startswith("https://127.0.0.1:")
    assert fake_api_server_tls.ca_cert_path is not None
    api = stock_client(fake_api_server_tls)
    try:
        assert client.CoreV1Api(api).list_namespace().items
    finally:
        close(api)


def test_tls_without_the_ca_fails_verification(fake_api_server_tls: FakeApiServer) -> None:
    configuration = fake_api_server_tls.configuration()
    configuration.ssl_ca_cert = None
    configuration.retries = False
    api = client.ApiClient(configuration)
    try:
        # The stock client reports urllib3's SSLError as an ApiException with status 0.
        with pytest.raises(ApiException) as info:
            client.CoreV1Api(api).list_namespace()
        assert info.value.status == 0
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value.reason)
    finally:
        close(api)


def test_extra_tls_names() -> None:
    with FakeApiServer(tls=True, tls_names=["kubernetes.default.svc"]) as server:
        configuration = server.configuration()
        configuration.tls_server_name = "kubernetes.default.svc"
        configuration.retries = False
        api = client.ApiClient(configuration)
        try:
            assert client.CoreV1Api(api).list_namespace().items
        finally:
            close(api)


def test_mutual_tls() -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        api = stock_client(server)
        try:
            assert client.CoreV1Api(api).list_namespace().items
        finally:
            close(api)
        anonymous = server.configuration()
        anonymous.cert_file = anonymous.key_file = None
        anonymous.retries = False
        api = client.ApiClient(anonymous)
        try:
            # TLS 1.3 reports the missing certificate after the handshake, on the first read:
            # an SSLError (which the stock client wraps in ApiException) or a reset.
            with pytest.raises((ApiException, ProtocolError)):
                client.CoreV1Api(api).list_namespace()
        finally:
            close(api)


def test_client_cert_needs_tls() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        FakeApiServer(client_cert=True)


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeApiServer(host="192.0.2.1")


def test_tls_files_are_removed_on_stop() -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        ca = server.ca_cert_path
        assert ca is not None
        assert ca.exists()
        context = ssl.create_default_context(cafile=str(ca))
        assert context.get_ca_certs()
    assert not ca.exists()


@pytest.mark.parametrize("tls", [False, True])
def test_write_kubeconfig_loads_with_the_stock_loader(tmp_path: Path, tls: bool) -> None:
    with FakeApiServer(tls=tls, client_cert=tls, authenticate=True) as server:
        path = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="kube-system")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
        assert configuration.host == server.url
        configuration.retries = False
        api = client.ApiClient(configuration)
        try:
            assert client.CoreV1Api(api).list_namespace().items
        finally:
            close(api)


def test_authenticate_rejects_a_missing_token() -> None:
    with FakeApiServer(authenticate=True) as server:
        configuration = server.configuration()
        configuration.api_key = {}
        configuration.retries = False
        api = client.ApiClient(configuration)
        try:
            with pytest.raises(ApiException) as info:
                client.CoreV1Api(api).list_namespace()
            assert info.value.status == 401
        finally:
            close(api)
