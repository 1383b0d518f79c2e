"""The hash chain that makes the audit log tamper-evident.

Each record's ``hash`` covers the previous record's hash and this record's content:

    hash = SHA-256(prev_hash || canonical(record))                 without a chain key
    hash = HMAC-SHA-256(key, prev_hash || canonical(record))       with one

``prev_hash`` is the previous record's hash as 64 lowercase hex characters (ASCII), or 64 zeros
for the first record (the genesis value). ``canonical(record)`` is the compact JSON array (UTF-8,
no spaces, non-ASCII characters unescaped) of the record's ``id`` followed by its content fields
in the order of ``CONTENT_FIELDS``; absent values are ``null``, numbers are written as JSON
numbers (``latency_ms`` in its shortest round-trip form). The fields schema 4 added
(``EXTENSION_FIELDS``: action, resource_type, resource, params) are left out of the array when
all of them are null, so every record written before them hashes exactly as it did. Editing any
field, removing a record or changing the order breaks the chain at that record. With a key kept outside the database,
whoever can write the file still cannot compute a valid chain for an edited log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from gateway.audit.record import CONTENT_FIELDS, EXTENSION_FIELDS, AuditRecord, Row

GENESIS = "0" * 64
_KEY_CHECK = b"apigee-audit-gateway chain key check"
_CONTENT = len(CONTENT_FIELDS)
_BASE = _CONTENT - len(EXTENSION_FIELDS)
"""Content fields before schema 4: the array of a record without extension fields."""
_NO_EXTENSION = (None,) * len(EXTENSION_FIELDS)
_ROW_EXTENSION = -2 - len(EXTENSION_FIELDS)
"""In a row (id, content, prev_hash, hash): where the extension fields start, from the end."""
assert _ROW_EXTENSION == -6, "ChainWalker.check reads the four extension fields at -6..-3"


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
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head kept outside the host: a hash, and the id of its record when known.

    ``gateway audit head`` prints ``ID HASH``; ``verify --expect-head`` takes that line as
    printed, or the hash alone. With the id, verify checks that this very record carries the
    hash, which also covers a record since removed by a prune (its hash is in the checkpoint).
    """

    hash: str
    id: int | None = None

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """Raises ValueError saying what a malformed anchor lacks (a typo is not tampering)."""
        parts = text.split()
        if not 1 <= len(parts) <= 2:
            raise ValueError(
                f"{text[:200]!r} is not a head: expected HASH or `ID HASH` as `gateway audit head` prints it"
            )
        record_id = None
        if len(parts) == 2:
            if not (parts[0].isascii() and parts[0].isdigit()) or not 0 <= int(parts[0]) < 2**63:
                raise ValueError(f"{parts[0][:40]!r} is not a record id (a whole number)")
            record_id = int(parts[0])
        digest = parts[-1].lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError(f"{parts[-1][:80]!r} is not a head hash (64 hexadecimal digits)")
        if record_id == 0 and digest != GENESIS:
            raise ValueError("record 0 is the empty log's head: its hash is 64 zeros")
        return cls(digest, record_id)

    def __str__(self) -> str:
        return self.hash if self.id is None else f"{self.id} {self.hash}"


def canonical(record: AuditRecord, record_id: int | None = None) -> bytes:
    """The bytes hashed for ``record``: at ``record_id`` when given, else at its own id."""
    end = _BASE if record[_BASE:_CONTENT] == _NO_EXTENSION else _CONTENT
    return orjson.dumps([record.id if record_id is None else record_id, *record[:end]])


