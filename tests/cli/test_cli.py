"""The ``resilient-kube`` command, run in-process through ``main`` (and once as ``python -m``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

import resilient_kube
from resilient_kube import _demo, cli
from resilient_kube._doctor import search_list_queries
from resilient_kube.testing import (
    DEFAULT_TOKEN,
    FakeApiServer,
    FakeDnsServer,
    Overload,
    StatusFault,
)

#: Small enough to finish in a few seconds: 24 calls at the demo's 20 calls/s per client.
FAST_DEMO = ["demo", "--calls", "24", "--threads", "4", "--stock-timeout", "1"]

CLIENT_KEYS = {
    "client", "calls", "calls_made", "succeeded", "success_rate", "p50_ms", "p99_ms", "wire_requests",
    "wire_requests_per_call", "connections_opened", "dns_queries", "dns_queries_measured",
    "dead_server_seconds", "dead_server_gave_up", "dead_server_error", "errors",
    "faults_served", "responses_by_status", "elapsed_seconds", "requeued", "requeues",
    "given_up", "slowest_ms", "first_try_succeeded", "first_try_success_rate",
}  # fmt: skip


def test_help_runs_as_a_module() -> None:
    # The subprocess imports the same copy of the package as this test does.
    source = str(Path(resilient_kube.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "resilient_kube", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout
    assert "doctor" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["demo", "--threads", "0"],
        ["demo", "--calls", "many"],
        ["demo", "--stock-timeout", "0.5"],
        ["doctor", "--no-such-flag"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--help"]) == 0
    assert "--seed" in capsys.readouterr().out


def test_demo_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*FAST_DEMO, "--seed", "3", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "resilient-kube-demo/3"
    assert document["seed"] == 3
    assert document["calls"] == 24
    assert document["threads"] == 4
    assert document["stock_pool_size"] == _demo.stock_pool_size()
    assert set(document["versions"]) == {"resilient_kube", "kubernetes", "urllib3", "python"}
    assert document["versions"]["resilient_kube"] == resilient_kube.__version__
    assert all({"fault", "probability", "times"} <= set(f) for f in document["faults"])
    assert document["overload_episode"]["seconds"] == _demo.OVERLOAD_SECONDS
    assert document["overload_episode"]["fault"] == repr(Overload(1, queue=1, work=0.1))
    assert document["requeue"]["max_tries"] == _demo.MAX_TRIES
    assert set(document["clients"]) == {"stock", "resilient_kube"}
    for name, client in document["clients"].items():
        assert set(client) == CLIENT_KEYS
        assert client["client"] == name
        assert client["calls"] == 24
        assert client["wire_requests"] >= client["calls_made"]
        # Every requeue makes its call again; a call succeeds once, unless it was given up.
        assert client["calls_made"] == client["calls"] + client["requeues"]
        assert client["succeeded"] == client["calls"] - client["given_up"]
        assert client["success_rate"] == client["succeeded"] / client["calls"]
        assert client["first_try_succeeded"] == client["calls"] - client["requeued"]
        # Percentiles run from a call's first try, so they are ordered and end at the slowest.
        if client["given_up"] == 0:
            assert client["p50_ms"] <= client["p99_ms"] <= client["slowest_ms"]
        # Both met the overload episode.
        assert client["responses_by_status"].get("429", 0) >= 1, client["responses_by_status"]
        assert sum(client["responses_by_status"].values()) <= client["wire_requests"]
    stock, resilient = document["clients"]["stock"], document["clients"]["resilient_kube"]
    assert resilient["dns_queries_measured"] is True
    assert stock["dns_queries_measured"] is False
    assert stock["dns_queries"] == 2 * stock["connections_opened"]
    # The stock client has no timeout: the demo gave up on it; resilient_kube met its deadline.
    assert stock["dead_server_gave_up"] is True
    assert resilient["dead_server_gave_up"] is False
    assert resilient["dead_server_seconds"] < stock["dead_server_seconds"]
    # With four workers, worker 3 creates on every tick. A create that meets the overload fails
    # in the stock client, and the controller requeues it at once and again, into the overload.
    # resilient_kube waits out Retry-After and sends again, paced, so none is requeued for a 429.
    assert "ApiException(429)" not in resilient["errors"]
    if not stock["faults_served"].get("Stall"):  # a stall can make worker 3 miss the episode
        assert stock["errors"].get("ApiException(429)", 0) >= 1
        assert resilient["responses_by_status"]["429"] < stock["responses_by_status"]["429"]
        assert stock["first_try_success_rate"] < 1.0
        assert stock["wire_requests_per_call"] > resilient["wire_requests_per_call"]


@pytest.mark.parametrize("name", _demo.CLIENTS)
def test_the_controller_makes_a_failed_call_again_until_it_succeeds(name: str) -> None:
    options = _demo.DemoOptions(calls=4, threads=1)
    with FakeApiServer() as server, FakeDnsServer({}) as resolver:
        client = _demo._make_client(name, server.url, resolver)
        try:
            workload = _demo._Workload(CoreV1Api(client), options, {}, lambda: None, lambda: None)
            workload.setup()
            server.inject(StatusFault(503), verb="create", times=2)
            workload._reconcile(0, 3)  # call 3 is a create
        finally:
            client.close()
        assert server.request_count("create") == 1 + 1 + 2  # setup, the call, two 503s
    assert workload.latencies[0] > 0
    if name == "stock":
        # Each 503 reached the controller, which requeued the call.
        assert (workload.requeued, workload.requeues, workload.calls_made) == (1, 2, 3)
        assert workload.errors == {"ApiException(503)": 2}
    else:
        # resilient_kube retried inside the call: the controller saw one good answer.
        assert (workload.requeued, workload.requeues, workload.calls_made) == (0, 0, 1)
        assert not workload.errors


def test_the_controller_gives_up_after_max_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_demo, "MAX_TRIES", 3)
    with FakeApiServer() as server, FakeDnsServer({}) as resolver:
        client = _demo._make_client("stock", server.url, resolver)
        try:
            workload = _demo._Workload(
                CoreV1Api(client), _demo.DemoOptions(calls=4, threads=1), {}, lambda: None,
                lambda: None,
            )  # fmt: skip
            server.inject(StatusFault(503), verb="list", times=None)
            workload._reconcile(0, 0)  # call 0 is a list
        finally:
            client.close()
    assert (workload.requeued, workload.requeues, workload.given_up) == (1, 2, 1)
    assert workload.calls_made == 3
    assert workload.latencies == []


def test_a_run_too_short_for_the_overload_episode_reports_none() -> None:
    short = _demo.DemoOptions(calls=8, threads=4)  # two bursts; the episode meets the third
    assert not short.overloads
    result = _demo.DemoResult(options=short, results={}, elapsed_seconds=0.0)
    assert result.to_json()["overload_episode"] is None
    assert "overload" not in " ".join(_demo.footnotes(result))
    assert _demo.DemoOptions(calls=9, threads=4).overloads


def test_demo_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(FAST_DEMO) == 0
    captured = capsys.readouterr()
    for row in ("calls that succeeded first time", "p50 time", "p99 time", "slowest call",
                "requests on the wire", "connections opened", "DNS queries",
                "time to fail on a dead server"):  # fmt: skip
        assert row in captured.out
    assert "(gave up)" in captured.out
    # Progress goes to stderr, so that stdout holds only the table.
    assert "stock: 24/24 calls" in captured.err


# --- doctor ---------------------------------------------------------------------------------


def _doctor_json(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object]]:
    code = cli.main([*argv, "--json"])
    captured = capsys.readouterr()
    assert DEFAULT_TOKEN not in captured.out + captured.err
    document: dict[str, object] = json.loads(captured.out)
    return code, document


def _phases(document: dict[str, object]) -> dict[str, dict[str, object]]:
    phases = document["phases"]
    assert isinstance(phases, list)
    return {phase["name"]: phase for phase in phases}


def test_doctor_against_a_fake_server(
    fake_api_server: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = fake_api_server.write_kubeconfig(tmp_path / "kubeconfig")
    code, document = _doctor_json(["doctor", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 0
    assert document["schema"] == "resilient-kube-doctor/1"
    assert document["ok"] is True
    assert document["embedded"] is False
    assert document["server"] == fake_api_server.url
    phases = _phases(document)
    assert list(phases) == ["kubeconfig", "dns", "tcp", "version", "list", "clock"]
    assert all(phase["status"] == "ok" for phase in phases.values())
    assert phases["list"]["details"]["status"] == 200  # type: ignore[index]
    assert phases["kubeconfig"]["details"]["credentials"] == "bearer token"  # type: ignore[index]
    recommendations = document["recommendations"]
    assert isinstance(recommendations, dict)
    assert {"connect_timeout", "read_timeout", "deadline", "qps", "burst"} <= set(recommendations)
    # Every recommendation is a valid setting.
    resilient_kube.Settings(**recommendations)


def test_doctor_checks_each_endpoint_as_the_client_does(
    fake_api_server: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = fake_api_server.write_kubeconfig(tmp_path / "kubeconfig")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed below: refuses
    argv = ["doctor", "--kubeconfig", str(kubeconfig), "--endpoint", fake_api_server.url]
    code, document = _doctor_json([*argv, "--endpoint", dead], capsys)
    phases = _phases(document)
    assert phases[f"endpoint {fake_api_server.url}"]["status"] == "ok"
    assert phases[f"endpoint {fake_api_server.url}"]["details"] == {"ready": True}
    assert phases[f"endpoint {dead}"]["status"] == "warning"  # the others carry the calls
    assert code == 0


def test_doctor_tls_phase(
    fake_api_server_tls: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = fake_api_server_tls.write_kubeconfig(tmp_path / "kubeconfig")
    code, document = _doctor_json(["doctor", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 0
    tls = _phases(document)["tls"]
    assert tls["status"] == "ok"
    details = tls["details"]
    assert isinstance(details, dict)
    assert details["version"].startswith("TLS")
    assert "IP Address:127.0.0.1" in details["san"]
    assert details["verified_with"] == "the kubeconfig's CA"


def test_doctor_text_output_never_shows_the_token(
    fake_api_server: FakeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = fake_api_server.write_kubeconfig(tmp_path / "kubeconfig")
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig)]) == 0
    captured = capsys.readouterr()
    assert DEFAULT_TOKEN not in captured.out + captured.err
    assert "Authorization" not in captured.out
    assert "Recommended: resilient_kube.ApiClient(configuration, " in captured.out


def test_doctor_names_the_failed_phase_when_the_server_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeApiServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    # Stopped: the port refuses connections.
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig)]) == 1
    out = capsys.readouterr().out
    assert "FAILED at phase 'tcp'" in out
    assert "ConnectionRefusedError" in out
    assert "check that the API server runs" in out
    code, document = _doctor_json(["doctor", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 1
    assert document["ok"] is False
    phases = _phases(document)
    assert phases["tcp"]["status"] == "failed"
    assert phases["version"]["status"] == "skipped"
    assert phases["list"]["status"] == "skipped"
    assert document["recommendations"] == {}


def test_doctor_reports_a_bad_kubeconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    code, document = _doctor_json(["doctor", "--kubeconfig", str(broken)], capsys)
    assert code == 1
    assert _phases(document)["kubeconfig"]["status"] == "failed"


def test_doctor_without_a_kubeconfig_uses_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config there
    code, document = _doctor_json(["doctor"], capsys)
    assert code == 0
    assert document["embedded"] is True
    assert "embedded fake API server" in " ".join(document["notes"])  # type: ignore[arg-type]


def test_doctor_plain_text_without_rich(
    fake_api_server: FakeApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # rich is optional (the `cli` extra): the seam is the one function that imports it.
    monkeypatch.setattr(cli, "_rich", lambda: None)
    kubeconfig = fake_api_server.write_kubeconfig(tmp_path / "kubeconfig")
    assert cli.main(["doctor", "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "phase" in out
    assert "┃" not in out  # no rich box drawing


@pytest.mark.parametrize(
    ("host", "search", "ndots", "queries"),
    [
        ("api.example.test", [], 1, 2),
        ("api.example.test", ["a.svc", "svc", "cluster.local"], 5, 8),
        ("api.example.test.", ["a.svc", "svc", "cluster.local"], 5, 2),
        ("api.example.test", ["corp"], 1, 2),
        ("kubernetes", ["corp"], 1, 4),
    ],
)
def test_search_list_queries(host: str, search: list[str], ndots: int, queries: int) -> None:
    assert search_list_queries(host, search, ndots) == queries


def test_demo_bursts_wider_than_the_stock_pool_churn_its_connections(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The default workload's point: more calls in flight than the stock pool keeps."""
    threads, pool = _demo.default_threads(), _demo.stock_pool_size()
    if threads < 2 * pool:
        pytest.skip(f"the stock pool here keeps {pool} connections: bursts of {threads} fit")
    arguments = ["demo", "--calls", str(3 * threads), "--stock-timeout", "1", "--json"]
    assert cli.main(arguments) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["threads"] == threads
    stock, resilient = document["clients"]["stock"], document["clients"]["resilient_kube"]
    # Three bursts: after each, the stock client throws away what its pool cannot keep and
    # connects afresh in the next; resilient_kube keeps a connection per worker (faults aside).
    assert stock["connections_opened"] >= resilient["connections_opened"] + pool


