"""Configuration: every key is declared once, with its default, help text and check.

The loader, ``config.example.toml`` and docs/configuration.md's key table are all held to these
declarations (tests compare them), so the documentation cannot drift from the code. The loader
checks everything ``serve`` would (hashes parse, TLS files load, secrets resolve) before any
socket is opened, so ``config check`` and ``serve`` refuse the same configs; other commands
ask it for only what they use (``USES``). This module imports nothing of the gateway but two
leaves that define what a usable value is: ``gateway.passwords`` (the hash format) and
``gateway.tls`` (certificate and key files).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from gateway.passwords import parse_hash
from gateway.tls import listener_context, upstream_context

Check = Callable[[Any], Any]
"""Validates a raw TOML value and returns it converted; raises ValueError saying what is wrong."""

STUB_UPSTREAM = "stub"
INSTANCE_NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._-]{1,128}")
"""A sidecar's instance id: what the fleet store keys its records by."""
ROLES = ("revoke", "audit", "read", "manage", "global")
UPSTREAM_AUTH_MODES = ("passthrough", "service", "oauth2")
ACCOUNT_AUTH_MODES = frozenset({"service", "oauth2"})
"""The modes that send the gateway's own account (service_user) upstream, not the caller's."""
APIGEE_TOKEN_URL = "https://login.apigee.com/oauth/token"
PUBLIC_OAUTH_CLIENT = ("edgecli", "edgeclisecret")
"""Apigee's public client for its management login: published in its documentation, not a secret."""
ALL_ORGS = "*"


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the file and the key."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


def setting(help: str, check: Check, default: Any = dataclasses.MISSING) -> Any:
    """Declare a config key: the dataclass field carries its help text and check."""
    return field(default=default, metadata={"help": help, "check": check})


# Checks --------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value


def non_empty_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {_show(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def port_number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"expected an integer from 0 to 65535, got {_show(value)}")
    return value


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number, 0 or more, got {_show(value)}")
    return value


def positive_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number, 1 or more, got {_show(value)}")
    return value


MAX_BATCH = 100_000


def batch_count(value: Any) -> int:
    """Records in one batch: a batch is held in memory whole, on both sides."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ValueError(f"expected a whole number from 1 to {MAX_BATCH}, got {_show(value)}")
    return value


def positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"expected a number greater than 0, got {_show(value)}")
    return float(value)


def non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"expected a number, 0 or more, got {_show(value)}")
    return float(value)


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(map(_show, choices))}; got {_show(value)}")
        return str(value)

    return check


_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+", re.ASCII)
"""A DNS name or an IP address (urlsplit has removed an IPv6 address's brackets)."""


def listen_host(value: Any) -> str:
    """An address to listen on, named: asyncio reads an empty one as every interface, which a
    loopback sidecar must never do by accident (``0.0.0.0`` or ``::`` says so on purpose)."""
    if not isinstance(value, str) or not _HOST_NAME.fullmatch(value):
        raise ValueError(
            f'expected a host name or IP address such as "127.0.0.1" ("0.0.0.0": every interface), got {_show(value)}'
        )
    return value


def action_status(value: Any) -> int:
    if value not in (204, 200) or isinstance(value, bool):
        raise ValueError(f"expected 204 or 200, got {_show(value)}")
    return int(value)


def upstream_url(value: Any) -> str:
    if value == STUB_UPSTREAM:
        return STUB_UPSTREAM
    return http_url(value, alternative='"stub" or ')


def http_url(value: Any, *, alternative: str = "") -> str:
    """An http(s) base URL, normalised to ``scheme://host[:port]`` (the gateway appends the
    caller's whole path, ``/v1/o/...``, so a path here would be sent twice)."""
    try:
        parts = urlsplit(value) if isinstance(value, str) and value.isascii() else None
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number from 0 to 65535
        parts, port_ok = None, False
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or not _HOST_NAME.fullmatch(parts.hostname)
        or "?" in value
        or "#" in value
    ):
        raise ValueError(
            f'expected {alternative}an http(s) URL such as "https://api.enterprise.apigee.com", got {_show(value)}'
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials; use upstream.auth instead")
    base = f"{parts.scheme}://{parts.netloc}"
    if parts.path.strip("/"):
        raise ValueError(
            f"must be the base URL without a path ({_show(base)}): the gateway appends the caller's "
            f"whole path (/v1/o/...), so {_show(parts.path)} would be sent twice; got {_show(value)}"
        )
    return base


def token_url(value: Any) -> str:
    """Empty, or the http(s) URL of a token endpoint: unlike the upstream's base URL, it has a path."""
    if value == "":
        return ""
    parts = urlsplit(value) if isinstance(value, str) and value.isascii() else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not _HOST_NAME.fullmatch(parts.hostname)
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
    ):
        raise ValueError(
            f'expected "" or an http(s) URL such as "https://login.apigee.com/oauth/token", got {_show(value)}'
        )
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number from 0 to 65535
        port_ok = False
    if not port_ok:
        raise ValueError(f"invalid port in {_show(value)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials; the account is service_user, its password service_password_env")
    return str(value)


def name_list(allowed: tuple[str, ...] | None = None, wildcard: str | None = None) -> Check:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a non-empty list of strings, got {_show(value)}")
        for item in value:
            if allowed is not None and item not in allowed:
                raise ValueError(f"unknown value {_show(item)}; expected any of {', '.join(map(_show, allowed))}")
        if wildcard is not None and wildcard in value and len(value) > 1:
            raise ValueError(f"{_show(wildcard)} already means every one; list it alone")
        return tuple(value)

    return check


def password_hash(value: Any) -> str:
    """A hash made by ``gateway hash-password``. The value is never quoted back: it may be a
    password pasted in by mistake."""
    if not isinstance(value, str):
        raise ValueError("expected the string printed by `gateway hash-password`")
    parse_hash(value)
    return value


def collector_url(value: Any) -> str:
    if value == "":
        return ""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f'expected "" or the http(s) base URL of a `gateway collect`, got {_show(value)}')
    try:
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"{exc} in {_show(value)}") from None
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; use ship.password_env or ship.password_file")
    return str(value).rstrip("/")