def record_hash(prev_hash: str, record: AuditRecord, key: ChainKey, record_id: int | None = None) -> str:
    data = prev_hash.encode("ascii") + canonical(record, record_id)
    if key.secret:
        return hmac.new(key.secret, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def link(record: AuditRecord, record_id: int, prev_hash: str, key: ChainKey) -> AuditRecord:
    """``record`` with its place in the chain: its id, the hash before it, and its own hash."""
    digest = record_hash(prev_hash, record, key, record_id)
    return record._replace(prev_hash=prev_hash, hash=digest, id=record_id)


def chained(records: Iterable[AuditRecord], head: Head, key: ChainKey) -> tuple[list[AuditRecord], Head]:
    """``records`` placed after ``head``: consecutive ids, each linked to the one before."""
    linked = []
    for record in records:
        record_id = head.id + 1
        digest = record_hash(head.hash, record, key, record_id)
        linked.append(record._replace(prev_hash=head.hash, hash=digest, id=record_id))
        head = Head(record_id, digest)
    return linked, head


@dataclass(frozen=True)
class Verdict:
    checked: int
    head: Head
    problem: str | None = None
    """The first bad record and what is wrong with it; None when the chain is intact."""
    anchor_found: bool = False
    """Whether the anchor given as ``expect_head`` was met on the way."""


class ChainWalker:
    """Checks records in id order, a batch of rows at a time, from the one after ``start``.

    Streaming: it holds one batch at a time, whatever the length of the log. ``check`` is the
    hot loop of verifying millions of records, hence plain rows (in ``FIELDS`` order: id and
    content first, exactly what ``canonical`` covers) and plain locals.
    """

    def __init__(self, key: ChainKey, start: Head = EMPTY, expect_head: Anchor | None = None) -> None:
        self._key = key
        self._expect_head = expect_head
        self._id, self._hash = start.id, start.hash
        self.checked = 0
        # The start is itself a checked hash: the checkpoint of a prune vouches for it. The empty
        # log's head (as `audit head` prints it for a new log) comes before every record.
        self.anchor_found = (
            expect_head is None
            or expect_head.hash == GENESIS
            or (expect_head.hash == start.hash and expect_head.id in (None, start.id) and start.id > 0)
        )

    @property
    def head(self) -> Head:
        return Head(self._id, self._hash)

    def check(self, rows: Iterable[Row]) -> str | None:
        """What is wrong with the first bad row (naming its record), or None and move on."""
        secret = self._key.secret
        sha256, dumps, new_hmac = hashlib.sha256, orjson.dumps, hmac.new
        extension = _ROW_EXTENSION
        last_id, last_hash, checked = self._id, self._hash, 0
        anchor = self._expect_head.hash if self._expect_head is not None else None
        anchor_id = self._expect_head.id if self._expect_head is not None else None
        try:
            for row in rows:
                record_id = row[0]
                if record_id != last_id + 1:
                    return _gap(last_id, record_id)
                if row[-2] != last_hash:
                    return (
                        f"record {record_id}: prev_hash does not link to record {last_id} "
                        "(a record before it was changed, removed or reordered)"
                    )
                # Rows may be tuples (SQLite) or lists (a fleet batch's JSON): compare values, not types.
                plain = row[-6] is None and row[-5] is None and row[-4] is None and row[-3] is None
                content = row[:extension] if plain else row[:-2]
                try:
                    data = last_hash.encode("ascii") + dumps(content)
                except TypeError:  # a value no record can hold: a BLOB written into the file
                    return f"record {record_id}: holds a value of a type no record has (the record was edited)"
                digest = new_hmac(secret, data, sha256).hexdigest() if secret else sha256(data).hexdigest()
                if digest != row[-1]:
                    wrong_key = ", or the chain key is wrong" if secret else ""
                    return f"record {record_id}: content does not match its hash (the record was edited{wrong_key})"
                last_id, last_hash = record_id, digest
                checked += 1
                if record_id == anchor_id and digest != anchor:
                    return (
                        f"record {record_id}: its hash is not the expected head's {anchor} "
                        "(the chain was rebuilt since that head was anchored)"
                    )
                if digest == anchor and anchor_id in (None, record_id):
                    self.anchor_found = True
            return None
        finally:
            self._id, self._hash = last_id, last_hash
            self.checked += checked

    def verdict(self, problem: str | None = None) -> Verdict:
        return Verdict(self.checked, self.head, problem, self.anchor_found)


def _gap(previous_id: int, record_id: int) -> str:
    if record_id > previous_id + 1:
        missing = (
            f"record {previous_id + 1}"
            if record_id == previous_id + 2
            else f"records {previous_id + 1}-{record_id - 1}"
        )
        return f"record {record_id}: {missing} missing (removed from the log)"
    return f"record {record_id}: out of order after record {previous_id}"
