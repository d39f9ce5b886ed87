"""Run etcd and kube-apiserver on 127.0.0.1 for the e2e suite (see docs/e2e.md).

Every process listens on loopback only, every wait is a poll with a deadline, and every process
is stopped by its own ``Popen`` handle (terminate, then kill after a bound).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

import kubernetes
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "DNS_NAME",
    "ApiServer",
    "Binaries",
    "Etcd",
    "Pki",
    "ProcessError",
    "free_port",
    "poll",
    "running",
]

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"

#: The name the DNS tests serve for 127.0.0.1; the serving certificate carries it as a SAN.
DNS_NAME = "api.kube.test"

#: A bearer token for a user outside ``system:masters``: that group bypasses the max-in-flight
#: filter and matches APF's exempt priority level, so a 429 test must not use it.
TOKEN = "e2e-token-0123456789"  # a throwaway token for a loopback test server
USER = "e2e-user"
GROUP = "e2e"

#: How long a process may take to answer its readiness probe, and to exit when asked.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0

T = TypeVar("T")


class ProcessError(RuntimeError):
    """A test server exited or never became ready; the message ends with its log."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Return a port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str,
    alive: Callable[[], None] = lambda: None,
) -> T:
    """Call ``probe`` until it returns something other than None, for at most ``timeout`` s.

    Args:
        probe: returns None for "not yet"; exceptions propagate.
        timeout: the deadline, in seconds from now.
        interval: the pause between probes.
        what: names the wait in the TimeoutError message.
        alive: called before each probe; raises if the awaited process has died.

    Raises:
        TimeoutError: the deadline passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive()
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)


@dataclasses.dataclass(frozen=True)
class Binaries:
    """The two binaries ``build.sh`` produced (paths include their versions)."""

    kube_apiserver: Path
    etcd: Path

    @classmethod
    def locate(cls) -> Binaries:
        """Ask ``build.sh --print`` where the cached binaries live (nothing is built)."""
        out = subprocess.run(
            [str(BUILD_SCRIPT), "--print"], check=True, capture_output=True, text=True
        ).stdout.split()
        return cls(kube_apiserver=Path(out[0]), etcd=Path(out[1]))

    def exist(self) -> bool:
        return all(os.access(path, os.X_OK) for path in (self.kube_apiserver, self.etcd))


@dataclasses.dataclass(frozen=True)
class Pki:
    """Certificates and keys shared by every API server of a session."""

    ca_path: Path
    #: A second CA that signed nothing the servers use: verification against it must fail.
    wrong_ca_path: Path
    cert_path: Path
    key_path: Path
    sa_key_path: Path
    sa_pub_path: Path
    token_file: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        """Write a CA, a serving certificate for loopback and ``DNS_NAME``, and auth files."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "::1", "localhost", DNS_NAME)
        pki = cls(
            ca_path=directory / "ca.crt",
            wrong_ca_path=directory / "wrong-ca.crt",
            cert_path=directory / "apiserver.crt",
            key_path=directory / "apiserver.key",
            sa_key_path=directory / "sa.key",
            sa_pub_path=directory / "sa.pub",
            token_file=directory / "tokens.csv",
        )
        ca.cert_pem.write_to_path(str(pki.ca_path))
        trustme.CA().cert_pem.write_to_path(str(pki.wrong_ca_path))
        cert.private_key_pem.write_to_path(str(pki.key_path))
        cert.cert_chain_pems[0].write_to_path(str(pki.cert_path))
        for blob in cert.cert_chain_pems[1:]:
            blob.write_to_path(str(pki.cert_path), append=True)
        # Service-account tokens are signed and verified with this pair (kube-apiserver needs it
        # even though the suite never mints a service-account token).
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pki.sa_key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pki.sa_pub_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # token,user,uid,"group1,group2" (kube-apiserver --token-auth-file format).
        pki.token_file.write_text(f'{TOKEN},{USER},{USER}-uid,"{GROUP}"\n')
        return pki


class _Process:
    """A child process with its output in a log file, stopped by its own handle."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _spawn(self, argv: Sequence[str]) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== start: {' '.join(argv)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise ProcessError with the log's tail if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise ProcessError(
                f"{self.name} exited with {self._proc.returncode}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL at once with ``kill=True``); SIGKILL after ``STOP_TIMEOUT``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


def _http_get(url: str, *, context: ssl.SSLContext | None = None, token: str = "") -> str | None:
    """GET ``url``; the body on 200, None on a refused connection or any other status."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            body: bytes = response.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return None


