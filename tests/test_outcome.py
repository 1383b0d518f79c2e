"""What an upstream answer means for the audit trail (``gateway.outcome``), called directly: the
outcome of each status, the snapshot of a deletion (whatever its content encoding), the error
code of a JSON or XML error body, and what is stored when the answer cannot be read."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest
from multidict import CIMultiDict

from gateway.audit.fingerprint import fingerprint
from gateway.audit.record import Outcome
from gateway.outcome import MAX_DECODED_BODY, Interpretation, Meaning, interpret, meaning, outcome_for_status
from gateway.upstream import UpstreamReply

UNREADABLE = "upstream.snapshot_unreadable"
SNAPSHOT = b'{"app":"app1","clientId":"c1","token":"taFM3LHUTQAFhL0dIFg81XhRc7vC","status":"approved"}'
JSON_404 = b'{"code": "keymanagement.service.invalid_access_token", "message": "Invalid Access Token", "contexts": []}'
XML_404 = (
    b"<Error> <Code>keymanagement.service.invalid_account_name</Code> "
    b"<Message>Invalid Access Token</Message> <Contexts/> </Error>"
)


def reply(status: int, body: bytes, encoding: str | None = None) -> UpstreamReply:
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return UpstreamReply(status, None, headers, body)


def nested(depth: int) -> bytes:
    """A JSON object ``depth`` objects deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


class TestOutcomeForStatus:
    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            (200, Outcome.DELETED),
            (201, Outcome.DELETED),
            (204, Outcome.DELETED),
            (299, Outcome.DELETED),
            (400, Outcome.REJECTED),
            (401, Outcome.DENIED),
            (403, Outcome.FORBIDDEN),
            (404, Outcome.NOT_FOUND),
            (405, Outcome.REJECTED),
            (409, Outcome.REJECTED),
            (429, Outcome.REJECTED),
            (499, Outcome.REJECTED),
            (500, Outcome.UPSTREAM_ERROR),
            (502, Outcome.UPSTREAM_ERROR),
            (503, Outcome.UPSTREAM_ERROR),
            (599, Outcome.UPSTREAM_ERROR),
        ],
    )
    def test_each_status_class_has_its_outcome(self, status: int, outcome: Outcome) -> None:
        """2xx deleted; 401, 403, 404 their own; other 4xx rejected; 5xx an upstream error."""
        assert outcome is outcome_for_status(status)

    @pytest.mark.parametrize("status", [100, 199, 300, 301, 302, 304, 399, 600, 999])
    def test_any_other_status_is_an_upstream_error(self, status: int) -> None:
        """A redirect or informational answer to a deletion is no success: an upstream error."""
        assert Outcome.UPSTREAM_ERROR is outcome_for_status(status)


class TestInterpretDeletion:
    @pytest.mark.parametrize(
        ("body", "snapshot"),
        [
            (
                SNAPSHOT,
                {"app": "app1", "clientId": "c1", "token": "taFM3LHUTQAFhL0dIFg81XhRc7vC", "status": "approved"},
            ),
            (b"{}", {}),
            (b' \n{"a": [1, {"b": null}]}\n', {"a": [1, {"b": None}]}),
            (b'\xef\xbb\xbf{"a":1}', {"a": 1}),
        ],
        ids=["sample", "empty-object", "whitespace", "byte-order-mark"],
    )
    def test_a_json_object_is_the_snapshot(self, body: bytes, snapshot: dict[str, Any]) -> None:
        """A deletion's JSON object body is its snapshot, as parsed, with no error code."""
        assert Interpretation(Outcome.DELETED, snapshot, None) == interpret(reply(200, body))

    def test_json_the_fast_parser_refuses_still_makes_a_snapshot(self) -> None:
        """A ``\\ud800`` escape is valid JSON that orjson refuses: the standard library reads it."""
        assert Interpretation(Outcome.DELETED, {"app": "a\ud800"}, None) == interpret(reply(200, b'{"app":"a\\ud800"}'))

    @pytest.mark.parametrize(
        "body",
        [b"", b"[]", b'["token"]', b'"text"', b"42", b"null", b"not json", b"{", b"<token/>", nested(1100)],
        ids=["empty", "array", "list", "string", "number", "null", "text", "truncated", "xml", "too-deep"],
    )
    def test_anything_but_a_json_object_is_an_unreadable_snapshot(self, body: bytes) -> None:
        """The deletion stands (the upstream said so); the record says its snapshot was unreadable."""
        assert Interpretation(Outcome.DELETED, None, UNREADABLE) == interpret(reply(200, body))


