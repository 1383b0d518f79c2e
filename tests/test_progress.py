"""The progress line of long `audit` commands: drawn on a terminal only, throttled, cleared when
done, and never mixed into what the command prints on standard output."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.audit.chain import ChainKey
from gateway.audit.record import AuditRecord, utc_timestamp
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit.verify import verify_log
from gateway.cli import main
from gateway.cli.progress import Progress

RECORDS = 11_000
"""Three batches of `SQLiteAuditStore.rows` (5,000 each), so the count moves during a walk."""
START = 1_767_225_600.0  # 2026-01-01


class FakeTerminal(io.StringIO):
    """Standard error as an interactive shell has it."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    """Time that passes only when a test says so: throttling tested without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def screen(transcript: str) -> str:
    """What a terminal shows on its last line after ``transcript``: a carriage return goes back
    to the line's start and later characters overwrite earlier ones."""
    line: list[str] = []
    column = 0
    for char in transcript:
        if char == "\r":
            column = 0
        elif char == "\n":
            line, column = [], 0
        else:
            line[column : column + 1] = [char]
            column += 1
    return "".join(line)


def draws(transcript: str) -> list[str]:
    """Each line drawn, as it read when drawn (padding stripped)."""
    return [part.rstrip() for part in transcript.split("\r") if part.strip()]


def record(i: int) -> AuditRecord:
    return AuditRecord(
        request_id=f"req-{i}",
        time=utc_timestamp(START + i * 60),
        actor="alice",
        client_ip="10.0.0.1",
        method="DELETE",
        org="myorg",
        token_sha256=f"{i:064x}",
        token_hint=f"{i % 10_000:04d}",
        outcome="deleted",
        upstream_status=200,
    )


