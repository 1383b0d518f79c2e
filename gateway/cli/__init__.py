"""The ``gateway`` command: each subcommand parses its arguments, calls the library, prints.

Every failure the user can fix (config, database, port, seed file) ends as one line on stderr,
``gateway: error: ...``, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.audit.store import AuditStoreError
from gateway.cli import audit, config_check, fleet, server
from gateway.cli.common import EXIT_ERROR, CommandError
from gateway.config import ConfigError
from gateway.logs import flush_logs
from gateway.stub import SeedError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    parser = argparse.ArgumentParser(prog="gateway", description="Audited sidecar for Apigee Edge access-token deletions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    server.register(commands)
    audit.register(commands)
    fleet.register(commands)
    config_check.register(commands)
    return parser