class TestInterpretEncodings:
    @pytest.mark.parametrize(
        ("encoding", "body"),
        [
            ("gzip", gzip.compress(SNAPSHOT)),
            ("x-gzip", gzip.compress(SNAPSHOT)),
            ("GZIP", gzip.compress(SNAPSHOT)),
            (" gzip ", gzip.compress(SNAPSHOT)),
            ("deflate", zlib.compress(SNAPSHOT)),
            ("deflate", gzip.compress(SNAPSHOT)),
            ("identity", SNAPSHOT),
            ("", SNAPSHOT),
        ],
        ids=["gzip", "x-gzip", "upper-case", "spaces", "deflate", "deflate-gzip-framed", "identity", "empty"],
    )
    def test_an_encoded_snapshot_is_read_from_a_decoded_copy(self, encoding: str, body: bytes) -> None:
        """gzip and deflate (either framing) are undone on a private copy; the reply is untouched."""
        given = reply(200, body, encoding)
        assert Interpretation(
            Outcome.DELETED,
            {"app": "app1", "clientId": "c1", "token": "taFM3LHUTQAFhL0dIFg81XhRc7vC", "status": "approved"},
            None,
        ) == interpret(given)
        assert body == given.body

    @pytest.mark.parametrize(
        ("encoding", "body"),
        [
            ("br", SNAPSHOT),
            ("compress", SNAPSHOT),
            ("gzip, gzip", gzip.compress(gzip.compress(SNAPSHOT))),
            ("gzip", SNAPSHOT),
            ("gzip", gzip.compress(SNAPSHOT)[:-12]),
            ("deflate", b"\x00\x01garbage"),
            ("gzip", gzip.compress(b" " * MAX_DECODED_BODY + SNAPSHOT)),
        ],
        ids=["brotli", "compress", "stacked", "not-compressed", "truncated", "garbage", "over-the-bound"],
    )
    def test_an_encoding_that_cannot_be_undone_safely_is_an_unreadable_snapshot(
        self, encoding: str, body: bytes
    ) -> None:
        """Unknown or stacked encodings, corrupt data and bodies inflating past the bound are not read."""
        assert Interpretation(Outcome.DELETED, None, UNREADABLE) == interpret(reply(200, body, encoding))

    def test_a_body_inflating_to_exactly_the_bound_is_read(self) -> None:
        """The bound is inclusive: a snapshot of exactly ``MAX_DECODED_BODY`` bytes is kept."""
        body = SNAPSHOT[:-1] + b" " * (MAX_DECODED_BODY - len(SNAPSHOT)) + b"}"
        read = interpret(reply(200, gzip.compress(body), "gzip"))
        assert (Outcome.DELETED, "app1", None) == (read.outcome, (read.snapshot or {}).get("app"), read.error_code)