def test_doctor_never_shows_an_exec_plugins_output(
    fake_api_server: FakeApiServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A plugin that fails prints whatever it has, the credential included: the doctor names the
    # plugin and its exit status, and nothing it printed reaches the report or a log record.
    secret = "s3cr3t-from-the-plugin"
    script = tmp_path / "plugin.py"
    script.write_text(
        f"import sys\nprint({secret!r})\nprint({secret!r}, file=sys.stderr)\nsys.exit(3)\n"
    )
    kubeconfig = json.loads(fake_api_server.write_kubeconfig(tmp_path / "base").read_text())
    kubeconfig["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "interactiveMode": "Never",
        }
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    code = cli.main(["doctor", "--kubeconfig", str(path), "--json"])
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + caplog.text
    document = json.loads(captured.out)
    assert code != 0
    phases = _phases(document)
    kind = phases["kubeconfig"]["details"]["credentials"]  # type: ignore[index]
    assert kind == f"exec plugin {os.path.basename(sys.executable)}"
    # The first authenticated request (the version phase) runs it.
    assert "exited with status 3" in str(phases["version"]["error"])


# --- demo --metrics-port ------------------------------------------------------------------


def test_demo_serves_metrics_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import http.client
    import socket

    from resilient_kube import metrics

    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    scraped: list[str] = []
    real_run = _demo.run_demo

    def run_then_scrape(options: _demo.DemoOptions, progress: _demo.Progress | None = None) -> Any:
        result = real_run(options, progress)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/metrics")
        scraped.append(connection.getresponse().read().decode())
        connection.close()
        return result

    monkeypatch.setattr(_demo, "run_demo", run_then_scrape)
    assert cli.main([*FAST_DEMO, "--json", "--metrics-port", str(port)]) == 0
    assert f"metrics: http://127.0.0.1:{port}/metrics" in capsys.readouterr().err
    (text,) = scraped
    # The resilient client's calls, by client-go's names (the stock client reports nothing).
    assert 'rest_client_requests_total{code="200",host="api.demo.test:' in text
    assert "rest_client_request_duration_seconds_bucket{" in text
    assert "rest_client_rate_limiter_duration_seconds_count{" in text
    # The server is gone and the registration undone once the demo is over.
    assert metrics.registered() is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_demo_metrics_port_must_be_a_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--metrics-port", "70000"]) == 2
    assert "not a TCP port" in capsys.readouterr().err
