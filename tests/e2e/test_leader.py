"""Two electors in two processes on one Lease of a real kube-apiserver; the leader is cut off.

Each elector runs in a network namespace of its own (``unshare --net``). Inside it, a small
bridge listens on the namespace's loopback and carries each connection over a Unix socket (files
know no network namespace) to the test process, which connects it to the API server. Cutting the
leader off is then one iptables DROP inside the leader's namespace, on the bridge's port: its
connections go silent, as a partition makes them, and nothing outside that namespace is touched.

The same scenario runs with resilient_kube's elector, with the stock ``kubernetes.leaderelection``
(LeaseLock on the stock default client), and with the stock elector on resilient_kube's installed
default (``deadline`` set to the renew deadline); the stock runs are recorded in the e2e results,
not asserted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import kubernetes
import pytest

import resilient_kube

from .cluster import ApiServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("iptables")),
        reason="needs root, unshare and iptables for network namespaces of its own",
    ),
]

#: Whole seconds: the stock elector writes them into the Lease with int().
LEASE = 4
RENEW = 3
RETRY = 1
#: What process scheduling and the calls' own time may add to a bound.
SLACK = 0.5
#: Bounded waits for things that normally take a second or two.
WAIT = 20.0

#: One elector, run as ``unshare --net python -c CANDIDATE MODE IDENTITY SOCKET CA TOKEN NS``.
#: It prints one JSON line per event (wall time from this process) and obeys "dark" and "quit"
#: on stdin.
CANDIDATE = r"""
import json, socket, subprocess, sys, threading, time
import kubernetes
from kubernetes import client
mode, identity, bridge_path, ca, token, namespace = sys.argv[1:7]
LEASE, RENEW, RETRY = 4, 3, 1

def say(event, **extra):
    print(json.dumps({"event": event, "wall": time.time(), **extra}), flush=True)

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]

def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def bridge():
    while True:
        conn, _ = listener.accept()
        unix = socket.socket(socket.AF_UNIX)
        unix.connect(bridge_path)
        threading.Thread(target=pipe, args=(conn, unix), daemon=True).start()
        threading.Thread(target=pipe, args=(unix, conn), daemon=True).start()

threading.Thread(target=bridge, daemon=True).start()
configuration = client.Configuration(host=f"https://127.0.0.1:{port}")
configuration.ssl_ca_cert = ca
configuration.api_key = {"authorization": f"Bearer {token}"}

def on_started(*_):
    say("started")

def on_stopped():
    say("stopped")

stopper = lambda: None
if mode == "resilient":
    import resilient_kube
    factory = resilient_kube.ClientFactory(configuration)
    elector = factory.leader_elector(
        "e2e-lock", namespace=namespace, identity=identity, lease_duration=LEASE,
        renew_deadline=RENEW, retry_period=RETRY, on_started_leading=on_started,
        on_stopped_leading=on_stopped)
    campaign = elector.run
    stopper = elector.stop
else:
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
    if mode == "stock":
        client.Configuration.set_default(configuration)
    else:  # the stock elector on resilient_kube's client, each call's deadline its renew deadline
        import resilient_kube
        resilient_kube.install_default(resilient_kube.ClientFactory(configuration, deadline=RENEW))
    def campaign():
        # The stock run() returns after a lost term: campaign again, as a user's loop would.
        while True:
            lock = LeaseLock("e2e-lock", namespace, identity)
            config = electionconfig.Config(lock, LEASE, RENEW, RETRY, on_started, on_stopped)
            leaderelection.LeaderElection(config).run()

def elect():
    try:
        campaign()
        say("ended")
    except BaseException as exc:
        say("crashed", error=f"{type(exc).__name__}: {exc}")

threading.Thread(target=elect, daemon=True).start()
say("ready")
for line in sys.stdin:
    if line.strip() == "dark":
        for rule in (["INPUT", "--dport"], ["OUTPUT", "--sport"]):
            subprocess.run(["iptables", "-A", rule[0], "-p", "tcp", rule[1], str(port), "-j",
                            "DROP"], check=True)
        say("dark")
    elif line.strip() == "quit":
        stopper()
        break
"""


class UnixBridge:
    """The API server's end of the bridge: each Unix connection is spliced to the server."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen(64)
        self._held: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.port))
                self._held += [conn, upstream]
                for source, sink in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        for sock in self._held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)


