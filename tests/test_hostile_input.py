"""Whatever value reaches a command or an audit route, the answer is a clear refusal or a
result: never a traceback, never a 500.

Numbers, times and ids are parsed once each (``gateway.audit.query``), as plain ASCII within
SQLite's 64-bit integers and the years a record can carry. The property tests drive every
option of every command (read from the argument parser itself, so a new option is covered the
day it is added) and every query parameter of the HTTP API with hostile values.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import PASSWORDS, SAMPLE_PATH, basic
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from threaded_gateway import Rig

from gateway.audit.chain import ChainKey
from gateway.audit.fingerprint import fingerprint
from gateway.audit.query import parse_time
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.audit_api import PARAMETERS
from gateway.cli import EXIT_BROKEN_PIPE, build_parser, main
from gateway.terminal import UNSAFE_CATEGORIES

AUDITOR = {"Authorization": "Basic " + base64.b64encode(f"auditor:{PASSWORDS['auditor']}".encode()).decode()}
BIG_SNAPSHOT = '{"app":"app1","createdAt":' + str(2**70) + ',"token":"[redacted …c7vC]"}'
"""What the gateway stores when Apigee sends an integer over 64 bits (orjson refuses them)."""


def write_log(path: Path, records: int = 3) -> Path:
    prepare(path, key=ChainKey(), writable=True)
    appender = SQLiteAppender(path, ChainKey())
    made = [
        AuditRecord(
            f"r{i}",
            f"2026-01-0{1 + i % 9}T00:00:00.000Z",
            "alice",
            "10.0.0.1",
            "DELETE",
            "myorg",
            fingerprint(f"token{i:020d}"),
            f"{i:04d}",
            "deleted",
            200,
            None,
            1.5,
            "app1",
            "client1",
            BIG_SNAPSHOT if i == 1 else '{"app":"app1"}',
        )
        for i in range(1, records + 1)
    ]
    for start in range(0, records, 1000):
        appender.append(made[start : start + 1000])
    appender.close()
    return path


def run(*args: str) -> tuple[int, str, str]:
    """`gateway ARGS` in this process: exit status (argparse's own too), standard output and error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(args))
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 2
    return status, out.getvalue(), err.getvalue()


def one_error_line(status: int, err: str) -> bool:
    return status == 2 and err.startswith("gateway: error: ") and err.count("\n") == 1


# What the tester found, one by one ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "99999999999999999999"), "argument ID: '99999999999999999999' is not a positive whole number"),
        (("show", "²"), "argument ID: '²' is not a positive whole number"),
        (("show", "٣"), "argument ID: '٣' is not a positive whole number"),
        (
            ("query", "--limit", "9223372036854775808"),
            "argument --limit: '9223372036854775808' is not a positive whole number",
        ),
        (
            ("prune", "--before", "99999999999999d"),
            "argument --before: '99999999999999d': an age has at most 12 digits",
        ),
        (("query", "--since", "٣d"), "argument --since: '٣d' is neither an ISO 8601 time"),
        (
            ("query", "--token-sha256", "xyz"),
            "argument --token-sha256: 'xyz' is not a SHA-256 fingerprint (64 hex digits)",
        ),
        (("query", "--org", "\udcff"), "argument --org: '\\udcff' is not valid UTF-8"),
        (("reconcile", "--user", "a:b"), "argument --user: 'a:b' is not a user name (non-empty, without ':')"),
        (
            ("reconcile", "--upstream", "https://api.enterprise.apigee.com/v1"),
            "argument --upstream: must be the base URL without a path",
        ),
    ],
)
def test_bad_values_are_refused_with_their_reason(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    database = write_log(tmp_path / "audit.db")
    status, _, err = run("audit", *args, "--db", str(database))
    assert 2 == status
    assert f"gateway audit {args[0]}: error: {message}" in err.splitlines()[-1]
    assert "Traceback" not in err


def test_times_out_of_range_select_what_they_mean(tmp_path: Path) -> None:
    """Before 1970 is 1970 (no record is older); the years before 1000 used to sort after 2026."""
    database = write_log(tmp_path / "audit.db")
    for since in ("0900-01-01", "0001-01-01T00:00:00+01:00", "999999999999d", "1969-12-31"):
        status, out, _ = run("audit", "query", "--db", str(database), "--since", since, "--format", "json")
        assert (0, [3, 2, 1]) == (status, [record["id"] for record in json.loads(out)]), since
    status, out, _ = run(
        "audit", "query", "--db", str(database), "--until", "9999-12-31T23:59:59-23:59", "--format", "json"
    )
    assert (0, 3) == (status, len(json.loads(out)))
    assert "1970-01-01T00:00:00.000Z" == parse_time("0900-01-01") == parse_time("999999999999w", now=1e9)
    assert "9999-12-31T23:59:59.999Z" == parse_time("9999-12-31T23:59:59.999-10:00")
    status, out, _ = run("audit", "prune", "--db", str(database), "--before", "999999999999d", "--operator", "ops")
    assert (0, "nothing to prune: no record before 1970-01-01T00:00:00.000Z\n") == (status, out)


def test_a_snapshot_with_an_integer_over_64_bits_is_shown_exactly(tmp_path: Path) -> None:
    database = write_log(tmp_path / "audit.db")
    status, out, err = run("audit", "show", "1", "--db", str(database))
    assert (0, "") == (status, err)
    assert 2**70 == json.loads(out)["snapshot"]["createdAt"]
    status, out, err = run("audit", "query", "--db", str(database), "--format", "json")
    assert (0, 2**70) == (status, json.loads(out)[-1]["snapshot"]["createdAt"])


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_bytes(b"[server]\nhost = '\xff'\n")
    assert (2, "", f"gateway: error: {config}: invalid TOML: not UTF-8 (byte 17)\n") == run(
        "config", "check", str(config)
    )


def test_environment_values_that_are_not_utf8_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[upstream]\nauth = 'service'\nservice_user = 'svc'\nservice_password_env = 'SVC_PW'\n")
    monkeypatch.setenv("SVC_PW", "pass\udcffword")  # how Python reads bytes that are not UTF-8
    assert (
        2,
        "",
        f"gateway: error: {config}: upstream.service_password_env: environment variable SVC_PW is not valid UTF-8\n",
    ) == run("config", "check", str(config))
    monkeypatch.setenv("SVC_PW", "fine")
    monkeypatch.setenv("GATEWAY_SERVER_HOST", "\udcff")
    assert (
        2,
        "",
        f"gateway: error: {config}: server.host: environment variable GATEWAY_SERVER_HOST is not valid UTF-8\n",
    ) == run("config", "check", str(config))


def test_a_service_user_with_a_colon_is_refused_at_load(tmp_path: Path) -> None:
    """Basic credentials cannot carry it: serve used to die with aiohttp's ValueError."""
    config = tmp_path / "gw.toml"
    config.write_text("[upstream]\nauth = 'service'\nservice_user = 'a:b'\nservice_password_env = 'SVC_PW'\n")
    assert (
        2,
        "",
        f"gateway: error: {config}: upstream.service_user: expected a non-empty user name without ':', got \"a:b\"\n",
    ) == run("config", "check", str(config))


@pytest.mark.parametrize(
    "command",
    [
        ("audit", "export"),
        ("audit", "query"),
        ("audit", "query", "--format", "json"),
        ("audit", "stats"),
        ("audit", "head"),
        ("audit", "verify", "--no-chain-key"),
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`gateway audit export | head -1`: the reader goes away; no BrokenPipeError traceback."""
    database = write_log(tmp_path / "audit.db", records=50)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *command[:2], "--db", str(database), *command[2:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes anything: its first write meets a closed pipe
    err = process.stderr.read()
    assert (EXIT_BROKEN_PIPE, b"") == (process.wait(timeout=60), err)


def test_the_shell_sees_a_closed_pipe_as_usual(tmp_path: Path) -> None:
    database = write_log(tmp_path / "audit.db", records=2000)
    result = subprocess.run(
        f"{sys.executable} -m gateway audit export --db {database} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert (0, "") == (result.returncode, result.stderr)
    assert 1 == json.loads(result.stdout)["id"]
    assert 128 + signal.SIGPIPE == EXIT_BROKEN_PIPE


def test_reconcile_without_a_terminal_or_password_says_what_to_set(tmp_path: Path) -> None:
    database = write_log(tmp_path / "audit.db")
    environment = {name: value for name, value in os.environ.items() if name != "GATEWAY_UPSTREAM_PASSWORD"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "reconcile", "--db", str(database), "--user", "ops"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=tmp_path,
    )
    assert (
        2,
        "",
        "gateway: error: --user ops needs its Apigee password in $GATEWAY_UPSTREAM_PASSWORD (no terminal to ask it on)\n",
    ) == (result.returncode, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("stdin", "message"), [(b"\xff\xfe\n", "the password is not valid UTF-8"), (b"", "empty password")]
)
def test_hash_password_refuses_what_it_cannot_hash(tmp_path: Path, stdin: bytes, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-password"], input=stdin, capture_output=True, timeout=60, cwd=tmp_path
    )
    assert (2, f"gateway: error: {message}\n".encode()) == (result.returncode, result.stderr)


# Every option of every command ---------------------------------------------------------------


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words, parser) of every runnable command, read from the parser itself."""
    if parser._subparsers is None:
        yield path, parser
        return
    for action in parser._subparsers._group_actions:
        assert isinstance(action, argparse._SubParsersAction)
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))


COMMANDS = dict(commands(build_parser()))
SERVING = {("serve",), ("stub",)}
"""Run until signalled: their arguments are parsed, not run."""
HOSTILE = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "2",
    "²",
    "٣",
    "१२",
    "1e999",
    "nan",
    "inf",
    "0x10",
    "1_000",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999",
    "9" * 5000,
    "99999999999999d",
    "999999999999d",
    "0s",
    "-5m",
    "0900-01-01",
    "9999-12-31T23:59:59-23:59",
    "2026-13-45",
    "2026-01-01T00:00:00Z",
    "7d",
    "\x1b[8m",
    "a\r\nb",
    "\u202e",
    "\udcff",
    "a:b",
    "=cmd|' /C calc'!A0",
    "http://127.0.0.1:1",
    "http://x/v1",
    "https://h:99999",
    "stub",
    "ftp://x",
    "deleted",
    "pending",
    "table",
    "actor",
    "jsonl",
    "0" * 64,
    "G" * 64,
    "%00",
    "..",
    "'",
    '"',
]
TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=30)
"""argv never holds NUL (exec cannot pass it); every other character can arrive."""


