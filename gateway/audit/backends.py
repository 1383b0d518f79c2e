"""Where an audit log lives decides which backend keeps it: the one place that chooses.

Everything else holds an ``AuditStore`` (``gateway.audit.store``) and never names an engine.
A new backend is one module with a store of that protocol, plus one line here.
"""

from __future__ import annotations

from pathlib import Path

from gateway.audit.chain import ChainKey
from gateway.audit.sqlite_file import SQLiteAppender
from gateway.audit.store import AuditStore, BatchAppender


async def open_store(
    location: Path,
    *,
    key: ChainKey | None = None,
    writable: bool = False,
    create: bool = False,
    busy_timeout: float = 5.0,
    chain_unchained: bool = False,
) -> AuditStore:
    """Open the audit log at ``location`` (an SQLite file: a sidecar's own log).

    ``key`` is the chain the caller will append or verify with; it must be the log's (None: a
    reader that does neither). ``writable`` upgrades an older log for an appender, and
    ``create`` makes a new one where there is none (the gateway does; maintenance commands must
    find one). ``chain_unchained``: a log from before the hash chain gets one, on purpose only
    (``gateway audit upgrade``)."""
    # Imported here: the recorder process loads this module for ``open_appender`` only, and the
    # reader's aiosqlite and asyncio would lengthen its start, during which calls get 503.
    from gateway.audit.sqlite import SQLiteAuditStore

    return await SQLiteAuditStore.open(
        location, key=key, writable=writable, create=create, busy_timeout=busy_timeout, chain_unchained=chain_unchained
    )


def open_appender(
    location: Path, key: ChainKey, *, busy_timeout: float = 5.0, synchronous: str = "FULL", max_bytes: int = 0
) -> BatchAppender:
    """An appender on the log at ``location``, which ``open_store(..., writable=True)`` has
    already checked, created or upgraded: for the audit recorder process, which only appends.
    ``max_bytes`` (0: none) caps the log as a full disk would."""
    return SQLiteAppender(location, key, busy_timeout=busy_timeout, synchronous=synchronous, max_bytes=max_bytes)
