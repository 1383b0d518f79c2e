"""The ``gateway`` command: each subcommand parses its arguments, calls the library, prints.

Every failure the user can fix (config, database, port, seed file, a bad value) ends as one
line on stderr, ``gateway: error: ...``, and exit status 2; never a traceback. A reader that goes
away (``| head``) ends the command quietly, with the status of a SIGPIPE.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.audit.store import AuditStoreError
from gateway.cli import audit, config_check, fleet, server
from gateway.cli.common import EXIT_ERROR, CommandError, Parser
from gateway.config import ConfigError
from gateway.logs import flush_logs
from gateway.stub import SeedError
from gateway.terminal import printable

EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a command killed by SIGPIPE reports (``gateway audit export | head -1``)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = int(args.command(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return status
    except BrokenPipeError:
        _discard_standard_output()
        return EXIT_BROKEN_PIPE
    except (CommandError, ConfigError, AuditStoreError, SeedError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    except OSError as exc:  # the output or a file failing under the command: a full disk, a removed folder
        _error(f"{exc.filename + ': ' if isinstance(exc.filename, str) else ''}{exc.strerror or exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        flush_logs()


def _error(message: str) -> None:
    flush_logs()
    print(f"gateway: error: {printable(message)}", file=sys.stderr)


def _discard_standard_output() -> None:
    """Point standard output at /dev/null, so that Python's own flush at exit, with output
    still buffered for the closed pipe, does not fail a second time (the Python docs' way)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture): nothing will flush it
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gateway", description="Audited sidecar for Apigee Edge access-token deletions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    server.register(commands)
    audit.register(commands)
    fleet.register(commands)
    config_check.register(commands)
    return parser
