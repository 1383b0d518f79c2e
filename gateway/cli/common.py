"""What every subcommand shares: one-line errors, option definitions, argument converters."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from gateway.audit.filters import FILTERS, FilterError, selection, text
from gateway.audit.query import AuditFilter, quoted
from gateway.config import LOG_LEVELS, Config, Use, key_from_text, load_config
from gateway.logs import configure_logging
from gateway.terminal import printable

EXIT_ERROR = 2


class CommandError(Exception):
    """A failure to report as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, with the values its errors quote escaped like every other error line."""

    def error(self, message: str) -> NoReturn:
        super().error(printable(message))


Handler = Callable[[argparse.Namespace], int]


def command(
    commands: Any, name: str, handler: Handler | None, summary: str, description: str
) -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config file (default: built-in demo settings)"
    )


def database_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config", type=Path, metavar="FILE", help="use the audit database (and chain key) of this config"
    )
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
    """The filters of `audit query`, `audit export` and `audit stats` (``gateway.audit.filters``)."""
    for item in FILTERS:
        parser.add_argument(item.option, dest=item.name, type=arg(item.parse), metavar=item.metavar, help=item.help)


def selection_of(args: argparse.Namespace, *, limit: int | None = None) -> AuditFilter:
    try:
        return selection(
            ((item, getattr(args, item.name)) for item in FILTERS), named=lambda item: item.option, limit=limit
        )
    except FilterError as exc:
        raise CommandError(str(exc)) from None


def overriding(section: str, key: str) -> Callable[[str], Any]:
    """The type of an option that overrides the config key ``section.key``: the key's own check
    (``gateway.config.key_from_text``), so the option takes exactly what the file would."""

    def parse(text: str) -> Any:
        try:
            return key_from_text(section, key, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{section}.{key}: {exc}") from None

    return parse


@dataclasses.dataclass(frozen=True)
class Override:
    """An option that overrides one config key: declared once, added to a parser by
    ``override_options`` and applied by ``overridden``."""

    flag: str
    section: str
    key: str
    help: str
    metavar: str | None = None


LISTEN = (
    Override("--host", "server", "host", "address to listen on"),
    Override("--port", "server", "port", "port to listen on (0: any free port)"),
)
"""The options of every command that listens: `serve` and `collect`."""


def override_options(parser: argparse.ArgumentParser, overrides: Collection[Override]) -> None:
    for item in overrides:
        parser.add_argument(
            item.flag,
            dest=f"{item.section}_{item.key}",
            type=overriding(item.section, item.key),
            metavar=item.metavar,
            help=f"{item.help} (overrides [{item.section}] {item.key})",
        )


def overridden(section: Any, args: argparse.Namespace, overrides: Collection[Override]) -> Any:
    """The config section ``section`` with the values its options were given on the command line."""
    given = {item.key: getattr(args, f"{item.section}_{item.key}") for item in overrides}
    return dataclasses.replace(section, **{key: value for key, value in given.items() if value is not None})


def log_level_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="least severe level logged (overrides [logging] level)")


def listening_config(args: argparse.Namespace) -> Config:
    """The config of a command that listens, with its --host and --port; configures the log."""
    config = load_config(args.config)
    config = dataclasses.replace(config, server=overridden(config.server, args, LISTEN))
    configure_logging(config.logging.format, args.log_level or config.logging.level)
    return config


async def listen(runner: web.BaseRunner, config: Config, *, tls: bool) -> str:
    """Start listening where ``[server]`` says; the base URL to print, or one line why not."""
    try:
        await web.TCPSite(runner, config.server.host, config.server.port).start()  # TLS: the runner's
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror or exc}"
        ) from None
    host, port = runner.addresses[0][:2]
    return f"{'https' if tls else 'http'}://{host}:{port}"


def user_name(value: str) -> str:
    """A user name for Basic credentials (RFC 7617: no ':')."""
    if not text(value) or ":" in value:
        raise ValueError(f"{quoted(value)} is not a user name (non-empty, without ':')")
    return value


def say(line: str) -> None:
    """Print one line for people: record values in it are escaped (``gateway.terminal``)."""
    print(printable(line))


def run_loop(coroutine: Coroutine[Any, Any, int], *, tls_listener: bool = False) -> int:
    """Run the gateway's event loop: uvloop when installed (the `speed` extra), except under a
    listener that speaks TLS. There uvloop starts reading a new connection after
    ``connection_made`` even when the protocol paused it, so the client's hello could reach the
    HTTP parser instead of the handshake that ``gateway.listener`` starts itself, and the
    connection hangs until the head deadline; asyncio's loop keeps the pause."""
    if not tls_listener:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            status: int = uvloop.run(coroutine)  # typed only where the optional extra is installed
            return status
    return asyncio.run(coroutine)
