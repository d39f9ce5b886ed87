"""The retry matrix: phase x verb x failure, counted at the server (issue: retries)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import urllib3.exceptions as u3
from kubernetes import client

from resilient_kube import (
    ApiClient,
    ConnectionReset,
    ConnectTimeout,
    DeadlineExceeded,
    ReadTimeout,
    RetryBudgetExhausted,
    TransportError,
)
from resilient_kube.testing import (
    CloseConnection,
    Delay,
    FakeApiServer,
    Fault,
    FullAcceptQueueListener,
    ResetConnection,
    StatusFault,
    TruncatedBody,
)

from .conftest import configmap

CM = "/api/v1/namespaces/default/configmaps"

#: name -> (Kubernetes verb the server counts, repeated after it may have arrived?, the call).
#: Only reads are: a repeated write can do harm twice (issue 22).
Operation = Callable[[client.CoreV1Api], Any]
OPERATIONS: dict[str, tuple[str, bool, Operation]] = {
    "get": ("get", True, lambda v1: v1.read_namespaced_config_map("cm", "default")),
    "list": ("list", True, lambda v1: v1.list_namespaced_config_map("default")),
    "watch": (
        "watch",
        True,
        lambda v1: v1.list_namespaced_config_map(
            "default", watch=True, timeout_seconds=1, _preload_content=False
        ).release_conn(),
    ),
    "put": (
        "update",
        False,
        lambda v1: v1.replace_namespaced_config_map("cm", "default", configmap("cm")),
    ),
    "delete": ("delete", False, lambda v1: v1.delete_namespaced_config_map("cm", "default")),
    "deletecollection": (
        "deletecollection",
        False,
        lambda v1: v1.delete_collection_namespaced_config_map("default"),
    ),
    "post": (
        "create",
        False,
        lambda v1: v1.create_namespaced_config_map("default", configmap("new")),
    ),
    "patch": (
        "patch",
        False,
        lambda v1: v1.patch_namespaced_config_map("cm", "default", {"data": {"k": "v"}}),
    ),
}

#: fault -> (sent: may the request have reached the server?, error raised when not retried)
FAULTS: dict[str, tuple[Fault, bool, type[BaseException]]] = {
    "503": (StatusFault(503), True, client.ApiException),
    "500": (StatusFault(500), True, client.ApiException),
    "504": (StatusFault(504), True, client.ApiException),
    "429+retry-after": (StatusFault(429, retry_after=0), False, client.ApiException),
    "429": (StatusFault(429), False, client.ApiException),
    "503+retry-after": (StatusFault(503, retry_after=0), False, client.ApiException),
    "429+status-details": (
        StatusFault(429, details_retry_after_seconds=0),
        False,
        client.ApiException,
    ),
    "reset": (ResetConnection(), True, ConnectionReset),
    "close": (CloseConnection(), True, ConnectionReset),
    "truncated": (TruncatedBody(), True, ConnectionReset),
    "read-timeout": (Delay(3), True, ReadTimeout),
}


def fresh_api(server: FakeApiServer, **tuning: Any) -> tuple[ApiClient, client.CoreV1Api]:
    api_client = ApiClient(server.configuration(), **{"backoff_base": 0.01, **tuning})
    v1 = client.CoreV1Api(api_client)
    v1.create_namespaced_config_map("default", configmap("cm"))
    server.reset_stats()
    return api_client, v1


@pytest.mark.parametrize("fault_name", sorted(FAULTS))
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_retry_matrix(server: FakeApiServer, operation: str, fault_name: str) -> None:
    verb, safe, call = OPERATIONS[operation]
    fault, sent, error = FAULTS[fault_name]
    if operation == "watch" and fault_name in ("truncated", "read-timeout"):
        pytest.skip("a watch has no read_timeout, and a cut stream is the stream's business")
    api_client, v1 = fresh_api(server, read_timeout=0.5)
    server.inject(fault, verb=verb, times=1)
    repeated = safe or not sent
    if repeated:
        call(v1)
        assert server.request_count(verb) == 2
        assert api_client.stats().retry.retries == 1
    else:
        with pytest.raises(error):
            call(v1)
        assert server.request_count(verb) == 1
        assert api_client.stats().retry.retries == 0
    api_client.close()


def test_a_lost_answer_to_deletecollection_never_deletes_what_came_after(
    server: FakeApiServer,
) -> None:
    # The answer to a deletecollection is lost. Had the server done the work, a repeat would
    # delete "late", which another client creates in between (issue 22): it is never sent again.
    api_client, v1 = fresh_api(server, read_timeout=0.5)
    server.inject(ResetConnection(), verb="deletecollection", times=1)
    with pytest.raises(ConnectionReset):
        v1.delete_collection_namespaced_config_map("default")
    v1.create_namespaced_config_map("default", configmap("late"))
    names = [cm.metadata.name for cm in v1.list_namespaced_config_map("default").items]
    assert "late" in names
    assert server.request_count("deletecollection") == 1
    api_client.close()


def test_a_put_whose_answer_was_lost_is_not_sent_again_to_meet_409(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server, read_timeout=0.5)
    current = v1.read_namespaced_config_map("cm", "default")
    current.data = {"k": "v2"}
    server.inject(ResetConnection(), verb="update", times=1)
    with pytest.raises(ConnectionReset):
        v1.replace_namespaced_config_map("cm", "default", current)
    assert server.request_count("update") == 1
    api_client.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422])
@pytest.mark.parametrize("operation", ["get", "post"])
def test_other_client_errors_are_never_retried(
    server: FakeApiServer, operation: str, status: int
) -> None:
    verb, _, call = OPERATIONS[operation]
    api_client, v1 = fresh_api(server)
    server.inject(StatusFault(status, retry_after=0), verb=verb, times=None)
    with pytest.raises(client.ApiException) as caught:
        call(v1)
    assert caught.value.status == status
    assert server.request_count(verb) == 1
    api_client.close()


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_connect_failures_are_retried_for_every_verb(operation: str) -> None:
    _, _, call = OPERATIONS[operation]
    with FullAcceptQueueListener() as listener:
        api_client = ApiClient(
            client.Configuration(host=listener.url),
            connect_timeout=0.2,
            max_attempts=3,
            backoff_base=0.01,
        )
        with pytest.raises(ConnectTimeout) as caught:
            call(client.CoreV1Api(api_client))
        assert caught.value.attempts == 3
        assert api_client.stats().retry.retries_by_reason == {"connect_timeout": 2}
        api_client.close()


def test_refused_connection_is_retried_for_post_until_the_deadline() -> None:
    # Nothing listens: an API server restarting. Refused connects reached no server, so they
    # are retried until the deadline, not counted against max_attempts (issue 20).
    api_client = ApiClient(
        client.Configuration(host="http://127.0.0.1:9"),
        max_attempts=3,
        backoff_base=0.01,
        backoff_max=0.05,
        deadline=0.5,
    )
    with pytest.raises(DeadlineExceeded) as caught:
        client.CoreV1Api(api_client).create_namespaced_config_map("default", configmap("x"))
    assert caught.value.attempts > 3
    assert isinstance(caught.value.last_error, u3.NewConnectionError)
    assert "Connection refused" in str(caught.value)
    api_client.close()


def test_refused_connection_without_a_deadline_counts_every_attempt() -> None:
    api_client = ApiClient(
        client.Configuration(host="http://127.0.0.1:9"),
        max_attempts=3,
        backoff_base=0.01,
        deadline=None,
    )
    with pytest.raises(TransportError) as caught:
        client.CoreV1Api(api_client).create_namespaced_config_map("default", configmap("x"))
    assert caught.value.attempts == 3
    assert isinstance(caught.value, u3.NewConnectionError)
    api_client.close()


def test_post_opt_in_repeats_after_a_reset(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server, retry_non_idempotent=True)
    server.inject(ResetConnection(), verb="create", times=1)
    v1.create_namespaced_config_map("default", configmap("fixed-name"))
    assert server.request_count("create") == 2
    api_client.close()


def test_attempts_never_exceed_max_attempts_and_the_last_answer_is_kept(
    server: FakeApiServer,
) -> None:
    api_client, v1 = fresh_api(server, max_attempts=4)
    server.inject(StatusFault(503, message="backend down"), verb="get", times=None)
    with pytest.raises(client.ApiException) as caught:
        v1.read_namespaced_config_map("cm", "default")
    assert server.request_count("get") == 4
    assert caught.value.status == 503
    assert "backend down" in caught.value.body
    assert caught.value.headers["Content-Type"].startswith("application/json")
    api_client.close()


def test_not_found_keeps_its_subclass(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server)
    with pytest.raises(client.ApiException) as caught:
        v1.read_namespaced_config_map("missing", "default")
    assert caught.value.status == 404
    if hasattr(client, "NotFoundException"):
        assert isinstance(caught.value, client.NotFoundException)
    api_client.close()


def test_retry_after_seconds_is_honoured(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server)
    server.inject(StatusFault(429, retry_after=1), verb="get", times=1)
    start = time.monotonic()
    v1.read_namespaced_config_map("cm", "default")
    assert time.monotonic() - start >= 1.0
    assert api_client.stats().retry.backoff_seconds >= 1.0
    api_client.close()


def test_retry_after_http_date_is_honoured(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server)
    when = datetime.now(UTC) + timedelta(seconds=2)
    server.inject(StatusFault(503, retry_after=format_datetime(when, usegmt=True)), verb="POST")
    start = time.monotonic()
    v1.create_namespaced_config_map("default", configmap("dated"))  # 503 + Retry-After: any verb
    # HTTP-dates have one-second resolution: the wait is between 1 and 2 seconds.
    assert time.monotonic() - start >= 1.0
    assert server.request_count("create") == 2
    api_client.close()


def test_status_details_retry_after_seconds_is_honoured(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server)
    server.inject(StatusFault(429, details_retry_after_seconds=1), verb="get", times=1)
    start = time.monotonic()
    v1.read_namespaced_config_map("cm", "default")
    assert time.monotonic() - start >= 1.0
    api_client.close()


def test_retry_after_beyond_the_cap_or_the_deadline_is_not_waited_for(
    server: FakeApiServer,
) -> None:
    api_client, v1 = fresh_api(server, retry_after_max=2, deadline=4)
    for retry_after in (3, 5):  # above the cap; then also beyond the deadline
        server.inject(StatusFault(429, retry_after=retry_after), verb="get", times=1)
        start = time.monotonic()
        with pytest.raises(client.ApiException) as caught:
            v1.read_namespaced_config_map("cm", "default")
        assert caught.value.status == 429
        assert caught.value.headers["Retry-After"] == str(retry_after)
        assert time.monotonic() - start < 0.5
    assert server.request_count("get") == 2
    api_client.close()


def test_client_go_retries_do_not_stack(server: FakeApiServer) -> None:
    configuration = server.configuration()
    configuration.client_go_retries = True
    api_client = ApiClient(configuration, max_attempts=3, backoff_base=0.01)
    server.inject(StatusFault(429, retry_after=0), verb="get", times=None)
    with pytest.raises(client.ApiException):
        client.CoreV1Api(api_client).read_namespace("default")
    assert server.request_count("get") == 3
    # The user's configuration is left as it was.
    assert configuration.client_go_retries is True
    api_client.close()


def test_budget_caps_retries_under_a_total_outage(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(
        server, retry_budget_ratio=0.3, retry_budget_min_per_second=0, backoff_base=0.001
    )
    server.inject(StatusFault(503), verb="get", times=None)
    for _ in range(20):
        with pytest.raises(client.ApiException):
            v1.read_namespaced_config_map("cm", "default")
    assert server.request_count("get") <= 20 * 1.3
    assert api_client.stats().retry.budget_refusals > 0
    api_client.close()


def test_budget_refusal_of_a_transport_failure_is_named(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(
        server, retry_budget_ratio=0, retry_budget_min_per_second=0, read_timeout=0.2
    )
    server.inject(Delay(2), verb="get", times=None)
    with pytest.raises(RetryBudgetExhausted) as caught:
        v1.read_namespaced_config_map("cm", "default")
    assert caught.value.attempts == 1
    assert isinstance(caught.value.last_error, u3.ReadTimeoutError)
    api_client.close()


def test_errors_still_fit_stock_except_clauses(server: FakeApiServer) -> None:
    api_client, v1 = fresh_api(server, max_attempts=2)
    server.inject(ResetConnection(), verb="get", times=None)
    with pytest.raises(u3.ProtocolError) as caught:
        v1.read_namespaced_config_map("cm", "default")
    assert isinstance(caught.value, u3.MaxRetryError)
    assert isinstance(caught.value, ConnectionReset)
    assert caught.value.attempts == 2
    api_client.close()


def test_logging_one_line_per_retry_and_one_warning_without_credentials(
    server: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configuration = server.configuration()
    api_client = ApiClient(configuration, max_attempts=3, backoff_base=0.01)
    server.inject(StatusFault(503), verb="list", times=None)
    with pytest.raises(client.ApiException):
        client.CoreV1Api(api_client).list_namespace()
    retries = [
        r
        for r in caplog.records
        if r.name.startswith("resilient_kube") and "retrying" in r.getMessage()
    ]
    assert len(retries) == 2
    assert retries[0].levelno == logging.DEBUG
    assert (
        "retrying GET /api/v1/namespaces: attempt=1 phase=after-send reason=status_503 wait="
        in (retries[0].getMessage())
    )
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("resilient_kube")
    ]
    assert len(warnings) == 1
    assert "failed after 3 attempt(s): HTTP 503" in warnings[0].getMessage()
    assert server.token not in caplog.text
    assert "Authorization" not in caplog.text
    api_client.close()
