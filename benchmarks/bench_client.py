"""The stock client and resilient_kube in the same run, against the same local API server.

Run::

    python benchmarks/bench_client.py [--quick] [--json OUT]

* **Overhead** (issue 2): GETs per second on 1 and on 32 threads, client CPU per call and
  connections opened. The server runs in a child process, so ``time.process_time()`` of this
  process is the clients' CPU alone. resilient_kube runs with ``qps=None`` here: a limiter would
  measure the limit, not the transport (``bench_limiter.py`` measures the limiter's cost).
* **Instructions** (issue 17): the CPU work of one GET, counted by valgrind's callgrind, stock
  and resilient_kube. Unlike CPU time on a shared machine (rounds spread by ±20 µs), the count
  repeats to within 0.2%; it is turned into µs at the stock client's measured µs per
  instruction. Skipped without valgrind (``apt-get install valgrind``).
* **Fault masking** (issue 3): 1,000 GETs with 20% answered 503; a 32-thread mix of 10% 503,
  5% resets and 2% 429; a POST whose connection is reset; a total outage, where the retry budget
  must keep the wire load at most about 1.35x the offered load.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client

import resilient_kube
from resilient_kube.testing import FakeApiServer, ResetConnection, StatusFault

#: Runs FakeApiServer in a child process; stdin lines "stats" / "reset" / "quit" control it.
_SERVER_SCRIPT = """
import json, sys
from resilient_kube.testing import FakeApiServer
with FakeApiServer() as server:
    print(server.url, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            stats = server.stats()
            print(json.dumps({"connections": stats.connections, "requests": stats.requests}),
                  flush=True)
        elif command == "reset":
            server.reset_stats()
            print("{}", flush=True)
        else:
            break
"""


class ServerProcess:
    """A FakeApiServer in a child process, so its CPU is not counted as the client's."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()

    def command(self, word: str) -> dict[str, int]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(word + "\n")
        self._process.stdin.flush()
        result: dict[str, int] = json.loads(self._process.stdout.readline())
        return result

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)


def _configuration(url: str) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = url
    return configuration


def _stock(url: str) -> Any:
    return client.ApiClient(_configuration(url))


def _resilient(url: str, **tuning: Any) -> Any:
    return resilient_kube.ApiClient(_configuration(url), **tuning)


