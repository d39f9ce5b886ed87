"""Fixtures for the e2e suite: etcd, kube-apiserver and dnsmasq on 127.0.0.1 (see docs/e2e.md).

``build.sh`` runs once, after collection and before the first test (so no per-test timeout
applies to a cold build), and only when an e2e test was selected and a binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from ..helpers.dnsmasq import Dnsmasq, dnsmasq_available
from .cluster import BUILD_SCRIPT, DNS_NAME, ApiServer, Binaries, Etcd, Pki, running

_BUILD_ERROR = pytest.StashKey[str]()
_RESULTS = pytest.StashKey[dict[str, Any]]()

StartApiServer = Callable[..., ApiServer]


def _build(config: pytest.Config) -> None:
    """Run build.sh when a binary is missing and Go is present; keep any failure for later."""
    if Binaries.locate().exist() or shutil.which("go") is None:
        return
    log_path = Path(tempfile.gettempdir()) / "rk-e2e-build.log"
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"e2e: building kube-apiserver and etcd with {BUILD_SCRIPT} "
            f"(a cold build takes about 5 minutes here; log: {log_path})"
        )
    with log_path.open("wb") as log:
        result = subprocess.run(
            [str(BUILD_SCRIPT)],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        config.stash[_BUILD_ERROR] = f"{BUILD_SCRIPT} failed ({result.returncode}):\n{tail}"


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(item.get_closest_marker("e2e") for item in session.items):
        _build(session.config)


def results_path() -> Path:
    return Path(os.environ.get("RK_E2E_RESULTS", "/tmp/rk-e2e-results.json"))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if results:
        terminalreporter.write_sep("-", f"e2e numbers (also in {results_path()})")
        terminalreporter.write_line(json.dumps(results, indent=2, sort_keys=True))


@pytest.fixture(scope="session")
def e2e_results(request: pytest.FixtureRequest, binaries: Binaries) -> Iterator[dict[str, Any]]:
    """Numbers for docs/performance.md, printed at the end and written as JSON."""
    results = request.config.stash.setdefault(_RESULTS, {})
    yield results
    if results:
        results["versions"] = {
            "kube-apiserver": binaries.kube_apiserver.name,
            "etcd": binaries.etcd.name,
            "kubernetes (PyPI)": kubernetes.__version__,
        }
        results_path().write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def binaries(request: pytest.FixtureRequest) -> Binaries:
    """The cached kube-apiserver and etcd; skips only when they are missing and Go is too."""
    error = request.config.stash.get(_BUILD_ERROR, None)
    if error is not None:
        pytest.fail(error, pytrace=False)
    found = Binaries.locate()
    if not found.exist():
        if shutil.which("go") is None:
            pytest.skip("Go is not installed, so tests/e2e/build.sh cannot build kube-apiserver")
        _build(request.config)  # collected without the hook (e.g. a plugin reordered items)
        error = request.config.stash.get(_BUILD_ERROR, None)
        if error is not None:
            pytest.fail(error, pytrace=False)
    return found


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def etcd(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    server = Etcd(binaries.etcd, tmp_path_factory.mktemp("etcd"))
    with running(server):
        yield server


@pytest.fixture(scope="session")
def start_apiserver(
    binaries: Binaries, etcd: Etcd, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartApiServer]:
    """A factory: ``start_apiserver(name, *extra_flags)`` starts one more API server.

    Each server gets its own port and etcd key prefix; all share the session's etcd and PKI
    and are stopped at the end of the session.
    """
    started: list[ApiServer] = []

    def start(name: str, *extra_flags: str) -> ApiServer:
        server = ApiServer(
            name=name,
            binary=binaries.kube_apiserver,
            etcd=etcd,
            pki=pki,
            directory=tmp_path_factory.mktemp(name),
            extra_flags=extra_flags,
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="session")
def apiserver(start_apiserver: StartApiServer) -> ApiServer:
    """The default API server (APF on, default limits)."""
    return start_apiserver("main")


@pytest.fixture(scope="session")
def tiny_apiserver(start_apiserver: StartApiServer) -> ApiServer:
    """One read and one write at a time, the rest 429 (the max-in-flight filter, APF off)."""
    return start_apiserver(
        "tiny",
        "--enable-priority-and-fairness=false",
        "--max-requests-inflight=1",
        "--max-mutating-requests-inflight=1",
    )


@pytest.fixture(scope="session")
def apf_apiserver(start_apiserver: StartApiServer) -> ApiServer:
    """APF on with a total concurrency of 3 seats (the two in-flight limits add up)."""
    return start_apiserver(
        "apf",
        "--enable-priority-and-fairness=true",
        "--max-requests-inflight=2",
        "--max-mutating-requests-inflight=1",
    )


@pytest.fixture
def restartable_apiserver(start_apiserver: StartApiServer) -> Iterator[ApiServer]:
    """A server of its own, so that restarting it disturbs no other test."""
    server = start_apiserver(f"restart-{uuid.uuid4().hex[:6]}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    """dnsmasq on 127.0.0.1 answering ``DNS_NAME`` with 127.0.0.1 (TTL 5 s), nothing forwarded."""
    if not dnsmasq_available():
        pytest.skip("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
    with Dnsmasq(tmp_path_factory.mktemp("dnsmasq"), ttl=5) as server:
        server.set_hosts({DNS_NAME: ["127.0.0.1"]})
        yield server


@pytest.fixture
def namespace(apiserver: ApiServer) -> Iterator[str]:
    """A fresh namespace on the default server, created and deleted with the stock client."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    with apiserver.stock_client() as api_client:
        core = kubernetes.client.CoreV1Api(api_client)
        core.create_namespace(
            kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        )
        yield name
        # Without kube-controller-manager the namespace stays Terminating; that is fine here.
        core.delete_namespace(name)
