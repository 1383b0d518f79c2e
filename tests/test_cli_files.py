"""Operator safety: a maintenance command never makes or changes a file that is not already an
audit log. On a mistyped path (no such file), an empty file or one that is not a log, every
command says so in one line naming the option or config key and the file, exits 2, and leaves
the directory exactly as it was: no new log, no schema written into an empty file, no disk
reserve beside it. Only `gateway serve` makes a log (tested where serving is)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from audit_support import make_log
from helpers import USERS

from gateway.cli import main

COMMANDS = {
    "query": ["audit", "query"],
    "show": ["audit", "show", "1"],
    "export": ["audit", "export"],
    "stats": ["audit", "stats"],
    "verify": ["audit", "verify"],
    "head": ["audit", "head"],
    "upgrade": ["audit", "upgrade"],
    "reconcile": ["audit", "reconcile"],
    "prune": ["audit", "prune", "--before", "1d", "--yes"],
}


def empty_file(path: Path) -> str:
    path.write_bytes(b"")
    return f"{path} is an empty database, not a gateway audit log"


def empty_database(path: Path) -> str:
    """A valid SQLite file that holds nothing (a header, no tables)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
        db.execute("DROP TABLE t")
    return f"{path} is an empty database, not a gateway audit log"


def foreign_database(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    return f"{path} is not a gateway audit database (it holds other tables)"


def text_file(path: Path) -> str:
    path.write_text("key = 'a config file, given as the log by mistake'\n" * 4)
    return f"cannot use {path}: file is not a database"


def missing(path: Path) -> str:
    return f"no audit database at {path}"


FILES = {
    "missing": missing,
    "0-byte file": empty_file,
    "empty database": empty_database,
    "foreign database": foreign_database,
    "text file": text_file,
}


USER = (
    f'[[users]]\nname = "{USERS[0]["name"]}"\npassword_hash = "{USERS[0]["password_hash"]}"\n'
    'orgs = ["myorg"]\nroles = ["revoke", "audit"]\n'
)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of ``directory`` and a digest of its bytes."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_on_what_is_not_a_log_changes_nothing_and_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, kind: str
) -> None:
    path = tmp_path / "audit-typo.db"
    problem = FILES[kind](path)
    before = snapshot(tmp_path)
    status = main([*COMMANDS[command], "--db", str(path)])
    out, err = capsys.readouterr()
    assert (2, "", f"gateway: error: --db: {problem}\n") == (status, out, err)
    assert before == snapshot(tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_audit_database_in_the_config_is_named_with_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[audit]\ndatabase = "audit-typo.db"\n\n' + USER)
    before = snapshot(tmp_path)
    status = main([*COMMANDS[command], "--config", str(config)])
    out, err = capsys.readouterr()
    expected = f"gateway: error: {config}: audit.database: no audit database at {tmp_path / 'audit-typo.db'}\n"
    assert (2, "", expected) == (status, out, err)
    assert before == snapshot(tmp_path)


@pytest.mark.parametrize("kind", FILES)
def test_ship_on_what_is_not_a_log_changes_nothing_and_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """`audit ship` reads the log its config names: nothing is sent (the collector is never asked)."""
    path = tmp_path / "audit-typo.db"
    problem = FILES[kind](path)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[audit]\ndatabase = "{path.name}"\n\n[ship]\nurl = "http://127.0.0.1:9"\ninstance = "host-a"\n'
        'password_env = "SHIP_PASSWORD"\n\n' + USER
    )
    monkeypatch.setenv("SHIP_PASSWORD", "ship-password")
    before = snapshot(tmp_path)
    status = main(["audit", "ship", "--config", str(config)])
    out, err = capsys.readouterr()
    assert (2, "", f"gateway: error: {config}: audit.database: {problem}\n") == (status, out, err)
    assert before == snapshot(tmp_path)


READERS = ["query", "show", "export", "stats", "verify", "head"]


@pytest.mark.parametrize("command", READERS)
def test_a_reading_command_leaves_a_log_byte_for_byte_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "audit.db"
    make_log(path, 5)
    before = snapshot(tmp_path)
    assert 0 == main([*COMMANDS[command], "--db", str(path), *(["--no-chain-key"] if command == "verify" else [])])
    capsys.readouterr()
    assert before == snapshot(tmp_path)


def test_a_mistyped_tokens_file_is_named_with_its_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.db"
    make_log(path, 2)
    before = snapshot(tmp_path)
    status = main(["audit", "reconcile", "--db", str(path), "--tokens-file", str(tmp_path / "tokens-typo.txt")])
    out, err = capsys.readouterr()
    expected = f"gateway: error: --tokens-file: cannot read {tmp_path / 'tokens-typo.txt'}: No such file or directory\n"
    assert (2, "", expected) == (status, out, err)
    assert before == snapshot(tmp_path)
