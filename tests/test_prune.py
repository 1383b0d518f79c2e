"""`gateway audit prune`: a dry run says what would go; emptying the whole log is never silent."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import make_log

from gateway.cli import main


def count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM audit_events").fetchone()[0])


def test_dry_run_says_what_would_go_and_removes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.db"
    make_log(path, 10)
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-05", "--dry-run"])
    assert (
        "would prune 4 records (ids 1-4, 2026-01-01T00:00:00.000Z to 2026-01-04T00:00:00.000Z) before "
        "2026-01-05T00:00:00.000Z; 6 records would remain\n"
    ) == capsys.readouterr().out
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2099-01-01", "--dry-run"])
    assert capsys.readouterr().out.endswith("; 0 records would remain\n")
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2000-01-01", "--dry-run"])
    assert "nothing to prune: no record before 2000-01-01T00:00:00.000Z\n" == capsys.readouterr().out
    assert 10 == count(path)


def test_removing_everything_without_a_terminal_needs_yes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by a hostile tester: `--before 2030-01-01` wiped the whole log without a word."""
    path = tmp_path / "a.db"
    make_log(path, 10)
    assert 2 == main(["audit", "prune", "--db", str(path), "--before", "2030-01-01"])
    assert (
        f"gateway: error: pruning before 2030-01-01T00:00:00.000Z removes every record of {path} (10); "
        "pass --yes to do it, or --dry-run to see what would go\n"
    ) == capsys.readouterr().err
    assert 10 == count(path)
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2026-01-05"])  # not everything: no question
    assert 0 == main(["audit", "prune", "--db", str(path), "--before", "2030-01-01", "--yes"])
    assert 1 == count(path)  # the checkpoint alone


@pytest.mark.parametrize(("answer", "status", "left"), [("y\n", 0, 1), ("\n", 2, 10), ("no\n", 2, 10)])
def test_removing_everything_on_a_terminal_asks(tmp_path: Path, answer: str, status: int, left: int) -> None:
    path = tmp_path / "a.db"
    make_log(path, 10)
    terminal, child_side = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "audit", "prune", "--db", str(path), "--before", "2030-01-01"],
            stdin=child_side,
            stdout=subprocess.PIPE,
            stderr=child_side,
            text=True,
        )
    finally:
        os.close(child_side)
    try:
        asked = b""
        while b"[y/N]" not in asked:
            assert select.select([terminal], [], [], 30)[0], f"no question asked: {asked!r}"
            asked += os.read(terminal, 4096)
        assert b"removes every record of" in asked
        os.write(terminal, answer.encode())
        process.wait(timeout=30)
    finally:
        os.close(terminal)
    assert (status, left) == (process.returncode, count(path))
