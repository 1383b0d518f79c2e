"""`gateway serve`, `gateway stub` and `gateway hash-password`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.app import build_app
from gateway.cli.common import (
    LISTEN,
    CommandError,
    Override,
    command,
    config_option,
    listen,
    listening_config,
    log_level_option,
    overridden,
    override_options,
    run_loop,
)
from gateway.config import Config, load_config
from gateway.listener import GatewayRunner, count_connections, files_needed, raise_file_limit
from gateway.logs import configure_logging, get_logger
from gateway.passwords import hash_password
from gateway.runtime import RUNTIME, Runtime, stub_seed
from gateway.stub import Seed, load_seed
from gateway.stub.app import serve_stub
from gateway.stub.settings import ACTION_STATUSES, StubSettings

STUB_OPTIONS = (
    Override("--host", "stub", "host", "address to listen on"),
    Override("--port", "stub", "port", "port to listen on (0: any free port)"),
    Override(
        "--generate",
        "stub",
        "generated_tokens",
        "also hold N load-test tokens load0 ... load<N-1> in every organisation",
        metavar="N",
    ),
    Override("--delay", "stub", "delay", "wait this long before every answer, as a slow Apigee would", "SECONDS"),
    Override(
        "--action-status",
        "stub",
        "action_status",
        "status of every ?action= call: 204, no body, or 200 with the entity",
        "{" + ",".join(map(str, ACTION_STATUSES)) + "}",
    ),
    Override("--revoke-delay", "stub", "revoke_delay", "seconds before a bulk revocation takes effect", "SECONDS"),
    Override(
        "--token-lifetime", "stub", "token_lifetime", "seconds a bearer token from /oauth/token is accepted", "SECONDS"
    ),
)


def register(commands: Any) -> None:
    serve = command(commands, "serve", cmd_serve, "Run the gateway.", SERVE_HELP)
    config_option(serve)
    override_options(serve, LISTEN)
    log_level_option(serve)

    stub = command(commands, "stub", cmd_stub, "Run the local Apigee stub alone.", STUB_HELP)
    config_option(stub)
    override_options(stub, STUB_OPTIONS)
    log_level_option(stub)
    stub.add_argument(
        "--seed", type=Path, metavar="FILE.json", help="users and tokens to serve (default: the demo data)"
    )
    stub.add_argument(
        "--admin",
        action="store_true",
        default=None,
        help="serve the admin endpoints under /_stub/: request journal, token creation, faults (overrides [stub] admin)",
    )

    command(commands, "hash-password", cmd_hash_password, "Print a password hash for the config.", HASH_HELP)


SERVE_HELP = """\
Run the gateway. With no upstream configured it starts the local Apigee stub in-process,
seeded with demo data, and prints a ready-to-paste curl command.

Example:
  gateway serve
  gateway serve --config /etc/apigee-audit-gateway/config.toml --port 9090
"""
STUB_HELP = """\
Run the local Apigee stub alone: the credential surface of the Apigee Edge management API
(developers, companies, apps, keys, products, OAuth tokens) and its login server's
/oauth/token, in memory, answering as Apigee's documentation shows (docs/stub.md).

With --admin, tests can read what reached it, add tokens and make it fail on demand
(HTTP errors, dropped connections, malformed answers, delays) under /_stub/.

Example:
  gateway stub --port 8081 --seed tokens.json
  gateway stub --port 0 --admin --delay 0.5
"""
HASH_HELP = """\
Read a password (prompted twice on a terminal, or one line from standard input) and print
its hash for a [[users]] password_hash entry. The password itself never goes in the config.

Example:
  gateway hash-password
  printf '%s\\n' "$PASSWORD" | gateway hash-password
