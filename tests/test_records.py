"""The one maker of audit records (``gateway.audit.records``), called directly: which fields each
maker sets from which fact, the request-id scheme, and the text every record can store."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.audit import records
from gateway.audit.record import AuditRecord, Outcome, utc_timestamp
from gateway.call import Call

OWN_ID = re.compile(r"[0-9a-f]{22}")
"""12 hex digits for the process, 10 for the counter."""
TOKEN_SHA256 = "a" * 64
LATER = "<time>"


def call(**facts: Any) -> Call:
    """A call as the request path leaves it once the caller and the target are known."""
    defaults: dict[str, Any] = {
        "request_id": "90e85f07867a0000000001",
        "public_id": "caller-id",
        "ids": {"request_id": "caller-id"},
        "started": time.perf_counter(),
        "client_ip": "10.0.0.1",
        "method": "DELETE",
        "actor": "myname",
        "org": "myorg",
        "token_sha256": TOKEN_SHA256,
        "token_hint": "c7vC",
    }
    return Call(**{**defaults, **facts})


def made(make: Callable[[], AuditRecord]) -> AuditRecord:
    """The record ``make`` makes, checked to be timed when it was made, then with its time
    replaced by a marker so that the rest compares exactly."""
    before = utc_timestamp()
    record = make()
    assert before <= record.time <= utc_timestamp()
    return record._replace(time=LATER)


class TestRequestIds:
    def test_a_call_s_id_is_22_hex_digits(self) -> None:
        """A per-process random prefix and a counter: no syscall per request."""
        assert OWN_ID.fullmatch(records.new_request_id())

    @pytest.mark.parametrize("kind", ["throttle", "prune"])
    def test_a_record_of_no_call_says_what_it_is_in_front(self, kind: str) -> None:
        """``throttle-...``, ``prune-...``: never mistaken for a caller's call."""
        request_id = records.new_request_id(kind)
        assert (kind, True) == (request_id.split("-")[0], OWN_ID.fullmatch(request_id.split("-")[1]) is not None)

    def test_ids_share_the_process_prefix_and_count_up(self) -> None:
        """Consecutive ids differ only in the counter, which goes up by one."""
        first, second = records.new_request_id(), records.new_request_id("throttle").split("-")[1]
        assert (first[:12], int(first[12:], 16) + 1) == (second[:12], int(second[12:], 16))


class TestStorable:
    @pytest.mark.parametrize("text", ["", "plain ascii", "Zoë", "\N{SNOWMAN}", "\U0001f600", "tab\tand\nnewline"])
    def test_unicode_text_is_returned_as_the_same_object(self, text: str) -> None:
        """Text the store can take is not copied (the callers check identity to know)."""
        assert records.storable(text) is text

    @pytest.mark.parametrize(
        ("text", "stored"),
        [
            ("\ud800", "\\ud800"),
            ("a\udfffb", "a\\udfffb"),
            ("é\ud83d", "é\\ud83d"),
            ("\udcff\udcfe", "\\udcff\\udcfe"),
        ],
    )
    def test_lone_surrogates_become_backslash_escapes(self, text: str, stored: str) -> None:
        """A lone surrogate is not Unicode text: written as its escape, the rest kept as it was."""
        assert stored == records.storable(text)


class TestJsonText:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            ({"b": 1, "a": [1, 2.5, None, True]}, '{"b":1,"a":[1,2.5,null,true]}'),
            ({"app": "Zoë ☃"}, '{"app":"Zoë ☃"}'),
            ({"quote": '"\\\n'}, '{"quote":"\\"\\\\\\n"}'),
            ({}, "{}"),
            ([], "[]"),
            ("text", '"text"'),
        ],
        ids=["compact-in-order", "unicode-unescaped", "escapes", "empty-object", "empty-array", "string"],
    )
    def test_json_is_compact_with_keys_in_their_order(self, value: Any, text: str) -> None:
        """No spaces, keys as given, non-ASCII text as it is."""
        assert text == records.json_text(value)

    def test_integers_past_64_bits_are_written_exactly(self) -> None:
        """What orjson refuses, the standard library writes, with the same compact form."""
        assert '{"n":1180591620717411303424,"app":"Zoë"}' == records.json_text({"n": 2**70, "app": "Zoë"})

    def test_lone_surrogates_are_written_as_json_escapes(self) -> None:
        """Storable text that still means the same value: ``\\ud800`` escapes; other text as it is."""
        assert '{"app":"a\\ud800","name":"Zoë"}' == records.json_text({"app": "a\ud800", "name": "Zoë"})

    @pytest.mark.parametrize(
        ("text", "written"),
        [
            ('{"n":18446744073709551617}', '{"n":18446744073709551617}'),
            ('{"n":1e999}', '{"n":1e999}'),
            ('{"n":0.12345678901234567890}', '{"n":0.12345678901234567890}'),
            ('{"n":1.50}', '{"n":1.5}'),
            ('{"n":-9223372036854775809,"s":"a\\ud800"}', '{"n":-9223372036854775809,"s":"a\\ud800"}'),
        ],
        ids=["past-64-bits", "past-a-double", "long-mantissa", "ordinary", "with-a-lone-surrogate"],
    )
    def test_numbers_a_double_cannot_hold_are_written_as_read(self, text: str, written: str) -> None:
        """``exact_loads`` keeps such numbers as written and ``json_text`` writes them back so;
        an ordinary number (which a double holds) is written in its shortest form."""
        assert written == records.json_text(records.exact_loads(text))

    @pytest.mark.parametrize("text", ['{"n":NaN}', '{"n":Infinity}', '{"n":-Infinity}'])
    def test_what_is_not_json_is_refused(self, text: str) -> None:
        with pytest.raises(ValueError):
            records.exact_loads(text)


