"""HTTP Basic credentials (``gateway.basic.parse_basic``, RFC 7617), called directly: what is read
as a user name and password, and the precise reason for each header that is refused."""

from __future__ import annotations

import base64

import pytest

from gateway.basic import MAX_HEADER_LENGTH, Credentials, MalformedCredentials, parse_basic


def encoded(credentials: bytes) -> str:
    return base64.b64encode(credentials).decode()


LONGEST = "  Basic " + encoded(b"u:" + b"p" * 3064)
"""A valid header of exactly ``MAX_HEADER_LENGTH`` characters (surrounding spaces count)."""


class TestValidCredentials:
    @pytest.mark.parametrize(
        ("header", "credentials"),
        [
            ("Basic bXluYW1lOm15cGFzcw==", Credentials("myname", "mypass")),
            ("basic bXluYW1lOm15cGFzcw==", Credentials("myname", "mypass")),
            ("BASIC bXluYW1lOm15cGFzcw==", Credentials("myname", "mypass")),
            ("  Basic   bXluYW1lOm15cGFzcw==  ", Credentials("myname", "mypass")),
            ("Basic " + encoded(b"alice:a:b:c"), Credentials("alice", "a:b:c")),
            ("Basic " + encoded(b"alice:"), Credentials("alice", "")),
            ("Basic " + encoded("Zoë:pässwörd ☃".encode()), Credentials("Zoë", "pässwörd ☃")),
            ("Basic " + encoded(b"a b:c\x00d"), Credentials("a b", "c\x00d")),
            (LONGEST, Credentials("u", "p" * 3064)),
        ],
        ids=[
            "sample",
            "lower-case-scheme",
            "upper-case-scheme",
            "spaces",
            "colons-in-password",
            "empty-password",
            "utf-8",
            "spaces-and-nul",
            "longest",
        ],
    )
    def test_the_user_is_before_the_first_colon_and_the_password_after(
        self, header: str, credentials: Credentials
    ) -> None:
        """The scheme in any case, spaces around; the password is everything after the first colon."""
        assert credentials == parse_basic(header)


class TestMalformedCredentials:
    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            ("", "Authorization scheme is not Basic"),
            ("Bearer x", "Authorization scheme is not Basic"),
            ("Basicx", "Authorization scheme is not Basic"),
            ("Basic\tbXluYW1lOm15cGFzcw==", "Authorization scheme is not Basic"),
            (encoded(b"myname:mypass"), "Authorization scheme is not Basic"),
            ("Basic ***", "Basic credentials are not valid base64"),
            ("Basic bXluYW1lOm15cGFzcw", "Basic credentials are not valid base64"),
            ("Basic bXlu YW1lOm15cGFzcw==", "Basic credentials are not valid base64"),
            ("Basic -_-_", "Basic credentials are not valid base64"),
            ("Basic é", "Basic credentials are not valid base64"),
            ("Basic " + encoded(b"\xff:x"), "Basic credentials are not UTF-8"),
            ("Basic " + encoded(b"alice"), "Basic credentials lack the ':' between user name and password"),
            ("Basic", "Basic credentials lack the ':' between user name and password"),
            ("Basic " + encoded(b":x"), "Basic credentials have an empty user name"),
            (LONGEST + " ", "Authorization header longer than 4096 characters"),
            ("Basic " + "A" * 5000, "Authorization header longer than 4096 characters"),
        ],
        ids=[
            "empty",
            "bearer",
            "no-space",
            "tab",
            "no-scheme",
            "not-base64",
            "unpadded",
            "space-inside",
            "url-safe-alphabet",
            "not-ascii",
            "not-utf-8",
            "no-colon",
            "nothing",
            "empty-user",
            "one-over-the-limit",
            "long",
        ],
    )
    def test_a_malformed_header_says_why(self, header: str, reason: str) -> None:
        """Each way a header can be unusable has its own reason, for the log and the 401."""
        with pytest.raises(MalformedCredentials) as error:
            parse_basic(header)
        assert reason == str(error.value)

    def test_the_limit_is_the_header_s_length(self) -> None:
        """The longest accepted header is ``MAX_HEADER_LENGTH`` characters, spaces included."""
        assert (4096, 4096) == (MAX_HEADER_LENGTH, len(LONGEST))

    def test_a_malformed_header_is_a_value_error(self) -> None:
        """Callers that refuse bad values catch one kind of error."""
        assert issubclass(MalformedCredentials, ValueError)
