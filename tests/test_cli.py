"""The real `gateway` command in subprocesses: serve, stub, hash-password, and its one-line errors."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import aiohttp
import pytest
from helpers import ROOT, SAMPLE, SAMPLE_PATH, USERS, basic, rows
from processes import gateway_cli, started
from upstream_samples import XML_404, documented_sample

from gateway.cli import build_parser
from gateway.config import ConfigError, environment_variable, load_config
from gateway.passwords import parse_hash, verify_password


async def test_demo_mode_needs_no_config(tmp_path: Path) -> None:
    """`gateway serve` alone: embedded stub, demo user, database in the working directory, curl printed."""
    async with started("serve", "--port", "0", cwd=tmp_path) as gateway:
        url = gateway.url
        assert f"  curl -u myname:mypass -X DELETE {url}{SAMPLE_PATH}" in gateway.banner
        async with aiohttp.ClientSession() as session:
            async with session.delete(url + SAMPLE_PATH, headers=basic("myname")) as first:
                assert (200, documented_sample()) == (first.status, await first.read())
            async with session.delete(url + SAMPLE_PATH, headers=basic("myname")) as second:
                assert (404, XML_404) == (second.status, await second.read())
        assert 0 == await gateway.stop(signal.SIGTERM)
    assert ["pending", "deleted", "pending", "not_found"] == [
        row["outcome"] for row in rows(tmp_path / "gateway-audit.db")
    ]


async def test_serve_with_a_config_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    user = USERS[0]
    config.write_text(
        f"[audit]\ndatabase = 'data.db'\n[logging]\nformat = 'json'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    async with started("serve", "--config", str(config), "--port", "0", cwd=ROOT) as gateway:
        assert f"  audit log: {tmp_path / 'data.db'}" in gateway.banner
        assert not any("curl" in line for line in gateway.banner)
        async with aiohttp.ClientSession() as session:
            async with session.delete(gateway.url + SAMPLE_PATH, headers=basic("myname")) as response:
                assert 200 == response.status
        assert 0 == await gateway.stop(signal.SIGTERM)
    assert ["pending", "deleted"] == [row["outcome"] for row in rows(tmp_path / "data.db")]


async def test_stub_alone(tmp_path: Path) -> None:
    async with started("stub", "--port", "0", cwd=tmp_path) as stub:
        assert re.fullmatch(r"Apigee stub listening on http://127\.0\.0\.1:\d+ \(1 users, 6 tokens\)", stub.banner[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(stub.url + SAMPLE_PATH, headers=basic("myname")) as response:
                assert (200, SAMPLE) == (response.status, (await response.json())["token"])
        assert 0 == await stub.stop(signal.SIGTERM)


def test_config_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    result = gateway_cli("serve", "--config", str(config), cwd=tmp_path)
    assert (2, f'gateway: error: {config}: server.port: expected an integer from 0 to 65535, got "eighty"\n') == (
        result.returncode,
        result.stderr,
    )


def test_unusable_database_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[audit]\ndatabase = 'no/such/dir/audit.db'\n")
    result = gateway_cli("serve", "--config", str(config), "--port", "0", cwd=tmp_path)
    expected = f"gateway: error: {config}: audit.database: cannot open {tmp_path}/no/such/dir/audit.db: unable to open database file\n"
    assert (2, expected) == (result.returncode, result.stderr)


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = gateway_cli("serve", "--port", str(port), cwd=tmp_path)
    assert 2 == result.returncode
    assert result.stderr.startswith(f"gateway: error: cannot listen on 127.0.0.1:{port}: ")
    assert 1 == len(result.stderr.splitlines()) and "Traceback" not in result.stderr


def test_hash_password_reads_stdin(tmp_path: Path) -> None:
    result = gateway_cli("hash-password", cwd=tmp_path, stdin="correct horse\n")
    assert 0 == result.returncode
    stored = parse_hash(result.stdout.strip())
    assert verify_password("correct horse", stored) and not verify_password("correct horse\n", stored)
    empty = gateway_cli("hash-password", cwd=tmp_path, stdin="\n")
    assert (2, "gateway: error: empty password\n") == (empty.returncode, empty.stderr)


OVERRIDING_OPTIONS = [
    (("serve",), "--host", "server.host"),
    (("serve",), "--port", "server.port"),
    (("stub",), "--host", "stub.host"),
    (("stub",), "--port", "stub.port"),
    (("stub",), "--generate", "stub.generated_tokens"),
    (("stub",), "--delay", "stub.delay"),
    (("stub",), "--action-status", "stub.action_status"),
    (("stub",), "--revoke-delay", "stub.revoke_delay"),
    (("stub",), "--token-lifetime", "stub.token_lifetime"),
    (("collect",), "--host", "server.host"),
    (("collect",), "--port", "server.port"),
    (("audit", "verify"), "--silent-after", "collector.silent_after"),
]
OPTION_VALUES = ["", " ", "\t", "a b", "[::1]", "localhost", "0.0.0.0", "::1", "-1", "0", "1.5", "200", "70000"]
OPTION_VALUES += ["inf", "nan", "1e3", "true"]


def option_verdict(words: tuple[str, ...], option: str, value: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What the command line makes of ``option value``: "ok", or its complaint."""
    try:
        build_parser().parse_args([*words, f"{option}={value}"])
    except SystemExit as exit:
        assert 2 == exit.code
        return capsys.readouterr().err.splitlines()[-1].split(f"argument {option}: ", 1)[1]
    return "ok"


def key_verdict(key: str, value: str) -> str:
    """What the config makes of the same text for ``key`` (given by its environment variable)."""
    section, name = key.split(".")
    try:
        load_config(None, environ={environment_variable(section, name): value}, uses=())
    except ConfigError as exc:
        return f"{key}: {exc.problem.rsplit(' (from environment variable', 1)[0]}"
    return "ok"


@pytest.mark.parametrize(("words", "option", "key"), OVERRIDING_OPTIONS, ids=lambda x: str(x).strip("()',"))
def test_an_option_that_overrides_a_key_takes_exactly_what_the_key_takes(
    words: tuple[str, ...], option: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rule for both: `serve --host ""` must not listen on every interface when `host = ""` is refused."""
    verdicts = {value: option_verdict(words, option, value, capsys) for value in OPTION_VALUES}
    assert {value: key_verdict(key, value) for value in OPTION_VALUES} == verdicts
    assert "ok" != verdicts[""]
    assert "ok" != option_verdict(words, option, "\udcff", capsys)  # bytes that are not UTF-8


def test_serve_with_an_empty_host_is_refused_before_listening(tmp_path: Path) -> None:
    result = gateway_cli("serve", "--host", "", "--port", "0", cwd=tmp_path)
    assert 2 == result.returncode
    assert result.stderr.endswith(
        'gateway serve: error: argument --host: server.host: expected a host name or IP address such as "127.0.0.1" '
        '("0.0.0.0": every interface), got ""\n'
    )
    assert not (tmp_path / "gateway-audit.db").exists()  # it stopped before opening anything
