"""Client certificates rotated on disk or by an exec plugin, on a mutual-TLS server (issue 16)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from kubernetes import client

from resilient_kube import ApiClient
from resilient_kube._credentials import CredentialSpec, ExecConfig
from resilient_kube.testing import FakeApiServer
from tests.helpers.clock import FakeClock

from .test_exec_credentials import V1, runs_of, write_plugin


def calls_on_threads(v1: client.CoreV1Api, threads: int, calls: int) -> None:
    """``threads`` threads make ``calls`` calls each, at the same time: several pooled
    connections."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work() -> None:
        try:
            barrier.wait(10)
            for _ in range(calls):
                v1.list_namespace()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []


def test_a_client_certificate_rotated_on_disk_is_used_by_every_later_request(
    tmp_path: Path,
) -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
        server.issue_client_cert(cert, key, common_name="client-a")
        configuration = server.configuration()
        configuration.cert_file, configuration.key_file = str(cert), str(key)
        clock = FakeClock()
        api_client = ApiClient(configuration, clock=clock, qps=None)
        v1 = client.CoreV1Api(api_client)
        calls_on_threads(v1, 4, 5)
        assert server.requests_by_client() == {"client-a": 20}
        opened = api_client.stats().transport.connections_opened
        assert opened >= 2  # pooled connections that now hold the old certificate
        # cert-manager writes the new pair; within the check interval nothing is looked at.
        server.issue_client_cert(cert, key, common_name="client-b")
        v1.list_namespace()
        assert server.requests_by_client() == {"client-a": 21}
        # Past it, the next call sees the change: no pooled connection made with the old
        # certificate is used again, every request from here on carries the new one.
        clock.now += 1.0
        calls_on_threads(v1, 4, 5)
        assert server.requests_by_client() == {"client-a": 21, "client-b": 20}
        stats = api_client.stats()
        assert stats.credentials.refreshes_by_source == {"certificate_files": 1}
        assert stats.transport.connections_retired >= 1
        assert stats.transport.failures == 0
        api_client.close()


CERT_PLUGIN = """\
    lifetime = float({lifetime!r})
    stamp = datetime.datetime.fromtimestamp(time.time() + lifetime, datetime.timezone.utc)
    credential({{"clientCertificateData": open({cert!r}).read(),
                "clientKeyData": open({key!r}).read(),
                "expirationTimestamp": stamp.isoformat().replace("+00:00", "Z")}})
"""


def test_a_client_certificate_from_an_exec_plugin_is_used_when_it_changes(
    tmp_path: Path,
) -> None:
    with FakeApiServer(tls=True, client_cert=True) as server:
        cert, key = tmp_path / "issued.crt", tmp_path / "issued.key"
        server.issue_client_cert(cert, key, common_name="client-a")
        script, runs = write_plugin(
            tmp_path, CERT_PLUGIN.format(lifetime=1.5, cert=str(cert), key=str(key))
        )
        configuration = server.configuration()
        configuration.cert_file = configuration.key_file = None
        configuration.api_key = {}
        spec = CredentialSpec(
            exec_config=ExecConfig(command=sys.executable, args=(str(script),), api_version=V1)
        )
        api_client = ApiClient(configuration, credential_spec=spec)
        v1 = client.CoreV1Api(api_client)
        v1.list_namespace()  # the plugin runs first: the only way this call can authenticate
        assert server.requests_by_client() == {"client-a": 1}
        assert runs_of(runs) == 1
        server.issue_client_cert(cert, key, common_name="client-b")
        # The plugin runs again shortly before its credential expires (no header: the run is
        # driven from the start of a call), and from then on every request carries the new one.
        stop_at = time.monotonic() + 15
        while "client-b" not in server.requests_by_client() and time.monotonic() < stop_at:
            v1.list_namespace()
        switched = server.requests_by_client()
        assert switched["client-b"] == 1
        for _ in range(5):
            v1.list_namespace()
        assert server.requests_by_client() == {**switched, "client-b": 6}
        assert runs_of(runs) >= 2
        assert api_client.stats().transport.failures == 0
        api_client.close()
