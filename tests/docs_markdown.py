"""The project's Markdown, read as the docs tests need it: tables, headings, code blocks, links.

A small reader, not a renderer, for what README.md and docs/ use: GitHub-flavoured tables, ATX
headings (``## Title``) with GitHub's anchors, fenced code blocks and inline links. It is written
here rather than taken from a Markdown library because the tests need what a renderer throws
away: the line of each row, and the places where a table silently stops being one (a blank line
inside it renders the rows after it as a paragraph of pipes; a missing blank line runs two
tables into one). Cells are split the way GitHub splits them: on every ``|`` that is not
escaped, code spans included, so ``\\|`` is how a cell holds a pipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_DELIMITER_CELL = re.compile(r":?-+:?")
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r" {0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s.*)?")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_NOT_IN_ANCHOR = re.compile(r"[^\w\- ]")
"""What GitHub drops from a heading's text to make its anchor: all but letters, digits, ``_``,
``-`` and spaces (which become ``-``)."""


@dataclass(frozen=True)
class Table:
    line: int
    """The header row's line number (from 1)."""
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    section: str
    """The title of the nearest heading above it ("" before the first)."""

    def column(self, name: str) -> list[str]:
        index = self.header.index(name)
        return [row[index] for row in self.rows]

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.header, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Heading:
    line: int
    level: int
    title: str
    """The text as rendered: inline code and link markup removed."""
    anchor: str


@dataclass(frozen=True)
class CodeBlock:
    line: int
    info: str
    """What follows the opening fence: the language (``sh``, ``console``, ...)."""
    text: str
    section: str


@dataclass(frozen=True)
class Link:
    line: int
    target: str


@dataclass
class Document:
    name: str
    """Where the text came from, as problems name it."""
    tables: list[Table] = field(default_factory=list)
    headings: list[Heading] = field(default_factory=list)
    code_blocks: list[CodeBlock] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    """Tables that do not render as the text suggests: each names its line."""

    def table(self, *header: str) -> Table:
        """The one table whose header is exactly ``header``."""
        found = [table for table in self.tables if table.header == header]
        assert 1 == len(found), f"{self.name}: {len(found)} tables with the header {' | '.join(header)}"
        return found[0]

    def in_section(self, title: str) -> tuple[list[Table], list[CodeBlock]]:
        """The tables and code blocks under the heading ``title``, down to the next heading of
        the same or a higher level."""
        starts = [heading for heading in self.headings if heading.title == title]
        assert 1 == len(starts), f"{self.name}: {len(starts)} headings {title!r}"
        start = starts[0]
        after = [h.line for h in self.headings if h.line > start.line and h.level <= start.level]
        end = after[0] if after else 1 << 30
        return (
            [table for table in self.tables if start.line < table.line < end],
            [block for block in self.code_blocks if start.line < block.line < end],
        )


def read(path: Path, name: str | None = None) -> Document:
    return parse(path.read_text(), name or str(path))


def parse(text: str, name: str = "<text>") -> Document:
    document = Document(name)
    lines = text.splitlines()
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        fence = _FENCE.fullmatch(line)
        if fence is not None:
            index = _code_block(document, lines, index, fence, section)
            continue
        heading = _HEADING.fullmatch(line)
        if heading is not None:
            section = _heading(document, number, len(heading.group(1)), heading.group(2))
        elif _is_row(line) and index + 1 < len(lines) and _is_delimiter(lines[index + 1]):
            if index > 0 and lines[index - 1].strip() and not _HEADING.fullmatch(lines[index - 1]):
                document.problems.append(
                    f"{name}:{number}: a table must follow a blank line; here it would take the text above as part of it"
                )
            index = _table(document, lines, index, section)
            continue
        elif _is_row(line):
            document.problems.append(
                f"{name}:{number}: a table row outside any table: a blank line inside a table ends it, "
                "and the rows after it render as text"
            )
        _links(document, number, line)
        index += 1
    return document


def anchor(title: str) -> str:
    """GitHub's anchor for a heading's rendered text."""
    return _NOT_IN_ANCHOR.sub("", title.strip().lower()).replace(" ", "-")


def cells(line: str) -> tuple[str, ...]:
    """A table row's cells, split on unescaped pipes; ``\\|`` in a cell is a pipe."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return tuple(cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", body))


def code_spans(cell: str) -> list[str]:
    """The contents of the inline code spans in ``cell``, in order."""
    return [match.group(2).strip() for match in _CODE_SPAN.finditer(cell)]


def _is_row(line: str) -> bool:
    return line.lstrip().startswith("|")


def _is_delimiter(line: str) -> bool:
    return _is_row(line) and all(_DELIMITER_CELL.fullmatch(cell) for cell in cells(line))


def _code_block(document: Document, lines: list[str], index: int, fence: re.Match[str], section: str) -> int:
    """Skip a fenced block (nothing in it is a table or a link); the index after it."""
    marker = fence.group(1)
    closing = re.compile(rf" {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*")
    end = index + 1
    while end < len(lines) and not closing.fullmatch(lines[end]):
        end += 1
    document.code_blocks.append(
        CodeBlock(index + 1, fence.group(2).strip(), "\n".join(lines[index + 1 : end]), section)
    )
    return end + 1


def _heading(document: Document, number: int, level: int, raw: str) -> str:
    title = _INLINE_LINK.sub(lambda match: match.group(1), raw)
    title = _CODE_SPAN.sub(lambda match: match.group(2), title)
    title = title.replace("**", "").replace("*", "")
    slug = anchor(title)
    taken = {heading.anchor for heading in document.headings}
    unique, suffix = slug, 0
    while unique in taken:  # GitHub numbers repeated headings: name, name-1, name-2, ...
        suffix += 1
        unique = f"{slug}-{suffix}"
    document.headings.append(Heading(number, level, title, unique))
    document.anchors.add(unique)
    _links(document, number, raw)
    return title


def _table(document: Document, lines: list[str], index: int, section: str) -> int:
    """Read a table from its header row; the index of the first line after it."""
    header = cells(lines[index])
    width = len(cells(lines[index + 1]))
    if width != len(header):
        document.problems.append(
            f"{document.name}:{index + 1}: the header has {len(header)} cells, its delimiter row {width}"
        )
    rows = []
    end = index + 2
    while end < len(lines) and _is_row(lines[end]):
        number = end + 1
        if _is_delimiter(lines[end]):
            document.problems.append(
                f"{document.name}:{number}: a delimiter row inside a table: two tables run together "
                "(a blank line is missing before the second)"
            )
        row = cells(lines[end])
        if len(row) != len(header):
            document.problems.append(
                f"{document.name}:{number}: {len(row)} cells in a table of {len(header)} columns "
                "(an unescaped | in a cell? write \\|)"
            )
        rows.append(row)
        _links(document, number, lines[end])
        end += 1
    document.tables.append(Table(index + 1, header, tuple(rows), section))
    return end


def _links(document: Document, number: int, line: str) -> None:
    for name in _HTML_ANCHOR.findall(line):
        document.anchors.add(name)
    outside_code = _CODE_SPAN.sub(lambda match: " " * len(match.group(0)), line)
    definition = _REFERENCE_DEFINITION.fullmatch(outside_code)
    targets: Iterator[str] = (
        iter([definition.group(1)]) if definition else (match.group(2) for match in _INLINE_LINK.finditer(outside_code))
    )
    for target in targets:
        document.links.append(Link(number, target))
