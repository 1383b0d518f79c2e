"""The README is held to the code: quick start, commands, config keys, outcomes and error codes."""

from __future__ import annotations

import argparse
import re

from helpers import ROOT

from gateway import errors
from gateway.audit.record import FIELDS, Outcome
from gateway.cli import build_parser
from gateway.config import reference_table

README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_quick_start_test_command() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    serve_command, test_command = (c.strip() for c in re.findall(r"```sh\n(.*?)\n```", quick_start, re.DOTALL)[:2])
    assert serve_command.endswith("gateway serve")
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_cli_command_is_documented() -> None:
    commands = []
    parser = build_parser()
    assert parser._subparsers is not None
    action = parser._subparsers._group_actions[0]
    assert isinstance(action, argparse._SubParsersAction)
    for name, sub in action.choices.items():
        nested = sub._subparsers
        if nested is None:
            commands.append(f"gateway {name}")
        else:
            commands += [f"gateway {name} {child}" for child in nested._group_actions[0].choices]
    assert {
        "gateway serve",
        "gateway stub",
        "gateway audit query",
        "gateway audit show",
        "gateway hash-password",
    } <= set(commands)
    for command in commands:
        assert f"| `{command}" in README, f"{command} is missing from the README's command table"


def test_config_table_is_rendered_from_the_declarations() -> None:
    """README's key table is exactly reference_table(); paste its output there when keys change."""
    assert reference_table() in README


def test_every_record_field_and_outcome_is_documented() -> None:
    for field in FIELDS:
        assert f"| `{field}` |" in README, field
    for outcome in Outcome:
        assert f"| `{outcome.value}` |" in README, outcome


def test_every_gateway_error_is_documented() -> None:
    for error in errors.ALL:
        assert f"| {error.status} | `{error.code}` |" in README, error
