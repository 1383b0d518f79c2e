"""docs/ is held to the code and to itself: every table renders as written, every relative link
lands, and the reference tables have exactly one row per declared fact (config keys, record
fields, outcomes, filters, metrics, routes, stub settings).

The Markdown is parsed (``docs_markdown``), never searched for substrings: a row that a blank
line or an unescaped ``|`` breaks out of its table counts as missing, and a row for a fact the
code no longer has counts as wrong.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from docs_markdown import Document, code_spans, parse, read
from helpers import USERS, commands, make_config, options
from processes import started

from gateway.app import build_app
from gateway.audit.filters import FILTERS
from gateway.audit.record import FIELDS, Outcome
from gateway.config import SECTIONS, SidecarConfig, StubConfig, UserConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def page(name: str) -> Document:
    return read(DOCS / name, f"docs/{name}")


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` that names no file, or an anchor its page does not have."""
    broken = []
    for link in read(path).links:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", link.target):  # https:, mailto:: not ours to check
            continue
        file, _, fragment = link.target.partition("#")
        target = (path.parent / file).resolve() if file else path
        where = f"{path.name}:{link.line}: {link.target}"
        if not target.exists():
            broken.append(f"{where}: no such file")
        elif fragment and target.suffix != ".md":
            broken.append(f"{where}: an anchor into a file that is not Markdown")
        elif fragment and fragment not in read(target).anchors:
            broken.append(f"{where}: no heading with that anchor in {target.name}")
    return broken