class Candidate:
    """One elector process and the events it printed."""

    def __init__(self, mode: str, identity: str, bridge: Path, server: ApiServer, ns: str) -> None:
        self.identity = identity
        src = Path(resilient_kube.__file__).resolve().parents[1]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
        }
        self.process = subprocess.Popen(
            [
                "unshare",
                "--net",
                sys.executable,
                "-c",
                CANDIDATE,
                mode,
                identity,
                str(bridge),
                str(server.ca_path),
                server.token,
                ns,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))

    def wait_for(self, event: str, timeout: float) -> dict[str, Any] | None:
        """The first ``event`` not yet consumed, waiting up to ``timeout`` seconds."""
        for seen in self.seen:
            if seen["event"] == event and not seen.get("consumed"):
                seen["consumed"] = True
                return seen
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(got)
            if got["event"] == event:
                got["consumed"] = True
                return got
        return None

    def drain(self) -> list[dict[str, Any]]:
        """Every event printed so far."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.seen.append(self.events.get_nowait())
        return self.seen

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send("quit")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                # A stock elector hung in a call with no timeout does not get to read "quit".
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def terms(*candidates: Candidate) -> list[tuple[float, float, str]]:
    """Every leadership interval (wall time), an unfinished one ending at +inf."""
    out = []
    for candidate in candidates:
        start = None
        for event in candidate.drain():
            if event["event"] == "started":
                start = event["wall"]
            elif event["event"] == "stopped" and start is not None:
                out.append((start, event["wall"], candidate.identity))
                start = None
        if start is not None:
            out.append((start, float("inf"), candidate.identity))
    return sorted(out)


def overlaps(intervals: list[tuple[float, float, str]]) -> bool:
    return any(a[1] >= b[0] for a, b in itertools.pairwise(intervals))


@pytest.fixture
def bridge(apiserver: ApiServer, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "apiserver.sock"
    server = UnixBridge(path, apiserver.port)
    yield path
    server.close()


def run_scenario(mode: str, bridge: Path, server: ApiServer, namespace: str) -> dict[str, Any]:
    """Leader a, candidate b; cut a off; report what each process saw, in wall time."""
    a = Candidate(mode, f"{mode}-a", bridge, server, namespace)
    b: Candidate | None = None
    try:
        assert a.wait_for("ready", WAIT), a.process.stderr
        assert a.wait_for("started", WAIT), "the first candidate never led"
        b = Candidate(mode, f"{mode}-b", bridge, server, namespace)
        assert b.wait_for("ready", WAIT)
        a.send("dark")
        dark = a.wait_for("dark", WAIT)
        assert dark is not None
        b_started = b.wait_for("started", LEASE + RETRY + WAIT)
        a_stopped = a.wait_for("stopped", 0 if b_started is None else RENEW + SLACK)
        report: dict[str, Any] = {
            "old_leader_stopped_after_s": None
            if a_stopped is None
            else round(a_stopped["wall"] - dark["wall"], 3),
            "new_leader_started_after_s": None
            if b_started is None
            else round(b_started["wall"] - dark["wall"], 3),
            "old_stopped_before_new_started": (
                a_stopped is not None
                and b_started is not None
                and a_stopped["wall"] < b_started["wall"]
            ),
            "crashed": [
                f"{c.identity} after {e['wall'] - dark['wall']:.3f} s: {e['error']}"
                for c in (a, b)
                for e in c.drain()
                if e["event"] == "crashed"
            ],
        }
        report["leadership_overlapped"] = overlaps(terms(a, b))
        return report
    finally:
        a.close()
        if b is not None:
            b.close()


def test_leader_cut_off_hands_over_without_overlap(
    apiserver: ApiServer, bridge: Path, namespace: str, e2e_results: dict[str, Any]
) -> None:
    stock_namespace = f"{namespace}-stock"
    with apiserver.stock_client() as api_client:
        for name in (stock_namespace, f"{namespace}-default"):
            kubernetes.client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    mine = run_scenario("resilient", bridge, apiserver, namespace)
    stock = run_scenario("stock", bridge, apiserver, stock_namespace)
    stock_on_default = run_scenario("stock-on-default", bridge, apiserver, f"{namespace}-default")
    e2e_results["leader_election"] = {
        "settings": {"lease_duration": LEASE, "renew_deadline": RENEW, "retry_period": RETRY},
        "resilient_kube": mine,
        "stock kubernetes.leaderelection": stock,
        "stock kubernetes.leaderelection on install_default(deadline=renew_deadline)": (
            stock_on_default
        ),
    }
    assert mine["crashed"] == []
    assert mine["new_leader_started_after_s"] is not None
    assert mine["new_leader_started_after_s"] <= LEASE + RETRY + SLACK
    assert mine["old_leader_stopped_after_s"] is not None
    assert mine["old_leader_stopped_after_s"] <= RENEW + SLACK
    assert mine["old_stopped_before_new_started"]
    assert not mine["leadership_overlapped"]
