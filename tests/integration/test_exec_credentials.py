"""Exec credential plugins: cached until they expire, one run for every thread, bounded (issue 16)."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pickle
import re
import select
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from kubernetes import client

from resilient_kube import ApiClient, ClientFactory, ConfigError, CredentialError
from resilient_kube._credentials import CredentialSpec, ExecConfig, ExecCredentials
from resilient_kube._events import EventSink
from resilient_kube.testing import FakeApiServer

from .test_credentials import CallCounter, kubeconfig_with, run_threads

V1 = "client.authentication.k8s.io/v1"

#: What a failing plugin prints: it must never reach an error, a log record or stats.
SECRET = "s3cr3t-plugin-output"


class ExpiringTokenServer(FakeApiServer):
    """Accepts tokens minted by the plugin below until the expiry they carry (like a JWT)."""

    def accepts(self, authorization: str | None) -> bool:
        prefix = "Bearer exp-"
        if authorization is None or not authorization.startswith(prefix):
            return False
        expires_ms = int(authorization[len(prefix) :].split("-")[0])
        return time.time() * 1000 < expires_ms


def write_plugin(directory: Path, body: str) -> tuple[Path, Path]:
    """A plugin script that appends one line to ``runs`` per run, then runs ``body``."""
    script = directory / "plugin.py"
    runs = directory / "runs"
    script.write_text(
        textwrap.dedent(
            f"""\
            import datetime, json, os, sys, time
            with open({str(runs)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            def credential(status):
                print(json.dumps({{"apiVersion": {V1!r}, "kind": "ExecCredential",
                                   "status": status}}))
            """
        )
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    return script, runs


def runs_of(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def exec_client(
    server: FakeApiServer, script: Path, *, exec_timeout: float = 10, **config: Any
) -> ApiClient:
    spec = CredentialSpec(
        exec_config=ExecConfig(command=sys.executable, args=(str(script),), **config)
    )
    configuration = server.configuration()
    configuration.api_key = {}
    return ApiClient(configuration, credential_spec=spec, exec_timeout=exec_timeout)


EXPIRING = """\
    lifetime = float(os.environ["LIFETIME"])
    expires = time.time() + lifetime
    stamp = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc)
    credential({"token": f"exp-{int(expires * 1000)}-{os.getpid()}",
                "expirationTimestamp": stamp.isoformat().replace("+00:00", "Z")})
"""


def test_a_plugin_whose_tokens_expire_runs_about_once_per_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lifetime, seconds = 2.0, 6.0
    monkeypatch.setenv("LIFETIME", str(lifetime))
    script, runs = write_plugin(tmp_path, EXPIRING)
    with ExpiringTokenServer(authenticate=True) as server:
        api_client = exec_client(server, script)
        v1 = client.CoreV1Api(api_client)
        calls = CallCounter()

        def work() -> None:
            v1.list_namespace()
            calls.add()

        started = time.monotonic()
        errors = run_threads(8, work, lambda: False, seconds=seconds)
        elapsed = time.monotonic() - started
        assert errors == []
        stats = api_client.stats()
        ran = runs_of(runs)
        print(
            f"exec: {calls.count} calls on 8 threads in {elapsed:.1f}s, {ran} plugin runs,"
            f" {stats.credentials.replays} 401 replays,"
            f" {stats.credentials.seconds_by_source['exec'] / ran * 1000:.0f} ms per run"
        )
        # Refreshed ahead of expiry (at 80% of the lifetime): about once per expiry, never once
        # per call or per thread.
        assert 2 <= ran <= elapsed / (lifetime * 0.8) + 2
        assert stats.credentials.refreshes_by_source == {"exec": ran}
        assert calls.count > 10 * ran
        assert stats.transport.failures == 0
        api_client.close()


def test_a_401_storm_ends_in_one_run_for_a_token_without_expiry(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.write_text("token-0")
    script, runs = write_plugin(
        tmp_path, f"credential({{'token': open({str(current)!r}).read()}})\n"
    )
    with FakeApiServer(authenticate=True, token="token-0") as server:
        api_client = exec_client(server, script)
        v1 = client.CoreV1Api(api_client)
        calls = CallCounter()
        rotations = 3
        done = threading.Event()

        def rotate() -> None:
            try:
                for n in range(1, rotations + 1):
                    calls.wait_for(calls.count + 40)
                    current.write_text(f"token-{n}")  # the issuer has it first
                    server.token = f"token-{n}"
                calls.wait_for(calls.count + 40)
            finally:
                done.set()

        def work() -> None:
            v1.list_namespace()
            calls.add()

        rotator = threading.Thread(target=rotate)
        rotator.start()
        errors = run_threads(8, work, done.is_set, seconds=60)
        rotator.join(10)
        assert errors == []
        stats = api_client.stats().credentials
        # No expiry: cached until a 401; then one run, whatever number of threads met it.
        assert runs_of(runs) == 1 + rotations == stats.refreshes_by_source["exec"]
        assert stats.replays >= rotations
        api_client.close()


def test_a_plugin_that_hangs_fails_clearly_within_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    script, _ = write_plugin(
        tmp_path,
        f"""\
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
        """,
    )
    with FakeApiServer(authenticate=True) as server:
        api_client = exec_client(server, script, exec_timeout=3.0)
        started = time.monotonic()
        with pytest.raises(CredentialError) as caught:
            client.CoreV1Api(api_client).list_namespace()
        elapsed = time.monotonic() - started
        assert 3.0 <= elapsed < 6.0  # generous: a loaded machine starts Python slowly
        assert "did not finish within exec_timeout=3s" in str(caught.value)
        assert caught.value.command == os.path.basename(sys.executable)
        # The plugin and what it started were killed with their process group.
        child = int(pid_file.read_text())
        assert _has_exited(child, timeout=5)  # a killed process exits asynchronously
        assert api_client.stats().credentials.failures == 1
        api_client.close()


def _has_exited(pid: int, *, timeout: float) -> bool:
    """Wait (bounded) until ``pid`` has exited: a pidfd becomes readable then."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # exited and reaped already
    try:
        readable, _, _ = select.select([descriptor], [], [], timeout)
        return bool(readable)
    finally:
        os.close(descriptor)


def test_a_plugin_that_fails_names_the_command_and_status_not_its_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    script, runs = write_plugin(
        tmp_path,
        f"""\
        print({SECRET!r})
        print({SECRET!r}, file=sys.stderr)
        sys.exit(3)
        """,
    )
    with FakeApiServer(authenticate=True) as server:
        api_client = exec_client(server, script)
        threads_errors: list[BaseException] = []

        def call() -> None:
            try:
                client.CoreV1Api(api_client).list_namespace()
            except BaseException as exc:
                threads_errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(threads_errors) == 4
        assert all(isinstance(error, CredentialError) for error in threads_errors)
        error = threads_errors[0]
        assert isinstance(error, CredentialError)
        assert error.exit_status == 3
        assert "exited with status 3" in str(error)
        assert os.path.basename(sys.executable) in str(error)
        unpickled = pickle.loads(pickle.dumps(error))
        assert (unpickled.command, unpickled.exit_status) == (error.command, 3)
        stats = api_client.stats()
        for text in (str(error), repr(error), str(unpickled), caplog.text, repr(stats)):
            assert SECRET not in text
        assert SECRET not in repr(api_client.rest_client.pool_manager.credentials)
        assert runs_of(runs) <= 4  # one run per flight; threads that waited share its failure
        api_client.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("print('not json')\n", "printed no JSON"),
        (
            "print(json.dumps({'kind': 'ExecCredential', 'apiVersion': 'x', 'status': {}}))\n",
            "another apiVersion",
        ),
        ("credential({})\n", "neither a token nor a client certificate"),
        ("credential({'token': 't', 'expirationTimestamp': 'tomorrow'})\n", "RFC 3339"),
    ],
)
def test_a_plugin_that_prints_no_credential_fails_clearly(
    tmp_path: Path, body: str, message: str
) -> None:
    script, _ = write_plugin(tmp_path, body)
    with FakeApiServer(authenticate=True) as server:
        api_client = exec_client(server, script)
        with pytest.raises(CredentialError, match=message):
            client.CoreV1Api(api_client).list_namespace()
        api_client.close()