def value_for(action: argparse.Action, files: dict[str, Path]) -> st.SearchStrategy[str]:
    if action.dest in ("db", "config", "file", "tokens_file", "seed"):
        return st.sampled_from([str(path) for path in files.values()])
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), st.sampled_from(HOSTILE), TEXT)
    return st.one_of(st.sampled_from(HOSTILE), TEXT)


@st.composite
def invocations(draw: st.DrawFn, files: dict[str, Path]) -> list[str]:
    words, parser = draw(st.sampled_from(sorted(COMMANDS.items())))
    argv = list(words)
    chosen_source = False
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if not action.option_strings:  # a positional: always given
            argv.append(draw(value_for(action, files)))
            continue
        if action.dest in ("db", "config") and chosen_source:  # mutually exclusive
            continue
        if not action.required and not draw(st.booleans()):
            continue
        chosen_source |= action.dest in ("db", "config")
        if action.nargs == 0:
            argv.append(action.option_strings[0])
        else:
            argv.append(
                f"{action.option_strings[0]}={draw(value_for(action, files))}"
            )  # '=': a value may start with '-'
    return argv


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile-cli")
    (folder / "garbage").write_bytes(b"\xff\x00not a database or a config\n")
    (folder / "config.toml").write_text(f"[audit]\ndatabase = '{folder / 'audit.db'}'\n")
    return {
        "log": write_log(folder / "audit.db"),
        "missing": folder / "missing.db",
        "folder": folder,
        "garbage": folder / "garbage",
        "config": folder / "config.toml",
    }


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_every_command_answers_hostile_values_with_a_result_or_one_line(
    files: dict[str, Path], data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = data.draw(invocations(files))
    monkeypatch.delenv("GATEWAY_UPSTREAM_PASSWORD", raising=False)
    if tuple(argv[:1]) in SERVING:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit:
            assert 2 == exit.code
        return
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.draw(st.binary(max_size=20)))))
    status, out, err = run(*argv)  # an exception other than argparse's exit fails the test with its traceback
    assert status in (0, 1, 2), (argv, status, err)
    assert "Traceback" not in err
    if status == 2 and not err.startswith("usage:"):
        assert one_error_line(status, err), (argv, err)
    # Everything for people is escaped; `export` writes data (exact, for a file: not a terminal here).
    shown = (err if argv[:2] == ["audit", "export"] else out + err).replace("\r\n", "").replace("\n", "")
    assert not any(unicodedata.category(c) in UNSAFE_CATEGORIES for c in shown), (argv, out, err)