class Etcd(_Process):
    """A single-member etcd on 127.0.0.1 with its data in ``directory``."""

    def __init__(self, binary: Path, directory: Path) -> None:
        super().__init__("etcd", directory / "etcd.log")
        self.binary = binary
        self.directory = directory
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            [
                str(self.binary),
                "--name=e2e",
                f"--data-dir={self.directory / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=e2e={peer}",
                "--initial-cluster-state=new",
                # Test data only: skipping fsync makes every write about 10x faster.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
        )
        poll(
            lambda: _http_get(f"{self.url}/health"),
            timeout=START_TIMEOUT,
            what="etcd /health",
            alive=self.check_alive,
        )


class ApiServer(_Process):
    """A kube-apiserver on 127.0.0.1 backed by ``etcd`` under its own key prefix.

    Attributes:
        port: the secure port (kept across ``restart()``).
        host: ``https://127.0.0.1:PORT``.
        token: the bearer token of the test user (not in ``system:masters``).
        ca_path: the CA that signed the serving certificate.
        kubeconfig: a kubeconfig file for ``host``, ``token`` and ``ca_path``.
        etcd_port: the client port of the etcd behind it.
    """

    def __init__(
        self,
        *,
        name: str,
        binary: Path,
        etcd: Etcd,
        pki: Pki,
        directory: Path,
        extra_flags: Sequence[str] = (),
    ) -> None:
        super().__init__(f"kube-apiserver[{name}]", directory / f"{name}.log")
        self.binary = binary
        self.etcd = etcd
        self.pki = pki
        self.directory = directory
        self.extra_flags = tuple(extra_flags)
        self.server_name = name
        self.port = free_port()
        self.host = f"https://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.ca_path = pki.ca_path
        self.etcd_port = etcd.client_port
        self.kubeconfig = self.write_kubeconfig(directory / f"{name}.kubeconfig")

    def write_kubeconfig(
        self, path: Path, *, server: str | None = None, ca_path: Path | None = None
    ) -> Path:
        """Write a kubeconfig for this server; ``server`` and ``ca_path`` override the defaults."""
        cluster = {
            "server": server or self.host,
            "certificate-authority": str(ca_path or self.ca_path),
        }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": USER, "user": {"token": self.token}}],
            "contexts": [
                {"name": "e2e", "context": {"cluster": "e2e", "user": USER, "namespace": "default"}}
            ],
            "current-context": "e2e",
        }
        # JSON is valid YAML, which is what kubeconfig loaders parse.
        path.write_text(json.dumps(config, indent=2))
        return path

    def stock_client(self) -> kubernetes.client.ApiClient:
        """The official client configured from ``kubeconfig``, for setup and comparisons."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def argv(self) -> list[str]:
        pki = self.pki
        return [
            str(self.binary),
            f"--etcd-servers={self.etcd.url}",
            f"--etcd-prefix=/registry-{self.server_name}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.directory / 'certs'}",
            f"--tls-cert-file={pki.cert_path}",
            f"--tls-private-key-file={pki.key_path}",
            f"--token-auth-file={pki.token_file}",
            "--authorization-mode=AlwaysAllow",
            # Only a string in tokens; nothing ever contacts it.
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub_path}",
            f"--service-account-signing-key-file={pki.sa_key_path}",
            # An allocation range for Service IPs, never a destination.
            "--service-cluster-ip-range=10.0.0.0/24",
            # No Endpoints for the built-in "kubernetes" Service, no default ServiceAccount needed.
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
            *self.extra_flags,
        ]

    def start(self) -> None:
        """Start the server and wait for ``/readyz`` to answer ``ok``."""
        self._spawn(self.argv())
        context = ssl.create_default_context(cafile=str(self.ca_path))
        poll(
            lambda: _http_get(f"{self.host}/readyz", context=context, token=self.token),
            timeout=START_TIMEOUT,
            interval=0.2,
            what=f"{self.name} /readyz",
            alive=self.check_alive,
        )

    def restart(self, *, kill: bool = False, between: Callable[[], None] = lambda: None) -> None:
        """Stop the server, run ``between``, start it again on the same port and etcd."""
        self.stop(kill=kill)
        between()
        self.start()


@contextlib.contextmanager
def running(process: Etcd | ApiServer) -> Iterator[None]:
    """Start ``process`` and stop it on the way out, whatever happened."""
    try:
        process.start()
        yield
    finally:
        process.stop()
