"""How exact and how cheap the client-side limiter is, beside published Python limiters.

Run::

    python benchmarks/bench_limiter.py            # full: 12 cells of 10 s, about 2.5 minutes
    python benchmarks/bench_limiter.py --quick    # 2 s cells, a few of them
    python benchmarks/bench_limiter.py --json OUT # also write the results as JSON
    python benchmarks/bench_limiter.py --e2e http://127.0.0.1:8080  # 510 GETs through ApiClient

What is measured:

* **Precision.** ``threads`` threads call ``acquire()`` in a loop for ``seconds`` against one
  ``TokenBucket(qps, burst=10)`` and note when each call returned. The steady rate is taken after
  the first 10% of the run (so the initial burst is left out)::

      achieved = (admissions after t_a) / (t_last - t_a),   error = achieved / qps - 1

  The bound is checked over *every* window that starts and ends at an admission, in O(n)::

      excess = max over i <= j of (j - i + 1) - qps·(t_j - t_i) - burst    (must be <= 0)

  once over the slots the limiter handed out (the guarantee) and once over the instants the calls
  returned (slots plus the OS's wake-up lateness).
* **Cost.** The median of 200 batches of 1,000 uncontended acquisitions that never wait
  (``time.perf_counter_ns``), beside ``token-bucket`` (Falcon) and ``pyrate-limiter`` in the same
  process, when they are installed.
* **End to end.** ``run_end_to_end(url)``: 510 GETs from 4 threads through
  ``resilient_kube.ApiClient(qps=50, burst=10)``. The first 10 go at once and the other 500 are
  spaced 20 ms apart, so the run takes ``(510 - 10) / 50 = 10.0 s`` plus one request's latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from resilient_kube._limiter import TokenBucket
except ImportError:  # run from a checkout without installing: python benchmarks/bench_limiter.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from resilient_kube._limiter import TokenBucket

__all__ = ["run", "run_end_to_end"]

BURST = 10
FULL_CELLS = [(qps, threads) for qps in (5.0, 50.0, 100.0) for threads in (1, 2, 4, 8)]
QUICK_CELLS = [(5.0, 1), (50.0, 4), (100.0, 8)]
#: pyrate-limiter is compared at these cells (its blocking ``try_acquire``).
FULL_PEER_CELLS = [(50.0, 1), (50.0, 4), (100.0, 4)]
QUICK_PEER_CELLS = [(50.0, 4)]
E2E_REQUESTS, E2E_THREADS, E2E_QPS, E2E_BURST = 510, 4, 50.0, 10


# --- precision -------------------------------------------------------------------------------


def max_excess(times: list[float], qps: float, burst: int) -> float:
    """``max over i <= j of (j - i + 1) - qps·(t_j - t_i) - burst`` for sorted ``times``."""
    best = -float("inf")
    best_start = float("inf")  # min over i <= j of (i - qps·t_i)
    for j, t in enumerate(times):
        best_start = min(best_start, j - qps * t)
        best = max(best, (j - qps * t) - best_start + 1)
    return best - burst


def max_in_window(times: list[float], window: float) -> int:
    """The most admissions in any closed window of length ``window`` (sorted ``times``)."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > window:
            first += 1
        best = max(best, last - first + 1)
    return best


def summarize(
    returns: list[float], slots: list[float] | None, qps: float, burst: int, seconds: float
) -> dict[str, Any]:
    """The rate error and the window bound of one run."""
    returns.sort()
    start = returns[0]
    skip = next(i for i, t in enumerate(returns) if t >= start + 0.1 * seconds)
    achieved = (len(returns) - 1 - skip) / (returns[-1] - returns[skip])
    result: dict[str, Any] = {
        "admitted": len(returns),
        "achieved_qps": round(achieved, 4),
        "error_pct": round((achieved / qps - 1) * 100, 4),
        "max_in_1s": max_in_window(returns, 1.0),
        "bound_1s": burst + qps,
        "excess_returns": round(max_excess(returns, qps, burst), 4),
    }
    if slots is not None:
        slots.sort()
        result["excess_slots"] = round(max_excess(slots, qps, burst), 6)
    return result


