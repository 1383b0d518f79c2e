"""The hash chain that makes the audit log tamper-evident.

Each record's ``hash`` covers the previous record's hash and this record's content:

    hash = SHA-256(prev_hash || canonical(record))                 without a chain key
    hash = HMAC-SHA-256(key, prev_hash || canonical(record))       with one

``prev_hash`` is the previous record's hash as 64 lowercase hex characters (ASCII), or 64 zeros
for the first record (the genesis value). ``canonical(record)`` is the compact JSON array (UTF-8,
no spaces, non-ASCII characters unescaped) of the record's ``id`` followed by its content fields
in the order of ``CONTENT_FIELDS``; absent values are ``null``, numbers are written as JSON
numbers (``latency_ms`` in its shortest round-trip form). Editing any field, removing a record
or changing the order breaks the chain at that record. With a key kept outside the database,
whoever can write the file still cannot compute a valid chain for an edited log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from gateway.audit.record import CONTENT_FIELDS, AuditRecord

GENESIS = "0" * 64
_KEY_CHECK = b"apigee-audit-gateway chain key check"
_CONTENT = len(CONTENT_FIELDS)


@dataclass(frozen=True)
class ChainKey:
    """The secret of an HMAC chain, or ``None`` for a plain SHA-256 chain."""

    secret: bytes | None = None

    @property
    def mode(self) -> str:
        return "hmac-sha256" if self.secret else "sha256"

    @property
    def check(self) -> str | None:
        """Lets a log tell whether it is given the key it was written with, without holding it."""
        return hmac.new(self.secret, _KEY_CHECK, hashlib.sha256).hexdigest() if self.secret else None

    def __repr__(self) -> str:
        return f"ChainKey({self.mode})"


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record: what operators anchor outside the host."""

    id: int
    hash: str


EMPTY = Head(0, GENESIS)


def canonical(record: AuditRecord) -> bytes:
    return orjson.dumps([record.id, *record[:_CONTENT]])


def record_hash(prev_hash: str, record: AuditRecord, key: ChainKey) -> str:
    data = prev_hash.encode("ascii") + canonical(record)
    if key.secret:
        return hmac.new(key.secret, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def link(record: AuditRecord, record_id: int, prev_hash: str, key: ChainKey) -> AuditRecord:
    """``record`` with its place in the chain: its id, the hash before it, and its own hash."""
    digest = record_hash(prev_hash, AuditRecord(*record[:_CONTENT], id=record_id), key)
    return AuditRecord(*record[:_CONTENT], prev_hash, digest, record_id)


def chained(records: Iterable[AuditRecord], head: Head, key: ChainKey) -> tuple[list[AuditRecord], Head]:
    """``records`` placed after ``head``: consecutive ids, each linked to the one before."""
    linked = []
    for record in records:
        record = link(record, head.id + 1, head.hash, key)
        linked.append(record)
        head = Head(head.id + 1, record.hash)  # type: ignore[arg-type]
    return linked, head


@dataclass(frozen=True)
class Verdict:
    checked: int
    head: Head
    problem: str | None = None
    """The first bad record and what is wrong with it; None when the chain is intact."""
    anchor_found: bool = False
    """Whether the hash given as ``expect_head`` was met on the way."""


class ChainWalker:
    """Checks records one by one, in id order, from the one after ``start``.

    Streaming: it holds one record at a time, whatever the length of the log. The loop is the
    hot part of verifying millions of records, hence the plain locals.
    """

    def __init__(self, key: ChainKey, start: Head = EMPTY, expect_head: str | None = None) -> None:
        self._key = key
        self._expect_head = expect_head
        self._id, self._hash = start.id, start.hash
        self.checked = 0
        self.anchor_found = expect_head is None

    @property
    def head(self) -> Head:
        return Head(self._id, self._hash)

    def check(self, record: AuditRecord) -> str | None:
        """What is wrong with ``record`` (naming it), or None and move on."""
        record_id, previous_hash = record[-1], self._hash
        if record_id != self._id + 1:
            return _gap(self.head, record)
        if record[-3] != previous_hash:
            return (f"record {record_id}: prev_hash does not link to record {self._id} "
                    "(a record before it was changed, removed or reordered)")
        data = previous_hash.encode("ascii") + orjson.dumps([record_id, *record[:_CONTENT]])
        secret = self._key.secret
        digest = hmac.new(secret, data, hashlib.sha256).hexdigest() if secret else hashlib.sha256(data).hexdigest()
        if digest != record[-2]:
            wrong_key = ", or the chain key is wrong" if secret else ""
            return f"record {record_id}: content does not match its hash (the record was edited{wrong_key})"
        self._id, self._hash = record_id, digest
        self.checked += 1
        if digest == self._expect_head:
            self.anchor_found = True
        return None

    def verdict(self, problem: str | None = None) -> Verdict:
        return Verdict(self.checked, self.head, problem, self.anchor_found)


def _gap(previous: Head, record: AuditRecord) -> str:
    if record.id is not None and record.id > previous.id + 1:
        missing = f"record {previous.id + 1}" if record.id == previous.id + 2 else f"records {previous.id + 1}-{record.id - 1}"
        return f"record {record.id}: {missing} missing (removed from the log)"
    return f"record {record.id}: out of order after record {previous.id}"
