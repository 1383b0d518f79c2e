"""The hash chain's pure parts (``gateway.audit.chain``), called directly: how records are linked
(``chained``), how a head given by an operator is read (``Anchor.parse``), and what the walker
says of each kind of damage, batch by batch (``ChainWalker``). The end-to-end checks on files
are in ``test_chain.py``."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from audit_support import record

from gateway.audit.chain import EMPTY, GENESIS, Anchor, ChainKey, ChainWalker, Head, Verdict, chained
from gateway.audit.formats import as_row
from gateway.audit.record import CONTENT_FIELDS, EXTENSION_FIELDS, FIELDS, AuditRecord, Row

KEY = ChainKey(b"k" * 32)
PLAIN = ChainKey(None)
HASH = "0123456789abcdef" * 4


def expected_hash(prev_hash: str, item: AuditRecord, record_id: int, key: ChainKey) -> str:
    """The documented rule, written out independently: SHA-256 (or HMAC-SHA-256) over the previous
    hash's hex and the compact JSON array of the id and the content fields, the fields schema 4
    added (action, resource_type, resource, params) left out when all of them are null."""
    names = list(CONTENT_FIELDS)
    if all(getattr(item, name) is None for name in EXTENSION_FIELDS):
        names = [name for name in names if name not in EXTENSION_FIELDS]
    content = [record_id, *(getattr(item, name) for name in names)]
    data = prev_hash.encode("ascii") + json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()
    if key.secret:
        return hmac.new(key.secret, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def log_rows(count: int, key: ChainKey = PLAIN, after: Head = EMPTY) -> list[Row]:
    """Rows as a store holds them (``FIELDS`` order), chained after ``after``."""
    linked, _ = chained([record(after.id + n) for n in range(1, count + 1)], after, key)
    return [as_row(item) for item in linked]


def edited(row: Row, field: str, value: object) -> Row:
    """``row`` with one field changed, as plain SQL on the file would change it."""
    index = FIELDS.index(field)
    return (*row[:index], value, *row[index + 1 :])


class TestChainKey:
    @pytest.mark.parametrize(("secret", "mode"), [(None, "sha256"), (b"", "sha256"), (b"k" * 32, "hmac-sha256")])
    def test_the_mode_follows_the_secret(self, secret: bytes | None, mode: str) -> None:
        """No secret (or an empty one) is a plain chain; a secret makes it an HMAC chain."""
        assert mode == ChainKey(secret).mode

    def test_the_key_check_is_an_hmac_of_a_fixed_text(self) -> None:
        """A log can tell it is given the key it was written with, without holding the key."""
        expected = hmac.new(b"k" * 32, b"apigee-audit-gateway chain key check", hashlib.sha256).hexdigest()
        assert (expected, None) == (KEY.check, PLAIN.check)

    def test_the_secret_is_not_in_its_repr(self) -> None:
        """A key that reaches a log line or a traceback shows its mode only."""
        assert ("ChainKey(hmac-sha256)", "ChainKey(sha256)") == (repr(KEY), repr(PLAIN))


class TestChained:
    @pytest.mark.parametrize("key", [PLAIN, KEY], ids=["plain", "keyed"])
    def test_records_get_consecutive_ids_each_linked_to_the_one_before(self, key: ChainKey) -> None:
        """Ids follow the head's; each prev_hash is the hash before it; each hash is the documented one."""
        linked, head = chained([record(1), record(2), record(3)], EMPTY, key)
        assert [1, 2, 3] == [item.id for item in linked]
        assert [GENESIS, linked[0].hash, linked[1].hash] == [item.prev_hash for item in linked]
        assert [expected_hash(item.prev_hash or "", item, item.id or 0, key) for item in linked] == [
            item.hash for item in linked
        ]
        assert Head(3, linked[2].hash or "") == head

    @pytest.mark.parametrize("key", [PLAIN, KEY], ids=["plain", "keyed"])
    def test_records_with_the_fields_of_schema_4_are_hashed_with_them(self, key: ChainKey) -> None:
        """A record that says what it does is hashed with those fields; one that does not, as
        before they existed (so older logs still verify)."""
        items = [record(1)._replace(action="key.revoke", resource_type="consumer_key"), record(2)]
        linked, _ = chained(items, EMPTY, key)
        assert [expected_hash(item.prev_hash or "", item, item.id or 0, key) for item in linked] == [
            item.hash for item in linked
        ]
        walker = ChainWalker(key)
        assert (None, 2) == (walker.check([as_row(item) for item in linked]), walker.checked)

    def test_the_content_is_kept_as_it_was(self) -> None:
        """Linking sets the id, prev_hash and hash, and nothing else."""
        linked, _ = chained([record(1)], EMPTY, PLAIN)
        assert record(1) == linked[0]._replace(id=None, prev_hash=None, hash=None)

    def test_linking_continues_from_a_head(self) -> None:
        """After a head (another batch, a prune's checkpoint), the ids and the hashes go on from it."""
        linked, head = chained([record(11)], Head(10, HASH), PLAIN)
        assert (11, HASH, expected_hash(HASH, record(11), 11, PLAIN)) == (
            linked[0].id,
            linked[0].prev_hash,
            linked[0].hash,
        )
        assert Head(11, linked[0].hash or "") == head

    def test_a_place_from_before_is_replaced(self) -> None:
        """A record that was linked elsewhere (a batch relinked after a conflict) gets its new place."""
        stale = record(1)._replace(id=99, prev_hash=HASH, hash=HASH)
        assert chained([stale], EMPTY, PLAIN)[0] == chained([record(1)], EMPTY, PLAIN)[0]

    def test_nothing_to_link_leaves_the_head(self) -> None:
        """No records: none linked, the head unchanged."""
        assert ([], Head(5, HASH)) == chained([], Head(5, HASH), KEY)

    def test_the_key_changes_every_hash(self) -> None:
        """The same records chain to other hashes under a key: a plain rebuild cannot forge them."""
        plain, _ = chained([record(1), record(2)], EMPTY, PLAIN)
        keyed, _ = chained([record(1), record(2)], EMPTY, KEY)
        assert [False, False] == [a.hash == b.hash for a, b in zip(plain, keyed, strict=True)]