class TestCallRecords:
    def test_an_intent_is_pending_with_no_latency(self) -> None:
        """Who, what, when, from where: written before anything is forwarded."""
        record = made(lambda: records.intent(call()))
        assert (
            AuditRecord(
                request_id="90e85f07867a0000000001",
                time=LATER,
                actor="myname",
                client_ip="10.0.0.1",
                method="DELETE",
                org="myorg",
                token_sha256=TOKEN_SHA256,
                token_hint="c7vC",
                outcome="pending",
            )
            == record
        )

    def test_an_intent_holds_the_raw_token_only_when_the_call_kept_it(self) -> None:
        """``audit.store_raw_tokens``: the call keeps the token, and so does its record."""
        kept = records.intent(call(token="taFM3LHUTQAFhL0dIFg81XhRc7vC"))
        assert ("taFM3LHUTQAFhL0dIFg81XhRc7vC", None) == (kept.token, records.intent(call()).token)

    def test_an_outcome_has_the_upstream_s_answer_and_the_latency(self) -> None:
        """Status, error code, app, client id and snapshot as given; latency measured from the call's start."""
        facts = call(started=time.perf_counter() - 2.5)
        record = made(
            lambda: records.outcome(
                facts,
                Outcome.DELETED,
                upstream_status=200,
                error_code=None,
                app="app1",
                client_id="c1",
                snapshot='{"app":"app1"}',
            )
        )
        # The call started 2.5 s ago: its latency counts from then, in milliseconds.
        assert record.latency_ms is not None and 2500 <= record.latency_ms < 2500 + 60_000
        assert AuditRecord(
            request_id="90e85f07867a0000000001",
            time=LATER,
            actor="myname",
            client_ip="10.0.0.1",
            method="DELETE",
            org="myorg",
            token_sha256=TOKEN_SHA256,
            token_hint="c7vC",
            outcome="deleted",
            upstream_status=200,
            latency_ms=-1.0,
            app="app1",
            client_id="c1",
            snapshot='{"app":"app1"}',
        ) == record._replace(latency_ms=-1.0)

    def test_an_outcome_without_an_answer_has_only_its_error_code(self) -> None:
        """An upstream that could not be reached: no status, no snapshot."""
        record = records.outcome(call(), Outcome.UPSTREAM_ERROR, error_code="upstream.connect_failed")
        assert ("upstream_error", None, "upstream.connect_failed", None, None, None) == (
            record.outcome,
            record.upstream_status,
            record.error_code,
            record.app,
            record.client_id,
            record.snapshot,
        )

    @pytest.mark.parametrize(
        ("outcome", "error_code"),
        [
            (Outcome.DENIED, "gateway.unauthorized"),
            (Outcome.FORBIDDEN, "gateway.forbidden"),
            (Outcome.REJECTED, "gateway.bad_request"),
        ],
    )
    def test_a_refusal_has_the_gateway_s_code_and_no_upstream_status(self, outcome: Outcome, error_code: str) -> None:
        """Refused by the gateway itself: never forwarded, so nothing of an upstream's answer."""
        facts = call(started=time.perf_counter() - 0.5, actor=None, org=None, token_sha256=None, token_hint=None)
        record = made(lambda: records.refusal(facts, outcome, error_code))
        assert AuditRecord(
            request_id="90e85f07867a0000000001",
            time=LATER,
            actor=None,
            client_ip="10.0.0.1",
            method="DELETE",
            org=None,
            token_sha256=None,
            token_hint=None,
            outcome=outcome.value,
            error_code=error_code,
            latency_ms=-1.0,
        ) == record._replace(latency_ms=-1.0)
        assert record.latency_ms is not None and 500 <= record.latency_ms < 500 + 60_000


