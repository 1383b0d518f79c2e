"""TLS for the listener: the certificate and key named in ``[server]``, checked at start-up."""

from __future__ import annotations

import ssl

from gateway.config import Config, ConfigError


def listener_tls(config: Config) -> ssl.SSLContext | None:
    """The server-side TLS context, or None for plain HTTP (the default, fine on loopback)."""
    server = config.server
    if not server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.path(server.tls_cert), config.path(server.tls_key))
    except ssl.SSLError as exc:
        raise ConfigError(config.source, "server.tls_cert", f"cannot use the certificate and key: {exc.reason or exc}") from None
    except OSError as exc:
        raise ConfigError(config.source, "server.tls_cert", f"cannot read the certificate or key: {exc.strerror or exc}") from None
    return context