class TestInterpretErrors:
    @pytest.mark.parametrize(
        ("status", "body", "encoding", "expected"),
        [
            (404, JSON_404, None, Interpretation(Outcome.NOT_FOUND, None, "keymanagement.service.invalid_access_token")),
            (404, XML_404, None, Interpretation(Outcome.NOT_FOUND, None, "keymanagement.service.invalid_account_name")),
            (401, b'{"code":"access.denied"}', None, Interpretation(Outcome.DENIED, None, "access.denied")),
            (403, b"<Error><Code>forbidden</Code></Error>", None, Interpretation(Outcome.FORBIDDEN, None, "forbidden")),
            (400, b'{"code":"bad","message":"m"}', None, Interpretation(Outcome.REJECTED, None, "bad")),
            (503, gzip.compress(b'{"code":"messaging.down"}'), "gzip", Interpretation(Outcome.UPSTREAM_ERROR, None, "messaging.down")),
            (500, b'<?xml version="1.0"?>\n<Error><Code>x.y</Code></Error>', None, Interpretation(Outcome.UPSTREAM_ERROR, None, "x.y")),
        ],
        ids=["json-404", "xml-404", "json-401", "xml-403", "json-400", "gzip-503", "xml-declaration-500"],
    )  # fmt: skip
    def test_the_error_code_comes_from_a_json_or_xml_body(
        self, status: int, body: bytes, encoding: str | None, expected: Interpretation
    ) -> None:
        """Apigee's ``code`` (JSON) or ``<Code>`` (XML) is the record's error code; no snapshot."""
        assert expected == interpret(reply(status, body, encoding))

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"Not Found",
            b"{}",
            b'{"message":"no code"}',
            b'{"code":42}',
            b'{"code":null}',
            b'{"code":["a"]}',
            b'[{"code":"a"}]',
            b"<Error><Message>no code</Message></Error>",
            b"<Code>the root, not a child</Code>",
            b"<Error><Code>unclosed</Error>",
        ],
        ids=[
            "empty",
            "text",
            "empty-object",
            "no-code",
            "number",
            "null",
            "array",
            "json-array",
            "xml-no-code",
            "xml-root",
            "xml-broken",
        ],
    )
    def test_an_error_body_without_a_textual_code_has_none(self, body: bytes) -> None:
        """No code, a code that is not text, or a body that is neither: the record has no error code."""
        assert Interpretation(Outcome.NOT_FOUND, None, None) == interpret(reply(404, body))

    def test_an_xml_code_element_that_is_empty_is_an_empty_code(self) -> None:
        """``<Code/>`` is there but says nothing: an empty code, not a missing one."""
        assert Interpretation(Outcome.NOT_FOUND, None, "") == interpret(reply(404, b"<Error><Code/></Error>"))

    @pytest.mark.parametrize("length", [199, 200, 201, 10_000])
    def test_an_error_code_is_cut_to_200_characters(self, length: int) -> None:
        """However long the upstream's code, the record keeps its first 200 characters (cut once the
        credential the call acts on is hidden in it, so that no part of it is left in clear)."""
        body = b'{"code":"' + b"c" * length + b'"}'
        assert "c" * min(length, 200) == meaning(reply(400, body), keep_raw_tokens=False).error_code

    def test_a_credential_quoted_in_an_error_code_is_hidden_before_the_code_is_cut(self) -> None:
        secret = "quotedSecret0A1b2C3d"
        body = b'{"code":"' + b"c" * 190 + secret.encode() + b'"}'
        code = meaning(reply(404, body), keep_raw_tokens=False, hidden=frozenset({secret})).error_code
        assert "c" * 190 + "[redacted " == code


