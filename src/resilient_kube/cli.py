"""The ``resilient-kube`` command: ``demo`` and ``doctor``.

Exit codes: 0 done (the doctor found nothing wrong), 1 the demo failed or a doctor phase failed,
2 a usage error. Tables use ``rich`` when it is installed (``pip install resilient_kube[cli]``)
and plain text otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-kube",
        description="A resilient transport for the official Kubernetes Python client.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="run one workload through the stock client and resilient_kube, side by side",
        description="Runs a controller-like workload against an embedded, misbehaving fake API"
        " server through the stock kubernetes client and through resilient_kube, and compares"
        " them. No cluster needed; nothing leaves 127.0.0.1.",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the fault schedule (7)")
    demo.add_argument(
        "--threads",
        type=_positive,
        help="worker threads per client (3 per connection of the stock client's pool, 16-64)",
    )
    demo.add_argument(
        "--calls", type=_positive, default=360, help="API calls the work needs per client (360)"
    )
    demo.add_argument(
        "--stock-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="bound on each stock call and its dead-server wait; the stock client has none (10)",
    )
    demo.add_argument("--json", action="store_true", help="print a JSON document instead")
    demo.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while the demo runs"
        " (pip install 'resilient_kube[metrics]')",
    )
    doctor = commands.add_parser(
        "doctor",
        help="walk the path to an API server (DNS, TCP, TLS, HTTP) and time each phase",
        description="Examines the API server of a kubeconfig phase by phase and recommends"
        " settings. Without any kubeconfig it examines an embedded fake API server.",
    )
    doctor.add_argument(
        "--kubeconfig", metavar="FILE", help="kubeconfig (KUBECONFIG, ~/.kube/config)"
    )
    doctor.add_argument("--context", help="kubeconfig context (its current-context)")
    doctor.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="an API server of endpoints=[...] to check as the client does (repeatable)",
    )
    doctor.add_argument("--json", action="store_true", help="print a JSON document instead")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1.0 <= value <= 600.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and 600 seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error and 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "demo":
        return _demo(args)
    return _doctor(args)


# --- output ---------------------------------------------------------------------------------------


def _rich() -> Any:
    """The ``rich`` package, or None when the ``cli`` extra is not installed."""
    try:
        import rich
    except ImportError:
        return None
    return rich


def _table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str],
    out: IO[str],
) -> None:
    if _rich() is not None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, caption_justify="left")
        for index, column in enumerate(columns):
            first = index == 0
            table.add_column(column, style="bold" if first else None, no_wrap=first)
        for row in rows:
            table.add_row(*row)
        # A pipe or a file gets 120 columns, not rich's 80: tables read better unwrapped.
        console = Console(file=out, width=None if out.isatty() else 120)
        console.print(table)
        for note in notes:
            console.print(note, style="dim", highlight=False)
        return
    widths = [max(len(str(row[i])) for row in [columns, *rows]) for i in range(len(columns))]
    print(title, file=out)
    for row in [columns, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)), file=out)
    for note in notes:
        print(note, file=out)


class _Progress:
    """A rich progress bar on a terminal, a plain line every 25% otherwise (on stderr)."""

    def __init__(self, stream: IO[str], names: Sequence[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._reported: dict[str, int] = {}
        self._names = names
        if _rich() is not None and stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description:>15}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("calls"),
                console=Console(file=stream),
                transient=True,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, name: str, done: int, total: int) -> None:
        with self._lock:
            if self._bar is not None:
                if name not in self._tasks:
                    self._tasks[name] = self._bar.add_task(name, total=total)
                self._bar.update(self._tasks[name], completed=done)
                return
            quarter = done * 4 // total
            if quarter > self._reported.get(name, 0) or done == 1:
                self._reported[name] = quarter
                print(f"{name}: {done}/{total} calls", file=self._stream, flush=True)


# --- demo -----------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from . import _demo

    chosen = {"threads": args.threads} if args.threads is not None else {}
    options = _demo.DemoOptions(
        seed=args.seed, calls=args.calls, stock_timeout=args.stock_timeout, **chosen
    )
    if not args.json:
        print(
            f"resilient-kube demo: {options.calls} calls through each client, seed"
            f" {options.seed}; about {options.expected_seconds:.0f} s ...",
            file=sys.stderr,
            flush=True,
        )
    with contextlib.ExitStack() as stack:
        if args.metrics_port is not None:
            try:
                stack.enter_context(_serving_metrics(args.metrics_port))
            except (ImportError, OSError) as exc:
                print(f"resilient-kube demo: --metrics-port: {exc}", file=sys.stderr)
                return EXIT_FAILED
        try:
            with _Progress(sys.stderr, _demo.CLIENTS) as progress:
                result = _demo.run_demo(options, progress)
        except Exception as exc:  # the demo itself broke: say what, exit 1
            print(f"resilient-kube demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        print()
        return EXIT_OK
    _table(
        "stock kubernetes client vs resilient_kube",
        ("", "stock¹", "resilient_kube", "better"),
        _demo.comparison_rows(result),
        [*_demo.footnotes(result), f"Ran in {result.elapsed_seconds:.1f} s."],
        sys.stdout,
    )
    return EXIT_OK


@contextlib.contextmanager
def _serving_metrics(port: int) -> Iterator[None]:
    """prometheus_client's default registry, with every client's metrics, on loopback ``port``."""
    from . import metrics

    ours = metrics.registered() is None
    metrics.register()  # the ImportError names the extra
    import prometheus_client

    try:
        server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1")
    except OSError:
        if ours:
            metrics.unregister()
        raise
    print(f"metrics: http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        if ours:
            metrics.unregister()


# --- doctor ---------------------------------------------------------------------------------------

_SYMBOLS = {"ok": "ok", "warning": "warn", "failed": "FAIL", "skipped": "skip"}


def _summary(phase: Any) -> str:
    """One line of the most useful details of a phase."""
    d: dict[str, Any] = phase.details
    name = phase.name
    if name == "kubeconfig":
        return f"server {d.get('server')}, context {d.get('context')}, {d.get('credentials')}"
    if name == "dns":
        if "note" in d:
            return f"{d['host']}: {d['note']}"
        parts = [f"{d.get('host')} -> {', '.join(d.get('answers') or []) or '(none)'}"]
        if d.get("ttl") is not None:
            parts.append(f"TTL {d['ttl']} s")
        if "system_resolver_queries" in d:
            parts.append(
                f"system resolver: {d['system_resolver_queries']} queries per lookup"
                f" (search {len(d.get('search', []))} domains, ndots {d.get('ndots')});"
                f" resilient_kube: {d['resilient_kube_queries']}"
            )
        return "; ".join(parts)
    if name == "tcp":
        return "; ".join(
            f"{a['address']}:{d.get('port')} "
            + (f"{a['connect_ms']:.2f} ms" if "connect_ms" in a else a["error"])
            for a in d.get("addresses", [])
        )
    if name == "tls":
        if not d:
            return ""
        text = f"{d.get('version')} {d.get('cipher')}, verified with {d.get('verified_with')}"
        if "subject" in d:
            san = ", ".join(d.get("san", []))
            text += f"; subject {d['subject'] or '(empty)'}; SAN {san}; expires"
            text += f" {d['not_after'][:10]} ({d['days_left']} days)"
        return text
    if name in ("version", "list"):
        if not d:
            return ""
        text = f"GET {d['path']} -> {d['status']}, first byte {d['ttfb_ms']:.2f} ms"
        if d.get("git_version"):
            text += f", {d['git_version']}"
        if d.get("flow_schema_uid") or d.get("priority_level_uid"):
            text += (
                f"; APF flow schema {d.get('flow_schema_uid')},"
                f" priority level {d.get('priority_level_uid')}"
            )
        elif name == "list":
            text += "; no API Priority and Fairness headers"
        return text
    if name == "clock" and d:
        return f"server clock - ours = {d['skew_seconds']:+.1f} s (Date header, 1 s resolution)"
    return ""


def _doctor(args: argparse.Namespace) -> int:

    from . import _doctor

    kubeconfig = args.kubeconfig or _doctor.default_kubeconfig()
    with contextlib.ExitStack() as stack:
        embedded = kubeconfig is None and args.context is None
        if embedded:
            kubeconfig = stack.enter_context(_doctor.embedded_kubeconfig())
        report = _doctor.run_doctor(
            kubeconfig, args.context, embedded=embedded, endpoints=args.endpoint
        )
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
    else:
        _print_doctor(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _print_doctor(report: Any) -> None:
    rows = []
    for phase in report.phases:
        seconds = "" if phase.seconds is None else f"{phase.seconds * 1000:.2f} ms"
        detail = phase.error if phase.status == "failed" else _summary(phase)
        rows.append((phase.name, _SYMBOLS[phase.status], seconds, detail or ""))
    notes: list[str] = list(report.notes)
    failed = report.failed_phase()
    notes.extend(
        f"{phase.name}: {phase.hint}"
        for phase in report.phases
        if phase.hint and phase.status in ("failed", "warning")
    )
    if failed is not None:
        notes.insert(0, f"FAILED at phase {failed.name!r}: {failed.error}")
    elif report.recommendations:
        settings = ", ".join(f"{k}={v!r}" for k, v in report.recommendations.items())
        notes.append(f"Recommended: resilient_kube.ApiClient(configuration, {settings})")
    title = f"resilient-kube doctor: {report.server or report.kubeconfig}"
    _table(title, ("phase", "", "time", "details"), rows, notes, sys.stdout)