def postgres_url(value: Any) -> str:
    if value == "":
        return ""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f'expected "" or a postgresql:// URL, got {_show(value)}')
    if parts.password or "password" in parse_qs(parts.query):
        raise ValueError("must not contain a password; use collector.password_env, PGPASSWORD or ~/.pgpass")
    for host in parts.netloc.rpartition("@")[2].split(","):  # libpq's host1:port1,host2:port2
        try:
            _ = urlsplit(f"//{host}").port  # raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"{exc} in {_show(value)}") from None
    return str(value)


def instance_name(value: Any) -> str:
    if value == "":
        return ""
    if not isinstance(value, str) or not INSTANCE_NAME.fullmatch(value):
        raise ValueError(
            f"expected an instance id of 1-128 letters, digits, '.', '_' or '-' (not '.' or '..', which a URL path "
            f"drops), got {_show(value)}"
        )
    return value


def required_instance_name(value: Any) -> str:
    if value == "":
        raise ValueError("expected an instance id, got an empty string")
    return instance_name(value)


def user_name(value: Any) -> str:
    if not isinstance(value, str) or not value or ":" in value:
        raise ValueError(f"expected a non-empty user name without ':', got {_show(value)}")
    return value


def optional_user_name(value: Any) -> str:
    return "" if value == "" else user_name(value)


# Declarations --------------------------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("Address the gateway listens on.", listen_host, "127.0.0.1")
    port: int = setting("TCP port the gateway listens on (0 picks a free port).", port_number, 8080)
    tls_cert: str = setting(
        "PEM certificate chain for HTTPS on the listener; with tls_key. Empty: plain HTTP (fine on loopback).", text, ""
    )
    tls_key: str = setting("PEM private key of tls_cert.", text, "")
    max_connections: int = setting(
        "Most caller connections held open at once, counted from the TCP connection (before any TLS "
        "handshake). Past it a new connection gets a fixed 503 (gateway.too_many_connections; with HTTPS, "
        "nothing: it could not be read before a handshake) and is closed at once, unread. Each can take a second file "
        "descriptor upstream: the gateway raises its soft open-file limit to 2 x this + 64 where the "
        "hard limit allows, and warns where it does not. 0: no cap.",
        count,
        1000,
    )
    header_timeout: float = setting(
        "Seconds a caller has to send a request's line and headers, counted from connecting (the TLS "
        "handshake included) and from the first byte of each later request; past it the connection is "
        "closed without an answer.",
        positive_number,
        10.0,
    )
    body_timeout: float = setting(
        "Seconds a caller has to send a request's body once the gateway reads it; past it 408 "
        "(gateway.request_timeout, audited as rejected) and the connection is closed.",
        positive_number,
        10.0,
    )
    keepalive_timeout: float = setting(
        "Seconds a connection may stay idle between requests before the gateway closes it.",
        positive_number,
        60.0,
    )
    send_timeout: float = setting(
        "Seconds an answer has to be written, from its first byte until the operating system has taken "
        "all of it; a caller that does not read its answers past it has its connection closed (counted in "
        "gateway_connections_timed_out_total). With "
        "header_timeout, body_timeout and keepalive_timeout, it bounds how long a caller that misbehaves "
        "can hold a connection.",
        positive_number,
        10.0,
    )


@dataclass(frozen=True)
class MetricsConfig:
    port: int = setting(
        "0 serves GET /metrics (Prometheus text format) on the gateway's own listener; another port serves it "
        "there instead (on server.host), e.g. to keep it from the callers. That listener holds at most 16 "
        "connections, to the server's timeouts.",
        port_number,
        0,
    )


