"""Certificates for the TLS tests: a server's files from a test CA, and a client that trusts it."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def server_files(authority: trustme.CA, folder: Path) -> tuple[Path, Path]:
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert, key = folder / "cert.pem", folder / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(key))  # key first, then the chain
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    for extra in certificate.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    return cert, key


def client_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    return context
