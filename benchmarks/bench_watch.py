"""Watch throughput and informer memory: ``resilient_kube`` against the stock ``kubernetes`` classes.

* events/s through ``resilient_kube.Watch`` and ``kubernetes.watch.Watch`` over the same clean
  backlog of 20,000 ConfigMap events, served as one canned chunked stream from loopback, read
  through the same resilient ``ApiClient``; rounds alternate, the median counts. Time is this
  process's CPU time (``time.process_time``): on a shared machine other processes' load moves
  wall-clock rates by ±20% from one round to the next, CPU time much less.
* the same through ``resilient_kube.aio.Watch`` and ``kubernetes.aio.watch.Watch``, read through
  the same ``resilient_kube.aio.ApiClient`` in one event loop (``--aio`` runs only this case).
* memory held by an informer whose cache has 10,000 ConfigMaps (tracemalloc), ours against
  kubernetes 37's ``kubernetes.informer.SharedInformer``.

Run standalone: ``PYTHONPATH=src python benchmarks/bench_watch.py [--aio] [--plot FILE.png]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import socket
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import kubernetes.watch
from kubernetes import client

import resilient_kube
from resilient_kube.testing import FakeApiServer

EVENTS = 20_000
ROUNDS = 9
OBJECTS = 10_000


def _event(i: int) -> bytes:
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": f"cm-{i}",
            "namespace": "default",
            "uid": f"00000000-0000-0000-0000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "bench", "index": str(i % 50)},
        },
        "data": {"key": "value" * 8, "other": str(i)},
    }
    return json.dumps({"type": "ADDED" if i % 3 else "MODIFIED", "object": obj}).encode() + b"\n"


class CannedWatchServer:
    """Answers every request on loopback with the same chunked stream of events, then ends it."""

    def __init__(self, events: int) -> None:
        body = b"".join(b"%x\r\n%b\r\n" % (len(line), line) for line in map(_event, range(events)))
        self._response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body + b"0\r\n\r\n"
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                with contextlib.suppress(OSError):  # the client stopped early
                    conn.sendall(self._response)

    def close(self) -> None:
        self._listener.close()


def _rate(make: Callable[[], Any], core: client.CoreV1Api) -> float:
    watch = make()
    count = 0
    started = time.process_time()
    for _ in watch.stream(core.list_namespaced_config_map, "default", resource_version="1"):
        count += 1
        if count == EVENTS:
            watch.stop()
    elapsed = time.process_time() - started
    assert count == EVENTS, count
    return EVENTS / elapsed


def _summary(rates: dict[str, list[float]]) -> dict[str, Any]:
    """Medians, their ratio, the best rounds' ratio and every round, of events per CPU second."""
    stock, ours = statistics.median(rates["stock"]), statistics.median(rates["resilient"])
    return {
        "events": EVENTS,
        "rounds": ROUNDS,
        "stock_events_per_cpu_s": round(stock),
        "resilient_events_per_cpu_s": round(ours),
        "ratio": round(ours / stock, 3),
        "ratio_best_rounds": round(max(rates["resilient"]) / max(rates["stock"]), 3),
        "all_rounds": {k: [round(v) for v in vs] for k, vs in rates.items()},
    }


def bench_throughput() -> dict[str, Any]:
    server = CannedWatchServer(EVENTS)
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.port}")
    api = resilient_kube.ApiClient(configuration, qps=None)
    core = client.CoreV1Api(api)
    rates: dict[str, list[float]] = {"stock": [], "resilient": []}
    try:
        _rate(kubernetes.watch.Watch, core)  # warm-up: imports, first connection
        for _ in range(ROUNDS):
            rates["stock"].append(_rate(kubernetes.watch.Watch, core))
            rates["resilient"].append(_rate(resilient_kube.Watch, core))
    finally:
        api.close()
        server.close()
    return _summary(rates)


async def _aio_rate(make: Callable[[], Any], core: Any) -> float:
    count = 0
    started = time.process_time()
    async with make() as watch:
        async for _ in watch.stream(
            core.list_namespaced_config_map, "default", resource_version="1"
        ):
            count += 1
            if count == EVENTS:
                watch.stop()
    elapsed = time.process_time() - started
    assert count == EVENTS, count
    return EVENTS / elapsed