@dataclass(frozen=True)
class ThrottleConfig:
    max_failures: int = setting(
        "Failed logins allowed per client address, and per user name, in one window; past that, 429 with "
        "Retry-After until the window ends, without checking the password. An address with no failure of "
        "its own in the window may still try a user name that is over its limit, so guessers elsewhere "
        "cannot lock the real user out. 0 turns throttling off.",
        count,
        10,
    )
    window_seconds: float = setting(
        "Length of a throttling window. Throttled attempts are audited as one denied record per client "
        "(or user) and window, with their count.",
        positive_number,
        60.0,
    )
    max_denied_records: int = setting(
        "Audit records that failed logins may write per window over all addresses: one per failed login "
        "(so at most max_failures per address) and one per throttled address or user name. Past it, they "
        "are only counted, in one summary record per window. 0: summaries only.",
        count,
        20,
    )
    max_concurrent_checks: int = setting(
        "Password checks (scrypt, about 0.1 s of CPU each at the default cost) running at once over all "
        "callers; more wait, within max_checks_per_second. Verified callers are cached and never hash.",
        positive_count,
        1,
    )
    max_checks_per_second: float = setting(
        "Password checks started per second over all callers, in bursts of up to this many; past it, 503 "
        "gateway.login_busy with Retry-After, without checking the password.",
        positive_number,
        10.0,
    )


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = setting(
        'Where calls go: "stub" runs the embedded Apigee stub in-process; otherwise an http(s) '
        'base URL such as "https://api.enterprise.apigee.com": scheme, host and port only, since the '
        "caller's path (/v1/o/...) is appended to it.",
        upstream_url,
        STUB_UPSTREAM,
    )
    pass_through: bool = setting(
        "Forward every other /v1/... call too, after the gateway's own Basic auth and org scoping "
        '(roles "read" and "manage"), logged but not audited; false answers them 404, as a '
        "gateway for the audited calls alone.",
        boolean,
        True,
    )
    auth: str = setting(
        '"passthrough" forwards the caller\'s Basic credentials; "service" replaces them with the '
        'gateway\'s own Apigee account (service_user, password from service_password_env); "oauth2" '
        "logs that account in at oauth_token_url and sends Authorization: Bearer instead, renewing the "
        "token before it expires (for organisations with Basic turned off).",
        one_of(*UPSTREAM_AUTH_MODES),
        "passthrough",
    )
    service_user: str = setting('Apigee user name for auth = "service" or "oauth2".', optional_user_name, "")
    service_password_env: str = setting(
        'Name of the environment variable holding the service account password (auth = "service" or '
        '"oauth2"); the password itself never goes in this file.',
        text,
        "",
    )
    oauth_token_url: str = setting(
        "Token endpoint of Apigee's login server for auth = \"oauth2\" (a SAML zone's is "
        "https://ZONE.login.apigee.com/oauth/token). Empty: https://login.apigee.com/oauth/token, or "
        'the embedded stub\'s own /oauth/token with url = "stub". Asked with the same timeouts and TLS '
        "settings as the management API.",
        token_url,
        "",
    )
    oauth_client_id: str = setting(
        'OAuth client the gateway logs in through (auth = "oauth2"), sent as Basic with its secret: '
        "Apigee's public client edgecli by default.",
        user_name,
        "edgecli",
    )
    oauth_client_secret_env: str = setting(
        "Name of the environment variable holding the OAuth client's secret. Empty: edgeclisecret, the "
        "secret Apigee publishes for its public client edgecli (not a credential); required for any other client.",
        text,
        "",
    )
    connect_timeout: float = setting("Seconds to wait for a connection to the upstream.", positive_number, 5.0)
    read_timeout: float = setting(
        "Seconds to wait for the upstream's answer once connected, and then between any two reads of it "
        "(502/504 after that).",
        positive_number,
        30.0,
    )
    total_timeout: float = setting(
        "Seconds one upstream call may take in all, from connecting to the answer's last byte (504 after "
        "that, outcome unknown). Bounds an upstream that trickles its answer, which read_timeout alone "
        "cannot. More than connect_timeout.",
        positive_number,
        35.0,
    )
    enumeration_timeout: float = setting(
        "Seconds the listing of a bulk revocation's tokens (GET oauth2/search, page by page, before the "
        "revocation is forwarded) may take in all. Past it, past 200 pages, or when the upstream repeats a "
        "page, the listing stops, the intent says it is incomplete and why, and the revocation is still "
        "forwarded.",
        positive_number,
        30.0,
    )
    max_body_mb: int = setting(
        "Largest answer body, in MiB, the gateway takes from the upstream: each is held in memory to be "
        "recorded and passed on. A larger one is not passed on: the caller gets 502 "
        "(gateway.upstream_answer_lost) saying what the upstream's status was, and the call is recorded from "
        "that status (error upstream.too_large, no snapshot).",
        positive_count,
        1,
    )
    pass_through_max_body_mb: int = setting(
        "Largest request body, and largest answer body, in MiB, of a call passed through (not audited): an "
        "API proxy bundle import (POST .../apis?action=import) or export, a KVM bulk write. Each is held in "
        "memory while it is relayed. A larger request gets 413 (gateway.payload_too_large) and is not "
        "forwarded; a larger answer, 502 (gateway.upstream_answer_lost). Audited calls keep their own "
        "bounds: a 64 KiB request body, and max_body_mb for answers.",
        positive_count,
        32,
    )
    verify_tls: bool = setting("Verify the upstream's TLS certificate.", boolean, True)
    ca_bundle: str = setting(
        "PEM file of CA certificates to trust for the upstream instead of the system's (empty: system).",
        text,
        "",
    )