class TestAnchorParse:
    @pytest.mark.parametrize(
        ("text", "anchor"),
        [
            (HASH, Anchor(HASH, None)),
            (f"7 {HASH}", Anchor(HASH, 7)),
            (HASH.upper(), Anchor(HASH, None)),
            (f"  7\t{HASH}\n", Anchor(HASH, 7)),
            (f"1 {HASH}", Anchor(HASH, 1)),
            (f"{2**63 - 1} {HASH}", Anchor(HASH, 2**63 - 1)),
        ],
        ids=["hash", "id-and-hash", "upper-case", "spaces", "first-id", "largest-id"],
    )
    def test_a_head_as_printed_or_its_hash_alone(self, text: str, anchor: Anchor) -> None:
        """``ID HASH`` as ``gateway audit head`` prints it, or the hash alone; the hash in lower case."""
        assert anchor == Anchor.parse(text)

    @pytest.mark.parametrize("anchor", [Anchor(HASH, None), Anchor(HASH, 7)])
    def test_a_head_prints_as_it_is_parsed(self, anchor: Anchor) -> None:
        """``str`` gives back the text ``parse`` reads."""
        assert anchor == Anchor.parse(str(anchor))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "'' is not a head: expected HASH or `ID HASH` as `gateway audit head` prints it"),
            ("   ", "'   ' is not a head: expected HASH or `ID HASH` as `gateway audit head` prints it"),
            ("1 2 3", "'1 2 3' is not a head: expected HASH or `ID HASH` as `gateway audit head` prints it"),
            (f"0 {HASH}", "record 0 is the empty log's head: its hash is 64 zeros"),
            (f"-1 {HASH}", "'-1' is not a record id (a whole number)"),
            (f"+1 {HASH}", "'+1' is not a record id (a whole number)"),
            (f"x {HASH}", "'x' is not a record id (a whole number)"),
            (f"\N{SUPERSCRIPT TWO} {HASH}", "'\N{SUPERSCRIPT TWO}' is not a record id (a whole number)"),
            (f"{2**63} {HASH}", f"'{2**63}' is not a record id (a whole number)"),
            (HASH[:-1], f"'{HASH[:-1]}' is not a head hash (64 hexadecimal digits)"),
            (HASH + "0", f"'{HASH}0' is not a head hash (64 hexadecimal digits)"),
            ("g" * 64, f"'{'g' * 64}' is not a head hash (64 hexadecimal digits)"),
            (f"7 {HASH[:10]}", f"'{HASH[:10]}' is not a head hash (64 hexadecimal digits)"),
        ],
        ids=[
            "empty",
            "blank",
            "three-words",
            "id-zero",
            "negative",
            "signed",
            "not-a-number",
            "superscript",
            "id-too-large",
            "short-hash",
            "long-hash",
            "not-hex",
            "id-and-short-hash",
        ],
    )
    def test_a_malformed_head_is_refused_saying_what_it_lacks(self, text: str, message: str) -> None:
        """A typo is not tampering: ValueError naming the part that is wrong."""
        with pytest.raises(ValueError) as refused:
            Anchor.parse(text)
        assert message == str(refused.value)

    def test_a_long_malformed_head_is_quoted_short(self) -> None:
        """The message quotes at most 200 characters of what it was given."""
        with pytest.raises(ValueError) as refused:
            Anchor.parse("a b " + "c " * 1000)
        assert str(refused.value).startswith(repr(("a b " + "c " * 1000)[:200]) + " is not a head")