# Every parameter of the audit API ------------------------------------------------------------


def fetch(rig: Rig, target: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(*rig.gateway, timeout=30)
    try:
        connection.request(method, target, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def recorded(rig: Rig) -> Rig:
    """The rig's log with a deletion in it, so queries reach records."""
    connection = http.client.HTTPConnection(*rig.gateway, timeout=30)
    connection.request("DELETE", SAMPLE_PATH, headers=basic("myname"))
    assert connection.getresponse().status == 200
    connection.close()
    return rig


MAX_REQUEST_LINE = 8190
"""aiohttp's bound on a request line (docs/operations.md, Failure behaviour)."""
NAMES = st.one_of(st.sampled_from(sorted(PARAMETERS)), st.sampled_from(["id", "", "limit[]", "Org"]))
VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    TEXT,
    st.just(base64.urlsafe_b64encode(f"x|{2**63}".encode()).decode()),
    st.just(base64.urlsafe_b64encode(b"2026-01-01T00:00:00.000Z|\xff").decode()),
)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUES, others=st.lists(st.tuples(NAMES, VALUES), max_size=2))
def test_every_audit_parameter_answers_hostile_values_with_200_or_an_apigee_error(
    recorded: Rig, name: str, value: str, others: list[tuple[str, str]]
) -> None:
    query = [(name, value), *others]
    target = "/audit/events?" + "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in query if _encodable(value)
    )
    status, content_type, body = fetch(recorded, target, AUDITOR)
    assert status in (200, 400, 403), (target, status, body)
    if len(target) > MAX_REQUEST_LINE:
        return  # refused by aiohttp's parser (400, plain text) before the gateway's code runs
    assert content_type.startswith("application/json")
    answer = json.loads(body)
    assert "events" in answer if status == 200 else set(answer) == {"code", "message", "contexts"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record_id=VALUES)