def _hammer(acquire: Callable[[], Any], threads: int, seconds: float) -> list[float]:
    """Call ``acquire`` from ``threads`` threads until ``seconds`` have passed; return instants."""
    returns: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    end = [0.0]

    def worker() -> None:
        mine: list[float] = []
        barrier.wait()
        stop = end[0]
        clock = time.monotonic
        while True:
            acquire()
            now = clock()
            if now > stop:
                break
            mine.append(now)
        with lock:
            returns.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    end[0] = time.monotonic() + seconds
    barrier.wait()
    for thread in pool:
        thread.join()
    return returns


def precision(qps: float, threads: int, seconds: float, burst: int = BURST) -> dict[str, Any]:
    """One cell for ``TokenBucket``: the rate error and the window bound, slots included."""
    local = threading.local()
    slots: list[float] = []
    slots_lock = threading.Lock()

    def clock() -> float:
        local.read = now = time.monotonic()
        return now

    bucket = TokenBucket(qps, burst, clock=clock)

    def acquire() -> None:
        waited = bucket.acquire()
        with slots_lock:
            slots.append(local.read + waited)

    returns = _hammer(acquire, threads, seconds)
    # Keep only the slots of calls that returned inside the run (one per thread overshoots).
    slots.sort()
    slots = slots[: len(returns)]
    return {"qps": qps, "threads": threads, **summarize(returns, slots, qps, burst, seconds)}


def peer_precision(qps: float, threads: int, seconds: float) -> dict[str, Any] | None:
    """The same cell for pyrate-limiter's token bucket (GCRA) with blocking ``try_acquire``."""
    try:
        from pyrate_limiter import Duration, Limiter, Rate, StateBucket
        from pyrate_limiter import TokenBucket as PyrateTokenBucket
    except ImportError:
        return None
    limiter = Limiter(
        StateBucket([Rate(int(qps), Duration.SECOND, burst=BURST)], algorithm=PyrateTokenBucket())
    )

    def acquire() -> None:
        limiter.try_acquire("bench")

    returns = _hammer(acquire, threads, seconds)
    return {
        "limiter": "pyrate-limiter token bucket",
        "qps": qps,
        "threads": threads,
        **summarize(returns, None, qps, BURST, seconds),
    }


# --- cost ------------------------------------------------------------------------------------


def _median_ns(call: Callable[[], Any], batches: int = 200, per_batch: int = 1000) -> float:
    clock = time.perf_counter_ns
    for _ in range(per_batch):  # warm up
        call()
    samples = []
    for _ in range(batches):
        start = clock()
        for _ in range(per_batch):
            call()
        samples.append((clock() - start) / per_batch)
    return statistics.median(samples)


def cost(quick: bool) -> dict[str, float]:
    """Median ns per uncontended acquisition that never waits, ours and the published ones."""
    batches = 50 if quick else 200
    results: dict[str, float] = {}
    results["empty function call (floor)"] = _median_ns(lambda: None, batches)
    bucket = TokenBucket(1e12, 10**9)
    results["resilient_kube TokenBucket.acquire"] = _median_ns(bucket.acquire, batches)
    try:
        import token_bucket
    except ImportError:
        pass
    else:
        falcon = token_bucket.Limiter(1e12, 10**9, token_bucket.MemoryStorage())
        results["token-bucket 0.4 Limiter.consume"] = _median_ns(
            lambda: falcon.consume(b"bench"), batches
        )
    try:
        from pyrate_limiter import Duration, Limiter, Rate, StateBucket
        from pyrate_limiter import TokenBucket as PyrateTokenBucket
    except ImportError:
        pass
    else:
        rate = Rate(10**9, Duration.SECOND, burst=10**9)
        pyrate = Limiter(StateBucket([rate], algorithm=PyrateTokenBucket()))
        results["pyrate-limiter token bucket try_acquire(blocking=False)"] = _median_ns(
            lambda: pyrate.try_acquire("bench", blocking=False), batches
        )
        window = Limiter(Rate(10**9, Duration.SECOND))
        results["pyrate-limiter default (sliding log) try_acquire(blocking=False)"] = _median_ns(
            lambda: window.try_acquire("bench", blocking=False), batches
        )
    return {name: round(ns, 1) for name, ns in results.items()}


