"""Real `gateway` subprocesses for the tests that need the whole command: serve, stub, audit."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

START_TIMEOUT = 30
"""Seconds a subprocess may take to say where it listens, or to exit once told to."""


class Running:
    """A `gateway` subprocess whose output is read as it comes.

    Reading stderr all the time matters: a gateway under load logs a line per request, and a
    full pipe would block it mid-request, which is not the crash these tests are about.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.url = ""
        self.banner: list[str] = []
        """What it printed up to the line that says where it listens (that line included)."""
        self.stderr: list[str] = []
        self._stderr_done = False
        self._stderr_grew = asyncio.Condition()
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Wait for the line that says where it listens; keep reading both streams afterwards."""
        assert self.process.stdout is not None and self.process.stderr is not None
        self._pumps.append(asyncio.create_task(self._pump_stderr(self.process.stderr)))
        printed = self.banner
        async with asyncio.timeout(START_TIMEOUT):
            while not (match := re.search(r"[Ll]istening on (https?://\S+)", printed[-1] if printed else "")):
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    await self.process.wait()
                    await asyncio.gather(*self._pumps)
                    raise AssertionError("exited early: " + "".join(printed) + "\n".join(self.stderr))
                printed.append(line.rstrip("\n"))
        self.url = match.group(1)
        self._pumps.append(asyncio.create_task(self._drain(self.process.stdout)))

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._stderr_grew:
                self.stderr.append(line.decode().rstrip("\n"))
                self._stderr_grew.notify_all()
        async with self._stderr_grew:
            self._stderr_done = True
            self._stderr_grew.notify_all()

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log events called ``name`` logged so far."""
        found = []
        for line in self.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    async def logged(self, name: str, nth: int = 1) -> dict[str, Any]:
        """The ``nth`` JSON log event called ``name`` (the first by default), awaited as it is written."""
        async with asyncio.timeout(START_TIMEOUT), self._stderr_grew:
            await self._stderr_grew.wait_for(lambda: len(self.events(name)) >= nth or self._stderr_done)
        found = self.events(name)
        assert len(found) >= nth, f"{name} not logged {nth} times:\n" + "\n".join(self.stderr)
        return found[nth - 1]

    async def stop(self, signum: int) -> int:
        """Send ``signum``; return the exit status once the process and its output have ended."""
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await self.exited()

    async def abandon(self) -> None:
        """Kill the process if it still runs and stop reading it: the cleanup of a failed test."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for pump in self._pumps:
            pump.cancel()

    async def exited(self) -> int:
        """The exit status, once the process has ended and all it wrote has been read."""
        async with asyncio.timeout(START_TIMEOUT):
            status = await self.process.wait()
            await asyncio.gather(*self._pumps)
        return status


@asynccontextmanager
async def started(*args: str, cwd: Path, preexec_fn: Callable[[], object] | None = None) -> AsyncIterator[Running]:
    """`gateway ARGS` until it listens; killed on the way out if the test left it running.

    ``preexec_fn`` runs in the child before the gateway starts (to lower a resource limit, say)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    running = Running(process)
    try:
        await running.start()
        yield running
    finally:
        await running.abandon()


async def completed(*args: str, cwd: Path) -> tuple[int, str]:
    """A short `gateway` command: its exit status and all it printed (standard output, then error)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(START_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def gateway_cli(*args: str, cwd: Path, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A short `gateway` command from a synchronous test, with its own standard input."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout
    )