def test_interactive_mode_always_fails_and_cluster_info_is_provided(tmp_path: Path) -> None:
    info = tmp_path / "info"
    script, runs = write_plugin(
        tmp_path,
        f"""\
        open({str(info)!r}, "w").write(os.environ["KUBERNETES_EXEC_INFO"])
        credential({{"token": "token-0"}})
        """,
    )
    with FakeApiServer(authenticate=True, token="token-0") as server:
        always = exec_client(server, script, interactive_mode="Always")
        with pytest.raises(CredentialError, match="interactiveMode: Always"):
            client.CoreV1Api(always).list_namespace()
        assert runs_of(runs) == 0
        always.close()
        kubeconfig = kubeconfig_with(
            tmp_path / "config",
            server,
            {
                "exec": {
                    "apiVersion": V1,
                    "command": sys.executable,
                    "args": [str(script)],
                    "interactiveMode": "Never",
                    "provideClusterInfo": True,
                    "env": [{"name": "EXTRA", "value": "1"}],
                }
            },
        )
        with ClientFactory(kubeconfig=kubeconfig) as kube:
            assert runs_of(runs) == 0  # not at load time: on the first call, with a timeout
            assert isinstance(kube.api_client.rest_client.pool_manager.credentials, ExecCredentials)
            kube.core_v1().list_namespace()
            kube.core_v1().list_namespace()
            assert runs_of(runs) == 1
        sent = json.loads(info.read_text())
        assert sent["apiVersion"] == V1
        assert sent["spec"]["interactive"] is False
        assert sent["spec"]["cluster"]["server"] == server.url


