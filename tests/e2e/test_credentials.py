"""Rotating bearer tokens on the real kube-apiserver: resilient_kube rides over them, the stock
client does not (issue 16).

The API server authenticates through a token webhook that this test serves on loopback
(``--authentication-token-webhook-config-file``, cache TTL 0 s): it accepts only the current
token and rotates it every ``ROTATE_EVERY`` seconds, writing the new one first to a projected
token volume, as the kubelet does. Both clients read that file through a kubeconfig
``tokenFile``: the stock client reads it once, resilient_kube whenever it changes or a 401 says so.
(kube-apiserver still keeps a successful review for 10 s, its fixed TokenSuccessCacheTTL.)

A client certificate rotated on disk is checked against ``--client-ca-file``: who the server
thinks the client is (a SelfSubjectReview) follows the files.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes
import pytest

import resilient_kube
from tests.helpers.tokens import ProjectedToken

from .cluster import ApiServer
from .conftest import StartApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ROTATE_EVERY = 2.0
RUN_SECONDS = 20.0
THREADS = 8


class TokenWebhook:
    """A TokenReview webhook on loopback that takes only the current token, rotated on a timer."""

    def __init__(self, volume: ProjectedToken, first: str) -> None:
        self.volume = volume
        self.current = first
        self.reviews: Counter[str] = Counter()
        self.rotations = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with webhook._lock:
                    ok = review["spec"]["token"] == webhook.current
                    webhook.reviews["accepted" if ok else "rejected"] += 1
                status: dict[str, Any] = {"authenticated": ok}
                if ok:
                    status["user"] = {"username": "rotating", "groups": ["system:authenticated"]}
                body = json.dumps(
                    {"apiVersion": review["apiVersion"], "kind": "TokenReview", "status": status}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}),
            threading.Thread(target=self._rotate),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> None:
        self._threads[0].start()

    def start_rotating(self) -> None:
        self._threads[1].start()

    def _rotate(self) -> None:
        # A schedule, not a pause: the next rotation is due every ROTATE_EVERY seconds.
        while not self._stop.wait(ROTATE_EVERY):
            token = secrets.token_hex(16)
            self.volume.rotate(token)  # the new token is on disk before the old one dies
            with self._lock:
                self.current = token
                self.rotations += 1

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(10)

    def write_config(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "webhook", "cluster": {"server": self.url}}],
            "users": [{"name": "apiserver", "user": {}}],
            "contexts": [
                {"name": "webhook", "context": {"cluster": "webhook", "user": "apiserver"}}
            ],
            "current-context": "webhook",
        }
        path.write_text(json.dumps(config))
        return path


@pytest.fixture
def rotating(
    start_apiserver: StartApiServer, tmp_path: Path
) -> Iterator[tuple[ApiServer, TokenWebhook, Path]]:
    """An API server behind the webhook, and a kubeconfig whose user has a ``tokenFile``."""
    first = secrets.token_hex(16)
    (tmp_path / "volume").mkdir()
    volume = ProjectedToken(tmp_path / "volume", first)
    webhook = TokenWebhook(volume, first)
    webhook.start()
    try:
        server = start_apiserver(
            "webhook",
            f"--authentication-token-webhook-config-file={webhook.write_config(tmp_path / 'wh')}",
            "--authentication-token-webhook-cache-ttl=0s",
            "--authentication-token-webhook-version=v1",
        )
        kubeconfig = tmp_path / "kubeconfig"
        document = json.loads(server.kubeconfig.read_text())
        document["users"][0]["user"] = {"tokenFile": str(volume.path)}
        kubeconfig.write_text(json.dumps(document))
        yield server, webhook, kubeconfig
        server.stop()
    finally:
        webhook.stop()


def hammer(call: Callable[[], object], stop_at: float, tally: Counter[str]) -> None:
    """Call ``call`` until ``stop_at``, counting outcomes (a stop, not a pause, ends it)."""
    while time.monotonic() < stop_at:
        try:
            call()
            tally["ok"] += 1
        except kubernetes.client.ApiException as exc:
            tally[f"http_{exc.status}"] += 1
        except Exception as exc:
            tally[type(exc).__name__] += 1


def test_rotating_tokens_every_two_seconds(
    rotating: tuple[ApiServer, TokenWebhook, Path], e2e_results: dict[str, Any]
) -> None:
    _, webhook, kubeconfig = rotating
    resilient: Counter[str] = Counter()
    stock: Counter[str] = Counter()
    watch: Counter[str] = Counter()
    with resilient_kube.ClientFactory(kubeconfig=kubeconfig) as kube:
        core = kube.core_v1()
        stock_client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        stock_core = kubernetes.client.CoreV1Api(stock_client)
        core.list_namespace()
        stock_core.list_namespace()  # both work before the first rotation
        webhook.start_rotating()
        stop_at = time.monotonic() + RUN_SECONDS

        def watching() -> None:
            # Streams re-opened every 3 s: each opening must authenticate with a live token.
            while time.monotonic() < stop_at:
                try:
                    for _ in kubernetes.watch.Watch().stream(
                        core.list_namespaced_config_map, "default", timeout_seconds=3
                    ):
                        watch["events"] += 1
                    watch["streams"] += 1
                except Exception as exc:
                    watch[f"error_{type(exc).__name__}"] += 1

        threads = [
            threading.Thread(target=hammer, args=(core.list_namespace, stop_at, resilient))
            for _ in range(THREADS)
        ]
        threads.append(
            threading.Thread(target=hammer, args=(stock_core.list_namespace, stop_at, stock))
        )
        threads.append(threading.Thread(target=watching))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RUN_SECONDS + 60)
        stats = kube.stats()
        stock_client.close()
    credentials = stats.credentials
    e2e_results["credentials_rotating_tokens"] = {
        "seconds": RUN_SECONDS,
        "rotations": webhook.rotations,
        "resilient_kube": {
            "threads": THREADS,
            "calls": sum(resilient.values()),
            "outcomes": dict(resilient),
            "replays_401": credentials.replays,
            "token_file_reads": credentials.refreshes_by_source.get("token_file", 0),
            "watch": dict(watch),
        },
        "stock": {"threads": 1, "calls": sum(stock.values()), "outcomes": dict(stock)},
        "webhook_reviews": dict(webhook.reviews),
    }
    assert webhook.rotations >= RUN_SECONDS / ROTATE_EVERY - 2
    assert set(resilient) == {"ok"}, resilient
    assert resilient["ok"] > 100
    assert not [key for key in watch if key.startswith("error_")], watch
    assert watch["streams"] >= 3
    # The stock client read the file once. kube-apiserver caches a successful review for 10 s
    # (TokenSuccessCacheTTL, whatever the webhook's own TTL), so its first token works until
    # then; every call after that fails.
    assert stock["http_401"] > 0


def test_a_client_certificate_rotated_on_disk(
    start_apiserver: StartApiServer, tmp_path: Path, e2e_results: dict[str, Any]
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA(organization_name="resilient_kube e2e clients")
    ca_path = tmp_path / "client-ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"

    def issue(user: str) -> None:
        issued = ca.issue_cert(f"{user}.invalid", common_name=user)
        for path, pem in ((cert, issued.cert_chain_pems[0]), (key, issued.private_key_pem)):
            staged = path.with_name(path.name + ".tmp")
            pem.write_to_path(str(staged))
            staged.replace(path)

    issue("user-a")
    server = start_apiserver("mtls", f"--client-ca-file={ca_path}")
    kubeconfig = tmp_path / "kubeconfig"
    document = json.loads(server.kubeconfig.read_text())
    document["users"][0]["user"] = {"client-certificate": str(cert), "client-key": str(key)}
    kubeconfig.write_text(json.dumps(document))
    body = kubernetes.client.V1SelfSubjectReview()
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    try:
        with resilient_kube.ClientFactory(kubeconfig=kubeconfig) as kube:
            authn = kube.api(kubernetes.client.AuthenticationV1Api)

            def whoami() -> str:
                name = str(authn.create_self_subject_review(body).status.user_info.username)
                with lock:
                    seen[name] += 1
                return name

            def on_threads(calls: int) -> None:
                errors: list[BaseException] = []

                def work() -> None:
                    try:
                        for _ in range(calls):
                            whoami()
                    except BaseException as exc:
                        errors.append(exc)

                workers = [threading.Thread(target=work) for _ in range(4)]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join(60)
                assert errors == []

            on_threads(10)
            assert seen == {"user-a": 40}
            issue("user-b")
            # Within a second the next call sees the files change; poll with a bound.
            stop_at = time.monotonic() + 15
            while whoami() != "user-b" and time.monotonic() < stop_at:
                pass
            before = seen["user-a"]
            on_threads(10)
            stats = kube.stats()
    finally:
        server.stop()
    e2e_results["credentials_client_certificate"] = {
        "who_before": "user-a",
        "calls_as_old_user_after_the_switch": seen["user-a"] - before,
        "calls_as_new_user": seen["user-b"],
        "connections_retired": stats.transport.connections_retired,
        "certificate_file_changes": stats.credentials.refreshes_by_source.get(
            "certificate_files", 0
        ),
    }
    # Every pooled connection made with user-a's certificate was retired: none is used again.
    assert seen["user-a"] == before
    assert seen["user-b"] == 41
    assert stats.credentials.refreshes_by_source.get("certificate_files") == 1
    assert stats.transport.failures == 0
