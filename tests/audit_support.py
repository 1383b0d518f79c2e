"""Audit logs built directly through the store, for the tests of what reads them (verify, query,
prune, the HTTP API): records of known content, chained and committed as the gateway would."""

from __future__ import annotations

from pathlib import Path

from gateway.audit.chain import ChainKey
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite import SQLiteAppender, prepare


def record(i: int) -> AuditRecord:
    """The ``i``-th record of a test log: a deletion on 2026-01-``i``, odd ones in ``myorg``,
    even ones in ``otherorg``, its token fingerprint ``i`` in hex."""
    return AuditRecord(
        request_id=f"req-{i}",
        time=f"2026-01-{i:02d}T00:00:00.000Z",
        actor="alice",
        client_ip="10.0.0.1",
        method="DELETE",
        org="myorg" if i % 2 else "otherorg",
        token_sha256=f"{i:064x}",
        token_hint=f"{i:04d}",
        outcome="deleted",
        upstream_status=200,
        latency_ms=1.5,
        app="app1",
        client_id="c1",
        snapshot='{"app":"app1"}',
    )


def make_log(path: Path, count: int, key: bytes | None = None) -> None:
    """An audit log at ``path`` holding records 1 to ``count``, chained with ``key`` (or plain)."""
    prepare(path, key=ChainKey(key), writable=True)
    appender = SQLiteAppender(path, ChainKey(key))
    for first in range(1, count + 1, appender.max_batch):
        appender.append([record(i) for i in range(first, min(first + appender.max_batch, count + 1))])
    appender.close()
