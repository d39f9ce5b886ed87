"""Overhead of resilient_kube.aio against the stock ``kubernetes.aio`` client, in one run.

Run::

    python benchmarks/bench_aio.py [--quick] [--json OUT]

GETs per second from 1 task and from 32 tasks, and the client's CPU per call, of the stock client,
the stock client with ``trust_env`` off, and resilient_kube.aio, against the same
local API server (``bench_client.ServerProcess``: a FakeApiServer in a child process, so
``time.process_time()`` here is the clients' CPU alone). The clients take turns in short rounds
and the medians are reported, as ``bench_client.py overhead`` does: on a shared machine a burst
of someone else's work then lands in one round of one client, not in its result.
resilient_kube runs with ``qps=None``: a limiter would measure the limit, not the driver.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from kubernetes.aio import client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import resilient_kube.aio
from bench_client import ServerProcess  # a sibling script, not a package


def _configuration(url: str) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = url
    return configuration


def _stock_trust_env_off(url: str) -> Any:
    configuration = _configuration(url)
    configuration.client_session_kwargs = {"trust_env": False}
    return client.ApiClient(configuration)


#: The stock client as it ships; the stock client without ``trust_env`` (its session otherwise
#: reads ~/.netrc and the proxy variables in a worker thread on every request, which
#: resilient_kube.aio does once), so that the driver's own overhead shows; and ours.
_CLIENTS: dict[str, Callable[[str], Any]] = {
    "stock": lambda url: client.ApiClient(_configuration(url)),
    "stock_trust_env_off": _stock_trust_env_off,
    "resilient_kube": lambda url: resilient_kube.aio.ApiClient(_configuration(url), qps=None),
}


async def _round(make: Callable[[], Any], tasks: int, per_task: int) -> tuple[float, float]:
    """(calls per second, client CPU microseconds per call) of one round."""
    async with make() as api:
        v1 = client.CoreV1Api(api)
        await v1.list_namespace()  # warm up: the session, the first connection

        async def task() -> None:
            for _ in range(per_task):
                await v1.list_namespace()

        cpu = time.process_time()
        wall = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(tasks)))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
    calls = tasks * per_task
    return calls / wall, cpu / calls * 1e6


def overhead(quick: bool) -> dict[str, Any]:
    """Medians of alternating rounds for 1 and 32 tasks, and ours against stock."""
    rounds = 5 if quick else 15
    single_calls = 300 if quick else 1000
    server = ServerProcess()
    results: dict[str, Any] = {"rounds": rounds}
    try:
        for tasks, per_task in ((1, single_calls), (32, max(10, single_calls // 32))):
            rows: dict[str, list[tuple[float, float]]] = {name: [] for name in _CLIENTS}
            names = list(_CLIENTS)
            for round_ in range(rounds):
                # Each round starts with the next client: no client always follows the same one.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    make = functools.partial(_CLIENTS[name], server.url)
                    rows[name].append(asyncio.run(_round(make, tasks, per_task)))
            summary: dict[str, Any] = {
                name: {
                    "gets_per_second": round(statistics.median(r[0] for r in values), 1),
                    "cpu_us_per_call": round(statistics.median(r[1] for r in values), 1),
                }
                for name, values in rows.items()
            }
            ours = summary["resilient_kube"]
            for suffix, baseline in (("", "stock"), ("_vs_trust_env_off", "stock_trust_env_off")):
                summary["ratio_gets_per_second" + suffix] = round(
                    ours["gets_per_second"] / summary[baseline]["gets_per_second"], 3
                )
                summary["extra_cpu_us_per_call" + suffix] = round(
                    ours["cpu_us_per_call"] - summary[baseline]["cpu_us_per_call"], 1
                )
            results[f"tasks_{tasks}"] = summary
    finally:
        server.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = {"overhead": overhead(args.quick)}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