@dataclass(frozen=True)
class AuditConfig:
    database: str = setting(
        "SQLite file holding the audit log; relative paths are relative to this config file.",
        non_empty_text,
        "gateway-audit.db",
    )
    synchronous: str = setting(
        '"FULL" syncs every commit to disk before any caller is answered: no acknowledged record is '
        'lost even on power failure. "NORMAL" (WAL mode) syncs only at checkpoints: faster, survives '
        "a crash of the gateway, but a power failure can lose the last acknowledged records.",
        one_of("FULL", "NORMAL"),
        "FULL",
    )
    busy_timeout: float = setting(
        "Seconds a write waits for a lock held by another process (e.g. a long query) before the "
        "gateway gives up and answers 503.",
        positive_number,
        5.0,
    )
    max_size_mb: int = setting(
        "Largest the audit database may grow, in MiB; past it the gateway answers 503 and forwards "
        "nothing (as on a full disk) until `gateway audit prune` frees room. 0: no limit but the disk's.",
        count,
        0,
    )
    reserve_mb: int = setting(
        "Disk space, in MiB, held back in a file beside the audit database (DATABASE.reserve) so "
        "that `gateway audit prune` can still run when the disk is full: it releases the reserve, "
        "prunes, and allocates it again when there is room. 0: none.",
        count,
        16,
    )
    reads: bool = setting(
        "Also audit the GET and HEAD calls passed through (a record each, after the answer: who read "
        "what, with the path's secret segments masked). By default reads are only logged.",
        boolean,
        False,
    )
    store_raw_tokens: bool = setting(
        "Store access and refresh tokens in clear in the audit log. By default only a SHA-256 "
        "fingerprint and the last 4 characters are kept. The snapshot's other secrets (consumerSecret, "
        "password, ...) are redacted either way.",
        boolean,
        False,
    )
    chain_key_env: str = setting(
        "Name of an environment variable holding the hash chain's key (at least 16 bytes). With a key, "
        "records are chained with HMAC-SHA-256, so whoever can write the database cannot rebuild the "
        "chain. Empty: plain SHA-256. A log keeps the kind of chain it was started with.",
        text,
        "",
    )
    chain_key_file: str = setting(
        "File holding the chain key instead (trailing whitespace ignored); kept outside the database.",
        text,
        "",
    )
    head_log_records: int = setting(
        "Log the chain's head (record id and hash, to anchor outside the host) every this many records.",
        count,
        10000,
    )
    head_log_seconds: float = setting(
        "Also log the head when new records came and this many seconds passed since it was last logged.",
        positive_number,
        60.0,
    )


@dataclass(frozen=True)
class LoggingConfig:
    format: str = setting(
        '"json" (one JSON object per line), "console" (human-readable), or "auto" '
        "(console on a terminal, JSON otherwise).",
        one_of("auto", "json", "console"),
        "auto",
    )
    level: str = setting(
        'Least severe level logged: "debug", "info", "warning" or "error".',
        one_of(*LOG_LEVELS),
        "info",
    )


@dataclass(frozen=True)
class StubConfig:
    host: str = setting(
        "Address `gateway stub` listens on (the embedded stub always uses loopback).", listen_host, "127.0.0.1"
    )
    port: int = setting("TCP port of `gateway stub` (the embedded stub picks a free one).", port_number, 8081)
    seed: str = setting(
        "JSON seed file of users, tokens and what else each organisation holds (docs/stub.md) for the stub, "
        "embedded or standalone; empty: the demo data.",
        text,
        "",
    )
    generated_tokens: int = setting(
        "Load-test tokens named load0, load1, ... that every organisation of the stub also holds, made on first use.",
        count,
        0,
    )
    admin: bool = setting(
        "Serve the stub's admin endpoints under /_stub/ (request journal, token creation, fault "
        "injection) for rehearsing upstream failures. They take no credentials: test setups only.",
        boolean,
        False,
    )
    delay: float = setting(
        "Seconds the stub waits before every answer on the Apigee paths, to rehearse a slow Apigee.",
        non_negative_number,
        0.0,
    )
    action_status: int = setting(
        "Status of the stub's answer to every ?action= call (approve, revoke, active, inactive): 204 with "
        "no body, as Apigee's older reference documents and apigee-edge-js requires, or 200 with the changed "
        "entity, as Apigee's current spec documents.",
        action_status,
        204,
    )
    revoke_delay: float = setting(
        "Seconds after the stub answers a bulk POST /oauth2/revoke (202) before the tokens turn revoked: "
        "Apigee revokes asynchronously.",
        non_negative_number,
        1.0,
    )
    token_lifetime: float = setting(
        "Seconds a bearer token from the stub's POST /oauth/token is accepted on the management paths "
        "(Apigee's: 1799); 0 issues tokens that are already expired.",
        non_negative_number,
        1799.0,
    )


@dataclass(frozen=True)
class UserConfig:
    name: str = setting("User name the caller sends with Basic auth.", user_name)
    password_hash: str = setting("Hash printed by `gateway hash-password`, never the password.", password_hash)
    orgs: tuple[str, ...] = setting('Organisations the user may act on; ["*"] for all.', name_list(wildcard=ALL_ORGS))
    roles: tuple[str, ...] = setting(
        '"revoke" may change credentials (the audited calls: revoke, approve, delete or issue tokens, keys, '
        'apps, developers); "audit" may read the audit trail over HTTP; "read" may pass other GET and HEAD '
        'calls through; "manage" may pass other writes through; "global" may call paths outside any '
        'organisation (/v1/users/..., with read or manage). Default: ["revoke"].',
        name_list(ROLES),
        ("revoke",),
    )


@dataclass(frozen=True)
class ShipConfig:
    url: str = setting(
        "Base URL of the fleet collector (`gateway collect`) this sidecar ships its audit records to, e.g. "
        '"https://audit-collector.example.com:8443". Empty: no shipping.',
        collector_url,
        "",
    )
    instance: str = setting(
        "This sidecar's instance id, as the collector's [[sidecars]] names it; the fleet store keys records "
        "by (instance, id). Empty: the host name.",
        instance_name,
        "",
    )
    password_env: str = setting(
        "Name of the environment variable holding this sidecar's collector password (never in this file).",
        text,
        "",
    )
    password_file: str = setting("File holding the collector password instead (trailing whitespace ignored).", text, "")
    batch_size: int = setting("Most records sent to the collector in one batch (at most 100000).", batch_count, 1000)
    interval: float = setting(
        "Seconds between looks for new records once everything is shipped (also the first back-off step).",
        positive_number,
        0.2,
    )
    max_backoff: float = setting(
        "Longest wait, in seconds, between attempts while the collector is unreachable or refuses a batch; "
        "the wait doubles from interval up to this.",
        positive_number,
        30.0,
    )
    timeout: float = setting("Seconds one request to the collector may take in all.", positive_number, 10.0)
    ca_bundle: str = setting(
        "PEM file of CA certificates to trust for an https collector instead of the system's (empty: system).",
        text,
        "",
    )