def make_log(path: Path, count: int) -> Path:
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    for first in range(1, count + 1, appender.max_batch):
        appender.append([record(i) for i in range(first, min(first + appender.max_batch, count + 1))])
    appender.close()
    return path


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log read (never changed) by the tests that walk it."""
    return make_log(tmp_path_factory.mktemp("progress") / "audit.db", RECORDS)


class TestProgress:
    def test_nothing_is_written_to_a_stream_that_is_not_a_terminal(self) -> None:
        """Pipes, files and logs get only the command's own output."""
        stream = io.StringIO()
        with Progress("verify", stream, total=10, clock=FakeClock()) as progress:
            progress.note("starting ...")
            progress.update(5)
        assert (False, "") == (progress.enabled, stream.getvalue())

    def test_disabled_on_request_even_on_a_terminal(self) -> None:
        """Export turns it off when its records go to the same terminal."""
        stream = FakeTerminal()
        with Progress("export", stream, enabled=False, clock=FakeClock()) as progress:
            progress.update(5)
        assert "" == stream.getvalue()

    def test_the_first_count_is_drawn_at_once(self) -> None:
        """No rate yet: one measured over no time would be noise."""
        stream = FakeTerminal()
        Progress("verify", stream, clock=FakeClock()).update(5_000)
        assert "\rverify: 5,000 records" == stream.getvalue()

    def test_redraws_are_throttled_by_time_not_by_count(self) -> None:
        """However often counts come, the line is redrawn at most once per interval, with the latest count."""
        stream, clock = FakeTerminal(), FakeClock()
        progress = Progress("export", stream, clock=clock)
        for step in range(1, 1_001):  # a count every millisecond for one second
            progress.update(step)
            clock.now += 0.001
        shown = draws(stream.getvalue())
        assert 10 <= len(shown) <= 11
        clock.now = 2.0
        progress.update(2_000)
        assert "export: 2,000 records (1,000/s)" == screen(stream.getvalue())

    def test_counts_within_an_interval_are_not_drawn(self) -> None:
        stream, clock = FakeTerminal(), FakeClock()
        progress = Progress("verify", stream, clock=clock)
        progress.update(1)
        clock.now = 0.099
        progress.update(2)
        assert ["verify: 1 records"] == draws(stream.getvalue())
        clock.now = 0.1
        progress.update(3)
        assert ["verify: 1 records", "verify: 3 records (30/s)"] == draws(stream.getvalue())

    def test_total_gives_a_percentage_and_the_rate_is_per_second(self) -> None:
        stream, clock = FakeTerminal(), FakeClock()
        progress = Progress("verify", stream, total=2_000_000, clock=clock)
        clock.now = 2.0
        progress.update(1_234_567)
        assert "verify: 1,234,567 of 2,000,000 records, 61% (617,284/s)" == screen(stream.getvalue())

    def test_a_total_learnt_later_and_a_slow_rate(self) -> None:
        """Reconcile learns how many calls are open once it has asked the log; it asks the upstream slowly."""
        stream, clock = FakeTerminal(), FakeClock()
        progress = Progress("reconcile", stream, unit="open calls", clock=clock)
        clock.now = 4.0
        progress.update(10, 40)
        assert "reconcile: 10 of 40 open calls, 25% (2.5/s)" == screen(stream.getvalue())

    def test_no_percentage_past_the_total(self) -> None:
        """Records appended while a walk runs may take the count past the size read at the start."""
        stream = FakeTerminal()
        Progress("verify", stream, total=10, clock=FakeClock()).update(12)
        assert "verify: 12 of 10 records" == screen(stream.getvalue())

    def test_a_shorter_line_covers_the_longer_one_before_it(self) -> None:
        stream, clock = FakeTerminal(), FakeClock()
        progress = Progress("verify", stream, clock=clock)
        progress.note("reading a long description of the work ...")
        clock.now = 1.0
        progress.update(7)
        assert "verify: 7 records (7.0/s)" == screen(stream.getvalue()).rstrip()
        assert len(screen(stream.getvalue())) == len("verify: reading a long description of the work ...")

    def test_closing_clears_the_line(self) -> None:
        """What the command prints next starts on a clean line."""
        stream = FakeTerminal()
        with Progress("verify", stream, total=3, clock=FakeClock()) as progress:
            progress.update(3)
        assert ("verify: 3 of 3 records, 100%", "") == (draws(stream.getvalue())[0], screen(stream.getvalue()).strip())
        assert stream.getvalue().endswith("\r")

    def test_the_line_is_cleared_when_the_work_fails(self) -> None:
        """So the one-line error that follows is not written over the count."""
        stream = FakeTerminal()
        with pytest.raises(RuntimeError), Progress("verify", stream, clock=FakeClock()) as progress:
            progress.update(3)
            raise RuntimeError("disk gone")
        assert "" == screen(stream.getvalue()).strip()

    def test_closing_without_a_draw_writes_nothing(self) -> None:
        stream = FakeTerminal()
        Progress("verify", stream, clock=FakeClock()).close()
        assert "" == stream.getvalue()


class TestCallbacks:
    def test_verify_reports_the_records_checked_after_each_batch(self, log: Path) -> None:
        async def walk() -> list[int]:
            seen: list[int] = []
            store = await SQLiteAuditStore.open(log)
            try:
                await verify_log(store, ChainKey(), progress=seen.append)
            finally:
                await store.close()
            return seen

        assert [5_000, 10_000, 11_000] == asyncio.run(walk())


