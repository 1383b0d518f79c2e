"""The parsers of what audit queries are given (``gateway.audit.query``), called directly: keyset
cursors, times (ISO 8601 or an age), outcomes, whole numbers and fingerprints. Each takes text
from anyone and returns a value the store can use, or raises ValueError saying what is wrong."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from gateway.audit.query import (
    MAX_INTEGER,
    decode_cursor,
    encode_cursor,
    parse_outcome,
    parse_sha256,
    parse_time,
    positive_int,
    quoted,
    whole_number,
)

NOW = 1_790_000_000.0
"""2026-09-21T14:13:20Z"""
NOT_A_TIME = "is neither an ISO 8601 time (2026-11-24T18:00:00Z) nor an age (15m, 24h, 7d)"


def refusal(parse: Callable[[str], object], text: str) -> str:
    """The message of the ValueError that ``parse(text)`` raises."""
    with pytest.raises(ValueError) as refused:
        parse(text)
    return str(refused.value)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class TestQuoted:
    @pytest.mark.parametrize(
        ("text", "shown"),
        [("", "''"), ("abc", "'abc'"), ("x" * 40, repr("x" * 40)), ("x" * 41, repr("x" * 40) + "..."), ("\n", "'\\n'")],
    )
    def test_text_is_quoted_and_cut_after_40_characters(self, text: str, shown: str) -> None:
        """A refusal repeats what it was given as a Python literal, never a megabyte of it."""
        assert shown == quoted(text)


class TestCursors:
    @pytest.mark.parametrize(
        ("time", "record_id", "cursor"),
        [
            ("2026-01-02T00:00:00.000Z", 5, "MjAyNi0wMS0wMlQwMDowMDowMC4wMDBafDU"),
            ("2026-11-24T18:37:00.123Z", 123456, b64(b"2026-11-24T18:37:00.123Z|123456")),
            ("t", MAX_INTEGER, b64(f"t|{MAX_INTEGER}".encode())),
        ],
    )
    def test_a_cursor_is_time_and_id_in_unpadded_url_safe_base64(self, time: str, record_id: int, cursor: str) -> None:
        """Opaque to callers, safe in a query string, and read back to the same time and id."""
        assert cursor == encode_cursor(time, record_id)
        assert (time, record_id) == decode_cursor(cursor)

    def test_padding_is_accepted_too(self) -> None:
        """A cursor that a client padded back to a multiple of four still reads."""
        assert ("2026-01-02T00:00:00.000Z", 5) == decode_cursor("MjAyNi0wMS0wMlQwMDowMDowMC4wMDBafDU=")

    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "=",
            "!!!",
            "YQ",
            "ÿ",
            b64(b"|5"),
            b64(b"t|0"),
            b64(b"t|-1"),
            b64(b"t|x"),
            b64(b"t|"),
            b64(b"t"),
            b64(f"t|{MAX_INTEGER + 1}".encode()),
            b64(b"t|\xc2\xb2"),
            b64(b"\xff|5"),
        ],
        ids=[
            "empty",
            "padding",
            "not-base64",
            "no-separator",
            "not-ascii",
            "no-time",
            "id-zero",
            "id-negative",
            "id-not-a-number",
            "id-empty",
            "no-id",
            "id-too-large",
            "id-superscript",
            "not-utf8",
        ],
    )
    def test_anything_else_is_not_a_cursor(self, cursor: str) -> None:
        """Whatever is wrong with it, the refusal says it is no cursor of ours."""
        assert f"{quoted(cursor)} is not a cursor given by a previous page" == refusal(decode_cursor, cursor)


class TestParseTime:
    @pytest.mark.parametrize(
        ("text", "time"),
        [
            ("0s", "2026-09-21T14:13:20.000Z"),
            ("90s", "2026-09-21T14:11:50.000Z"),
            ("15m", "2026-09-21T13:58:20.000Z"),
            ("24h", "2026-09-20T14:13:20.000Z"),
            ("7d", "2026-09-14T14:13:20.000Z"),
            ("2w", "2026-09-07T14:13:20.000Z"),
            (" 15m\n", "2026-09-21T13:58:20.000Z"),
            ("007d", "2026-09-14T14:13:20.000Z"),
            ("123456789012d", "1970-01-01T00:00:00.000Z"),
            ("999999999999w", "1970-01-01T00:00:00.000Z"),
        ],
    )
    def test_an_age_counts_back_from_now(self, text: str, time: str) -> None:
        """Digits and a unit (s, m, h, d, w); an age older than 1970 means 1970: every record."""
        assert time == parse_time(text, now=NOW)

    @pytest.mark.parametrize(
        ("text", "time"),
        [
            ("2026-11-24T18:00:00Z", "2026-11-24T18:00:00.000Z"),
            ("2026-11-24T18:00:00", "2026-11-24T18:00:00.000Z"),
            ("2026-11-24", "2026-11-24T00:00:00.000Z"),
            ("2026-11-24 18:00", "2026-11-24T18:00:00.000Z"),
            ("2026-11-24T19:00:00+01:00", "2026-11-24T18:00:00.000Z"),
            ("2026-11-24T18:00:00+14:00", "2026-11-24T04:00:00.000Z"),
            ("2026-11-24T18:00:00.123456Z", "2026-11-24T18:00:00.123Z"),
            ("2026-11-24T18:00:00.9999Z", "2026-11-24T18:00:00.999Z"),
            ("20261124T180000Z", "2026-11-24T18:00:00.000Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"),
            ("1969-12-31T23:59:59Z", "1970-01-01T00:00:00.000Z"),
            ("0001-01-01T00:00:00+01:00", "1970-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
            ("9999-12-31T23:59:59.999-10:00", "9999-12-31T23:59:59.999Z"),
        ],
        ids=lambda value: value,
    )
    def test_an_iso_time_is_normalised_to_utc_milliseconds(self, text: str, time: str) -> None:
        """Any ISO 8601 form, taken as UTC without a zone, written as the log writes times and
        kept within the years the log can hold (1970 to the end of 9999)."""
        assert time == parse_time(text, now=NOW)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            " ",
            "15",
            "m",
            "15M",
            "15y",
            "1.5h",
            "-1d",
            "+1d",
            "1d2h",
            "15 m",
            "\N{FULLWIDTH DIGIT TWO}d",
            "2026-13-01",
            "2026-11-31",
            "2026-11-24T25:00:00",
            "\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT TWO}",
            "2026-11-24T18:00:00\N{FULLWIDTH DIGIT ZERO}",
            "yesterday",
            "now",
        ],
        ids=lambda value: repr(value),
    )
    def test_anything_else_is_refused_naming_the_accepted_forms(self, text: str) -> None:
        """Neither form: the message shows both, with an example of each."""
        assert f"{quoted(text)} {NOT_A_TIME}" == refusal(parse_time, text)

    def test_an_age_has_at_most_12_digits(self) -> None:
        """int() and the clock are spared a megabyte of digits."""
        assert "'1234567890123d': an age has at most 12 digits" == refusal(parse_time, "1234567890123d")

    def test_without_now_an_age_counts_from_the_clock(self) -> None:
        """``now`` defaults to the current time."""
        assert parse_time("0s") >= parse_time("0s", now=NOW)


class TestParseOutcome:
    @pytest.mark.parametrize(
        "text",
        [
            "pending",
            "deleted",
            "succeeded",
            "not_found",
            "denied",
            "forbidden",
            "rejected",
            "upstream_error",
            "unknown",
            "not_deleted",
            "pruned",
        ],
    )
    def test_every_outcome_is_accepted(self, text: str) -> None:
        """The outcome's value, exactly."""
        assert text == parse_outcome(text)

    @pytest.mark.parametrize("text", ["", "Deleted", "DELETED", " deleted", "not-found", "ok"])
    def test_anything_else_is_refused_listing_the_outcomes(self, text: str) -> None:
        """Outcomes are case-sensitive; the refusal lists them all."""
        assert (
            f"{quoted(text)} is not an outcome; expected one of pending, deleted, succeeded, not_found, denied, forbidden, "
            "rejected, upstream_error, unknown, not_deleted, pruned"
        ) == refusal(parse_outcome, text)