def test_a_bad_exec_section_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("apiVersion='client.authentication.k8s.io/v1alpha1'")
    ):
        ExecConfig.from_kubeconfig(
            {"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"},
            None,
            base_path="",
        )
    with pytest.raises(ConfigError, match="interactiveMode='Sometimes'"):
        ExecConfig.from_kubeconfig(
            {"command": "x", "apiVersion": V1, "interactiveMode": "Sometimes"}, None, base_path=""
        )
    config = ExecConfig.from_kubeconfig(
        {"command": "./bin/plugin", "apiVersion": V1, "env": [{"name": "K", "value": SECRET}]},
        None,
        base_path=str(tmp_path),
    )
    assert config.command == str(tmp_path / "bin" / "plugin")
    assert SECRET not in repr(config)


def test_a_run_after_a_401_counts_against_the_calls_deadline(tmp_path: Path) -> None:
    script, runs = write_plugin(tmp_path, "time.sleep(60)\n")
    source = ExecCredentials(
        ExecConfig(command=sys.executable, args=(str(script),)), EventSink(), timeout=30.0
    )
    started = time.monotonic()
    with pytest.raises(CredentialError, match="did not finish within the call's deadline"):
        source.refresh("Bearer rejected", time.monotonic() + 1.0)
    assert time.monotonic() - started < 4.0  # the deadline, not exec_timeout=30
    before = runs_of(runs)  # the killed run is reaped: nothing more can appear from it
    with pytest.raises(CredentialError, match="the call's deadline has passed"):
        source.refresh("Bearer rejected", time.monotonic() - 1.0)
    assert runs_of(runs) == before  # no run is started for a call already out of time


class ExecEvents(EventSink):
    """Records the exec plugin events (client-go's exec metrics are built on them)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.certificates: list[tuple[object, float, float | None]] = []

    def exec_plugin_call(self, exit_code: int, call_status: str) -> None:
        self.calls.append((exit_code, call_status))

    def exec_certificate(self, owner: object, not_after: float, rotated_age: float | None) -> None:
        self.certificates.append((owner, not_after, rotated_age))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("credential({'token': 't'})\n", (0, "no_error")),
        ("print('not json')\n", (0, "no_error")),  # it ran fine: client-go counts the run
        ("sys.exit(3)\n", (3, "plugin_execution_error")),
        ("os.kill(os.getpid(), 9)\n", (-1, "plugin_execution_error")),  # Go's ExitCode()
        ("time.sleep(60)\n", (-1, "plugin_execution_error")),  # killed at exec_timeout
    ],
)
def test_each_run_is_reported_with_client_gos_exit_code_and_status(
    tmp_path: Path, body: str, expected: tuple[int, str]
) -> None:
    script, _ = write_plugin(tmp_path, body)
    events = ExecEvents()
    source = ExecCredentials(
        ExecConfig(command=sys.executable, args=(str(script),)), events, timeout=2.0
    )
    with contextlib.suppress(CredentialError):
        source.current()
    assert events.calls == [expected]


def test_a_plugin_that_cannot_start_is_reported_not_found(tmp_path: Path) -> None:
    events = ExecEvents()
    source = ExecCredentials(ExecConfig(command=str(tmp_path / "missing")), events)
    with pytest.raises(CredentialError, match="could not start"):
        source.current()
    assert events.calls == [(1, "plugin_not_found_error")]


def test_a_new_client_certificate_is_reported_with_its_expiry_and_the_old_ones_age(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    now = float(int(time.time()))  # certificates carry whole seconds
    first = ca.issue_cert(
        "client-a",
        not_before=datetime.datetime.fromtimestamp(now - 3600, datetime.UTC),
        not_after=datetime.datetime.fromtimestamp(now + 7200, datetime.UTC),
    )
    second = ca.issue_cert(
        "client-b", not_after=datetime.datetime.fromtimestamp(now + 86400, datetime.UTC)
    )
    cert, key = tmp_path / "issued.crt", tmp_path / "issued.key"
    script, _ = write_plugin(
        tmp_path,
        f"""\
        credential({{"clientCertificateData": open({str(cert)!r}).read(),
                    "clientKeyData": open({str(key)!r}).read()}})
        """,
    )
    events = ExecEvents()
    source = ExecCredentials(
        ExecConfig(command=sys.executable, args=(str(script),)), events, wall=lambda: now
    )
    for issued in (first, first, second):
        cert.write_bytes(issued.cert_chain_pems[0].bytes())
        key.write_bytes(issued.private_key_pem.bytes())
        assert source.refresh(None, None) is None  # a certificate, no token
    # The same certificate twice is one; the rotation reports how long the old one had lived
    # (from its notBefore).
    assert events.certificates == [(source, now + 7200, None), (source, now + 86400, 3600.0)]