class TestCommandsInProcess:
    """Each command's wiring, with standard error swapped for a fake terminal."""

    def test_prune_says_what_is_under_way_then_clears_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        database = make_log(tmp_path / "audit.db", 10)
        assert 0 == main(["audit", "prune", "--db", str(database), "--before", utc_timestamp(START + 5 * 60)])
        assert ["prune: removing records before 2026-01-01T00:05:00.000Z ..."] == draws(terminal.getvalue())
        assert "" == screen(terminal.getvalue()).strip()
        assert "pruned 4 records before 2026-01-01T00:05:00.000Z; checkpoint is record 11\n" == capsys.readouterr().out

    def test_reconcile_counts_the_open_calls(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        database = tmp_path / "audit.db"
        prepare(database, key=ChainKey(), writable=True)
        appender = SQLiteAppender(database, ChainKey())
        # An intent settled by a later delete of the same token, and one with nothing to go on.
        appender.append(
            [
                record(1)._replace(outcome="pending"),
                record(1)._replace(request_id="later"),
                record(2)._replace(outcome="pending"),
            ]
        )
        appender.close()
        assert 1 == main(["audit", "reconcile", "--db", str(database), "--operator", "ops"])
        assert draws(terminal.getvalue())[0].startswith("reconcile: 0 of 2 open calls, 0%")
        assert "" == screen(terminal.getvalue()).strip()
        assert "1 settled, 1 still open" == capsys.readouterr().out.splitlines()[-1]

    def test_verify_draws_and_clears_around_its_summary(
        self, log: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert 0 == main(["audit", "verify", "--db", str(log), "--no-chain-key"])
        assert draws(terminal.getvalue())[0].startswith("verify: 5,000 of 11,000 records, 45%")
        assert "" == screen(terminal.getvalue()).strip()
        assert capsys.readouterr().out.startswith("OK: 11000 records verified")

    def test_a_filtered_export_has_no_total(
        self, log: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Counting a selection would cost a pass over the file before the export starts."""
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert 0 == main(["audit", "export", "--db", str(log), "--actor", "alice"])
        assert draws(terminal.getvalue())[0].startswith("export: 5,000 records")
        assert RECORDS == len(capsys.readouterr().out.splitlines())


def gateway_on_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The real CLI with standard error on a pseudo-terminal, as at a shell, and standard output
    on a pipe, as in ``> file``: exit status, standard output, and what the terminal received."""
    terminal, child_side = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=child_side,
            text=True,
        )
    finally:
        os.close(child_side)
    # The throttled line stays far below the terminal's buffer, so it can be read after the exit.
    out, _ = process.communicate(timeout=30)
    received = b""
    try:
        while chunk := os.read(terminal, 65536):
            received += chunk
    except OSError:  # EIO: every writer has gone
        pass
    finally:
        os.close(terminal)
    return process.returncode, out, received.decode()


def gateway_on_pipes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True, timeout=30)


class TestRealTerminal:
    def test_verify_shows_progress_on_the_terminal_and_only_its_summary_on_stdout(
        self, log: Path, tmp_path: Path
    ) -> None:
        status, out, terminal = gateway_on_terminal("audit", "verify", "--db", str(log), "--no-chain-key", cwd=tmp_path)
        assert 0 == status
        assert [f"OK: {RECORDS} records verified"] == [line.split(" (")[0] for line in out.splitlines()]
        assert "verify: 5,000 of 11,000 records, 45%" in terminal
        assert "" == screen(terminal).strip()

    def test_export_shows_progress_on_the_terminal_and_pure_json_lines_on_stdout(
        self, log: Path, tmp_path: Path
    ) -> None:
        status, out, terminal = gateway_on_terminal("audit", "export", "--db", str(log), cwd=tmp_path)
        assert 0 == status
        assert list(range(1, RECORDS + 1)) == [json.loads(line)["id"] for line in out.splitlines()]
        assert "export: 5,000 of 11,000 records, 45%" in terminal
        assert "" == screen(terminal).strip()

    @pytest.mark.parametrize("command", ["verify", "export"])
    def test_nothing_on_stderr_without_a_terminal(self, log: Path, tmp_path: Path, command: str) -> None:
        key = ("--no-chain-key",) if command == "verify" else ()
        result = gateway_on_pipes("audit", command, "--db", str(log), *key, cwd=tmp_path)
        assert (0, "") == (result.returncode, result.stderr)
        assert result.stdout