def shown(value: Any) -> str:
    """A declared default as the config table shows it: TOML-like JSON, in backticks."""
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value, default=str)}`"


class TestMarkdownReader:
    """The reader the docs tests stand on, on texts with known defects."""

    def test_a_blank_line_inside_a_table_leaves_its_rows_outside(self) -> None:
        """The old README's audit-record table: a blank line before its last two rows, then the
        outcome table glued to them."""
        text = (
            "| Field | Meaning |\n|---|---|\n| `id` | Position. |\n\n"
            "| `prev_hash` | Link. |\n| `hash` | Hash. |\n| Outcome | Meaning |\n|---|---|\n| `pending` | Intent. |\n"
        )
        document = parse(text, "old.md")
        assert ["`id`"] == document.tables[0].column("Field")
        assert [
            "old.md:5: a table row outside any table: a blank line inside a table ends it, "
            "and the rows after it render as text",
            "old.md:6: a table row outside any table: a blank line inside a table ends it, "
            "and the rows after it render as text",
            "old.md:7: a table must follow a blank line; here it would take the text above as part of it",
        ] == document.problems

    def test_two_tables_without_a_blank_line_between_them_are_one_broken_table(self) -> None:
        text = "| A | B |\n|---|---|\n| 1 | 2 |\n| C | D |\n|---|---|\n| 3 | 4 |\n"
        assert [
            "t.md:5: a delimiter row inside a table: two tables run together (a blank line is missing before the second)"
        ] == parse(text, "t.md").problems

    def test_an_unescaped_pipe_in_a_cell_is_an_extra_cell(self) -> None:
        text = "| Command | What |\n|---|---|\n| `--format table|json` | Formats. |\n"
        assert ["t.md:3: 3 cells in a table of 2 columns (an unescaped | in a cell? write \\|)"] == parse(
            text, "t.md"
        ).problems

    def test_an_escaped_pipe_stays_in_its_cell(self) -> None:
        table = parse("| Command | What |\n|---|---|\n| `--format table\\|json` | Formats. |\n").tables[0]
        assert ("`--format table|json`", "Formats.") == table.rows[0]
        assert ["--format table|json"] == code_spans(table.rows[0][0])

    def test_code_is_neither_a_table_nor_a_link(self) -> None:
        text = "```sh\n| not | a table |\n|---|---|\n[x](nowhere.md)\n```\n\n`[[users]](x)` and [real](here.md)\n"
        document = parse(text)
        assert ([], [], ["here.md"]) == (document.tables, document.problems, [link.target for link in document.links])

    def test_anchors_are_githubs(self) -> None:
        text = "# Title\n## Health, metrics and logs\n## The `audit verify` command\n## Title\n## Title\n"
        assert ["title", "health-metrics-and-logs", "the-audit-verify-command", "title-1", "title-2"] == [
            heading.anchor for heading in parse(text).headings
        ]

    def test_a_link_to_a_missing_file_or_anchor_is_broken(self, tmp_path: Path) -> None:
        (tmp_path / "b.md").write_text("# Only heading\n")
        (tmp_path / "a.md").write_text(
            "# A\n[ok](b.md#only-heading) [self](#a) [web](https://example.com/x)\n"
            "[gone](c.md) [anchor](b.md#nope) [self-anchor](#nope)\n"
        )
        assert [
            "a.md:3: c.md: no such file",
            "a.md:3: b.md#nope: no heading with that anchor in b.md",
            "a.md:3: #nope: no heading with that anchor in a.md",
        ] == broken_links(tmp_path / "a.md")


@pytest.mark.parametrize("path", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_table_renders_as_written(path: Path) -> None:
    assert [] == read(path, str(path.relative_to(ROOT))).problems


@pytest.mark.parametrize("path", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_lands(path: Path) -> None:
    assert [] == broken_links(path)


def test_the_config_table_is_every_declared_key_with_its_default_and_help() -> None:
    """Row for row what ``gateway.config`` declares: key, default ("required" when there is
    none) and help text, in declaration order."""
    declared = []
    for section, cls in [*SECTIONS.items(), ("users", UserConfig), ("sidecars", SidecarConfig)]:
        for field in dataclasses.fields(cls):
            default = "required" if field.default is dataclasses.MISSING else shown(field.default)
            declared.append((f"`{section}.{field.name}`", default, " ".join(field.metadata["help"].split())))
    assert declared == list(page("configuration.md").table("Key", "Default", "Meaning").rows)


def test_every_record_field_has_a_row_in_order() -> None:
    table = page("audit-log.md").table("Field", "Meaning")
    assert list(FIELDS) == [code_spans(cell)[0] for cell in table.column("Field")]


def test_every_outcome_has_a_row() -> None:
    table = page("audit-log.md").table("Outcome", "Meaning")
    assert [outcome.value for outcome in Outcome] == [code_spans(cell)[0] for cell in table.column("Outcome")]


def test_every_filter_has_its_parameter_option_and_help() -> None:
    table = page("audit-log.md").table("Parameter", "Option", "Meaning")
    assert [(f"`{item.name}`", f"`{item.option}`", item.help) for item in FILTERS] == list(table.rows)


def test_every_stub_setting_has_a_row_with_its_option_and_default() -> None:
    table = page("stub.md").table("Key", "Option", "Default", "Meaning")
    stub_options = options(commands()["gateway stub"])
    assert [f"`stub.{field.name}`" for field in dataclasses.fields(StubConfig)] == table.column("Key")
    for field, (_, option, default, _) in zip(dataclasses.fields(StubConfig), table.rows, strict=True):
        assert shown(field.default) == default, field.name
        assert code_spans(option)[0] in stub_options, field.name


def test_every_http_route_has_a_row(tmp_path: Path) -> None:
    """Every route the gateway serves besides the Apigee paths is the first cell of a row."""
    documented = set()
    for path in PAGES:
        for table in read(path).tables:
            for row in table.rows:
                documented |= {span.partition("?")[0] for span in code_spans(row[0])}
    app = build_app(make_config(tmp_path))
    served = {
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.method not in ("HEAD", "*") and route.resource is not None
    }
    assert {"GET /healthz", "GET /readyz", "GET /metrics", "GET /audit/events"} <= served
    assert sorted(served - documented) == []


async def test_every_metric_of_a_running_gateway_has_a_row_with_its_type(tmp_path: Path) -> None:
    """`gateway serve` with shipping configured (to a collector that is not there), so every
    family a sidecar can expose is exposed; each has a row, and each row is a family."""
    (tmp_path / "ship.password").write_text("secret\n")
    user = USERS[0]
    (tmp_path / "gw.toml").write_text(
        "[audit]\ndatabase = 'audit.db'\nreserve_mb = 0\n[logging]\nformat = 'json'\n"
        "[ship]\nurl = 'http://127.0.0.1:9'\ninstance = 'docs'\npassword_file = 'ship.password'\nmax_backoff = 60.0\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    async with started("serve", "--config", str(tmp_path / "gw.toml"), "--port", "0", cwd=tmp_path) as gateway:
        async with aiohttp.ClientSession() as session, session.get(gateway.url + "/metrics") as response:
            exposition = await response.text()
        assert 0 == await gateway.stop(signal.SIGTERM)
    exposed = {
        (name, kind)
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE)
        if not name.endswith("_created")  # prometheus-client's creation time of each counter and histogram
    }
    table = page("operations.md").table("Metric", "Type", "What")
    documented = {(code_spans(metric)[0].partition("{")[0], kind) for metric, kind, _ in table.rows}
    assert len(exposed) >= 19
    assert sorted(exposed) == sorted(documented)
