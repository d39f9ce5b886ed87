"""What goes over the wire, checked with ``http.client`` rather than the kubernetes client."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from resilient_kube.testing import CustomResource, Delay, FakeApiServer, StatusFault


@pytest.fixture
def conn(fake_api_server: FakeApiServer) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection(fake_api_server.host, fake_api_server.port, timeout=10)
    yield connection
    connection.close()


def _call(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw.startswith(b"{") else raw


def test_keep_alive(fake_api_server: FakeApiServer, conn: http.client.HTTPConnection) -> None:
    for _ in range(3):
        assert _call(conn, "GET", "/version")[0] == 200
    assert fake_api_server.stats().connections == 1
    assert fake_api_server.stats().requests_by_verb == {"get": 3}


def test_watch_is_chunked_json_lines(
    fake_api_server: FakeApiServer, conn: http.client.HTTPConnection
) -> None:
    _call(conn, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})
    conn.request("GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    lines = response.read().decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    assert fake_api_server.request_count("watch") == 1
    assert _call(conn, "GET", "/healthz") == (200, b"ok")  # the connection is still usable


def test_status_subresource_put(conn: http.client.HTTPConnection) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    status, created = _call(
        conn, "POST", path, {"metadata": {"name": "d"}, "spec": {"replicas": 1}}
    )
    assert status == 201
    created["status"] = {"readyReplicas": 1}
    created["spec"] = {"replicas": 5}
    status, updated = _call(conn, "PUT", f"{path}/d/status", created)
    assert status == 200
    assert updated["status"] == {"readyReplicas": 1}
    assert updated["spec"] == {"replicas": 1}
    assert updated["metadata"]["generation"] == 1


def test_bad_requests(conn: http.client.HTTPConnection) -> None:
    base = "/api/v1/namespaces/default/configmaps"
    conn.request("POST", base, body=b"{not json", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read())["reason"] == "BadRequest"
    assert _call(conn, "POST", f"{base}/named", {"metadata": {"name": "x"}})[0] == 405
    assert _call(conn, "PUT", base, {"metadata": {"name": "x"}})[0] == 405
    assert _call(conn, "GET", f"{base}?limit=abc")[0] == 400
    assert _call(conn, "GET", f"{base}?watch=true&resourceVersion=abc")[0] == 400
    assert _call(conn, "GET", "/api/v1/configmaps/x")[0] == 404  # a name needs a namespace
    assert _call(conn, "GET", "/api/v1/namespaces/default/configmaps/x/scale")[0] == 404
    status, body = _call(conn, "PATCH", f"{base}/x", {}, **{"Content-Type": "text/plain"})
    assert status == 404  # not found comes before the media type check
    _call(conn, "POST", base, {"metadata": {"name": "x"}})
    status, body = _call(
        conn, "PATCH", f"{base}/x", {}, **{"Content-Type": "application/apply-patch+yaml"}
    )
    assert status == 415
    assert body["reason"] == "UnsupportedMediaType"


def test_group_discovery(conn: http.client.HTTPConnection) -> None:
    status, group = _call(conn, "GET", "/apis/apps")
    assert status == 200
    assert group["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert _call(conn, "GET", "/apis/nothing.example.test")[0] == 404


def test_health_is_open_even_with_authentication() -> None:
    with FakeApiServer(authenticate=True) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            assert _call(connection, "GET", "/readyz") == (200, b"ok")
            assert _call(connection, "GET", "/api/v1/namespaces")[0] == 401
            token = {"Authorization": f"Bearer {server.token}"}
            assert _call(connection, "GET", "/api/v1/namespaces", **token)[0] == 200
        finally:
            connection.close()


def test_random_faults_respect_times(
    fake_api_server: FakeApiServer, conn: http.client.HTTPConnection
) -> None:
    fake_api_server.inject_random(StatusFault(500), 1.0, seed=1, times=2)
    codes = [_call(conn, "GET", "/version")[0] for _ in range(4)]
    assert codes == [500, 500, 200, 200]


def test_stop_releases_a_delay() -> None:
    server = FakeApiServer().start()
    server.inject(Delay(60))
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _call(connection, "GET", "/version")
        except (http.client.HTTPException, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert server.wait_for_requests(1, timeout=5)
        server.stop()
        thread.join(5)
        assert not thread.is_alive()
        assert len(errors) == 1
    finally:
        server.stop()
        connection.close()


def test_watch_of_cluster_scoped_custom_resource() -> None:
    gadgets = CustomResource("example.test", "v1", "gadgets", "Gadget", namespaced=False)
    with FakeApiServer(custom_resources=[gadgets]) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            path = "/apis/example.test/v1/gadgets"
            assert _call(connection, "POST", path, {"metadata": {"name": "g"}})[0] == 201
            connection.request("GET", f"{path}?watch=true&timeoutSeconds=1&resourceVersion=0")
            lines = connection.getresponse().read().decode().splitlines()
            assert [json.loads(line)["type"] for line in lines] == ["ADDED"]
        finally:
            connection.close()


def test_request_count_validates_the_verb(fake_api_server: FakeApiServer) -> None:
    with pytest.raises(ValueError, match="verb="):
        fake_api_server.request_count("fetch")