class TestChainWalker:
    @pytest.mark.parametrize("key", [PLAIN, KEY], ids=["plain", "keyed"])
    def test_an_intact_chain_has_no_problem(self, key: ChainKey) -> None:
        """Every record checked, the head is the last one, nothing to report."""
        rows = log_rows(5, key)
        walker = ChainWalker(key)
        assert None is walker.check(rows)
        assert Verdict(5, Head(5, rows[-1][-1]), None, True) == walker.verdict()

    def test_batches_are_one_walk(self) -> None:
        """Rows given a batch at a time are checked as one chain, the count adding up."""
        rows = log_rows(7)
        walker = ChainWalker(PLAIN)
        assert [None, None, None] == [walker.check(rows[:3]), walker.check(rows[3:6]), walker.check(rows[6:])]
        assert (7, Head(7, rows[-1][-1])) == (walker.checked, walker.head)

    def test_no_rows_is_an_intact_empty_log(self) -> None:
        """An empty log: nothing checked, the head is the genesis."""
        walker = ChainWalker(PLAIN)
        assert None is walker.check([])
        assert Verdict(0, EMPTY, None, True) == walker.verdict()

    @pytest.mark.parametrize("field", [*CONTENT_FIELDS, "hash"])
    def test_an_edited_field_is_caught_at_its_record(self, field: str) -> None:
        """Any field changed (the hash itself too) breaks the record; the walk stops before it."""
        rows = log_rows(5)
        rows[2] = edited(rows[2], field, 404 if field in ("upstream_status", "latency_ms") else "x" * 64)
        walker = ChainWalker(PLAIN)
        assert "record 3: content does not match its hash (the record was edited)" == walker.check(rows)
        assert (2, Head(2, rows[1][-1])) == (walker.checked, walker.head)

    def test_with_a_key_an_edit_may_also_be_the_wrong_key(self) -> None:
        """Under a key the message says the key may be the cause."""
        rows = log_rows(3, KEY)
        rows[1] = edited(rows[1], "actor", "mallory")
        assert (
            "record 2: content does not match its hash (the record was edited, or the chain key is wrong)"
            == ChainWalker(KEY).check(rows)
        )

    @pytest.mark.parametrize(
        ("written", "given", "problem"),
        [
            (KEY, ChainKey(b"x" * 32), ", or the chain key is wrong)"),
            (KEY, PLAIN, ")"),
            (PLAIN, KEY, ", or the chain key is wrong)"),
        ],
        ids=["other-key", "no-key", "key-on-plain"],
    )
    def test_the_wrong_key_fails_the_first_record(self, written: ChainKey, given: ChainKey, problem: str) -> None:
        """A log walked with a key other than its own breaks at record 1."""
        assert f"record 1: content does not match its hash (the record was edited{problem}" == ChainWalker(given).check(
            log_rows(3, written)
        )

    def test_a_broken_link_names_the_record_before(self) -> None:
        """A prev_hash that is not the previous hash: something before it was changed or removed."""
        rows = log_rows(4)
        rows[2] = edited(rows[2], "prev_hash", HASH)
        assert (
            "record 3: prev_hash does not link to record 2 (a record before it was changed, removed or reordered)"
            == ChainWalker(PLAIN).check(rows)
        )

    @pytest.mark.parametrize(
        ("kept", "problem"),
        [
            ([0, 2, 3], "record 3: record 2 missing (removed from the log)"),
            ([0, 1, 4], "record 5: records 3-4 missing (removed from the log)"),
            ([1, 2], "record 2: record 1 missing (removed from the log)"),
            ([2, 3], "record 3: records 1-2 missing (removed from the log)"),
            ([0, 2, 1], "record 3: record 2 missing (removed from the log)"),
            ([0, 1, 1], "record 2: out of order after record 2"),
            ([0, 1, 0], "record 1: out of order after record 2"),
        ],
        ids=["one-gone", "two-gone", "first-gone", "first-two-gone", "swapped", "repeated", "back-to-start"],
    )
    def test_a_gap_or_a_step_back_in_the_ids_is_caught(self, kept: list[int], problem: str) -> None:
        """Removed records are named (one, or the range); an id that does not go up is out of order."""
        rows = log_rows(5)
        assert problem == ChainWalker(PLAIN).check([rows[index] for index in kept])

    def test_a_walk_can_start_from_a_checkpoint(self) -> None:
        """After a prune the walk starts from the last removed record's id and hash."""
        start = Head(10, HASH)
        rows = log_rows(3, after=start)
        walker = ChainWalker(PLAIN, start)
        assert None is walker.check(rows)
        assert Verdict(3, Head(13, rows[-1][-1]), None, True) == walker.verdict()

    def test_a_walk_from_the_wrong_checkpoint_is_caught(self) -> None:
        """Rows that do not follow the start are a gap or a broken link."""
        rows = log_rows(3, after=Head(10, HASH))
        assert "record 11: prev_hash does not link to record 10" in (
            ChainWalker(PLAIN, Head(10, GENESIS)).check(rows) or ""
        )
        assert "record 11: records 1-10 missing (removed from the log)" == ChainWalker(PLAIN).check(rows)

    def test_the_verdict_carries_the_problem_given(self) -> None:
        """``verdict`` reports how far the walk got, with the problem the caller found."""
        rows = log_rows(4)
        rows[3] = edited(rows[3], "org", "someorg")
        walker = ChainWalker(PLAIN)
        problem = walker.check(rows)
        assert "record 4: content does not match its hash (the record was edited)" == problem
        assert Verdict(3, Head(3, rows[2][-1]), problem, True) == walker.verdict(problem)