class TestWholeNumbers:
    @pytest.mark.parametrize(
        ("text", "value"), [("0", 0), ("1", 1), ("007", 7), (str(MAX_INTEGER), MAX_INTEGER), ("0" * 20, 0)]
    )
    def test_plain_ascii_digits_are_a_whole_number(self, text: str, value: int) -> None:
        """From 0 to SQLite's largest integer, leading zeros allowed."""
        assert value == whole_number(text)

    @pytest.mark.parametrize(
        "text",
        [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "1.0",
            "1e3",
            "0x10",
            "1_000",
            "\N{SUPERSCRIPT TWO}",
            "\N{ARABIC-INDIC DIGIT ONE}",
            str(MAX_INTEGER + 1),
            "0" * 21,
        ],
        ids=lambda value: repr(value),
    )
    def test_anything_else_is_refused_with_the_range(self, text: str) -> None:
        """No sign, no spaces, no other scripts' digits, nothing past 64 bits."""
        assert f"{quoted(text)} is not a whole number from 0 to {MAX_INTEGER}" == refusal(whole_number, text)

    @pytest.mark.parametrize(("text", "minimum", "maximum"), [("4", 5, 10), ("11", 5, 10), ("0", 1, MAX_INTEGER)])
    def test_the_bounds_are_the_caller_s(self, text: str, minimum: int, maximum: int) -> None:
        """Outside the caller's bounds is refused naming them."""
        with pytest.raises(ValueError) as refused:
            whole_number(text, minimum=minimum, maximum=maximum)
        assert f"{quoted(text)} is not a whole number from {minimum} to {maximum}" == str(refused.value)

    @pytest.mark.parametrize(("text", "value"), [("1", 1), ("100", 100), (str(MAX_INTEGER), MAX_INTEGER)])
    def test_a_positive_int_starts_at_one(self, text: str, value: int) -> None:
        """A record id or a count of records."""
        assert value == positive_int(text)

    @pytest.mark.parametrize("text", ["0", "", "-1", "x", str(MAX_INTEGER + 1)])
    def test_zero_and_the_rest_are_not_positive(self, text: str) -> None:
        """The refusal says what a positive whole number may be."""
        assert f"{quoted(text)} is not a positive whole number (at most {MAX_INTEGER})" == refusal(positive_int, text)


class TestParseSha256:
    @pytest.mark.parametrize(
        ("text", "value"),
        [("0123456789abcdef" * 4, "0123456789abcdef" * 4), ("0123456789ABCDEF" * 4, "0123456789abcdef" * 4)],
    )
    def test_64_hex_digits_in_either_case_are_returned_in_lower_case(self, text: str, value: str) -> None:
        """The log keeps fingerprints in lower case: an upper-case one finds them too."""
        assert value == parse_sha256(text)

    @pytest.mark.parametrize(
        "text",
        ["", "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, "a" * 62 + "\N{FULLWIDTH DIGIT ONE}" * 2, "0x" + "a" * 62],
        ids=["empty", "short", "long", "not-hex", "space", "fullwidth", "prefixed"],
    )
    def test_anything_else_is_no_fingerprint(self, text: str) -> None:
        """Exactly 64 ASCII hex digits or a refusal saying so."""
        assert f"{quoted(text)} is not a SHA-256 fingerprint (64 hex digits)" == refusal(parse_sha256, text)
