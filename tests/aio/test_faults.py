"""The issue's fault scenarios for the asyncio client, with the stock ``kubernetes.aio`` beside it.

Faults are drawn at random by the fake server, but reproducibly: every task lists its own
namespace and every namespace has its own seeded rules, so each task meets the same faults in
the same order however the event loop interleaves the tasks. The rates are per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from resilient_kube import TransportError
from resilient_kube.aio import ApiClient
from resilient_kube.testing import FakeApiServer, Fault, ResetConnection, StatusFault

from .conftest import configmap

#: No limiter: these scenarios measure retries, not pacing (the limiter has its own tests).
TUNING: dict[str, Any] = {"qps": None}


def inject_mix(server: FakeApiServer, mix: Sequence[tuple[Fault, float]], tasks: int) -> None:
    """Each of ``tasks`` namespaces gets ``mix`` at the given marginal rates per request.

    Rules apply in order and the first that fires wins, so each later rule's probability is
    conditioned on the earlier ones not firing.
    """
    for task in range(tasks):
        left = 1.0
        for number, (fault, rate) in enumerate(mix):
            server.inject_random(
                fault,
                rate / left,
                seed=1000 * task + number,
                verb="list",
                path=f"/namespaces/ns{task}/",
                times=None,
            )
            left -= rate


async def list_calls(api: Any, tasks: int, calls_per_task: int) -> tuple[int, int]:
    """``tasks`` concurrent tasks, each listing its namespace ``calls_per_task`` times in turn.

    Returns (calls that succeeded, calls that failed).
    """
    v1 = client.CoreV1Api(api)

    async def task(number: int) -> int:
        ok = 0
        for _ in range(calls_per_task):
            try:
                await v1.list_namespaced_config_map(f"ns{number}")
            except (ApiException, TransportError, aiohttp.ClientError):  # ours, and stock's
                continue
            ok += 1
        return ok

    oks = await asyncio.gather(*(task(n) for n in range(tasks)))
    succeeded = sum(oks)
    return succeeded, tasks * calls_per_task - succeeded


def run_both(
    server: FakeApiServer,
    configuration: client.Configuration,
    mix: Sequence[tuple[Fault, float]],
    tasks: int,
    calls_per_task: int,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The same faults for the stock client, then for ours: (ok, failed, wire requests) each."""
    results = []
    for make in (
        lambda: client.ApiClient(configuration),
        lambda: ApiClient(configuration, **TUNING),
    ):
        server.clear_faults()
        server.reset_stats()
        inject_mix(server, mix, tasks)

        async def main(make: Any = make) -> tuple[int, int]:
            async with make() as api:
                return await list_calls(api, tasks, calls_per_task)

        ok, failed = asyncio.run(main())
        results.append((ok, failed, server.request_count("list")))
    return results[0], results[1]


def test_20_percent_503(server: FakeApiServer, configuration: client.Configuration) -> None:
    """Stock: about 80% success. Ours: at least 99.9%, at most 1.3 wire requests per call."""
    calls = 8 * 40
    stock, ours = run_both(server, configuration, [(StatusFault(503), 0.2)], 8, 40)
    assert stock[0] / calls < 0.9
    assert stock[2] == calls
    assert ours[0] / calls >= 0.999
    assert ours[2] / calls <= 1.3


def test_503_resets_and_429_on_32_tasks(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    """10% 503, 5% resets, 2% 429: stock about 83%, ours at least 99.9%."""
    calls = 32 * 10
    mix: list[tuple[Fault, float]] = [
        (StatusFault(503), 0.10),
        (ResetConnection(), 0.05),
        (StatusFault(429), 0.02),
    ]
    stock, ours = run_both(server, configuration, mix, 32, 10)
    assert stock[0] / calls < 0.9
    assert ours[0] / calls >= 0.999


def test_a_total_outage_adds_at_most_35_percent(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    """Every request fails: the budget keeps the wire load at most 1.35x the offered load."""
    calls = 8 * 40
    stock, ours = run_both(server, configuration, [(StatusFault(503), 1.0)], 8, 40)
    assert stock == (0, calls, calls)
    assert ours[0] == 0
    assert ours[2] <= 1.35 * calls


def test_no_post_is_sent_twice_under_random_resets(
    server: FakeApiServer, configuration: client.Configuration
) -> None:
    """5% of creates are reset after the server read them: none is sent again."""
    server.inject_random(ResetConnection(), 0.05, seed=7, verb="create", times=None)
    tasks, per_task = 8, 20

    async def main() -> tuple[int, int]:
        async with ApiClient(configuration, **TUNING) as api:
            v1 = client.CoreV1Api(api)

            async def task(number: int) -> tuple[int, int]:
                ok = failed = 0
                for index in range(per_task):
                    try:
                        await v1.create_namespaced_config_map(
                            "default", configmap(f"cm-{number}-{index}")
                        )
                        ok += 1
                    except TransportError:
                        failed += 1
                return ok, failed

            results = await asyncio.gather(*(task(n) for n in range(tasks)))
            return sum(r[0] for r in results), sum(r[1] for r in results)

    ok, failed = asyncio.run(main())
    assert failed > 0  # the faults happened
    assert ok + failed == tasks * per_task
    assert server.request_count("create") == tasks * per_task
