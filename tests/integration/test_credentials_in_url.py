"""A password in ``Configuration.host`` appears nowhere a URL is shown or kept (issue #22 item 8).

Before the fix ``TransportError.url``, the pickled error (through ``url`` and through the urllib3
error it keeps as ``last_error``) and the doctor's table and JSON all showed it.
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import traceback
from pathlib import Path

import pytest
from kubernetes import client
from urllib3.exceptions import ReadTimeoutError

from resilient_kube import (
    ApiClient,
    ConnectError,
    DeadlineExceeded,
    RateLimitTimeout,
    ReadTimeout,
    TransportError,
)
from resilient_kube.testing import FakeApiServer, Stall
from tests.integration.test_tls_and_proxy import _ForwardProxy

SECRET = "S3cr3tPa55w0rd"


def with_password(server: FakeApiServer) -> client.Configuration:
    config = server.configuration()
    config.host = config.host.replace("://", f"://admin:{SECRET}@")
    return config


def assert_no_secret(error: TransportError, caplog: pytest.LogCaptureFixture) -> None:
    """Not in the error as shown, kept, pickled or printed with its causes, nor in any log."""
    url = error.url or ""
    assert "admin:***@127.0.0.1" in url
    shown = [
        str(error),
        repr(error),
        url,
        repr(error.__dict__),
        repr(error.last_error),
        repr(getattr(error.last_error, "__dict__", None)),
        "".join(traceback.format_exception(error)),
        caplog.text,
    ]
    for text in shown:
        assert SECRET not in text
    assert SECRET.encode() not in pickle.dumps(error)
    restored = pickle.loads(pickle.dumps(error))
    assert restored.url == error.url
    assert SECRET not in repr(vars(restored))
    assert SECRET not in (restored.url or "")


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, urllib3's, kubernetes'


def test_a_call_works_and_logs_no_password(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    with ApiClient(with_password(server)) as api_client:
        names = [ns.metadata.name for ns in client.CoreV1Api(api_client).list_namespace().items]
    assert "default" in names
    assert SECRET not in caplog.text


def test_connect_error(caplog: pytest.LogCaptureFixture) -> None:
    with FakeApiServer() as server:
        config = with_password(server)
    # Stopped: the port refuses connections. (Without a deadline every refused connect counts
    # towards max_attempts; with one they would go on until it, as through a restart.)
    with (
        ApiClient(config, max_attempts=2, backoff_base=0.01, deadline=None) as api_client,
        pytest.raises(ConnectError) as info,
    ):
        client.CoreV1Api(api_client).list_namespace()
    assert_no_secret(info.value, caplog)


def test_read_timeout_keeps_a_urllib3_error_with_the_url(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The watchdog's read timeout is a urllib3 ReadTimeoutError built with the call's URL,
    # kept as last_error and pickled with it.
    server.inject(Stall(), times=None)
    with (
        ApiClient(with_password(server), read_timeout=0.2, max_attempts=1) as api_client,
        pytest.raises(ReadTimeout) as info,
    ):
        client.CoreV1Api(api_client).list_namespace()
    assert isinstance(info.value.last_error, Exception)
    assert "admin:***@" in info.value.last_error.url  # type: ignore[attr-defined]
    assert_no_secret(info.value, caplog)


def test_deadline_exceeded(server: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    server.inject(Stall(), times=None)
    with (
        ApiClient(with_password(server), read_timeout=5, deadline=0.3) as api_client,
        pytest.raises(DeadlineExceeded) as info,
    ):
        client.CoreV1Api(api_client).list_namespace()
    assert_no_secret(info.value, caplog)


def test_rate_limit_timeout(server: FakeApiServer, caplog: pytest.LogCaptureFixture) -> None:
    with ApiClient(with_password(server), qps=1, burst=1, deadline=0.2) as api_client:
        core = client.CoreV1Api(api_client)
        core.list_namespace()
        with pytest.raises(RateLimitTimeout) as info:
            core.list_namespace()
    assert_no_secret(info.value, caplog)


def test_an_error_that_quotes_the_url(caplog: pytest.LogCaptureFixture) -> None:
    """urllib3 quotes a URL it cannot parse in its error, which the transport's log line quotes."""
    config = client.Configuration(host=f"http://admin:{SECRET}@127.0.0.1:99999")
    with ApiClient(config, max_attempts=1) as api_client, pytest.raises(TransportError) as info:
        client.CoreV1Api(api_client).list_namespace()
    assert "Failed to parse: http://admin:***@127.0.0.1:99999" in str(info.value)
    assert "resilient_kube._transport" in caplog.text  # the line is logged, masked
    assert_no_secret(info.value, caplog)


def test_an_http_proxy_gets_no_password(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Through an HTTP proxy the request line is the whole URL: without its userinfo.

    RFC 9110 §4.2.4 forbids userinfo in a target URI; before the fix the proxy got the
    password, and urllib3's DEBUG log line of the request showed it.
    """
    proxy = _ForwardProxy()
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        config = with_password(server)
        config.proxy = f"http://127.0.0.1:{proxy.server_address[1]}"
        with ApiClient(config) as api_client:
            client.CoreV1Api(api_client).list_namespace()
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)
    assert proxy.forwarded == [f"{server.url}/api/v1/namespaces"]
    assert SECRET not in caplog.text


def test_the_error_class_masks_whatever_it_is_given() -> None:
    """The transport passes ``url=call.url`` as it is: the constructor does the masking."""
    url = f"https://admin:{SECRET}@api.kube.test:6443/api/v1/pods"
    error = ConnectError(f"GET {url} failed", method="GET", url=url, attempts=1)
    assert error.url == "https://admin:***@api.kube.test:6443/api/v1/pods"
    assert SECRET not in str(error)
    assert SECRET.encode() not in pickle.dumps(error)
    # The url urllib3's own error keeps, when one is the cause.
    cause = ReadTimeoutError(None, url, "Read timed out.")  # type: ignore[arg-type]
    timeout = ReadTimeout("GET /api/v1/pods failed", url=url, last_error=cause)
    assert SECRET not in (cause.url or "")
    assert SECRET.encode() not in pickle.dumps(timeout)


def test_doctor_table_and_json(
    server: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resilient_kube import cli

    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    kubeconfig.write_text(
        kubeconfig.read_text().replace("http://", f"http://admin:{SECRET}@"), encoding="utf-8"
    )
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig)]) == 0
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig), "--json"]) == 0
    out = capsys.readouterr().out
    assert "admin:***@127.0.0.1" in out
    assert SECRET not in out
    # A failed phase: the error text is masked too.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    kubeconfig.write_text(
        kubeconfig.read_text().replace(f":{server.port}", f":{port}"), encoding="utf-8"
    )
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig)]) == 1
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig), "--json"]) == 1
    out = capsys.readouterr().out
    assert "FAILED at phase 'tcp'" in out
    assert "admin:***@127.0.0.1" in out
    assert SECRET not in out
