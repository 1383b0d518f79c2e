"""`gateway config check FILE`: validate a config as `serve` would, and show what it amounts to."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.common import command
from gateway.config import ACCOUNT_AUTH_MODES, APIGEE_TOKEN_URL, SECTIONS, Config, load_config
from gateway.runtime import stub_seed
from gateway.terminal import printable

MASKED = "********"
SECRET_KEYS = frozenset({"users.password_hash", "sidecars.password_hash"})
"""Values shown masked. The config holds no passwords, but a hash still helps a guesser."""

CHECK_HELP = """\
Validate a config file exactly as `gateway serve` would (file, then GATEWAY_SECTION_KEY
environment overrides, password hashes, TLS files, the stub's seed file, then the secrets it
names), and print the effective configuration as TOML with secrets masked. A problem ends as
one line naming the file and key, exit status 2. It neither opens the audit log nor listens.

Example:
  gateway config check /etc/apigee-audit-gateway/config.toml
  GATEWAY_SERVER_PORT=9090 gateway config check config.toml
"""


def register(commands: Any) -> None:
    group = command(commands, "config", None, "Check configuration files.", "Check configuration files.")
    config_commands = group.add_subparsers(title="config commands", required=True, metavar="COMMAND")
    check = command(config_commands, "check", cmd_check, "Validate a config and print it, secrets masked.", CHECK_HELP)
    check.add_argument("file", type=Path, metavar="FILE", help="the TOML config file")


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if config.stub.seed:  # read by `serve` with the embedded stub, and by `gateway stub`
        stub_seed(config)
    write_effective(config, sys.stdout)
    return 0


def write_effective(config: Config, out: TextIO) -> None:
    """The settings in force as TOML (JSON renders every value type used here as valid TOML)."""
    out.write(f"# {printable(config.source)}: valid. Effective configuration, secrets masked.\n")
    for key in config.overridden:
        out.write(f"# {key} is set by the environment (GATEWAY_{key.replace('.', '_').upper()}).\n")
    for note in _resolved_secrets(config):
        out.write(f"# {note}\n")
    for section in SECTIONS:
        out.write(f"\n[{section}]\n")
        _write_table(section, getattr(config, section), out)
    for user in config.users:
        out.write("\n[[users]]\n")
        _write_table("users", user, out)
    for sidecar in config.sidecars:
        out.write("\n[[sidecars]]\n")
        _write_table("sidecars", sidecar, out)


def _write_table(section: str, table: Any, out: TextIO) -> None:
    for field in dataclasses.fields(table):
        value = getattr(table, field.name)
        shown = (
            MASKED if f"{section}.{field.name}" in SECRET_KEYS else list(value) if isinstance(value, tuple) else value
        )
        # JSON escapes C0 controls; printable() the rest (DEL, C1, bidi...), in \\u form TOML reads too.
        out.write(f"{field.name} = {printable(json.dumps(shown, ensure_ascii=False))}\n")


def _resolved_secrets(config: Config) -> list[str]:
    notes = []
    if config.chain_secret is not None:
        notes.append(f"chain key: read, {len(config.chain_secret)} bytes (HMAC-SHA-256 chain)")
    else:
        notes.append("chain key: none (plain SHA-256 chain)")
    upstream = config.upstream
    if upstream.auth in ACCOUNT_AUTH_MODES:
        notes.append(f"service password: read from ${printable(upstream.service_password_env)}")
    if upstream.auth == "oauth2":
        where = upstream.oauth_token_url or (
            "the embedded stub's /oauth/token" if config.uses_stub else APIGEE_TOKEN_URL
        )
        secret = (
            f"secret read from ${upstream.oauth_client_secret_env}"
            if upstream.oauth_client_secret_env
            else "its public secret"
        )
        notes.append(
            printable(
                f'OAuth 2.0 login: {upstream.service_user} at {where}, client "{upstream.oauth_client_id}" ({secret})'
            )
        )
    if config.ship.url:
        where = f"${config.ship.password_env}" if config.ship.password_env else config.ship.password_file
        notes.append(f"collector password (ship): read from {where}")
    return notes