# --- end to end ------------------------------------------------------------------------------


def run_end_to_end(url: str) -> dict[str, Any]:
    """510 ``read_namespace("default")`` calls on 4 threads via ``ApiClient(qps=50, burst=10)``.

    Expected: ``(510 - 10) / 50 = 10.0 s`` plus one request's latency, and ``limiter.admitted``
    510. Needs a running API server (or anything that answers ``GET /api/v1/namespaces/default``)
    at ``url``; returns ``{"skipped": reason}`` when the transport is not available.
    """
    try:
        import kubernetes

        from resilient_kube import ApiClient
    except ImportError as exc:  # Defensive: the transport is not there yet
        return {"skipped": f"resilient_kube.ApiClient is not available: {exc}"}
    configuration = kubernetes.client.Configuration()
    configuration.host = url.rstrip("/")
    client = ApiClient(configuration, qps=E2E_QPS, burst=E2E_BURST)
    api = kubernetes.client.CoreV1Api(client)
    remaining = [E2E_REQUESTS]
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            try:
                api.read_namespace("default")
            except Exception as exc:  # counted and reported; the run goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pool = [threading.Thread(target=worker) for _ in range(E2E_THREADS)]
    start = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - start
    stats = client.stats().limiter
    client.close()
    expected = (E2E_REQUESTS - E2E_BURST) / E2E_QPS
    return {
        "requests": E2E_REQUESTS,
        "threads": E2E_THREADS,
        "qps": E2E_QPS,
        "burst": E2E_BURST,
        "elapsed_s": round(elapsed, 3),
        "expected_s": expected,
        "error_pct": round((elapsed / expected - 1) * 100, 3),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "admitted": None if stats is None else stats.admitted,
        "waited": None if stats is None else stats.waited,
        "flow_schemas": None if stats is None else stats.flow_schemas,
    }


# --- entry points ----------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    """Every limiter benchmark; ``quick`` runs 2 s cells and fewer of them."""
    seconds = 2.0 if quick else 10.0
    cells = QUICK_CELLS if quick else FULL_CELLS
    peers = QUICK_PEER_CELLS if quick else FULL_PEER_CELLS
    return {
        "seconds_per_cell": seconds,
        "burst": BURST,
        "precision": [precision(qps, threads, seconds) for qps, threads in cells],
        "peers": [
            cell
            for qps, threads in peers
            if (cell := peer_precision(qps, threads, seconds)) is not None
        ],
        "cost_ns": cost(quick),
        "python": sys.version.split()[0],
    }


def _print(results: dict[str, Any]) -> None:
    print(
        f"precision: {results['seconds_per_cell']:g} s per cell, burst {results['burst']} "
        "(excess <= 0 means no window held more than burst + qps·W)"
    )
    header = "limiter          qps  threads  admitted  achieved/s  error %  max in 1 s / bound"
    print(header + "  excess(slots)  excess(returns)")
    rows = [("resilient_kube", row) for row in results["precision"]]
    rows += [("pyrate-limiter", row) for row in results["peers"]]
    for name, row in rows:
        slots = row.get("excess_slots")
        print(
            f"{name:<15} {row['qps']:>5g} {row['threads']:>8} {row['admitted']:>9}"
            f" {row['achieved_qps']:>11.3f} {row['error_pct']:>+8.3f}"
            f" {row['max_in_1s']:>9} / {row['bound_1s']:<8g}"
            f" {'-' if slots is None else format(slots, '+.3f'):>13}"
            f" {row['excess_returns']:>+16.3f}"
        )
    print("\ncost of one uncontended acquisition (median ns):")
    for name, ns in results["cost_ns"].items():
        print(f"  {ns:>8.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 s cells and fewer of them")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    parser.add_argument("--e2e", metavar="URL", help="only run the end-to-end test against URL")
    args = parser.parse_args(argv)
    results = {"end_to_end": run_end_to_end(args.e2e)} if args.e2e else run(args.quick)
    if args.e2e:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