def _run_threads(threads: int, calls_per_thread: int, call: Callable[[], object]) -> float:
    """Run ``call`` from ``threads`` threads; return the wall time."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(calls_per_thread):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start


def overhead(quick: bool) -> dict[str, Any]:
    """GETs/s and CPU per call: the median of many short rounds, the clients taking turns.

    Medians of short alternating rounds, not the best of a few long ones: on a shared machine
    a burst of someone else's work then lands in one round of one client, not in its result.

    Three clients: the stock client as it ships (no timeouts), the stock client given the same
    timeouts as resilient_kube (``_request_timeout=(5, 30)`` on every call) and resilient_kube.
    The stock client takes timeouts only per call: the argument's validation costs it about
    13 us a call, and a socket with a timeout costs CPython a ``poll()`` and a second release of
    the GIL before every ``send`` and ``recv``, which shows with many threads.
    """
    rounds = 5 if quick else 15
    single_calls = 400 if quick else 1000
    defaults = resilient_kube.Settings()
    same_timeouts = (defaults.connect_timeout, defaults.read_timeout)
    server = ServerProcess()
    results: dict[str, Any] = {"rounds": rounds}
    try:
        for threads, per_thread in ((1, single_calls), (32, max(10, single_calls // 32))):
            rows: dict[str, list[tuple[float, float, int]]] = {name: [] for name in _OVERHEAD}
            names = list(_OVERHEAD)
            for round_ in range(rounds):
                # Each round starts with the next client: no client always follows the same one.
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    factory, call_kwargs = _OVERHEAD[name]
                    api_client = factory(server.url)
                    v1 = client.CoreV1Api(api_client)
                    kwargs = {"_request_timeout": same_timeouts} if call_kwargs else {}
                    server.command("reset")
                    v1.list_namespace(**kwargs)  # warm up: validators, the first connection
                    cpu = time.process_time()
                    wall = _run_threads(
                        threads, per_thread, functools.partial(v1.list_namespace, **kwargs)
                    )
                    cpu = time.process_time() - cpu
                    calls = threads * per_thread
                    stats = server.command("stats")
                    rows[name].append((calls / wall, cpu / calls * 1e6, stats["connections"]))
                    api_client.close()
            summary: dict[str, Any] = {
                name: {
                    "gets_per_second": statistics.median(row[0] for row in values),
                    "cpu_us_per_call": statistics.median(row[1] for row in values),
                    "connections_opened": max(row[2] for row in values),
                }
                for name, values in rows.items()
            }
            ours = summary["resilient_kube"]
            for suffix, baseline in (("", "stock"), ("_vs_same_timeouts", "stock_same_timeouts")):
                summary["ratio_gets_per_second" + suffix] = (
                    ours["gets_per_second"] / summary[baseline]["gets_per_second"]
                )
                summary["extra_cpu_us_per_call" + suffix] = (
                    ours["cpu_us_per_call"] - summary[baseline]["cpu_us_per_call"]
                )
            results[f"threads_{threads}"] = summary
    finally:
        server.close()
    return results


def _resilient_nolimit(url: str) -> Any:
    return _resilient(url, qps=None)


#: The overhead benchmark's clients: factory, and whether every call passes the same timeouts.
_OVERHEAD: dict[str, tuple[Callable[[str], Any], bool]] = {
    "stock": (_stock, False),
    "stock_same_timeouts": (_stock, True),
    "resilient_kube": (_resilient_nolimit, False),
}


@contextmanager
def _server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def _masking_run(  # noqa: PLR0917  # one scenario's parameters, in reading order
    server: FakeApiServer,
    api_client: Any,
    calls: int,
    threads: int,
    faults: list[tuple[Any, float]],
    seed: int,
) -> dict[str, Any]:
    v1 = client.CoreV1Api(api_client)
    v1.read_namespace("default")  # warm up before the faults start
    # Each fault draws its own dice from its own seed: the same schedule for both clients.
    for index, (fault, probability) in enumerate(faults):
        server.inject_random(fault, probability, seed=seed + index, verb="get")
    server.reset_stats()
    latencies: list[float] = []
    ok = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal ok
        start = time.perf_counter()
        try:
            v1.read_namespace("default")
            success = True
        except (client.ApiException, urllib3.exceptions.HTTPError):
            success = False
        with lock:
            latencies.append(time.perf_counter() - start)
            ok += success

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(calls)))
    latencies.sort()
    return {
        "success_rate": ok / calls,
        "wire_per_call": server.request_count("get") / calls,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "latencies_ms": [round(latency * 1000, 3) for latency in latencies],
    }


def fault_masking(quick: bool, seed: int = 7) -> dict[str, Any]:
    """Success and wire load under injected faults, stock vs resilient_kube."""
    calls = 300 if quick else 1000
    results: dict[str, Any] = {}
    mixes: dict[str, list[tuple[Any, float]]] = {
        "503_20pct": [(StatusFault(503), 0.20)],
        "mix_32_threads": [
            (StatusFault(503), 0.10),
            (ResetConnection(), 0.05),
            (StatusFault(429, retry_after=1), 0.02),
        ],
    }
    for name, faults in mixes.items():
        threads = 32 if name.startswith("mix") else 1
        results[name] = {}
        for label, factory in (
            ("stock", _stock),
            ("resilient_kube", lambda url: _resilient(url, qps=None, backoff_base=0.05)),
        ):
            with _server() as server:
                api_client = factory(server.url)
                results[name][label] = _masking_run(
                    server, api_client, calls, threads, faults, seed
                )
                api_client.close()
    results["post_reset"] = _post_reset()
    results["success_vs_fault_rate"] = _success_curve(quick, seed)
    results["outage"] = outage(10.0 if quick else 60.0)
    return results


def _post_reset() -> dict[str, int]:
    with _server() as server:
        api_client = _resilient(server.url)
        v1 = client.CoreV1Api(api_client)
        server.inject(ResetConnection(), verb="create", times=1)
        body = {"metadata": {"name": "once"}, "data": {"k": "v"}}
        with contextlib.suppress(resilient_kube.ConnectionReset):
            v1.create_namespaced_config_map("default", body)
        sent = server.request_count("create")
        api_client.close()
    return {"posts_on_wire": sent}


def _success_curve(quick: bool, seed: int) -> dict[str, dict[str, Any]]:
    calls = 200 if quick else 500
    curve: dict[str, dict[str, Any]] = {"stock": {}, "resilient_kube": {}}
    for rate in (0.0, 0.05, 0.10, 0.20, 0.30, 0.50):
        for label, factory in (
            ("stock", _stock),
            ("resilient_kube", lambda url: _resilient(url, qps=None, backoff_base=0.01)),
        ):
            with _server() as server:
                api_client = factory(server.url)
                faults = [(StatusFault(503), rate)] if rate else []
                run = _masking_run(server, api_client, calls, 8, faults, seed)
                curve[label][f"{rate:.2f}"] = run["success_rate"]
                api_client.close()
    return curve


def outage(seconds: float) -> dict[str, float]:
    """Every GET answers 503 for ``seconds``; 8 threads keep calling. Wire load / offered load."""
    with _server() as server:
        server.inject(StatusFault(503), verb="get", times=None)
        api_client = _resilient(server.url, qps=None)
        v1 = client.CoreV1Api(api_client)
        calls = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def work() -> None:
            nonlocal calls
            while time.monotonic() < stop_at:
                with contextlib.suppress(client.ApiException):
                    v1.read_namespace("default")
                with lock:
                    calls += 1

        workers = [threading.Thread(target=work) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wire = server.request_count("get")
        refusals = api_client.stats().retry.budget_refusals
        api_client.close()
    return {
        "seconds": seconds,
        "calls": calls,
        "wire_requests": wire,
        "wire_per_call": wire / calls,
        "budget_refusals": refusals,
        "without_budget_would_be": 5.0,
    }


#: One client's GETs under callgrind, instrumented only while they run (``callgrind_control``
#: switches counting on and off): argv = client name, server URL, threads, calls per thread.
_COUNTED_SCRIPT = """
import os, subprocess, sys
sys.path.insert(0, {benchmarks!r})
from kubernetes import client
import bench_client
name, url, threads, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
api = bench_client._OVERHEAD[name][0](url)
v1 = client.CoreV1Api(api)
# Warm up: validators, caches, every thread's connection.
bench_client._run_threads(threads, max(10, 200 // threads), v1.list_namespace)
def counting(on):
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   stdout=subprocess.DEVNULL, check=True)
counting(True)
bench_client._run_threads(threads, calls, v1.list_namespace)
counting(False)
api.close()
"""


def instructions(quick: bool) -> dict[str, Any] | None:
    """Instructions per GET on 1 and on 32 threads, stock and resilient_kube, each counted
    twice (valgrind runs a process's threads one at a time; the GIL's hand-offs are counted)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return None
    results: dict[str, Any] = {}
    server = ServerProcess()
    try:
        for threads, calls in ((1, 100 if quick else 300), (32, 3 if quick else 10)):
            results[f"threads_{threads}"] = _count(server.url, threads, calls, 1 if quick else 2)
    finally:
        server.close()
    return results


def _count(url: str, threads: int, calls: int, repeats: int) -> dict[str, Any]:
    script = _COUNTED_SCRIPT.format(benchmarks=os.path.dirname(os.path.abspath(__file__)))
    counts: dict[str, list[float]] = {"stock": [], "resilient_kube": []}
    for _ in range(repeats):
        for name, runs in counts.items():
            done = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    "--callgrind-out-file=/dev/null",
                    sys.executable,
                    "-c",
                    script,
                    name,
                    url,
                    str(threads),
                    str(calls),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYTHONHASHSEED": "0"},
                check=True,
            )
            collected = re.search(r"Collected : (\d+)", done.stderr)
            assert collected is not None, done.stderr[-2000:]
            runs.append(int(collected.group(1)) / (threads * calls))
    stock, ours = (min(counts[name]) for name in ("stock", "resilient_kube"))
    return {
        "calls": threads * calls,
        "instructions_per_call": {name: min(values) for name, values in counts.items()},
        "runs": counts,
        "ratio": ours / stock,
        "extra_instructions_per_call": ours - stock,
    }


def run(quick: bool) -> dict[str, Any]:
    results = {"overhead": overhead(quick), "faults": fault_masking(quick)}
    counted = instructions(quick)
    if counted is not None:
        # In µs at the stock client's CPU per instruction in this run's timed rounds.
        for key, cell in counted.items():
            stock = results["overhead"][key]["stock"]["cpu_us_per_call"]
            per_instruction = stock / cell["instructions_per_call"]["stock"]
            cell["extra_cpu_us_per_call"] = cell["extra_instructions_per_call"] * per_instruction
        results["instructions"] = counted
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls and shorter outage")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args.quick)
    printable = json.loads(json.dumps(results))
    for mix in ("503_20pct", "mix_32_threads"):
        for label in ("stock", "resilient_kube"):
            printable["faults"][mix][label].pop("latencies_ms")
    print(json.dumps(printable, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