class TestThrottled:
    @pytest.mark.parametrize(
        ("by", "actor", "client_ip"),
        [("client", None, "10.0.0.9"), ("user", "10.0.0.9", None), ("all", None, None)],
    )
    def test_the_subject_goes_where_by_says(self, by: str, actor: str | None, client_ip: str | None) -> None:
        """A client address is the client, a claimed user name the actor, "all" neither."""
        record = records.throttled(by, "10.0.0.9", 3, "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:00.000Z", "c", {})
        assert (actor, client_ip) == (record.actor, record.client_ip)

    def test_one_window_is_one_denied_record_with_its_counts(self) -> None:
        """Method THROTTLE, outcome denied, the window and the counts in the snapshot, extras last."""
        record = made(
            lambda: records.throttled(
                "client",
                "10.0.0.9",
                250,
                "2026-01-01T00:00:00.000Z",
                "2026-01-01T00:01:00.000Z",
                "gateway.too_many_attempts",
                {"clients": 3, "users": 2},
            )
        )
        assert record.request_id.startswith("throttle-")
        assert (
            AuditRecord(
                request_id=record.request_id,
                time=LATER,
                actor=None,
                client_ip="10.0.0.9",
                method="THROTTLE",
                org=None,
                token_sha256=None,
                token_hint=None,
                outcome="denied",
                error_code="gateway.too_many_attempts",
                snapshot='{"refused_attempts":250,"by":"client","window_start":"2026-01-01T00:00:00.000Z",'
                '"window_end":"2026-01-01T00:01:00.000Z","clients":3,"users":2}',
            )
            == record
        )


class TestReconciled:
    INTENT = AuditRecord(
        request_id="90e85f07867a0000000001",
        time="2026-01-01T00:00:00.000Z",
        actor="myname",
        client_ip="10.0.0.1",
        method="DELETE",
        org="myorg",
        token_sha256=TOKEN_SHA256,
        token_hint="c7vC",
        outcome="pending",
        token="raw-token-kept-by-opt-in",
        prev_hash="0" * 64,
        hash="1" * 64,
        id=7,
    )

    @pytest.mark.parametrize(("outcome", "status"), [(Outcome.DELETED, 404), (Outcome.NOT_DELETED, 200)])
    def test_it_pairs_with_its_intent_and_says_who_settled_it(self, outcome: Outcome, status: int) -> None:
        """The intent's call facts (raw token included) under its request id; the fate, the
        operator and the evidence new; no place in the chain yet."""
        record = made(
            lambda: records.reconciled(self.INTENT, outcome, "ops", {"checked": "GET token", "status": status}, status)
        )
        assert (
            AuditRecord(
                request_id="90e85f07867a0000000001",
                time=LATER,
                actor="myname",
                client_ip="10.0.0.1",
                method="DELETE",
                org="myorg",
                token_sha256=TOKEN_SHA256,
                token_hint="c7vC",
                outcome=outcome.value,
                upstream_status=status,
                error_code="reconciled",
                snapshot=f'{{"reconciled_by":"ops","intent_id":7,"checked":"GET token","status":{status}}}',
                token="raw-token-kept-by-opt-in",
            )
            == record
        )

    def test_evidence_may_be_empty(self) -> None:
        """Unknown and no evidence: the snapshot still says who settled it and which intent."""
        record = made(lambda: records.reconciled(self.INTENT, Outcome.UNKNOWN, "ops", {}, None))
        assert ("unknown", None, '{"reconciled_by":"ops","intent_id":7}') == (
            record.outcome,
            record.upstream_status,
            record.snapshot,
        )


class TestCheckpoint:
    def test_a_prune_says_who_removed_what(self) -> None:
        """Method PRUNE, outcome pruned, the details as compact JSON in the snapshot."""
        details = {"removed": 10, "through_id": 10, "last_hash": "f" * 64}
        record = made(lambda: records.checkpoint("ops", "10.0.0.2", details))
        assert record.request_id.startswith("prune-")
        assert (
            AuditRecord(
                request_id=record.request_id,
                time=LATER,
                actor="ops",
                client_ip="10.0.0.2",
                method="PRUNE",
                org=None,
                token_sha256=None,
                token_hint=None,
                outcome="pruned",
                snapshot=f'{{"removed":10,"through_id":10,"last_hash":"{"f" * 64}"}}',
            )
            == record
        )
