"""Run every benchmark against the stock client in the same run and rewrite docs/performance.md.

Run::

    python benchmarks/run.py            # full: about 8 minutes on 2 cores
    python benchmarks/run.py --quick    # about 2 minutes, smaller samples

Writes ``docs/performance.md``, ``docs/img/*.png`` and ``docs/benchmarks.json`` (the raw numbers).
The e2e suite's 429 numbers (``tests/e2e``) are included when its results file exists.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_client
import bench_dns
import bench_limiter
from resilient_kube.testing import FakeApiServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMAGES = DOCS / "img"
E2E_RESULTS = Path(os.environ.get("RK_E2E_RESULTS", "/tmp/rk-e2e-results.json"))


def machine() -> dict[str, str]:
    versions = {
        name: importlib.metadata.version(name)
        for name in ("kubernetes", "urllib3", "tenacity", "dnspython", "cachetools")
    }
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        **versions,
    }


def limiter_end_to_end() -> dict[str, Any]:
    with FakeApiServer() as server:
        return bench_limiter.run_end_to_end(server.url)


def plots(results: dict[str, Any]) -> list[str]:
    """Draw the PNGs; returns their file names (empty if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    IMAGES.mkdir(parents=True, exist_ok=True)
    names = []
    faults = results["client"]["faults"]

    figure, axes = plt.subplots(figsize=(6, 4))
    for label in ("stock", "resilient_kube"):
        latencies = faults["mix_32_threads"][label]["latencies_ms"]
        fractions = [(index + 1) / len(latencies) for index in range(len(latencies))]
        success = faults["mix_32_threads"][label]["success_rate"]
        axes.step(latencies, fractions, where="post", label=f"{label} ({success:.1%} succeed)")
    axes.set_xscale("log")
    axes.set_xlabel("call latency (ms, log scale)")
    axes.set_ylabel("fraction of calls")
    axes.set_title("GET latency under 10% 503, 5% resets, 2% 429 (32 threads)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(IMAGES / "latency-cdf.png", dpi=110)
    plt.close(figure)
    names.append("latency-cdf.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    curve = faults["success_vs_fault_rate"]
    for label in ("stock", "resilient_kube"):
        rates = sorted(curve[label], key=float)
        axes.plot(
            [float(rate) * 100 for rate in rates],
            [curve[label][rate] * 100 for rate in rates],
            marker="o",
            label=label,
        )
    axes.set_xlabel("GETs answered 503 (%)")
    axes.set_ylabel("calls that succeed (%)")
    axes.set_title("Success rate against fault rate")
    axes.legend()
    figure.tight_layout()
    figure.savefig(IMAGES / "success-vs-fault-rate.png", dpi=110)
    plt.close(figure)
    names.append("success-vs-fault-rate.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    cells = results["limiter"]["precision"]
    labels = [f"{cell['qps']:g}/{cell['threads']}" for cell in cells]
    axes.bar(labels, [abs(cell["error_pct"]) for cell in cells], label="resilient_kube")
    peers = results["limiter"]["peers"]
    if peers:
        axes.bar(
            [f"{cell['qps']:g}/{cell['threads']}*" for cell in peers],
            [abs(cell["error_pct"]) for cell in peers],
            label="pyrate-limiter (*)",
        )
    axes.axhline(0.5, color="red", linestyle="--", label="0.5% target")
    axes.set_xlabel("qps / threads")
    axes.set_ylabel("|achieved rate error| (%)")
    axes.set_title("Limiter precision")
    axes.tick_params(axis="x", labelrotation=60)
    axes.legend()
    figure.tight_layout()
    figure.savefig(IMAGES / "limiter-precision.png", dpi=110)
    plt.close(figure)
    names.append("limiter-precision.png")
    return names


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def render(results: dict[str, Any], images: list[str]) -> str:
    info = results["machine"]
    overhead = results["client"]["overhead"]
    faults = results["client"]["faults"]
    lines = [
        "# Performance",
        "",
        "Every number on this page comes from `python benchmarks/run.py"
        + (" --quick" if results["quick"] else "")
        + "`, which runs the stock client and resilient_kube **in the same run** against the"
        " same local servers and rewrites this page. The machine is shared and noisy: read the"
        " ratios, not the absolute values.",
        "",
        "Machine: " + ", ".join(f"{key} {value}" for key, value in info.items()) + ".",
        "",
        "## Overhead (stock vs resilient_kube, same server in a child process)",
        "",
        "resilient_kube runs with `qps=None` here, so the numbers measure the transport and not"
        " the limit; the limiter's own cost is below. CPU is this process's CPU per call (the"
        f" server's is not counted); medians of {overhead.get('rounds', 15)} short rounds, the"
        " clients taking turns."
        " *stock, same timeouts* is the stock client given resilient_kube's default timeouts the"
        " only way it takes them, `_request_timeout=(5, 30)` on every call. That costs it twice:"
        " the argument is validated and turned into a `urllib3.Timeout` on each call (about"
        " 13 µs on one thread), and a socket with a timeout makes CPython `poll()` and release"
        " the GIL once more before every `send` and `recv` (hardly measurable on one thread,"
        " tens of µs of CPU per call with 32 threads sharing the GIL). resilient_kube pays"
        " neither: its timeouts are settings, and once connected its sockets block while a"
        " watchdog thread keeps each attempt's read time and deadline"
        " ([timeouts](timeouts.md#who-keeps-the-time-the-watchdog)). It also sends straight to"
        " the API server's pool, where the stock client's `PoolManager` parses the URL and looks"
        " the pool up on every call, and splits plain response headers itself where http.client"
        " runs the email package's MIME parser on every response (about 40 µs of CPU a call"
        " here; [pool](pool.md#response-headers)).",
        "",
        _row("threads", "client", "GETs/s", "CPU µs/call", "connections opened"),
        _row("---", "---", "---:", "---:", "---:"),
    ]
    for key in ("threads_1", "threads_32"):
        for label in ("stock", "stock_same_timeouts", "resilient_kube"):
            cell = overhead[key][label]
            lines.append(
                _row(
                    key.split("_")[1],
                    label.replace("_same_timeouts", ", same timeouts"),
                    f"{cell['gets_per_second']:.0f}",
                    f"{cell['cpu_us_per_call']:.0f}",
                    cell["connections_opened"],
                )
            )
    lines += [
        "",
        _row(
            "threads",
            "GETs/s ratio vs stock",
            "extra CPU µs/call vs stock",
            "GETs/s ratio vs stock, same timeouts",
            "extra CPU µs/call vs stock, same timeouts",
        ),
        _row("---", "---:", "---:", "---:", "---:"),
    ]
    for key in ("threads_1", "threads_32"):
        cell = overhead[key]
        lines.append(
            _row(
                key.split("_")[1],
                f"{cell['ratio_gets_per_second']:.3f}",
                f"{cell['extra_cpu_us_per_call']:+.1f}",
                f"{cell['ratio_gets_per_second_vs_same_timeouts']:.3f}",
                f"{cell['extra_cpu_us_per_call_vs_same_timeouts']:+.1f}",
            )
        )
    counted = results["client"].get("instructions")
    if counted is not None:
        lines += [
            "",
            "CPU time on this shared machine moves by ±20 µs from run to run (the same client's"
            " median has moved by more than the difference between the clients), so the CPU"
            " work of a call is also counted exactly: valgrind's callgrind counts the"
            " instructions of the same GETs (`list_namespace`, the whole kubernetes stack"
            " included) after a warm-up, each client counted twice (the count repeats to within"
            " 0.2%). valgrind runs a process's threads one at a time, so with 32 threads the"
            " GIL's hand-offs are in the count. The µs are the instructions at the stock client's"
            " CPU time per instruction in the timed rounds above.",
            "",
            _row("threads", "GETs counted", "stock", "resilient_kube", "ratio", "difference"),
            _row("---", "---:", "---:", "---:", "---:", "---:"),
        ]
        for key in ("threads_1", "threads_32"):
            cell = counted[key]
            per_call = cell["instructions_per_call"]
            lines.append(
                _row(
                    key.split("_")[1],
                    cell["calls"],
                    f"{per_call['stock']:,.0f}",
                    f"{per_call['resilient_kube']:,.0f}",
                    f"**{cell['ratio']:.4f}×**",
                    f"{cell['extra_instructions_per_call']:+,.0f}"
                    f" ({cell['extra_cpu_us_per_call']:+.1f} µs)",
                )
            )
    lines += [
        "",
        "## Masking faults",
        "",
        _row("scenario", "client", "success", "wire requests / call", "p50 ms", "p99 ms"),
        _row("---", "---", "---:", "---:", "---:", "---:"),
    ]
    for scenario, title in (
        ("503_20pct", "20% of GETs answer 503, 1 thread"),
        ("mix_32_threads", "10% 503 + 5% resets + 2% 429, 32 threads"),
    ):
        for label in ("stock", "resilient_kube"):
            cell = faults[scenario][label]
            lines.append(
                _row(
                    title,
                    label,
                    f"{cell['success_rate']:.2%}",
                    f"{cell['wire_per_call']:.3f}",
                    f"{cell['p50_ms']:.1f}",
                    f"{cell['p99_ms']:.1f}",
                )
            )
    outage = faults["outage"]
    lines += [
        "",
        f"- A POST whose connection is reset after sending went on the wire "
        f"{faults['post_reset']['posts_on_wire']} time(s): it is not re-sent.",
        f"- Total outage (every GET answers 503 for {outage['seconds']:g} s, 8 threads calling"
        f" back to back): {outage['calls']} calls put {outage['wire_requests']} requests on the"
        f" wire, **{outage['wire_per_call']:.3f}x the offered load** (without the retry budget:"
        f" up to {outage['without_budget_would_be']:g}x); the budget refused"
        f" {outage['budget_refusals']} retries.",
        "",
    ]
    if "latency-cdf.png" in images:
        lines += ["![latency CDF](img/latency-cdf.png)", ""]
    if "success-vs-fault-rate.png" in images:
        lines += ["![success vs fault rate](img/success-vs-fault-rate.png)", ""]
    limiter = results["limiter"]
    lines += [
        "## Limiter",
        "",
        f"Each cell runs {limiter['seconds_per_cell']:g} s with burst {limiter['burst']}."
        " Excess is the worst `count - (burst + qps·T)` over every window; it must be <= 0.",
        "",
        _row("limiter", "qps", "threads", "error %", "excess"),
        _row("---", "---:", "---:", "---:", "---:"),
    ]
    for name, cells in (
        ("resilient_kube", limiter["precision"]),
        ("pyrate-limiter", limiter["peers"]),
    ):
        for cell in cells:
            excess = cell.get("excess_slots", cell.get("excess_returns"))
            lines.append(
                _row(name, f"{cell['qps']:g}", cell["threads"], f"{cell['error_pct']:+.3f}", excess)
            )
    lines += ["", _row("acquire, uncontended", "median ns"), _row("---", "---:")]
    lines += [_row(name, ns) for name, ns in limiter["cost_ns"].items()]
    e2e = results["limiter_end_to_end"]
    if "elapsed_s" in e2e:
        lines += [
            "",
            f"End to end: {e2e['requests']} GETs on {e2e['threads']} threads with"
            f" `qps={e2e['qps']:g}, burst={e2e['burst']}` took **{e2e['elapsed_s']:.3f} s**"
            f" (expected {e2e['expected_s']:.1f} s).",
        ]
    if "limiter-precision.png" in images:
        lines += ["", "![limiter precision](img/limiter-precision.png)"]
    lines += ["", "## DNS cache", "", "```json", json.dumps(results["dns"], indent=2), "```", ""]
    if results.get("e2e"):
        lines += [
            "## Real kube-apiserver (from the e2e suite)",
            "",
            *e2e_summary(results["e2e"]),
            "Every number the e2e suite recorded in its last run of each test:",
            "",
            "```json",
            json.dumps(results["e2e"], indent=2),
            "```",
            "",
        ]
    return "\n".join(lines)


def e2e_summary(e2e: dict[str, Any]) -> list[str]:
    """A table of the restart and several-endpoint runs, when the e2e results have them."""
    rows = []
    for key, what in (("restart_sigterm", "SIGTERM"), ("restart_sigkill", "SIGKILL")):
        run = e2e.get(key)
        if run:
            rows.append(
                f"| restart ({what}), 8 threads, default settings | {run['calls']} | 0 |"
                f" down {run['restart_seconds']} s, slowest call {run['slowest_call_seconds']} s |"
            )
    ha = e2e.get("three_endpoints")
    if ha:
        rows.append(
            f"| three API servers, one killed, one stopped 20 s | {ha['resilient_calls']} |"
            f" {ha['resilient_failures']} | stock client on the stopped one: {ha['stock_failures']}"
            f" of {ha['stock_calls_on_the_stopped_server']} failed; killed one ejected after"
            f" {ha['killed_ejected_after_seconds']:.2f} s, stopped one re-admitted"
            f" {ha['readmitted_after_seconds']:.1f} s after its return |"
        )
    if not rows:
        return []
    return [
        "| scenario | resilient_kube calls | failed | notes |",
        "|---|---|---|---|",
        *rows,
        "",
    ]


#: Everything after this line of docs/performance.md is written by the standalone benchmarks
#: (bench_watch.py, bench_metrics.py, bench_aio.py): kept as it is when the page is rewritten.
KEEP_MARKER = "<!-- Sections below: written by the standalone benchmarks, kept by run.py. -->"


def write_page(text: str) -> None:
    """Write docs/performance.md: ``text``, then the kept sections of the page on disk."""
    page = DOCS / "performance.md"
    old = page.read_text() if page.exists() else ""
    kept = old[old.index(KEEP_MARKER) :] if KEEP_MARKER in old else KEEP_MARKER + "\n"
    page.write_text(text.rstrip("\n") + "\n\n" + kept)


def e2e_results() -> dict[str, Any] | None:
    """The e2e suite's numbers: the last page's, updated by the results file of the latest run
    (each test writes its own keys, so a partial run replaces only what it measured)."""
    stored = DOCS / "benchmarks.json"
    merged: dict[str, Any] = {}
    if stored.exists():
        merged.update(json.loads(stored.read_text()).get("e2e", {}))
    if E2E_RESULTS.exists():
        merged.update(json.loads(E2E_RESULTS.read_text()))
    return merged or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark and rewrite the docs.")
    parser.add_argument("--quick", action="store_true", help="smaller samples, about 2 minutes")
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite the page and plots from docs/benchmarks.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        stored: dict[str, Any] = json.loads((DOCS / "benchmarks.json").read_text())
        # Without matplotlib the plots on disk stay, and so do the page's links to them.
        images = plots(stored) or sorted(path.name for path in IMAGES.glob("*.png"))
        write_page(render(stored, images))
        print(f"wrote {DOCS / 'performance.md'} from {DOCS / 'benchmarks.json'}")
        return 0
    results: dict[str, Any] = {"quick": args.quick, "machine": machine()}
    print("client overhead and fault masking ...", flush=True)
    results["client"] = bench_client.run(args.quick)
    print("limiter ...", flush=True)
    results["limiter"] = bench_limiter.run(args.quick)
    results["limiter_end_to_end"] = limiter_end_to_end()
    print("dns ...", flush=True)
    results["dns"] = bench_dns.run(args.quick)
    e2e = e2e_results()
    if e2e is not None:
        results["e2e"] = e2e
    images = plots(results)
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
    write_page(render(results, images))
    print(f"wrote {DOCS / 'performance.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
