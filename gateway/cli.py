"""The ``gateway`` command: each subcommand parses its arguments, calls the library, prints.

Every failure the user can fix (config, database, port, seed file) ends as one line on stderr,
``gateway: error: ...``, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.app import CONFIG, STUB_SEED, UPSTREAM_URL, build_app, stub_seed
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import WRITERS
from gateway.audit.query import DEFAULT_LIMIT, AuditFilter, positive_int, parse_outcome, parse_time
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStoreError
from gateway.config import DEFAULTS_SOURCE, Config, ConfigError, load_config
from gateway.logs import configure_logging, flush_logs, get_logger
from gateway.passwords import hash_password
from gateway.stub import Seed, SeedError, load_seed
from gateway.stub.app import serve_stub
from gateway.stub.seed import DEMO_ORG, DEMO_PASSWORD, DEMO_USER, SAMPLE_TOKEN

EXIT_ERROR = 2


class CommandError(Exception):
    """A failure to report as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except (CommandError, ConfigError, AuditStoreError, SeedError) as exc:
        flush_logs()
        print(f"gateway: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        flush_logs()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Audited sidecar for Apigee Edge access-token deletions.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = _command(commands, "serve", cmd_serve, "Run the gateway.", SERVE_HELP)
    _config_option(serve)
    serve.add_argument("--host", help="address to listen on (overrides [server] host)")
    serve.add_argument("--port", type=_arg(_port), help="port to listen on (overrides [server] port; 0: any free port)")

    stub = _command(commands, "stub", cmd_stub, "Run the local Apigee stub alone.", STUB_HELP)
    _config_option(stub)
    stub.add_argument("--host", help="address to listen on (overrides [stub] host)")
    stub.add_argument("--port", type=_arg(_port), help="port to listen on (overrides [stub] port; 0: any free port)")
    stub.add_argument("--seed", type=Path, metavar="FILE.json", help="users and tokens to serve (default: the demo data)")
    stub.add_argument(
        "--generate", type=_arg(_count), metavar="N",
        help="also hold N load-test tokens load0 ... load<N-1> in every organisation (overrides [stub] generated_tokens)",
    )

    audit = _command(commands, "audit", None, "Read the audit trail.", "Read the audit trail.")
    audit_commands = audit.add_subparsers(title="audit commands", required=True, metavar="COMMAND")

    query = _command(audit_commands, "query", cmd_audit_query, "Find audit records.", QUERY_HELP)
    _database_options(query)
    query.add_argument("--org", help="only this organisation")
    query.add_argument("--token", metavar="RAW_TOKEN", help="only this access token (matched by its SHA-256 fingerprint)")
    query.add_argument("--actor", metavar="USER", help="only calls made by this gateway user")
    query.add_argument("--app", help="only tokens of this Apigee app")
    query.add_argument("--client-id", metavar="ID", help="only tokens of this client id (consumer key)")
    query.add_argument("--outcome", type=_arg(parse_outcome), help="only this outcome (deleted, not_found, pending, ...)")
    query.add_argument("--since", type=_arg(parse_time), metavar="T", help="from this time: ISO 8601 or an age (15m, 24h, 7d)")
    query.add_argument("--until", type=_arg(parse_time), metavar="T", help="before this time: ISO 8601 or an age")
    query.add_argument("--limit", type=_arg(positive_int), default=DEFAULT_LIMIT, metavar="N", help=f"at most N records, newest first (default {DEFAULT_LIMIT})")
    query.add_argument("--format", choices=list(WRITERS), default="table", help="output format (default: table)")

    show = _command(audit_commands, "show", cmd_audit_show, "Print one audit record, whole.", SHOW_HELP)
    _database_options(show)
    show.add_argument("id", type=_arg(positive_int), metavar="ID", help="the record's id (first column of `audit query`)")

    _command(commands, "hash-password", cmd_hash_password, "Print a password hash for the config.", HASH_HELP)
    return parser


SERVE_HELP = """\
Run the gateway. With no upstream configured it starts the local Apigee stub in-process,
seeded with demo data, and prints a ready-to-paste curl command.

Example:
  gateway serve
  gateway serve --config /etc/apigee-audit-gateway/config.toml --port 9090
"""
STUB_HELP = """\
Run the local Apigee stub alone: the token endpoints of the Apigee Edge management API,
in memory, answering exactly as Apigee's documentation shows.

Example:
  gateway stub --port 8081 --seed tokens.json
"""
QUERY_HELP = """\
Find audit records, newest first. Filters combine (AND).

Example:
  gateway audit query --token taFM3LHUTQAFhL0dIFg81XhRc7vC
  gateway audit query --actor alice --since 7d --format csv
"""
SHOW_HELP = """\
Print one audit record with every field, as JSON.

Example:
  gateway audit show 42
"""
HASH_HELP = """\
Read a password (prompted twice on a terminal, or one line from standard input) and print
its hash for a [[users]] password_hash entry. The password itself never goes in the config.

Example:
  gateway hash-password
  printf '%s\\n' "$PASSWORD" | gateway hash-password
"""


def _command(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int] | None, summary: str, description: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(command=handler)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (default: built-in demo settings)")


def _database_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, metavar="FILE", help="read the audit database named in this config")
    source.add_argument("--db", type=Path, metavar="FILE", help="read this audit database file")


