"""What an outage and a 429 storm look like on resilient_kube's Prometheus series (issue 19).

Run::

    python benchmarks/observability.py [--seconds 36] [--png docs/img/observability.png]

A controller (16 threads, about 30 calls a second: lists and gets of ConfigMaps) runs
against a ``FakeApiServer`` with ``resilient_kube.metrics`` registered on a registry of its own.
The registry is scraped every half second, as Prometheus would, and the script draws from the
scrapes what the Grafana dashboard (``docs/grafana-dashboard.json``) shows:

* from 1/6 to 2/6 of the run, an **outage**: every request answered ``503`` (an API server
  restarting behind its load balancer);
* from 4/6 to 5/6, a **429 storm**: the server short of capacity (``Overload``: one seat, no
  queue, 80 ms of work per request), refusing the rest with ``429`` and a ``Retry-After`` that
  grows with the refusals, as API Priority and Fairness does.

Everything stays on 127.0.0.1; the PNG goes to ``docs/img/observability.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from collections import defaultdict
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry

import resilient_kube
from resilient_kube import metrics
from resilient_kube.testing import FakeApiServer, Overload, StatusFault

#: A scrape: (series name, sorted label pairs) -> value.
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]

THREADS = 16
#: Each worker's pause between calls: about 30 calls a second from sixteen threads.
PAUSE = 0.5
SCRAPE_INTERVAL = 0.5


def scrape(registry: CollectorRegistry) -> Scrape:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def controller(api: client.CoreV1Api, stop: threading.Event, index: int) -> None:
    """One worker: list, then get one object, with a pause; failures are counted by the series."""
    calls = 0
    while not stop.is_set():
        try:
            if calls % 2:
                api.read_namespaced_config_map(f"cm-{index}", "default")
            else:
                api.list_namespaced_config_map("default")
        except (ApiException, resilient_kube.ResilientKubeError):
            pass  # the series say what failed; a controller would requeue
        calls += 1
        stop.wait(PAUSE)


def run(seconds: float) -> tuple[list[float], list[Scrape], dict[str, float]]:
    registry = CollectorRegistry()
    metrics.register(registry)
    sixth = seconds / 6
    episodes = {
        "outage_start": sixth,
        "outage_end": 2 * sixth,
        "storm_start": 4 * sixth,
        "storm_end": 5 * sixth,
    }
    times: list[float] = []
    scrapes: list[Scrape] = []
    try:
        with (
            FakeApiServer() as server,
            resilient_kube.ApiClient(server.configuration(), read_timeout=2.0) as api_client,
        ):
            api = client.CoreV1Api(api_client)
            for index in range(THREADS):
                api.create_namespaced_config_map(
                    "default", {"metadata": {"name": f"cm-{index}"}, "data": {"k": "v"}}
                )
            stop = threading.Event()
            workers = [
                threading.Thread(target=controller, args=(api, stop, index))
                for index in range(THREADS)
            ]
            began = time.monotonic()
            for worker in workers:
                worker.start()
            injected: set[str] = set()
            while (now := time.monotonic() - began) < seconds:
                if now >= episodes["outage_start"] and "outage" not in injected:
                    injected.add("outage")
                    server.inject(StatusFault(503), times=None, seconds=sixth)
                if now >= episodes["storm_start"] and "storm" not in injected:
                    injected.add("storm")
                    server.inject(
                        Overload(1, queue=0, work=0.08, retry_after=1, max_retry_after=8),
                        times=None,
                        seconds=sixth,
                    )
                times.append(now)
                scrapes.append(scrape(registry))
                time.sleep(SCRAPE_INTERVAL)  # the scrape interval, as Prometheus keeps it
            stop.set()
            for worker in workers:
                worker.join()
    finally:
        metrics.unregister()
    return times, scrapes, episodes


def rates(
    times: list[float], scrapes: list[Scrape], name: str, by: str | None
) -> dict[str, list[float]]:
    """Per-second rate of counter ``name`` between scrapes, summed by label ``by`` (None: all)."""
    lines: dict[str, list[float]] = defaultdict(lambda: [0.0] * (len(times) - 1))
    for i in range(1, len(times)):
        span = times[i] - times[i - 1]
        totals: dict[str, float] = defaultdict(float)
        for (series, labels), value in scrapes[i].items():
            if series != name:
                continue
            before = scrapes[i - 1].get((series, labels), 0.0)
            totals["" if by is None else dict(labels)[by]] += (value - before) / span
        for key, rate in totals.items():
            lines[key][i - 1] = rate
    return dict(lines)


def quantile(times: list[float], scrapes: list[Scrape], name: str, q: float) -> list[float]:
    """``histogram_quantile(q, rate(name_bucket))`` between scrapes, over every label set."""
    values: list[float] = []
    for i in range(1, len(times)):
        buckets: dict[float, float] = defaultdict(float)
        for (series, labels), value in scrapes[i].items():
            if series == f"{name}_bucket":
                le = float(dict(labels)["le"])
                buckets[le] += value - scrapes[i - 1].get((series, labels), 0.0)
        bounds = sorted(buckets)
        total = buckets[math.inf] if bounds else 0.0
        if total <= 0:
            values.append(math.nan)
            continue
        rank, lower, below = q * total, 0.0, 0.0
        result = bounds[-2] if len(bounds) > 1 else math.nan
        for bound in bounds:
            count = buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    break
                # Linear inside the bucket, as Prometheus interpolates.
                result = lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
                break
            lower, below = bound, count
        values.append(result)
    return values


def plot(
    times: list[float], scrapes: list[Scrape], episodes: dict[str, float], png: str
) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = times[1:]
    figure, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    requests = rates(times, scrapes, "rest_client_requests_total", "code")
    retries = rates(times, scrapes, "resilient_kube_retries_total", "reason")
    refusals = rates(times, scrapes, "resilient_kube_retry_budget_refusals_total", None)
    limiter = rates(times, scrapes, "rest_client_rate_limiter_duration_seconds_sum", None)
    backoff = rates(times, scrapes, "resilient_kube_retry_wait_seconds_total", None)
    colours = {"200": "tab:green", "503": "tab:red", "429": "tab:orange", "<error>": "black"}
    for code, line in sorted(requests.items()):
        if code in colours:  # the four creates of the set-up (201) are left out
            axes[0].plot(x, line, label=code, color=colours[code])
    axes[0].set_ylabel("attempts / s")
    axes[0].set_title("rest_client_requests_total by code (every attempt, retries included)")
    for reason, line in sorted(retries.items()):
        axes[1].plot(x, line, label=f"retry: {reason}")
    for _, line in sorted(refusals.items()):
        axes[1].plot(x, line, label="retry budget refused", linestyle="--", color="black")
    axes[1].set_ylabel("per second")
    axes[1].set_title("resilient_kube_retries_total and resilient_kube_retry_budget_refusals_total")
    p50 = quantile(times, scrapes, "rest_client_request_duration_seconds", 0.5)
    p99 = quantile(times, scrapes, "rest_client_request_duration_seconds", 0.99)
    axes[2].plot(x, p50, label="p50")
    axes[2].plot(x, p99, label="p99")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("seconds")
    axes[2].set_title(
        "rest_client_request_duration_seconds: whole calls (waits, attempts, backoff)"
    )
    for _, line in sorted(limiter.items()):
        axes[3].plot(x, line, label="client-side limiter (after 429 pushback)")
    for _, line in sorted(backoff.items()):
        axes[3].plot(x, line, label="backoff and Retry-After")
    axes[3].set_ylabel("seconds waited / s")
    axes[3].set_xlabel("seconds into the run")
    axes[3].set_title(
        "rate(rest_client_rate_limiter_duration_seconds_sum),"
        " rate(resilient_kube_retry_wait_seconds_total)"
    )
    for ax in axes:
        ax.axvspan(episodes["outage_start"], episodes["outage_end"], color="red", alpha=0.08)
        ax.axvspan(episodes["storm_start"], episodes["storm_end"], color="orange", alpha=0.12)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize="small")
    top = axes[0].get_ylim()[1]
    axes[0].annotate("outage: 503", (episodes["outage_start"], top * 0.9), fontsize=8)
    axes[0].annotate("429 storm", (episodes["storm_start"], top * 0.9), fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=90)
    last = scrapes[-1]

    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for (series, pairs), value in last.items()
            if series == name and all(dict(pairs).get(k) == v for k, v in labels.items())
        )

    return {
        "attempts_by_code": {
            code: total("rest_client_requests_total", code=code) for code in sorted(requests)
        },
        "retries_by_reason": {
            reason: total("resilient_kube_retries_total", reason=reason)
            for reason in sorted(retries)
        },
        "failed_calls": total("resilient_kube_failed_calls_total"),
        "limiter_wait_seconds": total("rest_client_rate_limiter_duration_seconds_sum"),
        "backoff_seconds": total("resilient_kube_retry_wait_seconds_total"),
        "budget_refusals": total("resilient_kube_retry_budget_refusals_total"),
        "calls": total("rest_client_request_duration_seconds_count"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=36.0, help="length of the run (36)")
    parser.add_argument("--png", default="docs/img/observability.png", help="where to draw")
    args = parser.parse_args()
    times, scrapes, episodes = run(args.seconds)
    summary = plot(times, scrapes, episodes, args.png)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
