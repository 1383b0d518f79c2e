"""Text from callers, the upstream or the audit file, made safe to show on a terminal.

Anyone can put text in the audit log: a failed login records the user name it claimed, and the
upstream's answer gives ``app`` and ``clientId``. Printed as they are, ``ESC [8m`` hides the
rows after it, CR and LF forge rows, U+202E shows a name backwards. So every output meant for
people escapes the characters that are not text but instructions to the terminal, while the
audit record keeps the exact value:

- control characters: C0, DEL and C1 (Unicode category Cc);
- invisible format characters, bidirectional overrides and isolates among them (Cf);
- line and paragraph separators (Zl, Zp), and lone surrogates (Cs), which are not text at all.

The categories come from the running Python's Unicode database, so characters added to them
later are escaped too. Escapes are ``\\uXXXX`` (``\\UXXXXXXXX`` beyond the BMP), readable, and
valid in TOML and Python strings; inside JSON, ``printable_json`` writes JSON's own escape, so
the document still decodes to the exact value.
"""

from __future__ import annotations

import re
import unicodedata

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SAFE_RANGES = "\u00a0-\u00ac\u00ae-\u05ff\u2010-\u2027\u2030-\u205f\u2070-\ud7ff\ue000-\ufefe"
"""Blocks with no unsafe character (Latin, Greek, Cyrillic, typographic punctuation, CJK...),
skipped without a category lookup: exports stay fast. tests/test_hostile_output.py checks
this against every code point."""
_SUSPECT = re.compile(f"[^\x20-\x7e{_SAFE_RANGES}]")
_SUSPECT_IN_JSON = re.compile(f"[^\x20-\x7e\t\n\r{_SAFE_RANGES}]")
"""Raw tab, LF and CR in JSON text are whitespace between tokens (in strings they are escaped)."""


def is_unsafe(character: str) -> bool:
    return unicodedata.category(character) in UNSAFE_CATEGORIES


def printable(text: str) -> str:
    """``text`` with every unsafe character escaped; printable ASCII costs one check."""
    if text.isascii() and text.isprintable():
        return text
    return _SUSPECT.sub(_escaped, text)


def printable_json(document: str) -> str:
    """JSON text with every unsafe character JSON leaves raw (DEL, C1, format characters...)
    written as a JSON escape: the same document, decoding to the same values.

    Outside strings JSON text is ASCII punctuation, digits, letters and whitespace, so only
    string contents change.
    """
    # The C0 controls JSON escapes itself. The one non-ASCII character most records hold is the
    # ellipsis of a redacted value's hint: without it, checks at memory speed spare most
    # exported batches the scan.
    if "\x7f" not in document and document.replace("…", "").isascii():
        return document
    return _SUSPECT_IN_JSON.sub(_json_escaped, document)


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    if not is_unsafe(character):
        return character
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _json_escaped(match: re.Match[str]) -> str:
    character = match.group()
    if not is_unsafe(character):
        return character
    code = ord(character)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters beyond the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
