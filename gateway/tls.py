"""TLS contexts from the files a config names: the listener's certificate and key, and the CAs
trusted for the upstream.

A leaf (standard library only): the config loader builds these once to try the files, so a
file `serve` could not use is refused when the config is loaded, by `config check` too.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

_REASONS = {
    "KEY_VALUES_MISMATCH": "the key does not match the certificate",
    "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate in it",
}


class _EncryptedKey(Exception):
    pass


def listener_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of HTTPS; ValueError saying why the files cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # Without a password callback OpenSSL would prompt on the terminal for an encrypted key.
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise ValueError(
            "cannot use the key: it is encrypted; give an unencrypted PEM key (readable only by the gateway)"
        ) from None
    except ssl.SSLError as exc:
        raise ValueError(f"cannot use the certificate and key: {_reason(exc)}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the certificate or key: {exc.strerror or exc}") from None
    return context


def upstream_context(verify: bool, ca_bundle: Path | None) -> ssl.SSLContext:
    """What the upstream client verifies the upstream with (``verify`` False: encrypted, its
    certificate not checked); ValueError for a CA bundle that cannot be used."""
    if not verify:
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified
    try:
        stamp = None if ca_bundle is None else (ca_bundle.stat().st_mtime_ns, ca_bundle.stat().st_size)
        return _verifying_context(ca_bundle, stamp)
    except ssl.SSLError as exc:
        raise ValueError(f"cannot use the CA bundle: {_reason(exc)}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the CA bundle: {exc.strerror or exc}") from None


@functools.lru_cache(maxsize=8)
def _verifying_context(ca_bundle: Path | None, stamp: tuple[int, int] | None) -> ssl.SSLContext:
    """One context per CA bundle as it is on disk (``stamp``: its time and size), shared: loading
    the certificates takes 35 ms here, and the config check, the gateway's start and every
    in-process gateway of the test suite each asked for one. Nothing changes a context once made."""
    return ssl.create_default_context(cafile=ca_bundle)


def _no_password() -> bytes:
    raise _EncryptedKey


def _reason(error: ssl.SSLError) -> str:
    if error.reason is None:  # OpenSSL's "PEM lib": no PEM block of the expected kind
        return "not a PEM certificate chain and its private key"
    return _REASONS.get(error.reason, error.reason)
