"""A throwaway CA, serving certificate and client certificate for the fake server (trustme)."""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TlsMaterial", "make_tls_material", "require_trustme"]


def require_trustme() -> Any:
    """Import trustme, or explain how to install it."""
    try:
        import trustme
    except ImportError as exc:
        raise ImportError(
            "FakeApiServer(tls=True) needs trustme: pip install 'resilient_kube[testing]'"
        ) from exc
    return trustme


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM files in a private temporary directory, and the server's SSL context."""

    directory: Path
    ca_cert: Path
    client_cert: Path | None
    client_key: Path | None
    context: ssl.SSLContext
    #: The trustme CA: it can issue more client certificates (``issue_client_cert``).
    ca: Any = None

    def issue_client_cert(self, cert: Path, key: Path, common_name: str) -> None:
        """Write a new client certificate and key signed by the CA, each replaced atomically."""
        issued = self.ca.issue_cert(f"{common_name}.invalid", common_name=common_name)
        for path, pem in ((cert, issued.cert_chain_pems[0]), (key, issued.private_key_pem)):
            staged = path.with_name(path.name + ".tmp")
            pem.write_to_path(str(staged))
            staged.replace(path)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_tls_material(names: list[str], *, client_cert: bool) -> TlsMaterial:
    """Issue a CA and a serving certificate for 127.0.0.1, ::1, localhost and ``names``.

    With ``client_cert`` the context requires a client certificate signed by the same CA,
    and one is issued for the common name ``resilient-kube-test``.
    """
    trustme = require_trustme()
    ca = trustme.CA(organization_name="resilient_kube.testing")
    identities = ["127.0.0.1", "::1", "localhost", *names]
    server = ca.issue_cert(*dict.fromkeys(identities))
    directory = Path(tempfile.mkdtemp(prefix="resilient-kube-tls-"))
    ca_path = directory / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    client_crt = client_key = None
    if client_cert:
        client = ca.issue_cert("resilient-kube-test.invalid", common_name="resilient-kube-test")
        client_crt, client_key = directory / "client.crt", directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(client_crt))
        client.private_key_pem.write_to_path(str(client_key))
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return TlsMaterial(directory, ca_path, client_crt, client_key, context, ca)
