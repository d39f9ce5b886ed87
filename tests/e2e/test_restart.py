"""An API server restart in the middle of a run: with the default settings, calls ride over it."""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import kubernetes
import pytest
from kubernetes.client import V1ConfigMap, V1Namespace, V1ObjectMeta

import resilient_kube

from .cluster import ApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

WORKERS = 8
#: Every call must finish within the default deadline, restart included (a restart takes ~3 s).
DEADLINE = resilient_kube.DEFAULT_SETTINGS.deadline or 60.0
#: Calls each worker makes before the restart, and after it, so both sides are covered.
CALLS_BEFORE = 20
CALLS_AFTER = 20


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_mid_run(
    restartable_apiserver: ApiServer, kill: bool, e2e_results: dict[str, Any]
) -> None:
    server = restartable_apiserver
    namespace = "restart"
    with server.stock_client() as api_client:
        setup = kubernetes.client.CoreV1Api(api_client)
        setup.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=namespace)))
        setup.create_namespaced_config_map(
            namespace, V1ConfigMap(metadata=V1ObjectMeta(name="probe"), data={"k": "v"})
        )

    restarted = threading.Event()
    calls_before = threading.Semaphore(0)
    durations: list[float] = []
    lock = threading.Lock()

    # The default settings: a restart must cost nothing without tuning (issue 20).
    with resilient_kube.ClientFactory(kubeconfig=server.kubeconfig) as kube:
        core = kube.core_v1()

        def timed(call: int) -> None:
            start = time.monotonic()
            if call % 2:
                assert core.read_namespaced_config_map("probe", namespace).data == {"k": "v"}
            else:
                assert core.list_namespaced_config_map(namespace).items
            with lock:
                durations.append(time.monotonic() - start)

        def worker() -> int:
            """Call until the restart is over and CALLS_AFTER more calls succeeded."""
            calls = after = 0
            while after < CALLS_AFTER:
                timed(calls)
                calls += 1
                if calls == CALLS_BEFORE:
                    calls_before.release()
                if restarted.is_set():
                    after += 1
                elif calls > 100_000:  # Defensive: the restart never came
                    raise AssertionError("no restart")
            return calls

        # A call started while the server is down must succeed once it is back.
        started_while_down: list[Future[None]] = []
        with ThreadPoolExecutor(WORKERS + 1) as pool:
            workers = [pool.submit(worker) for _ in range(WORKERS)]
            for _ in range(WORKERS):
                assert calls_before.acquire(timeout=60)
            start = time.monotonic()
            server.restart(
                kill=kill, between=lambda: started_while_down.append(pool.submit(timed, 1))
            )
            downtime = time.monotonic() - start
            restarted.set()
            calls = sum(future.result(timeout=120) for future in workers)
            started_while_down[0].result(timeout=DEADLINE)
        stats = kube.stats()

    e2e_results[f"restart_{'sigkill' if kill else 'sigterm'}"] = {
        "calls": calls + 1,
        "restart_seconds": round(downtime, 2),
        "slowest_call_seconds": round(max(durations), 2),
        "attempts": stats.transport.attempts,
        "retries_by_reason": stats.retry.retries_by_reason,
        "connections_opened": stats.transport.connections_opened,
    }
    assert stats.transport.failures == 0
    assert max(durations) < DEADLINE
    assert stats.retry.retries > 0, "the restart went unnoticed"
    assert collections.Counter(stats.retry.retries_by_reason).total() == stats.retry.retries
