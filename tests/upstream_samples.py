"""Apigee's documented answers, as the upstream contract (vendored in ``docs/upstream``) shows them."""

from __future__ import annotations

import re

from helpers import ROOT

DOC = ROOT / "docs" / "upstream" / "apigee-delete-token.md"
"""The upstream contract, vendored: the tests never depend on a file outside the repository."""
XML_404 = (
    b"<Error> <Code>keymanagement.service.invalid_account_name</Code> "
    b"<Message>Invalid Access Token</Message> <Contexts/> </Error>"
)
JSON_404 = b'{"code": "keymanagement.service.invalid_account_name", "message": "Invalid Access Token", "contexts": []}'


def documented_sample() -> bytes:
    """The sample response, cut out of the upstream documentation shipped beside the repo."""
    found = re.search(rb"Sample Response:\n(\{.*?\n\})\n", DOC.read_bytes(), re.DOTALL)
    assert found is not None, f"{DOC} has no sample response"
    return found.group(1)