def test_every_record_id_answers_with_the_record_or_an_apigee_error(recorded: Rig, record_id: str) -> None:
    assume(_encodable(record_id) and record_id not in ("", ".", ".."))
    target = "/audit/events/" + quote(record_id, safe="")
    status, content_type, body = fetch(recorded, target, AUDITOR)
    assert status in (200, 400, 404), (record_id, status, body)
    if len(target) > MAX_REQUEST_LINE:
        return
    assert content_type.startswith("application/json")
    assert status == 200 or set(json.loads(body)) == {"code", "message", "contexts"}


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/audit/events/%C2%B2", 400),
        ("/audit/events/99999999999999999999", 400),
        ("/audit/events/9223372036854775807", 404),
        ("/audit/events?since=99999999999999d", 400),
        ("/audit/events?since=999999999999d", 200),
        ("/audit/events?since=0900-01-01", 200),
        ("/audit/events?limit=%C2%B2", 400),
        ("/audit/events?cursor=" + base64.urlsafe_b64encode(f"x|{2**63}".encode()).decode(), 400),
        ("/audit/events?token_sha256=%EF%BC%A1" + "a" * 63, 400),
        ("/audit/events/%0A%7B", 404),
        ("/audit/events/%0A", 400),
        ("/anywhere%0Aelse", 404),
    ],
)
def test_what_the_tester_sent_gets_an_apigee_error_not_a_500(recorded: Rig, target: str, status: int) -> None:
    """A decoded line break used to miss every route, for aiohttp's own plain-text 404."""
    answer_status, content_type, body = fetch(recorded, target, AUDITOR)
    assert (status, "application/json") == (answer_status, content_type.split(";")[0])
    if status == 400:
        assert "gateway.bad_request" == json.loads(body)["code"]
    elif "since" in target:
        assert 1 <= len(json.loads(body)["events"])


def test_a_line_break_in_a_token_path_is_refused_in_apigee_shape(recorded: Rig) -> None:
    status, content_type, body = fetch(recorded, "/v1/o/myorg/oauth2/accesstokens/a%0Ab", basic("myname"), "DELETE")
    assert (400, "application/json", "gateway.bad_request") == (
        status,
        content_type.split(";")[0],
        json.loads(body)["code"],
    )


def _encodable(value: str) -> bool:
    return all(unicodedata.category(c) != "Cs" for c in value)


def test_an_operator_without_a_login_name_is_asked_for_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A container run as a bare uid has no $USER and no passwd entry: getpass.getuser() raised."""

    def nobody() -> str:
        raise KeyError("getpwuid(): uid not found: 10001")

    monkeypatch.setattr(getpass, "getuser", nobody)
    database = write_log(tmp_path / "audit.db")
    for command in (("prune", "--before", "2099-01-01", "--yes"), ("reconcile",)):
        status, _, err = run("audit", *command, "--db", str(database))
        assert (2, "gateway: error: cannot tell who is running this (no login name): give --operator NAME\n") == (
            status,
            err,
        )