class TestChainWalkerAnchor:
    @pytest.mark.parametrize("with_id", [False, True])
    def test_an_anchor_met_on_the_way_is_found(self, with_id: bool) -> None:
        """The expected head's hash is some record's (that very record's, when its id is given)."""
        rows = log_rows(5)
        walker = ChainWalker(PLAIN, expect_head=Anchor(rows[2][-1], 3 if with_id else None))
        found_before = walker.anchor_found
        assert (False, None, True) == (found_before, walker.check(rows), walker.anchor_found)

    def test_an_anchor_not_met_is_not_found(self) -> None:
        """A hash no record has: the walk is intact but the anchor is missing (cut off or rebuilt)."""
        walker = ChainWalker(PLAIN, expect_head=Anchor(HASH))
        assert None is walker.check(log_rows(3))
        assert Verdict(3, walker.head, None, False) == walker.verdict()

    def test_an_anchor_beyond_the_walk_is_not_found(self) -> None:
        """The anchored record's id is past the end: records after it were removed."""
        rows = log_rows(3)
        walker = ChainWalker(PLAIN, expect_head=Anchor(rows[2][-1], 9))
        assert (None, False) == (walker.check(rows), walker.anchor_found)

    def test_the_anchored_record_with_another_hash_is_a_rebuilt_chain(self) -> None:
        """The record at the anchor's id has a valid chain but not the anchored hash."""
        rows = log_rows(5)
        walker = ChainWalker(PLAIN, expect_head=Anchor(HASH, 4))
        assert (
            f"record 4: its hash is not the expected head's {HASH} (the chain was rebuilt since that head was anchored)"
            == walker.check(rows)
        )
        assert (4, False) == (walker.checked, walker.anchor_found)

    def test_an_anchor_at_the_checkpoint_is_found_before_any_row(self) -> None:
        """A prune's checkpoint vouches for its hash: an anchor on it is found at the start."""
        assert [True, True, False] == [
            ChainWalker(PLAIN, Head(10, HASH), Anchor(HASH)).anchor_found,
            ChainWalker(PLAIN, Head(10, HASH), Anchor(HASH, 10)).anchor_found,
            ChainWalker(PLAIN, Head(10, HASH), Anchor(HASH, 9)).anchor_found,
        ]

    @pytest.mark.parametrize("anchor", [Anchor(GENESIS), Anchor(GENESIS, 0)], ids=["hash", "id-and-hash"])
    def test_the_empty_log_s_head_comes_before_every_record(self, anchor: Anchor) -> None:
        """What `audit head` prints for a new log (``0 000...``) is found in any chain: it proves
        nothing was cut off before the first record, which is all it can say."""
        walker = ChainWalker(PLAIN, expect_head=anchor)
        assert (True, None, True) == (walker.anchor_found, walker.check(log_rows(2)), walker.anchor_found)
