"""The README is held to the code: quick start, command table, error table, operations, doc index.

Its tables are read as Markdown (``docs_markdown``), row by row, so a row that does not render
(a blank line inside a table, an unescaped ``|``) fails here as surely as a missing one.
"""

from __future__ import annotations

import re
from pathlib import Path

from docs_markdown import Document, code_spans, read
from helpers import commands, options

from gateway import errors
from gateway.audit.filters import FILTERS
from gateway.operations import OPERATIONS

ROOT = Path(__file__).resolve().parents[1]


def readme() -> Document:
    return read(ROOT / "README.md", "README.md")


def command_rows() -> dict[str, str]:
    """The command table: each row's command (the words before its first option), with its synopsis."""
    table = readme().table("Command", "What it does")
    rows: dict[str, str] = {}
    for synopsis in table.column("Command"):
        spans = code_spans(synopsis)
        assert 1 == len(spans), f"one code span per command cell: {synopsis}"
        words = []
        for word in spans[0].split():
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        name = " ".join(words)
        assert name not in rows, f"{name} has two rows"
        rows[name] = spans[0]
    return rows


def test_ci_runs_exactly_the_quick_start_test_command() -> None:
    """The quick start shows two commands: one runs the gateway on the stub, one runs the tests,
    and the second is exactly what .ci/run runs."""
    _, blocks = readme().in_section("Quick start")
    serve_command, test_command = (block.text.strip() for block in blocks if block.info == "sh")
    assert serve_command.startswith("python3 -m venv .venv && ")
    assert serve_command.endswith("pip install -e . && gateway serve")
    assert test_command.endswith("pip install -e '.[test]' && python -m pytest")
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_quick_start_curl_is_the_documented_sample() -> None:
    _, blocks = readme().in_section("Quick start")
    console = [block.text for block in blocks if block.info == "console"]
    assert console[0].startswith(
        "$ curl -u myname:mypass -X DELETE http://127.0.0.1:8080/v1/o/myorg/oauth2/accesstokens/taFM3LHUTQAFhL0dIFg81XhRc7vC\n"
    )
    assert console[2].startswith("$ gateway audit query --token taFM3LHUTQAFhL0dIFg81XhRc7vC\n")


def test_every_cli_command_has_a_row_and_every_row_a_command() -> None:
    declared = set(commands())
    assert {
        "gateway serve",
        "gateway stub",
        "gateway audit query",
        "gateway audit show",
        "gateway hash-password",
    } <= declared
    assert sorted(declared) == sorted(command_rows())


def test_every_option_of_a_command_is_in_its_synopsis() -> None:
    """A synopsis names every long option of its command; ``[filters]`` stands for the audit
    filters, which have their own table (docs/audit-log.md)."""
    rows = command_rows()
    for name, parser in commands().items():
        synopsis = rows[name]
        named = set(re.findall(r"--[a-z][a-z0-9-]*", synopsis))
        if "[filters]" in synopsis:
            named |= {item.option for item in FILTERS}
        assert sorted(options(parser)) == sorted(named), name


def test_every_gateway_error_has_a_row_and_every_row_an_error() -> None:
    table = readme().table("Status", "Code", "When")
    documented = [(int(status), code_spans(code)[0]) for status, code, _ in table.rows]
    assert [(error.status, error.code) for error in errors.ALL] == documented


def test_every_audited_operation_has_a_row() -> None:
    """One row per kind of resource, naming each of its actions and their role."""
    table = readme().table("Resource", "Audited calls (`action`)", "Role")
    documented = {
        code_spans(resource)[0]: ([span for span in code_spans(actions) if "." in span], code_spans(role)[0])
        for resource, actions, role in table.rows
    }
    declared: dict[str, tuple[list[str], str]] = {}
    for operation in OPERATIONS:
        actions, _ = declared.setdefault(operation.resource_type, ([], operation.role))
        if operation.action not in actions:
            actions.append(operation.action)
    assert declared == documented


def test_the_readme_links_every_page_of_the_docs() -> None:
    """Nothing in docs/ is an orphan: the README's documentation table lists every page."""
    table = readme().table("Page", "What it holds")
    linked = {link.target for link in read(ROOT / "README.md").links}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")} | {"docs/upstream/"}
    listed = {re.sub(r"^\[.*\]\((.*)\)$", r"\1", cell) for cell in table.column("Page")}
    assert sorted(pages) == sorted(listed)
    assert listed <= linked
