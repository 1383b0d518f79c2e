"""What every subcommand shares: one-line errors, option definitions, argument converters."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import AuditFilter, parse_outcome, parse_sha256, parse_time, quoted, whole_number
from gateway.config import Config, Use, load_config
from gateway.terminal import printable

EXIT_ERROR = 2


class CommandError(Exception):
    """A failure to report as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, with the values its errors quote escaped like every other error line."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(message))


Handler = Callable[[argparse.Namespace], int]


def command(commands: Any, name: str, handler: Handler | None, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose description (with its Example block) is its help text."""
    parser: Parser = commands.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(command=handler)
    return parser


def arg(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Let argparse print our own message for a bad value, not a generic one."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (default: built-in demo settings)")


def database_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, metavar="FILE", help="use the audit database (and chain key) of this config")
    source.add_argument("--db", type=Path, metavar="FILE", help="use this audit database file")


def config_of(args: argparse.Namespace, *, uses: Collection[Use] = ()) -> Config:
    """The config for a command with database options; --db replaces its audit database.

    Only what the command ``uses`` is read: reading the log needs no secret, verifying it the
    chain key.
    """
    if getattr(args, "db", None) is not None:
        return load_config(None, uses=uses).with_database(args.db)
    return load_config(args.config, uses=uses)


def filter_options(parser: argparse.ArgumentParser) -> None:
    """The filters of `audit query`, `audit export` and `audit stats`, declared once."""
    parser.add_argument("--org", type=arg(text), help="only this organisation")
    parser.add_argument("--token", type=arg(text), metavar="RAW_TOKEN",
                        help="only this access token (matched by its SHA-256 fingerprint)")
    parser.add_argument("--token-sha256", type=arg(parse_sha256), metavar="HEX", help="only the token with this SHA-256 fingerprint")
    parser.add_argument("--actor", type=arg(text), metavar="USER", help="only calls made by this gateway user")
    parser.add_argument("--app", type=arg(text), help="only tokens of this Apigee app")
    parser.add_argument("--client-id", type=arg(text), metavar="ID", help="only tokens of this client id (consumer key)")
    parser.add_argument("--outcome", type=arg(parse_outcome), help="only this outcome (deleted, not_found, pending, ...)")
    parser.add_argument("--since", type=arg(parse_time), metavar="T", help="from this time: ISO 8601 or an age (15m, 24h, 7d)")
    parser.add_argument("--until", type=arg(parse_time), metavar="T", help="before this time: ISO 8601 or an age")


def selection_of(args: argparse.Namespace, *, limit: int | None = None) -> AuditFilter:
    if args.token and args.token_sha256:
        raise CommandError("give --token or --token-sha256, not both")
    return AuditFilter(
        org=args.org,
        token_sha256=fingerprint(args.token) if args.token else args.token_sha256,
        actor=args.actor,
        app=args.app,
        client_id=args.client_id,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
        limit=limit,
    )


def count(value: str) -> int:
    return whole_number(value)


def port(value: str) -> int:
    try:
        return whole_number(value, maximum=65535)
    except ValueError:
        raise ValueError(f"{quoted(value)} is not a port number (0-65535)") from None


def text(value: str) -> str:
    """Free text from the command line. Bytes that are not UTF-8 reach Python as lone
    surrogates, which no UTF-8 store, header or log can take: refused here, by name."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{quoted(value)} is not valid UTF-8") from None
    return value


def user_name(value: str) -> str:
    """A user name for Basic credentials (RFC 7617: no ':')."""
    if not text(value) or ":" in value:
        raise ValueError(f"{quoted(value)} is not a user name (non-empty, without ':')")
    return value


def say(line: str) -> None:
    """Print one line for people: record values in it are escaped (``gateway.terminal``)."""
    print(printable(line))


def run_loop(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run the gateway's event loop: uvloop when installed (the `speed` extra)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    status: int = uvloop.run(coroutine)  # typed only where the optional extra is installed
    return status