class TestMeaning:
    def test_a_deletion_s_snapshot_is_stored_compact_and_redacted(self) -> None:
        """The token keeps only its hint; app and client id (a fingerprint: the consumer key is a
        credential) are lifted out for the record's columns."""
        assert Meaning(
            Outcome.DELETED,
            None,
            "app1",
            fingerprint("c1"),
            '{"app":"app1","clientId":"[redacted]","token":"[redacted …c7vC]","status":"approved"}',
        ) == meaning(reply(200, SNAPSHOT), keep_raw_tokens=False)

    def test_a_2xx_to_another_call_than_a_delete_succeeded(self) -> None:
        """For a revoke, approve, change or creation, a 2xx is ``succeeded``; ``deleted`` is for deletes."""
        assert Outcome.SUCCEEDED == meaning(reply(204, b""), keep_raw_tokens=False, deletes=False).outcome

    def test_raw_tokens_are_kept_when_the_operator_opts_in(self) -> None:
        """``keep_raw_tokens`` leaves the token in clear; other secrets stay redacted."""
        body = b'{"app":"app1","token":"taFM3LHUTQAFhL0dIFg81XhRc7vC","consumerSecret":"s3cr3t"}'
        assert Meaning(
            Outcome.DELETED,
            None,
            "app1",
            None,
            '{"app":"app1","token":"taFM3LHUTQAFhL0dIFg81XhRc7vC","consumerSecret":"[redacted]"}',
        ) == meaning(reply(200, body), keep_raw_tokens=True)

    @pytest.mark.parametrize(
        ("body", "app", "client_id"),
        [
            (b'{"app":5,"clientId":null}', None, None),
            (b'{"app":["a"],"clientId":{"id":"c"}}', None, None),
            (b'{"app":"","clientId":"c"}', "", fingerprint("c")),
            (b"{}", None, None),
        ],
        ids=["number-and-null", "array-and-object", "empty-text", "absent"],
    )
    def test_app_and_client_id_are_taken_only_when_they_are_text(
        self, body: bytes, app: str | None, client_id: str | None
    ) -> None:
        """A column holds what the upstream sent as text, or nothing; the snapshot keeps the rest."""
        read = meaning(reply(200, body), keep_raw_tokens=False)
        assert (app, client_id, None) == (read.app, read.client_id, read.error_code)

    def test_an_error_answer_has_its_code_and_no_snapshot(self) -> None:
        """An error's record carries the upstream's code, and nothing of a snapshot."""
        assert Meaning(Outcome.NOT_FOUND, "keymanagement.service.invalid_account_name", None, None, None) == meaning(
            reply(404, XML_404), keep_raw_tokens=False
        )

    def test_an_unreadable_snapshot_is_said_so(self) -> None:
        """A deletion whose body cannot be read is stored as deleted, with the unreadable code."""
        assert Meaning(Outcome.DELETED, UNREADABLE, None, None, None) == meaning(
            reply(200, b"<ok/>"), keep_raw_tokens=False
        )

    def test_a_snapshot_too_deep_to_serialise_is_left_out_and_said_so(self) -> None:
        """Read, but nested deeper than can be written back: left out, and the record says why."""
        assert Meaning(Outcome.DELETED, UNREADABLE, None, None, None) == meaning(
            reply(200, nested(1000)), keep_raw_tokens=False
        )

    def test_a_deep_snapshot_within_reach_is_kept_whole(self) -> None:
        """Deeper than orjson writes (255) but within reach: written by the standard library, exactly."""
        read = meaning(reply(200, nested(300)), keep_raw_tokens=False)
        assert (None, nested(300).decode()) == (read.error_code, read.snapshot)

    def test_text_that_is_not_unicode_is_stored_escaped_and_named(self) -> None:
        """Lone surrogates (valid JSON escapes) are kept as backslash escapes; ``escaped`` names the fields."""
        body = b'{"app":"a\\ud800","clientId":"c\\udfff","token":"taFM3LHUTQAFhL0dIFg81XhRc7vC"}'
        assert Meaning(
            Outcome.DELETED,
            None,
            "a\\ud800",
            fingerprint("c\udfff"),
            '{"app":"a\\ud800","clientId":"[redacted]","token":"[redacted …c7vC]"}',
            ("app",),
        ) == meaning(reply(200, body), keep_raw_tokens=False)

    def test_an_error_code_that_is_not_unicode_is_stored_escaped_and_named(self) -> None:
        """The same for the upstream's error code."""
        assert Meaning(Outcome.REJECTED, "bad\\ud800", None, None, None, ("error_code",)) == meaning(
            reply(400, b'{"code":"bad\\ud800"}'), keep_raw_tokens=False
        )

    def test_text_that_is_unicode_is_stored_as_it_is(self) -> None:
        """Non-ASCII text that is valid Unicode is not escaped, and nothing is named."""
        read = meaning(reply(200, '{"app":"Zoë ☃"}'.encode()), keep_raw_tokens=False)
        assert ("Zoë ☃", '{"app":"Zoë ☃"}', ()) == (read.app, read.snapshot, read.escaped)
