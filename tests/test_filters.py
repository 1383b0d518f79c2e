"""The audit trail's filters (``gateway.audit.filters``), called directly: each declared filter's
names and parser, and ``selection``, which turns parsed values into one ``AuditFilter`` for the
CLI and the HTTP API alike."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.audit.filters import BY_NAME, FILTERS, Filter, FilterError, raw_token, selection, text
from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import DEFAULT_LIMIT, AuditFilter

HEX = "0123456789abcdef" * 4


def given(**values: Any) -> list[tuple[Filter, Any]]:
    """(filter, parsed value) pairs by parameter name, in the order given."""
    return [(BY_NAME[name], value) for name, value in values.items()]


class TestDeclarations:
    def test_every_filter_is_declared_once_with_its_field(self) -> None:
        """The parameters the HTTP API takes and the fields they set, in order."""
        assert [
            ("org", "org"),
            ("token", "token_sha256"),
            ("token_sha256", "token_sha256"),
            ("actor", "actor"),
            ("app", "app"),
            ("client_id", "client_id"),
            ("outcome", "outcome"),
            ("action", "action"),
            ("resource_type", "resource_type"),
            ("resource", "resource"),
            ("since", "since"),
            ("until", "until"),
        ] == [(item.name, item.field) for item in FILTERS]

    def test_every_field_set_is_a_field_of_the_filter(self) -> None:
        """A declaration cannot name a field ``AuditFilter`` does not have."""
        assert {item.field for item in FILTERS} <= {field.name for field in dataclasses.fields(AuditFilter)}

    @pytest.mark.parametrize(
        ("name", "option"), [("org", "--org"), ("client_id", "--client-id"), ("token_sha256", "--token-sha256")]
    )
    def test_the_cli_option_is_the_name_with_dashes(self, name: str, option: str) -> None:
        """``client_id`` in a query string is ``--client-id`` on the command line."""
        assert option == BY_NAME[name].option

    @pytest.mark.parametrize(
        ("name", "value", "parsed"),
        [
            ("org", "myorg", "myorg"),
            ("actor", "Zoë", "Zoë"),
            ("app", "", ""),
            ("client_id", "c1", "c1"),
            ("token", "taFM3LHUTQAFhL0dIFg81XhRc7vC", fingerprint("taFM3LHUTQAFhL0dIFg81XhRc7vC")),
            ("token_sha256", HEX.upper(), HEX),
            ("outcome", "not_found", "not_found"),
            ("since", "2026-11-24T19:00:00+01:00", "2026-11-24T18:00:00.000Z"),
            ("until", "2026-11-24", "2026-11-24T00:00:00.000Z"),
        ],
    )
    def test_each_filter_parses_its_value(self, name: str, value: str, parsed: str) -> None:
        """Free text as given; a raw token as its fingerprint (the log never holds it); the rest normalised."""
        assert parsed == BY_NAME[name].parse(value)


class TestValueParsers:
    @pytest.mark.parametrize("value", ["", "plain", "Zoë ☃", "with\nnewline"])
    def test_text_that_is_utf8_is_returned_as_it_is(self, value: str) -> None:
        """Free text is any text a UTF-8 store can hold."""
        assert value is text(value)

    @pytest.mark.parametrize(
        ("value", "shown"), [("a\udcffb", "'a\\udcffb'"), ("\ud800" * 50, repr("\ud800" * 40) + "...")]
    )
    def test_text_with_bytes_that_were_not_utf8_is_refused(self, value: str, shown: str) -> None:
        """Bytes that are not UTF-8 reach Python as lone surrogates: refused by name, quoted short."""
        with pytest.raises(ValueError) as refused:
            text(value)
        assert f"{shown} is not valid UTF-8" == str(refused.value)

    def test_a_raw_token_is_looked_for_by_its_fingerprint(self) -> None:
        """The SHA-256 of the token's UTF-8 bytes, in hex."""
        assert "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" == raw_token("")

    def test_a_raw_token_that_is_not_utf8_is_refused(self) -> None:
        """No fingerprint of text that is not text."""
        with pytest.raises(ValueError) as refused:
            raw_token("tok\udcffen")
        assert "'tok\\udcffen' is not valid UTF-8" == str(refused.value)


class TestSelection:
    def test_nothing_given_selects_everything_up_to_the_default_limit(self) -> None:
        """Every field is "any"; the limit is the default."""
        assert AuditFilter() == selection([])
        assert DEFAULT_LIMIT == selection([]).limit

    def test_each_value_sets_its_field(self) -> None:
        """Parsed values go to their declared fields, whatever their order."""
        assert AuditFilter(
            org="myorg", token_sha256=HEX, actor="alice", outcome="deleted", since="2026-01-01T00:00:00.000Z"
        ) == selection(
            given(since="2026-01-01T00:00:00.000Z", outcome="deleted", actor="alice", token_sha256=HEX, org="myorg")
        )

    def test_a_filter_not_given_is_none_and_skipped(self) -> None:
        """A None value (an option left out) sets nothing, and clashes with nothing."""
        assert AuditFilter(token_sha256=HEX) == selection(given(org=None, token=None, token_sha256=HEX))

    def test_the_rest_is_passed_on(self) -> None:
        """Paging and scope (limit, cursor, organisations) come with the filters."""
        chosen = selection(given(org="myorg"), limit=11, before=("2026-01-01T00:00:00.000Z", 5), orgs=frozenset({"a"}))
        assert (
            AuditFilter(org="myorg", limit=11, before=("2026-01-01T00:00:00.000Z", 5), orgs=frozenset({"a"})) == chosen
        )

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            (given(token=HEX, token_sha256=HEX), "give token or token_sha256, not both"),
            (given(token_sha256=HEX, token=HEX), "give token_sha256 or token, not both"),
            ([(BY_NAME["org"], "a"), (BY_NAME["org"], "b")], "give org or org, not both"),
        ],
        ids=["token-then-fingerprint", "fingerprint-then-token", "same-twice"],
    )
    def test_two_values_for_one_field_are_refused_by_name(self, values: list[tuple[Filter, Any]], message: str) -> None:
        """The token and its fingerprint set the same field: one of them at most, named in order given."""
        with pytest.raises(FilterError) as refused:
            selection(values)
        assert message == str(refused.value)

    def test_the_caller_says_how_filters_are_named(self) -> None:
        """The CLI names them by option."""
        with pytest.raises(FilterError) as refused:
            selection(given(token=HEX, token_sha256=HEX), named=lambda item: item.option)
        assert "give --token or --token-sha256, not both" == str(refused.value)

    def test_a_filter_error_is_a_value_error(self) -> None:
        """Callers that refuse bad values catch one kind of error."""
        assert issubclass(FilterError, ValueError)