def bench_aio_throughput() -> dict[str, Any]:
    """Events per CPU second, ``resilient_kube.aio.Watch`` against ``kubernetes.aio``'s."""
    import kubernetes.aio.client
    import kubernetes.aio.watch

    import resilient_kube.aio

    server = CannedWatchServer(EVENTS)
    rates: dict[str, list[float]] = {"stock": [], "resilient": []}

    async def rounds() -> None:
        configuration = kubernetes.aio.client.Configuration(host=f"http://127.0.0.1:{server.port}")
        async with resilient_kube.aio.ApiClient(configuration, qps=None) as api:
            core = kubernetes.aio.client.CoreV1Api(api)
            await _aio_rate(kubernetes.aio.watch.Watch, core)  # warm-up
            for _ in range(ROUNDS):
                rates["stock"].append(await _aio_rate(kubernetes.aio.watch.Watch, core))
                rates["resilient"].append(await _aio_rate(resilient_kube.aio.Watch, core))

    try:
        asyncio.run(rounds())
    finally:
        server.close()
    return _summary(rates)


def _informer_memory(kind: str) -> tuple[float, float]:
    """MiB held after an informer synced ``OBJECTS`` ConfigMaps, and seconds to sync."""
    with FakeApiServer(bookmark_interval=60) as server:
        rt = server._registry.find("", "v1", "configmaps")
        assert rt is not None
        for i in range(OBJECTS):  # straight into the store: 10,000 HTTP creates would dominate
            server._store.create(
                rt, "default", {"metadata": {"name": f"cm-{i:05d}"}, "data": {"k": "v" * 32}}
            )
        api = resilient_kube.ApiClient(server.configuration(), qps=None)
        core = client.CoreV1Api(api)
        try:
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            started = time.process_time()
            informer: Any
            if kind == "stock":
                from kubernetes.informer import SharedInformer as Stock

                informer = Stock(core.list_namespaced_config_map, namespace="default")
            else:
                informer = resilient_kube.SharedInformer(
                    core.list_namespaced_config_map, namespace="default"
                )
            informer.start()
            deadline = time.monotonic() + 120
            while len(informer.cache.list_keys()) < OBJECTS:
                assert time.monotonic() < deadline, "informer did not sync"
                time.sleep(0.05)
            synced = time.process_time() - started
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            # The stock informer's stop() can miss its watch (kubernetes 37's Watch.stream clears
            # the stop flag when it starts, and stop() finds no response before the headers came
            # back) and then joins forever: stop it from a daemon thread, bounded; the server's
            # shutdown below ends the stream.
            assert server.wait_for_requests(1, verb="watch", timeout=30)
            stopper = threading.Thread(target=informer.stop, daemon=True)
            stopper.start()
            stopper.join(10)
        finally:
            api.close()
    return held / 2**20, synced


def bench_memory() -> dict[str, Any]:
    stock_mib, stock_s = _informer_memory("stock")
    ours_mib, ours_s = _informer_memory("resilient")
    return {
        "objects": OBJECTS,
        "stock_mib": round(stock_mib, 1),
        "resilient_mib": round(ours_mib, 1),
        "ratio": round(ours_mib / stock_mib, 3),
        "stock_sync_cpu_s": round(stock_s, 2),
        "resilient_sync_cpu_s": round(ours_s, 2),
    }


def plot(throughput: dict[str, Any], memory: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = ["kubernetes", "resilient_kube"]
    rounds = throughput["all_rounds"]
    left.boxplot([rounds["stock"], rounds["resilient"]], tick_labels=names)
    left.set_title(f"Watch: {EVENTS:,} events, {ROUNDS} rounds")
    left.set_ylabel("events per CPU second")
    right.bar(names, [memory["stock_mib"], memory["resilient_mib"]], color=["#999", "#2a6"])
    right.set_title(f"SharedInformer: {OBJECTS:,} ConfigMaps")
    right.set_ylabel("MiB held (tracemalloc)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write a PNG of the results here")
    parser.add_argument("--aio", action="store_true", help="only the asyncio Watch comparison")
    args = parser.parse_args()
    aio = bench_aio_throughput()
    print(
        f"asyncio Watch: {aio['resilient_events_per_cpu_s']} events/CPU-s (resilient_kube.aio)"
        f" vs {aio['stock_events_per_cpu_s']} (kubernetes.aio), ratio {aio['ratio']}"
    )
    if args.aio:
        print(json.dumps({"aio_watch_throughput": aio}, indent=2))
        return
    throughput = bench_throughput()
    memory = bench_memory()
    print(
        json.dumps(
            {
                "watch_throughput": throughput,
                "aio_watch_throughput": aio,
                "informer_memory": memory,
            },
            indent=2,
        )
    )
    if args.plot:
        plot(throughput, memory, args.plot)


if __name__ == "__main__":
    main()