"""


# serve ---------------------------------------------------------------------------------------

DRAIN_MARGIN = 5.0
"""Seconds beyond the longest a call can take, for the last commits and closing on SIGTERM."""


def drain_seconds(config: Config) -> float:
    """The longest SIGTERM takes to stop the gateway, whatever its connections do: the calls in
    flight get ``calls_seconds``, then DRAIN_MARGIN is for the last commits and closing. Idle
    connections are closed at once (``gateway.listener``)."""
    return calls_seconds(config) + DRAIN_MARGIN


def calls_seconds(config: Config) -> float:
    """The longest a call in flight can still take: its body (body_timeout), its intent's
    commit, the upstream (bounded as a whole by total_timeout) and its outcome's commit (each
    commit by busy_timeout). Past this, SIGTERM cancels what is left, and closes its connection."""
    server, upstream, audit = config.server, config.upstream, config.audit
    return server.body_timeout + upstream.total_timeout + 2 * audit.busy_timeout


def cmd_serve(args: argparse.Namespace) -> int:
    config = listening_config(args)
    return run_loop(_serve(config, args.config), tls_listener=bool(config.server.tls_cert))


async def _serve(config: Config, path: Path | None) -> int:
    app = build_app(config)
    needed = files_needed(config.server.max_connections)
    if not raise_file_limit(needed):
        get_logger().warning(
            "file_limit_low",
            needed=needed,
            max_connections=config.server.max_connections,
            hint="raise the open-file limit (systemd: LimitNOFILE) or lower server.max_connections",
        )
    # On SIGTERM, calls in flight finish (each is bounded, see drain_seconds) before the writer closes.
    tls = config.listener_tls()
    runner = GatewayRunner(
        app, config.server, tls=tls, access_log=None, handle_signals=False, shutdown_timeout=calls_seconds(config)
    )
    # Caught from now on: SIGHUP's default action would end the gateway. One during start-up
    # is a reload once the gateway has started.
    hangup = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup.set)
    await runner.setup()
    runtime = app[RUNTIME]  # opened by the application's start-up
    count_connections(runtime.metrics, runner.guard)
    try:
        base = await listen(runner, config, tls=tls is not None)
        reloads = asyncio.create_task(_reload_users_on(hangup, runtime, path), name="reload-users")
        print(runtime.banner(base), flush=True)
        get_logger().info(
            "started", listen=base, upstream=runtime.upstream_url, audit_database=str(config.database_path)
        )
        await _until_signalled()
        reloads.cancel()
        get_logger().info("stopping")
    finally:
        await runner.cleanup()
    return 0


async def _reload_users_on(hangup: asyncio.Event, runtime: Runtime, path: Path | None) -> None:
    """SIGHUP (systemd's ExecReload) reloads ``[[users]]``, one reload at a time, instead of
    ending the process."""
    while True:
        await hangup.wait()
        hangup.clear()
        try:
            await runtime.reload_users(path)
        except Exception as exc:
            get_logger().error("users_reload_failed", error=type(exc).__name__)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


# stub ----------------------------------------------------------------------------------------


def cmd_stub(args: argparse.Namespace) -> int:
    config = load_config(args.config, uses=())  # the stub neither chains records, nor calls Apigee, nor speaks TLS
    seed = load_seed(args.seed) if args.seed else stub_seed(config)
    stub = overridden(config.stub, args, STUB_OPTIONS)
    if args.admin is not None:
        stub = dataclasses.replace(stub, admin=args.admin)
    seed = dataclasses.replace(seed, generated=stub.generated_tokens)
    settings = StubSettings(
        action_status=stub.action_status, revoke_delay=stub.revoke_delay, token_lifetime=stub.token_lifetime
    )
    configure_logging(config.logging.format, args.log_level or config.logging.level)
    return run_loop(_stub(seed, stub.host, stub.port, admin=stub.admin, delay=stub.delay, settings=settings))


async def _stub(seed: Seed, host: str, port: int, *, admin: bool, delay: float, settings: StubSettings) -> int:
    try:
        async with serve_stub(seed, host, port, admin=admin, delay=delay, settings=settings) as url:
            tokens = sum(len(tokens) for tokens in seed.orgs.values())
            generated = f" + {seed.generated} load-test tokens per organisation" if seed.generated else ""
            extras = ([f"; admin endpoints under {url}/_stub/"] if admin else []) + (
                [f"; every answer delayed {delay:g} s"] if delay else []
            )
            print(
                f"Apigee stub listening on {url} ({len(seed.users)} users, {tokens} tokens{generated}){''.join(extras)}",
                flush=True,
            )
            await _until_signalled()
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


# hash-password -------------------------------------------------------------------------------


def cmd_hash_password(args: argparse.Namespace) -> int:
    try:
        if sys.stdin.isatty():
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                raise CommandError("the two passwords differ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        password.encode("utf-8")
    except EOFError:
        raise CommandError("no password read") from None
    except UnicodeError:  # bytes that are not UTF-8, read as such or as lone surrogates
        raise CommandError("the password is not valid UTF-8") from None
    if not password:
        raise CommandError("empty password")
    print(hash_password(password))
    return 0
