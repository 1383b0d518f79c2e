"""Which headers cross the gateway (``gateway.upstream.end_to_end``, ``unforwardable``), called
directly: hop-by-hop headers (RFC 9110, section 7.6.1) and those named in ``Connection`` stop
here; every end-to-end header passes in order, with its case and every repeated value."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.upstream import HOP_BY_HOP, UpstreamReply, end_to_end, relay_problem, unforwardable

NOT_UTF8 = "\udcff"
"""A received byte that was not UTF-8 (0xFF), as aiohttp's parser hands it over."""


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


class TestEndToEnd:
    def test_the_hop_by_hop_set_is_rfc_9110_s(self) -> None:
        """Exactly the eight headers RFC 9110 (and RFC 7230 before it) names as hop-by-hop."""
        assert {
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        } == HOP_BY_HOP

    @pytest.mark.parametrize(
        "name",
        [
            "Connection",
            "Keep-Alive",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "transfer-encoding",
            "PROXY-AUTHORIZATION",
        ],
    )
    def test_a_hop_by_hop_header_is_dropped_in_any_case(self, name: str) -> None:
        """Each hop-by-hop header is dropped, however its name is spelt; the others stay."""
        given = headers(("Accept", "*/*"), (name, "x"), ("X-After", "1"))
        assert [("Accept", "*/*"), ("X-After", "1")] == list(end_to_end(given).items())

    @pytest.mark.parametrize(
        ("connection", "kept"),
        [
            ("close", ["X-Foo", "X-Bar", "Cookie"]),
            ("X-Foo", ["X-Bar", "Cookie"]),
            ("keep-alive, x-foo", ["X-Bar", "Cookie"]),
            (" X-FOO ,x-bar ", ["Cookie"]),
            ("x-foo,,", ["X-Bar", "Cookie"]),
            ("cookie", ["X-Foo", "X-Bar"]),
            ("X-Absent", ["X-Foo", "X-Bar", "Cookie"]),
        ],
    )
    def test_headers_named_in_connection_are_dropped(self, connection: str, kept: list[str]) -> None:
        """A header ``Connection`` names is hop-by-hop for this hop: dropped, names compared
        without case and surrounding spaces, empty list items ignored."""
        given = headers(("Connection", connection), ("X-Foo", "1"), ("X-Bar", "2"), ("Cookie", "c=1"))
        assert kept == list(end_to_end(given).keys())

    def test_every_connection_header_counts(self) -> None:
        """Names from several ``Connection`` headers are all honoured, not only the first's."""
        given = headers(("Connection", "X-Foo"), ("X-Foo", "1"), ("Connection", "X-Bar"), ("X-Bar", "2"), ("A", "3"))
        assert [("A", "3")] == list(end_to_end(given).items())

    def test_repeated_headers_keep_every_value_in_order(self) -> None:
        """Two ``Set-Cookie`` stay two (a dict would keep one), in the order and case received."""
        given = headers(("Set-Cookie", "a=1"), ("x-lower", "l"), ("Set-Cookie", "b=2"), ("X-UPPER", "u"))
        assert [("Set-Cookie", "a=1"), ("x-lower", "l"), ("Set-Cookie", "b=2"), ("X-UPPER", "u")] == list(
            end_to_end(given).items()
        )

    @pytest.mark.parametrize(
        ("drop", "kept"),
        [
            (frozenset(), ["Host", "Content-Length", "Expect", "Date"]),
            (frozenset({"content-length"}), ["Host", "Expect", "Date"]),
            (frozenset({"host", "content-length", "expect"}), ["Date"]),
        ],
    )
    def test_drop_removes_the_named_headers_too(self, drop: frozenset[str], kept: list[str]) -> None:
        """``drop`` (lower-case names) takes out the framing the gateway redoes itself."""
        given = headers(("Host", "h"), ("Content-Length", "3"), ("Expect", "100-continue"), ("Date", "d"))
        assert kept == list(end_to_end(given, drop).keys())

    def test_the_given_headers_are_left_as_they_were(self) -> None:
        """A filtered copy is returned; the received headers (a read-only proxy) are unchanged."""
        given = CIMultiDictProxy(headers(("Connection", "X-Foo"), ("X-Foo", "1"), ("TE", "trailers"), ("A", "2")))
        kept = end_to_end(given)
        kept.add("B", "3")
        assert [("Connection", "X-Foo"), ("X-Foo", "1"), ("TE", "trailers"), ("A", "2")] == list(given.items())
        assert [("A", "2"), ("B", "3")] == list(kept.items())

    def test_no_headers_give_no_headers(self) -> None:
        """Nothing in, nothing out (and no error for a missing ``Connection``)."""
        assert [] == list(end_to_end(headers()).items())


class TestUnforwardable:
    @pytest.mark.parametrize(
        "pairs",
        [
            [],
            [("Authorization", "Basic bXluYW1lOm15cGFzcw=="), ("Accept", "*/*")],
            [("X-Name", "Zoë"), ("X-Emoji", "\N{SNOWMAN}")],
            [("X-Control", "a\tb")],
        ],
        ids=["none", "ascii", "utf-8", "tab"],
    )
    def test_headers_that_are_text_can_be_forwarded(self, pairs: list[tuple[str, str]]) -> None:
        """ASCII and any UTF-8 text go upstream unchanged, so nothing is reported."""
        assert unforwardable(headers(*pairs)) is None

    @pytest.mark.parametrize(
        ("pairs", "named"),
        [
            ([("X-Bad", f"a{NOT_UTF8}b")], "X-Bad"),
            ([("Accept", "*/*"), ("x-bad", NOT_UTF8)], "x-bad"),
            ([("X-First", NOT_UTF8), ("X-Second", NOT_UTF8)], "X-First"),
            ([("Authorization", f"Basic {NOT_UTF8}")], "Authorization"),
        ],
    )
    def test_the_first_header_with_a_byte_that_is_not_utf8_is_named(
        self, pairs: list[tuple[str, str]], named: str
    ) -> None:
        """aiohttp's client would drop such a byte on the way out: the header is named, as received."""
        assert named == unforwardable(headers(*pairs))

    @pytest.mark.parametrize(
        "pairs",
        [
            [("Proxy-Authorization", NOT_UTF8)],
            [("Connection", "X-Hop"), ("X-Hop", NOT_UTF8)],
            [("Host", NOT_UTF8)],
            [("Content-Length", NOT_UTF8)],
            [("Expect", NOT_UTF8)],
        ],
        ids=["hop-by-hop", "named-in-connection", "host", "content-length", "expect"],
    )
    def test_a_header_that_is_not_forwarded_cannot_be_unforwardable(self, pairs: list[tuple[str, str]]) -> None:
        """Headers the gateway drops or redoes itself never reach the upstream, whatever their bytes."""
        assert unforwardable(headers(*pairs)) is None


@pytest.mark.parametrize("name", ["Transfer-Encoding ", "X A", "X(A)", "", "caf\u00e9"])
def test_a_header_name_that_is_not_a_token_is_never_relayed(name: str) -> None:
    """The hop-by-hop and framing filters go by name: a name a lenient parser let through (a
    space before its colon, say) must not reach the caller."""
    reply = UpstreamReply(200, "OK", CIMultiDict([(name, "chunked")]), b"")
    assert "a header name of it is not a token" == relay_problem(reply)
    assert relay_problem(UpstreamReply(200, "OK", CIMultiDict([("X-Ok_1.~", "v")]), b"")) is None
    broken = UpstreamReply(200, "OK", CIMultiDict([("X\rA", "v")]), b"")
    assert "a header of it holds a CR, LF or NUL" == relay_problem(broken)
