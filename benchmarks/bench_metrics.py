"""What metrics and tracing cost per call (issue 19): off, metrics on, tracing on, in one run.

Run::

    python benchmarks/bench_metrics.py [--quick] [--json OUT]

Two measures:

* **Events alone**: the four events an ordinary call sends (``call_started``, ``limiter_wait``,
  ``attempt``, ``call_ended``) through a client's ``Fanout``, timed with ``timeit`` (the best
  of many short batches): the cost a subscriber adds to a call, free of the network's noise.
* **Whole calls**: client CPU per GET against a ``FakeApiServer`` in a child process
  (``time.process_time()`` of this process is then the client's alone), on one thread, the
  configurations taking turns in short rounds; the medians are compared. A call costs hundreds of
  microseconds of CPU here, so a difference of a few is within the noise of a shared machine:
  read it as a check on the first measure, not as a finer one.

Configurations: ``off`` (no subscriber but the client's own counters), ``metrics``
(``resilient_kube.metrics.register``), ``tracing_api`` (``tracing.instrument()`` with the
OpenTelemetry API's no-op provider: no SDK installed by the application) and ``tracing_sdk``
(the SDK's ``TracerProvider`` with no span processor: spans are made and dropped, no exporter).
The limiter is on but never binding (``qps=1e6``), so that its event is sent as in production.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from kubernetes import client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import resilient_kube
from resilient_kube import metrics, tracing
from resilient_kube._events import Fanout
from resilient_kube._stats import Counters

_SERVER_SCRIPT = """
import sys
from resilient_kube.testing import FakeApiServer
with FakeApiServer() as server:
    print(server.url, flush=True)
    sys.stdin.readline()
"""

CONFIGURATIONS = ("off", "metrics", "tracing_api", "tracing_sdk")


def _turn_on(name: str) -> Callable[[], None]:
    """Subscribe configuration ``name`` process-wide; return how to undo it."""
    if name == "metrics":
        metrics.register(CollectorRegistry())
        return metrics.unregister
    if name == "tracing_api":
        tracing.instrument(trace.NoOpTracerProvider())
        return tracing.uninstrument
    if name == "tracing_sdk":
        tracing.instrument(TracerProvider())
        return tracing.uninstrument
    return lambda: None


def _one_call(events: Fanout) -> Callable[[], None]:
    """The events of one ordinary GET, in order, as the transport sends them."""
    call_started, limiter_wait = events.call_started, events.limiter_wait
    attempt, call_ended = events.attempt, events.call_ended

    def one_call() -> None:
        headers: dict[str, str] = {}
        call_started("GET", "127.0.0.1:6443", headers)
        limiter_wait("GET", "127.0.0.1:6443", 0.0)
        attempt("GET", "127.0.0.1:6443", "200", 0.001, 0, 2048)
        call_ended("GET", "127.0.0.1:6443", 1, 0.001, None, None)

    return one_call


def events_alone(quick: bool) -> dict[str, float]:
    """Nanoseconds per call for the four events of one ordinary call, per configuration."""
    # Many short batches, the best kept: on a shared machine a long batch is always interrupted
    # by someone else's work, a short one often is not.
    number = 2_000
    repeat = 60 if quick else 300
    results: dict[str, float] = {}
    for name in CONFIGURATIONS:
        undo = _turn_on(name)
        try:
            times = timeit.repeat(_one_call(Fanout([Counters()])), number=number, repeat=repeat)
            results[name] = min(times) / number * 1e9
        finally:
            undo()
    base = results["off"]
    for name in CONFIGURATIONS[1:]:
        results[f"{name}_extra"] = results[name] - base
    return results


def whole_calls(quick: bool) -> dict[str, Any]:
    """Client CPU microseconds per GET, medians of alternating rounds, per configuration."""
    rounds = 7 if quick else 31
    calls = 300
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    url = process.stdout.readline().strip()
    rows: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    try:
        configuration = client.Configuration(host=url)
        api_client = resilient_kube.ApiClient(configuration, qps=1e6, burst=1_000_000)
        v1 = client.CoreV1Api(api_client)
        for _ in range(50):  # warm up: the connection, the validators, the caches
            v1.list_namespace()
        names = list(CONFIGURATIONS)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                undo = _turn_on(name)
                try:
                    v1.list_namespace()  # the first call of a configuration builds its state
                    cpu = time.process_time()
                    for _ in range(calls):
                        v1.list_namespace()
                    rows[name].append((time.process_time() - cpu) / calls * 1e6)
                finally:
                    undo()
        api_client.close()
    finally:
        process.stdin.close()
        process.wait(10)
    medians = {name: statistics.median(values) for name, values in rows.items()}
    result: dict[str, Any] = {
        "rounds": rounds,
        "calls_per_round": calls,
        "cpu_us_per_call": medians,
    }
    result["extra_cpu_us_per_call"] = {
        name: medians[name] - medians["off"] for name in CONFIGURATIONS[1:]
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--json", metavar="OUT", help="also write the results to OUT")
    args = parser.parse_args()
    results = {"events_ns_per_call": events_alone(args.quick), "calls": whole_calls(args.quick)}
    events = results["events_ns_per_call"]
    print("Events of one call, through the client's fanout (ns per call, best of repeats):")
    for name in CONFIGURATIONS:
        extra = "" if name == "off" else f"   (+{events[f'{name}_extra'] / 1000:.2f} µs)"
        print(f"  {name:12} {events[name]:8.0f}{extra}")
    calls = results["calls"]
    print(
        f"Whole GETs on a FakeApiServer, client CPU (µs per call, median of {calls['rounds']}"
        f" rounds of {calls['calls_per_round']}):"
    )
    for name in CONFIGURATIONS:
        cpu = calls["cpu_us_per_call"][name]
        extra = "" if name == "off" else f"   ({calls['extra_cpu_us_per_call'][name]:+.2f} µs)"
        print(f"  {name:12} {cpu:8.1f}{extra}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