@dataclass(frozen=True)
class CollectorConfig:
    database_url: str = setting(
        "PostgreSQL (or CockroachDB / YugabyteDB) URL of the fleet store that `gateway collect` writes, e.g. "
        '"postgresql://audit@db.example.com:5432/audit"; never with a password in it.',
        postgres_url,
        "",
    )
    password_env: str = setting(
        "Name of the environment variable holding the database password (empty: PGPASSWORD or ~/.pgpass, "
        "as libpq does).",
        text,
        "",
    )
    max_batch: int = setting(
        "Most records the collector accepts in one batch (413 past it; at most 100000).", batch_count, 5000
    )
    max_body_mb: int = setting(
        "Largest batch body, in MiB, the collector reads (413 past it): each is held in memory to be checked. "
        "A sidecar halves its batch on a 413; keep this above the sidecars' upstream.max_body_mb, or a record "
        "with a snapshot that large cannot be shipped.",
        positive_count,
        64,
    )
    pool_size: int = setting("Database connections the collector keeps open.", positive_count, 4)
    silent_after: float = setting(
        "Seconds without contact (a batch, or the shipper asking its mark) after which `gateway audit verify "
        "--store` reports an instance as silent.",
        positive_number,
        3600.0,
    )
    serialization_retries: int = setting(
        "Times a batch's transaction is retried after a serialization failure (SQLSTATE 40001), as "
        "CockroachDB and YugabyteDB ask of their clients; PostgreSQL at READ COMMITTED raises none.",
        count,
        5,
    )


SECTIONS: dict[str, type] = {
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "audit": AuditConfig,
    "logging": LoggingConfig,
    "stub": StubConfig,
    "throttle": ThrottleConfig,
    "metrics": MetricsConfig,
    "ship": ShipConfig,
    "collector": CollectorConfig,
}
"""The plain tables of the config file; ``[[users]]`` and ``[[sidecars]]`` are arrays of tables."""


