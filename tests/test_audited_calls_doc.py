"""docs/audited-calls.md is held to the code: its table to ``OPERATIONS``, its cookbook to the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
from pathlib import Path

import pytest
from helpers import SAMPLE, SAMPLE_PATH, GatewayFactory, basic, make_config, rows

from gateway.cli import main
from gateway.operations import OPERATIONS, REFERENCE_HEADER, reference_rows, reference_table
from gateway.stub.seed import DEMO_APP_ID, SAMPLE_TOKEN

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "audited-calls.md").read_text()
APP = "/v1/o/myorg/developers/demo@example.com/apps/app1"
KEY = f"{APP}/keys/{SAMPLE_TOKEN['clientId']}"


def cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split(" | "))


def documented_rows() -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and rows of the document's table of audited calls."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Action |"))
    body = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        body.append(cells(line))
    return cells(lines[start]), body


def cookbook() -> list[str]:
    """The commands of the cookbook's shell block, comments left out."""
    block = DOC.split("## Who cut this access", 1)[1].split("```sh\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.startswith("gateway ")]


class TestTheTable:
    def test_each_row_is_an_operation_as_declared(self) -> None:
        """Row for row: a declaration added, changed or removed shows as the row that differs."""
        header, body = documented_rows()
        assert REFERENCE_HEADER == header
        assert reference_rows() == body

    def test_the_table_is_the_rendered_one(self) -> None:
        assert reference_table() in DOC

    def test_every_operation_has_its_own_row(self) -> None:
        keys = {(operation.method, operation.path, operation.query_action) for operation in OPERATIONS}
        assert len(OPERATIONS) == len(keys) == len(documented_rows()[1])

    def test_the_readme_links_it(self) -> None:
        assert "(docs/audited-calls.md)" in (ROOT / "README.md").read_text()


async def test_the_cookbook_finds_who_cut_the_access(
    tmp_path: Path, gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The calls the cookbook speaks of, made through a real gateway on the demo data; then each
    of its commands, as written (with this test's audit log), finds them."""
    client = await gateway(make_config(tmp_path))
    auth = basic("myname")
    for method, target, status in (
        ("POST", f"/v1/o/myorg/oauth2/revoke?app={DEMO_APP_ID}", 202),
        ("POST", f"{KEY}?action=revoke", 204),
        ("POST", f"{APP}?action=revoke", 204),
        ("POST", "/v1/o/myorg/developers/demo@example.com?action=inactive", 204),
        ("DELETE", SAMPLE_PATH, 200),
    ):
        response = await client.request(method, target, headers=auth)
        assert status == response.status, target
    (tmp_path / "gw.toml").write_text("[audit]\ndatabase = 'audit.db'\n")
    total = len(rows(tmp_path / "audit.db"))
    commands = cookbook()
    assert len(commands) == 10
    for command in commands:
        words, _, pipe = command.partition(" | ")
        argv = [*shlex.split(words)[1:], "--config", str(tmp_path / "gw.toml")]
        assert 0 == await asyncio.to_thread(main, argv), command
        out = capsys.readouterr().out
        if argv[:2] != ["audit", "query"]:
            continue
        found = [line for line in out.splitlines()[1:] if line.strip()]  # below the header (table, csv)
        if "--format" in argv and argv[argv.index("--format") + 1] == "jsonl":
            found = out.splitlines()
        assert found, command
        if "--actor" not in argv:  # every call here was myname's
            assert len(found) < total, f"{command} selects everything"
        if pipe:
            fingerprint = hashlib.sha256(SAMPLE.encode()).hexdigest()
            assert re.fullmatch(r"""grep "\$\(printf %s (\w+) \| sha256sum \| cut -d' ' -f1\)\"""", pipe)
            assert [line for line in found if fingerprint in line], command