def _arg(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Let argparse print our own message for a bad value, not a generic one."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)  # type: ignore[no-any-return]


# serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    server = dataclasses.replace(
        config.server,
        host=args.host if args.host is not None else config.server.host,
        port=args.port if args.port is not None else config.server.port,
    )
    config = dataclasses.replace(config, server=server)
    configure_logging(config.logging.format, config.logging.level)
    return _run(_serve(config))


async def _serve(config: Config) -> int:
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}") from None
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        _print_banner(app, base)
        get_logger().info("started", listen=base, upstream=app[UPSTREAM_URL], audit_database=str(config.database_path))
        await _until_signalled()
        get_logger().info("stopping")
    finally:
        await runner.cleanup()
    return 0


def _print_banner(app: web.Application, base: str) -> None:
    """What a newcomer needs, ending with the line that says the gateway is ready."""
    config = app[CONFIG]
    if config.uses_stub:
        upstream = f"embedded Apigee stub at {app[UPSTREAM_URL]}"
    else:
        upstream = f"{app[UPSTREAM_URL]} (auth: {config.upstream.auth})"
    lines = [f"apigee-audit-gateway {__version__}", f"  upstream:  {upstream}", f"  audit log: {config.database_path}"]
    seed = app.get(STUB_SEED)
    if seed is not None and not config.users and _holds_sample(seed):
        query = "gateway audit query" + ("" if config.source == DEFAULTS_SOURCE else f" --config {config.source}")
        lines += [
            f"Demo mode: user {DEMO_USER} / {DEMO_PASSWORD}, organisation {DEMO_ORG}. Try:",
            f"  curl -u {DEMO_USER}:{DEMO_PASSWORD} -X DELETE {base}/v1/o/{DEMO_ORG}/oauth2/accesstokens/{SAMPLE_TOKEN['token']}",
            f"  {query}",
        ]
    lines.append(f"Listening on {base} (Ctrl-C to stop)")
    print("\n".join(lines), flush=True)


def _holds_sample(seed: Seed) -> bool:
    return any(token.get("token") == SAMPLE_TOKEN["token"] for token in seed.orgs.get(DEMO_ORG, []))


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


# stub ----------------------------------------------------------------------------------------


def cmd_stub(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    seed = load_seed(args.seed) if args.seed else stub_seed(config)
    generated = args.generate if args.generate is not None else config.stub.generated_tokens
    seed = dataclasses.replace(seed, generated=generated)
    host = args.host if args.host is not None else config.stub.host
    port = args.port if args.port is not None else config.stub.port
    configure_logging(config.logging.format, config.logging.level)
    return _run(_stub(seed, host, port))


async def _stub(seed: Seed, host: str, port: int) -> int:
    try:
        async with serve_stub(seed, host, port) as url:
            tokens = sum(len(tokens) for tokens in seed.orgs.values())
            generated = f" + {seed.generated} load-test tokens per organisation" if seed.generated else ""
            print(f"Apigee stub listening on {url} ({len(seed.users)} users, {tokens} tokens{generated})", flush=True)
            await _until_signalled()
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


# audit ---------------------------------------------------------------------------------------


def _database(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    return load_config(args.config).database_path


def cmd_audit_query(args: argparse.Namespace) -> int:
    selection = AuditFilter(
        org=args.org,
        token_sha256=fingerprint(args.token) if args.token else None,
        actor=args.actor,
        app=args.app,
        client_id=args.client_id,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    records = asyncio.run(_read(_database(args), lambda store: store.query(selection)))
    WRITERS[args.format](records, sys.stdout)
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    path = _database(args)
    record = asyncio.run(_read(path, lambda store: store.get(args.id)))
    if record is None:
        raise CommandError(f"no record {args.id} in {path}")
    print(json.dumps(record.to_json(), indent=2, ensure_ascii=False))
    return 0


async def _read(path: Path, action: Callable[[SQLiteAuditStore], Coroutine[Any, Any, Any]]) -> Any:
    store = await SQLiteAuditStore.open(path, create=False)
    try:
        return await action(store)
    finally:
        await store.close()


# hash-password -------------------------------------------------------------------------------


def cmd_hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CommandError("empty password")
    print(hash_password(password))
    return 0