@dataclass(frozen=True)
class SidecarConfig:
    instance: str = setting(
        "A sidecar's instance id (its ship.instance); it may ship only as this instance.", required_instance_name
    )
    password_hash: str = setting(
        "Hash of the sidecar's collector password, printed by `gateway hash-password`, never the password.",
        non_empty_text,
    )
    chain_key_env: str = setting(
        "For a sidecar whose log is keyed: the environment variable holding its chain key, so the collector "
        "and `audit verify --store` check its records' hashes (without it, only their links).",
        text,
        "",
    )
    chain_key_file: str = setting("File holding that sidecar's chain key instead.", text, "")


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stub: StubConfig = field(default_factory=StubConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    ship: ShipConfig = field(default_factory=ShipConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    users: tuple[UserConfig, ...] = ()
    sidecars: tuple[SidecarConfig, ...] = ()
    """Read by `gateway collect` only: the sidecars that may ship to it."""
    base_dir: Path = field(default_factory=Path.cwd)
    service_password: str = field(default="", repr=False)
    """Read from upstream.service_password_env when asked for (see ``USES``)."""
    oauth_client_secret: str = field(default="", repr=False)
    """With upstream.auth = "oauth2": read from upstream.oauth_client_secret_env, or the public client's."""
    chain_secret: bytes | None = field(default=None, repr=False)
    """The hash chain's key, read from audit.chain_key_env or audit.chain_key_file when asked for."""
    ship_password: str = field(default="", repr=False)
    """This sidecar's collector password, read from ship.password_env or ship.password_file."""
    collector_password: str | None = field(default=None, repr=False)
    """The fleet store's database password, from collector.password_env (None: libpq's own sources)."""
    sidecar_secrets: dict[str, bytes] = field(default_factory=dict, repr=False)
    """Chain keys of keyed sidecars, by instance, from their chain_key_env or chain_key_file."""
    overridden: tuple[str, ...] = ()
    """The ``section.key`` names set by environment variables rather than the file."""

    @property
    def uses_stub(self) -> bool:
        return self.upstream.url == STUB_UPSTREAM

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        return self.base_dir / Path(value).expanduser()

    @property
    def database_path(self) -> Path:
        return self.path(self.audit.database)

    def with_database(self, path: Path) -> Config:
        """The same settings on another audit database file (the CLI's ``--db``)."""
        return dataclasses.replace(self, audit=dataclasses.replace(self.audit, database=str(path.resolve())))

    def listener_tls(self) -> ssl.SSLContext | None:
        """The listener's TLS context (None: plain HTTP). The loader builds it once to try the
        files (``USES``); ``serve`` builds the one it listens with."""
        server = self.server
        if not server.tls_cert:
            return None
        try:
            return listener_context(self.path(server.tls_cert), self.path(server.tls_key))
        except ValueError as exc:
            raise ConfigError(self.source, "server.tls_cert", str(exc)) from None


DEFAULTS_SOURCE = "(built-in defaults)"

Use = Literal["chain_key", "service_password", "listener_tls", "upstream_tls", "fleet_secrets"]
USES: frozenset[Use] = frozenset(("chain_key", "service_password", "listener_tls", "upstream_tls", "fleet_secrets"))
"""What a config names and the loader reads only for a command that uses it: the secrets it
never holds (chain key, service password) and the TLS files (certificate and key, CA bundle),
which may be readable only by the gateway's own user. ``serve`` and ``config check`` use all;
reading the log none, verifying it the chain key: a reader needs no password it never sends."""


def load_config(path: Path | None, environ: Mapping[str, str] | None = None, *, uses: Collection[Use] = USES) -> Config:
    """Read and validate a config file (``None``: the built-in demo defaults), then the
    environment's ``GATEWAY_SECTION_KEY`` overrides, then read what the command ``uses``."""
    if path is None:
        return build_config({}, source=DEFAULTS_SOURCE, base_dir=Path.cwd(), environ=environ, uses=uses)
    source = str(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"invalid TOML: not UTF-8 (byte {exc.start})") from None
    return build_config(data, source=source, base_dir=path.resolve().parent, environ=environ, uses=uses)


def build_config(
    data: dict[str, Any],
    *,
    source: str,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    uses: Collection[Use] = USES,
) -> Config:
    """Validate parsed TOML against the declarations and the rules that span keys."""
    environ = os.environ if environ is None else environ
    known = [*SECTIONS, "users", "sidecars"]
    for name in data:
        if name not in known:
            raise ConfigError(source, name, f"unknown section; expected one of {', '.join(known)}")
    sections = {name: _build_table(cls, data.get(name, {}), source, name) for name, cls in SECTIONS.items()}
    overrides = environment_overrides(environ)
    for key, (variable, text) in overrides.items():
        section, name = key.split(".")
        declaration = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name)
        value = _from_environment(declaration.metadata["check"], text, source, key, variable)
        sections[section] = dataclasses.replace(sections[section], **{name: value})
    _refuse_unknown_variables(environ, sections, source)
    users = _build_users(data.get("users", []), source)
    sidecars = _build_sidecars(data.get("sidecars", []), source)
    config = Config(
        source=source, users=users, sidecars=sidecars, base_dir=base_dir, **sections, overridden=tuple(overrides)
    )
    _check_rules(config)
    return resolve(config, uses, environ)


def resolve(config: Config, uses: Collection[Use], environ: Mapping[str, str] | None = None) -> Config:
    """The config with what a command ``uses`` read and tried; a ConfigError if one cannot be."""
    environ = os.environ if environ is None else environ
    if "listener_tls" in uses:
        config.listener_tls()  # built and dropped: serve builds its own when it listens
    if "upstream_tls" in uses:
        upstream = config.upstream
        try:
            upstream_context(upstream.verify_tls, config.path(upstream.ca_bundle) if upstream.ca_bundle else None)
        except ValueError as exc:
            raise ConfigError(config.source, "upstream.ca_bundle", str(exc)) from None
    if "service_password" in uses and config.upstream.auth in ACCOUNT_AUTH_MODES:
        config = dataclasses.replace(config, service_password=_service_password(config, environ))
        if config.upstream.auth == "oauth2":
            config = dataclasses.replace(config, oauth_client_secret=_oauth_client_secret(config, environ))
    if "chain_key" in uses:
        config = dataclasses.replace(config, chain_secret=_chain_secret(config, environ))
    if "fleet_secrets" in uses:
        config = _fleet_secrets(config, environ)
    return config


def _fleet_secrets(config: Config, environ: Mapping[str, str]) -> Config:
    """The collector password of ``[ship]`` and the database password of ``[collector]``, from the
    environment or a file named in the config: never from the config file itself."""
    ship, collector = config.ship, config.collector
    if ship.password_env and ship.password_file:
        raise ConfigError(
            config.source, "ship.password_file", "give the password by password_env or password_file, not both"
        )
    if ship.url and not (ship.password_env or ship.password_file):
        raise ConfigError(config.source, "ship.password_env", "required when ship.url is set (or ship.password_file)")
    if ship.password_env:
        config = dataclasses.replace(
            config, ship_password=read_secret(config.source, "ship.password_env", environ, variable=ship.password_env)
        )
    elif ship.password_file:
        config = dataclasses.replace(
            config,
            ship_password=read_secret(
                config.source, "ship.password_file", environ, path=config.path(ship.password_file)
            ),
        )
    if collector.password_env:
        password = read_secret(config.source, "collector.password_env", environ, variable=collector.password_env)
        config = dataclasses.replace(config, collector_password=password)
    secrets = {}
    for index, sidecar in enumerate(config.sidecars):
        if sidecar.chain_key_env:
            secrets[sidecar.instance] = read_chain_key(
                config.source, f"sidecars[{index}].chain_key_env", environ, variable=sidecar.chain_key_env
            )
        elif sidecar.chain_key_file:
            secrets[sidecar.instance] = read_chain_key(
                config.source, f"sidecars[{index}].chain_key_file", environ, path=config.path(sidecar.chain_key_file)
            )
    return dataclasses.replace(config, sidecar_secrets=secrets) if secrets else config


def read_secret(
    source: str, key: str, environ: Mapping[str, str], *, variable: str | None = None, path: Path | None = None
) -> str:
    """A password from an environment variable or a file (trailing whitespace dropped)."""
    if variable is not None:
        secret = environ.get(variable, "")
        if not secret:
            raise ConfigError(source, key, f"environment variable {variable} is not set or empty")
        return secret
    assert path is not None
    try:
        secret = path.read_text(encoding="utf-8").rstrip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, key, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not secret:
        raise ConfigError(source, key, f"{path} is empty")
    return secret


def _build_table(cls: type, table: Any, source: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(source, where, f"expected a table, got {_show(table)}")
    declared = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in declared:
            raise ConfigError(source, f"{where}.{key}", f"unknown key; expected one of {', '.join(declared)}")
    values: dict[str, Any] = {}
    for name, declaration in declared.items():
        if name in table:
            try:
                values[name] = declaration.metadata["check"](table[name])
            except ValueError as exc:
                raise ConfigError(source, f"{where}.{name}", str(exc)) from None
        elif declaration.default is dataclasses.MISSING:
            raise ConfigError(source, f"{where}.{name}", "missing; this key is required")
    return cls(**values)


ENVIRONMENT_PREFIX = "GATEWAY_"
RECONCILE_PASSWORD_ENV = "GATEWAY_UPSTREAM_PASSWORD"
"""The Apigee password `gateway audit reconcile --user` reads: a ``GATEWAY_`` variable, not a key."""


def environment_variable(section: str, key: str) -> str:
    """The variable that overrides ``section.key``: ``GATEWAY_SECTION_KEY``."""
    return f"{ENVIRONMENT_PREFIX}{section}_{key}".upper()


def environment_overrides(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``section.key`` -> (variable, text) for each ``GATEWAY_SECTION_KEY`` naming a declared key.

    Every other ``GATEWAY_*`` variable is refused (a typo must not pass silently; see
    ``_refuse_unknown_variables``), except the secrets a config names (say ``chain_key_env =
    "GATEWAY_CHAIN_KEY"``) and ``GATEWAY_UPSTREAM_PASSWORD``, which `audit reconcile` reads.
    ``[[users]]`` cannot be set this way: it is a list of tables.
    """
    found = {}
    for section, cls in SECTIONS.items():
        for declaration in dataclasses.fields(cls):
            variable = environment_variable(section, declaration.name)
            if variable in environ:
                found[f"{section}.{declaration.name}"] = (variable, environ[variable])
    return found


def _refuse_unknown_variables(environ: Mapping[str, str], sections: Mapping[str, Any], source: str) -> None:
    """Stop at a ``GATEWAY_*`` variable (in any case) that sets nothing, as at an unknown key."""
    keys = [environment_variable(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    allowed = {
        *keys,
        RECONCILE_PASSWORD_ENV,
        sections["upstream"].service_password_env,
        sections["upstream"].oauth_client_secret_env,
        sections["audit"].chain_key_env,
    }
    for variable in environ:
        if not variable.upper().startswith(ENVIRONMENT_PREFIX) or variable in allowed:
            continue
        if variable.upper().startswith(f"{ENVIRONMENT_PREFIX}USERS_"):
            hint = "[[users]] cannot be set by environment variables; declare users in the config file"
        else:
            close = difflib.get_close_matches(variable.upper(), keys, n=1)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else "a config key is set by GATEWAY_<SECTION>_<KEY>, such as GATEWAY_SERVER_PORT"
            )
        raise ConfigError(source, variable, f"unknown environment variable; {hint}")


def _from_environment(check: Check, text: str, source: str, key: str, variable: str) -> Any:
    if not _is_utf8(text):
        raise ConfigError(source, key, f"environment variable {variable} is not valid UTF-8")
    try:
        return from_text(check, text)
    except ValueError as exc:
        raise ConfigError(source, key, f"{exc} (from environment variable {variable})") from None


def from_text(check: Check, text: str) -> Any:
    """A value given as text (an environment variable, a command-line option) through its key's
    check: read as a TOML value (``8080``, ``true``, ``["a"]``), else as a plain string."""
    try:
        parsed = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        parsed = text
    try:
        return check(parsed)
    except ValueError as complaint:
        if parsed is text:
            raise
        try:
            return check(text)
        except ValueError:
            raise complaint from None


def key_from_text(section: str, key: str, text: str) -> Any:
    """``section.key`` given as text, checked as in the file: how a command-line option that
    overrides the key is read, so that the option cannot take what the key refuses."""
    declaration = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
    return from_text(declaration.metadata["check"], text)


def _build_users(users: Any, source: str) -> tuple[UserConfig, ...]:
    if not isinstance(users, list):
        raise ConfigError(source, "users", "expected an array of tables ([[users]])")
    built = tuple(_build_table(UserConfig, user, source, f"users[{i}]") for i, user in enumerate(users))
    seen: set[str] = set()
    for index, user in enumerate(built):
        if user.name in seen:
            raise ConfigError(source, f"users[{index}].name", f"user {_show(user.name)} is declared twice")
        seen.add(user.name)
    return built


def _build_sidecars(sidecars: Any, source: str) -> tuple[SidecarConfig, ...]:
    if not isinstance(sidecars, list):
        raise ConfigError(source, "sidecars", "expected an array of tables ([[sidecars]])")
    built = tuple(_build_table(SidecarConfig, sidecar, source, f"sidecars[{i}]") for i, sidecar in enumerate(sidecars))
    seen: set[str] = set()
    for index, sidecar in enumerate(built):
        if sidecar.instance in seen:
            raise ConfigError(
                source, f"sidecars[{index}].instance", f"instance {_show(sidecar.instance)} is declared twice"
            )
        if sidecar.chain_key_env and sidecar.chain_key_file:
            raise ConfigError(
                source,
                f"sidecars[{index}].chain_key_file",
                "give the chain key by chain_key_env or chain_key_file, not both",
            )
        seen.add(sidecar.instance)
    return built


def _check_rules(config: Config) -> None:
    """Rules that span several keys."""
    source, upstream = config.source, config.upstream
    if not config.uses_stub and not config.users:
        raise ConfigError(
            source,
            "users",
            'no [[users]] declared; the demo user only exists with the embedded stub (upstream.url = "stub")',
        )
    if upstream.total_timeout <= upstream.connect_timeout:
        raise ConfigError(
            source, "upstream.total_timeout", "must be more than upstream.connect_timeout, which it includes"
        )
    server = config.server
    if bool(server.tls_cert) != bool(server.tls_key):
        missing = "server.tls_key" if server.tls_cert else "server.tls_cert"
        raise ConfigError(source, missing, "HTTPS needs both server.tls_cert and server.tls_key")
    if config.metrics.port and config.metrics.port == server.port:
        raise ConfigError(source, "metrics.port", "is server.port too; 0 serves /metrics on the gateway's own listener")
    if upstream.auth in ACCOUNT_AUTH_MODES:
        for key in ("service_user", "service_password_env"):
            if not getattr(upstream, key):
                raise ConfigError(source, f"upstream.{key}", f"required when upstream.auth = {_show(upstream.auth)}")
    if upstream.auth == "oauth2" and upstream.oauth_client_id != PUBLIC_OAUTH_CLIENT[0]:
        if not upstream.oauth_client_secret_env:
            raise ConfigError(
                source,
                "upstream.oauth_client_secret_env",
                f"required when upstream.oauth_client_id is not {_show(PUBLIC_OAUTH_CLIENT[0])} (its secret is public)",
            )
    if config.audit.chain_key_env and config.audit.chain_key_file:
        raise ConfigError(
            source, "audit.chain_key_file", "give the chain key by chain_key_env or chain_key_file, not both"
        )
    for key, value in (
        ("upstream.ca_bundle", upstream.ca_bundle),
        ("stub.seed", config.stub.seed),
        ("server.tls_cert", server.tls_cert),
        ("server.tls_key", server.tls_key),
        ("ship.ca_bundle", config.ship.ca_bundle),
    ):
        if value and not config.path(value).is_file():
            raise ConfigError(source, key, f"no such file: {config.path(value)}")


MIN_CHAIN_KEY_BYTES = 16


def _is_utf8(text: str) -> bool:
    """False for text holding lone surrogates: how Python reads bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _chain_secret(config: Config, environ: Mapping[str, str]) -> bytes | None:
    """The chain key from the environment or a file: never from the config file itself."""
    audit = config.audit
    if audit.chain_key_env:
        return read_chain_key(config.source, "audit.chain_key_env", environ, variable=audit.chain_key_env)
    if audit.chain_key_file:
        return read_chain_key(config.source, "audit.chain_key_file", environ, path=config.path(audit.chain_key_file))
    return None


def read_chain_key(
    source: str, key: str, environ: Mapping[str, str], *, variable: str | None = None, path: Path | None = None
) -> bytes:
    """A chain key from an environment variable or a file (trailing whitespace dropped), checked
    for length; ``source`` and ``key`` name where it was asked for, in the error."""
    if variable is not None:
        # The variable's bytes as the environment holds them, UTF-8 or not: a key is bytes.
        secret = environ.get(variable, "").encode("utf-8", "surrogateescape")
        if not secret:
            raise ConfigError(source, key, f"environment variable {variable} is not set or empty")
    else:
        assert path is not None
        try:
            secret = path.read_bytes().rstrip()
        except OSError as exc:
            raise ConfigError(source, key, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(secret) < MIN_CHAIN_KEY_BYTES:
        raise ConfigError(source, key, f"the chain key must be at least {MIN_CHAIN_KEY_BYTES} bytes")
    return secret


def _service_password(config: Config, environ: Mapping[str, str]) -> str:
    """The service account's password, read from the environment so it never sits in the file."""
    upstream = config.upstream
    password = environ.get(upstream.service_password_env, "")
    if not password or not _is_utf8(password):
        problem = "is not set or empty" if not password else "is not valid UTF-8"
        raise ConfigError(
            config.source,
            "upstream.service_password_env",
            f"environment variable {upstream.service_password_env} {problem}",
        )
    return password


def _oauth_client_secret(config: Config, environ: Mapping[str, str]) -> str:
    """The OAuth client's secret: from the environment, or the public client's published one."""
    upstream = config.upstream
    if not upstream.oauth_client_secret_env:
        return PUBLIC_OAUTH_CLIENT[1]
    return read_secret(
        config.source, "upstream.oauth_client_secret_env", environ, variable=upstream.oauth_client_secret_env
    )


def reference_table() -> str:
    """The key table of docs/configuration.md, rendered from the declarations (a test compares them)."""
    lines = ["| Key | Default | Meaning |", "|---|---|---|"]
    tables = [*SECTIONS.items(), ("users", UserConfig), ("sidecars", SidecarConfig)]
    for section, cls in tables:
        for declaration in dataclasses.fields(cls):
            default = declaration.default
            shown = (
                "required"
                if default is dataclasses.MISSING
                else f"`{_show(list(default) if isinstance(default, tuple) else default)}`"
            )
            meaning = " ".join(declaration.metadata["help"].split()).replace("|", "\\|")
            lines.append(f"| `{section}.{declaration.name}` | {shown} | {meaning} |")
    return "\n".join(lines)
