"""`gateway audit query` and `audit show`: every filter and every output format, on a real file."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import parse_time
from gateway.audit.record import FIELDS, AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main

TOKEN_A, TOKEN_B = "tokenAAAAAAAAAAAAAAAAAAAAAAAAA", "tokenBBBBBBBBBBBBBBBBBBBBBBBBB"


def record(time: str, actor: str, org: str, token: str, outcome: str, **extra: Any) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{time[8:10]}",
        time=time,
        actor=actor,
        client_ip="10.0.0.7",
        method="DELETE",
        org=org,
        token_sha256=fingerprint(token),
        token_hint=token[-4:],
        outcome=outcome,
    )._replace(**extra)


RECORDS = [
    record("2026-01-01T00:00:00.000Z", "alice", "myorg", TOKEN_A, "pending"),
    record(
        "2026-01-01T00:00:00.010Z",
        "alice",
        "myorg",
        TOKEN_A,
        "deleted",
        upstream_status=200,
        latency_ms=12.5,
        app="app1",
        client_id="client-1",
        snapshot='{"app":"app1","token":"[redacted …AAAA]"}',
    ),
    record(
        "2026-01-02T00:00:00.000Z",
        "bob",
        "otherorg",
        TOKEN_B,
        "not_found",
        upstream_status=404,
        error_code="keymanagement.service.invalid_account_name",
    ),
    record("2026-01-03T00:00:00.000Z", "mallory", "myorg", TOKEN_B, "denied", error_code="gateway.unauthorized"),
]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"

    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    appender.append(RECORDS)
    appender.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def ids(capsys: pytest.CaptureFixture[str], database: Path, *filters: str) -> list[int]:
    status, out, _ = run(capsys, "audit", "query", "--db", str(database), "--format", "json", *filters)
    assert 0 == status
    return [entry["id"] for entry in json.loads(out)]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ((), [4, 3, 2, 1]),
        (("--org", "myorg"), [4, 2, 1]),
        (("--token", TOKEN_B), [4, 3]),
        (("--actor", "alice"), [2, 1]),
        (("--app", "app1"), [2]),
        (("--client-id", "client-1"), [2]),
        (("--outcome", "not_found"), [3]),
        (("--since", "2026-01-02T00:00:00Z"), [4, 3]),
        (("--until", "2026-01-02"), [2, 1]),
        (("--since", "2026-01-01T00:00:00.005Z", "--until", "2026-01-03T00:00:00Z"), [3, 2]),
        (("--org", "myorg", "--token", TOKEN_B), [4]),
        (("--limit", "2"), [4, 3]),
        (("--actor", "nobody"), []),
    ],
)
def test_filters(
    capsys: pytest.CaptureFixture[str], database: Path, filters: tuple[str, ...], expected: list[int]
) -> None:
    assert expected == ids(capsys, database, *filters)


def test_json_format_is_the_whole_record(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    _, out, _ = run(capsys, "audit", "query", "--db", str(database), "--format", "json", "--outcome", "deleted")
    [entry] = json.loads(out)
    assert list(FIELDS) == list(entry)
    assert {"app": "app1", "token": "[redacted …AAAA]"} == entry["snapshot"]
    assert ("alice", 200, 12.5, fingerprint(TOKEN_A)) == (
        entry["actor"],
        entry["upstream_status"],
        entry["latency_ms"],
        entry["token_sha256"],
    )


def test_jsonl_format(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    _, out, _ = run(capsys, "audit", "query", "--db", str(database), "--format", "jsonl")
    lines = out.splitlines()
    assert [4, 3, 2, 1] == [json.loads(line)["id"] for line in lines]
    assert "\n" == out[-1]


def test_csv_format(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    _, out, _ = run(capsys, "audit", "query", "--db", str(database), "--format", "csv", "--outcome", "deleted")
    header, row = list(csv.reader(io.StringIO(out)))
    assert list(FIELDS) == header
    values = dict(zip(header, row, strict=True))
    assert ("2", "alice", "200", "", '{"app":"app1","token":"[redacted …AAAA]"}') == (
        values["id"],
        values["actor"],
        values["upstream_status"],
        values["error_code"],
        values["snapshot"],
    )


def test_table_format(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    _, out, _ = run(capsys, "audit", "query", "--db", str(database), "--org", "otherorg")
    assert [
        "id  time                      outcome    actor  org       token  app  status  error                                       client    request_id",
        "--  ------------------------  ---------  -----  --------  -----  ---  ------  ------------------------------------------  --------  ----------",
        "3   2026-01-02T00:00:00.000Z  not_found  bob    otherorg  …BBBB  -    404     keymanagement.service.invalid_account_name  10.0.0.7  req-02",
    ] == out.splitlines()


def test_show_prints_one_record(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    status, out, _ = run(capsys, "audit", "show", "--db", str(database), "3")
    assert (0, 3, "bob") == (status, json.loads(out)["id"], json.loads(out)["actor"])
    status, _, err = run(capsys, "audit", "show", "--db", str(database), "99")
    assert (2, f"gateway: error: no record 99 in {database}\n") == (status, err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--since", "yesterday"),
            "argument --since: 'yesterday' is neither an ISO 8601 time (2026-11-24T18:00:00Z) nor an age (15m, 24h, 7d)",
        ),
        (
            ("--outcome", "gone"),
            "argument --outcome: 'gone' is not an outcome; expected one of pending, deleted, succeeded, not_found, denied, forbidden, rejected, upstream_error",
        ),
        (("--limit", "0"), "argument --limit: '0' is not a positive whole number"),
        (("--format", "xml"), "argument --format: invalid choice: 'xml'"),
    ],
)
def test_bad_filter_values_are_named(
    capsys: pytest.CaptureFixture[str], database: Path, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["audit", "query", "--db", str(database), *args])
    assert 2 == exit.value.code
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"gateway audit query: error: {message}")


def test_missing_or_foreign_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "audit", "query", "--db", str(tmp_path / "none.db"))
    assert (2, f"gateway: error: --db: no audit database at {tmp_path / 'none.db'}\n") == (status, err)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    status, _, err = run(capsys, "audit", "query", "--db", str(foreign))
    assert (2, f"gateway: error: --db: {foreign} is not a gateway audit database (it holds other tables)\n") == (
        status,
        err,
    )


def test_relative_times() -> None:
    now = 1_790_000_000.0
    assert "2026-09-21T14:13:20.000Z" == parse_time("0s", now=now)
    assert "2026-09-21T13:58:20.000Z" == parse_time("15m", now=now)
    assert "2026-09-14T14:13:20.000Z" == parse_time("7d", now=now)
    assert "2026-11-24T18:00:00.000Z" == parse_time("2026-11-24T19:00:00+01:00")


def test_export_streams_oldest_first(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    status, out, _ = run(capsys, "audit", "export", "--db", str(database))
    assert 0 == status
    lines = out.splitlines()
    assert [1, 2, 3, 4] == [json.loads(line)["id"] for line in lines]
    deleted = json.loads(lines[1])
    assert list(FIELDS) == list(deleted)
    assert ({"app": "app1", "token": "[redacted …AAAA]"}, 12.5, None) == (
        deleted["snapshot"],
        deleted["latency_ms"],
        deleted["error_code"],
    )
    _, out, _ = run(capsys, "audit", "export", "--db", str(database), "--format", "csv", "--org", "myorg")
    rows = list(csv.reader(io.StringIO(out)))
    assert (list(FIELDS), ["1", "2", "4"]) == (rows[0], [row[0] for row in rows[1:]])
    fields = dict(zip(FIELDS, rows[2], strict=True))
    assert ("deleted", "12.5", "", '{"app":"app1","token":"[redacted …AAAA]"}') == (
        fields["outcome"],
        fields["latency_ms"],
        fields["error_code"],
        fields["snapshot"],
    )


def test_stats(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    _, out, _ = run(capsys, "audit", "stats", "--db", str(database), "--by", "actor")
    assert ["actor    records", "-------  -------", "alice    1", "bob      1", "mallory  1"] == out.splitlines()
    _, out, _ = run(capsys, "audit", "stats", "--db", str(database), "--by", "day", "--outcome", "pending")
    assert ["day         records", "----------  -------", "2026-01-01  1"] == out.splitlines()
