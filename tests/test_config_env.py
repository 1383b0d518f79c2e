"""Environment overrides (GATEWAY_SECTION_KEY), `gateway config check`, and `--log-level`."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import aiohttp
import pytest
from helpers import ROOT, SAMPLE_PATH, USERS, basic
from processes import gateway_cli, started

from gateway.audit.chain import ChainKey
from gateway.audit.record import AuditRecord
from gateway.audit.sqlite_file import SQLiteAppender, prepare
from gateway.cli import main
from gateway.config import ConfigError, load_config

EXAMPLE = ROOT / "config.example.toml"


def test_every_kind_of_value_can_come_from_the_environment() -> None:
    config = load_config(
        EXAMPLE,
        environ={
            "GATEWAY_SERVER_PORT": "9090",
            "GATEWAY_UPSTREAM_URL": "https://apigee.example.com",
            "GATEWAY_UPSTREAM_READ_TIMEOUT": "2.5",
            "GATEWAY_AUDIT_STORE_RAW_TOKENS": "true",
            "GATEWAY_AUDIT_SYNCHRONOUS": "NORMAL",
            "GATEWAY_STUB_SEED": '""',
            "GATEWAY_SERVER_HOST": "0.0.0.0",
        },
    )
    assert (9090, "https://apigee.example.com", 2.5, True, "NORMAL", "0.0.0.0") == (
        config.server.port,
        config.upstream.url,
        config.upstream.read_timeout,
        config.audit.store_raw_tokens,
        config.audit.synchronous,
        config.server.host,
    )
    assert {
        "server.port",
        "upstream.url",
        "upstream.read_timeout",
        "audit.store_raw_tokens",
        "audit.synchronous",
        "stub.seed",
        "server.host",
    } == set(config.overridden)


def test_the_demo_defaults_take_overrides_too() -> None:
    assert 9999 == load_config(None, environ={"GATEWAY_SERVER_PORT": "9999"}).server.port


def test_variables_that_hold_secrets_may_start_with_gateway(tmp_path: Path) -> None:
    """The variables the config names for its secrets, and reconcile's password, are not typos."""
    config = tmp_path / "gw.toml"
    config.write_text(
        "[upstream]\nauth = 'service'\nservice_user = 'svc'\nservice_password_env = 'GATEWAY_SVC_PW'\n"
        "[audit]\nchain_key_env = 'GATEWAY_CHAIN_KEY'\n"
    )
    environ = {"GATEWAY_UPSTREAM_PASSWORD": "x", "GATEWAY_CHAIN_KEY": "k" * 16, "GATEWAY_SVC_PW": "pw"}
    loaded = load_config(config, environ=environ)
    assert ((), "pw", b"k" * 16) == (loaded.overridden, loaded.service_password, loaded.chain_secret)
    # Named by an override rather than the file: allowed just the same.
    assert (
        b"k" * 16
        == load_config(
            EXAMPLE, environ={"GATEWAY_AUDIT_CHAIN_KEY_ENV": "GATEWAY_KEY", "GATEWAY_KEY": "k" * 16}
        ).chain_secret
    )


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        ("GATEWAY_SERVR_PORT", "unknown environment variable; did you mean GATEWAY_SERVER_PORT?"),
        ("GATEWAY_AUDIT_DATABSE", "unknown environment variable; did you mean GATEWAY_AUDIT_DATABASE?"),
        ("gateway_server_port", "unknown environment variable; did you mean GATEWAY_SERVER_PORT?"),
        ("Gateway_Logging_Level", "unknown environment variable; did you mean GATEWAY_LOGGING_LEVEL?"),
        ("GATEWAY_CHAIN_KEY", "unknown environment variable; did you mean GATEWAY_AUDIT_CHAIN_KEY_ENV?"),
        (
            "GATEWAY_USERS_NAME",
            "unknown environment variable; [[users]] cannot be set by environment variables; "
            "declare users in the config file",
        ),
        (
            "GATEWAY_XYZZY",
            "unknown environment variable; a config key is set by GATEWAY_<SECTION>_<KEY>, such as GATEWAY_SERVER_PORT",
        ),
    ],
)
def test_an_unknown_gateway_variable_stops_like_an_unknown_key(variable: str, problem: str) -> None:
    """A typo in a variable's name would otherwise change nothing, silently."""
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, environ={"GATEWAY_SERVER_PORT": "9090", variable: "1"})
    assert f"{EXAMPLE}: {variable}: {problem}" == str(caught.value)


def test_an_unknown_variable_stops_every_command_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SERVER_PROT", "9090")
    problem = "GATEWAY_SERVER_PROT: unknown environment variable; did you mean GATEWAY_SERVER_PORT?"
    for command in (["audit", "query", "--db", str(tmp_path / "audit.db")], ["config", "check", str(EXAMPLE)]):
        assert 2 == main(command), command
        source = EXAMPLE if "check" in command else "(built-in defaults)"
        assert f"gateway: error: {source}: {problem}\n" == capsys.readouterr().err
    for command in (["serve", "--port", "0"], ["stub", "--port", "0"]):  # in subprocesses: they would serve on
        result = gateway_cli(*command, cwd=tmp_path, timeout=30)
        assert (2, f"gateway: error: (built-in defaults): {problem}\n") == (result.returncode, result.stderr)


def test_reading_commands_need_no_secret_and_verifying_only_the_chain_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: `audit query --config` demanded the service password it never sends."""
    user = USERS[0]
    config = tmp_path / "gw.toml"
    config.write_text(
        "[upstream]\nurl = 'https://apigee.example.com'\nauth = 'service'\nservice_user = 'svc'\n"
        "service_password_env = 'SVC_PASSWORD'\n[audit]\ndatabase = 'audit.db'\nchain_key_env = 'CHAIN_KEY'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    key = ChainKey(b"chain-key-secret-0123456789")
    prepare(tmp_path / "audit.db", key=key, writable=True)
    appender = SQLiteAppender(tmp_path / "audit.db", key)
    appender.append(
        [AuditRecord("r1", "2026-01-01T00:00:00.000Z", "myname", None, "DELETE", "myorg", None, None, "denied")]
    )
    appender.close()
    monkeypatch.delenv("SVC_PASSWORD", raising=False)
    monkeypatch.delenv("CHAIN_KEY", raising=False)
    for command in (["query"], ["show", "1"], ["export"], ["stats"], ["head"]):
        assert 0 == main(["audit", *command, "--config", str(config)]), command
        assert "" == capsys.readouterr().err
    no_chain_key = (
        f"gateway: error: {config}: audit.chain_key_env: environment variable CHAIN_KEY is not set or empty\n"
    )
    no_password = f"gateway: error: {config}: upstream.service_password_env: environment variable SVC_PASSWORD is not set or empty\n"
    for command in (["verify"], ["prune", "--before", "2000-01-01"], ["reconcile"]):
        assert 2 == main(["audit", *command, "--config", str(config)]), command
        assert no_chain_key == capsys.readouterr().err
    monkeypatch.setenv("CHAIN_KEY", "chain-key-secret-0123456789")
    monkeypatch.setenv("GATEWAY_UPSTREAM_PASSWORD", "apigee-pw")
    for command in (["verify"], ["prune", "--before", "2000-01-01"], ["reconcile", "--user", "ops"]):
        assert 0 == main(["audit", *command, "--config", str(config)]), command
        assert "" == capsys.readouterr().err
    # Reconcile without --user asks Apigee with the service account: now its password is needed.
    assert 2 == main(["audit", "reconcile", "--config", str(config)])
    assert no_password == capsys.readouterr().err
    assert 2 == main(["config", "check", str(config)])  # and config check still says whether it resolves
    assert no_password == capsys.readouterr().err


def test_a_bad_value_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, environ={"GATEWAY_AUDIT_BUSY_TIMEOUT": "soon"})
    assert (
        f'{EXAMPLE}: audit.busy_timeout: expected a number greater than 0, got "soon" '
        "(from environment variable GATEWAY_AUDIT_BUSY_TIMEOUT)" == str(caught.value)
    )


def test_config_check_prints_the_effective_config_with_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = USERS[0]
    config = tmp_path / "gw.toml"
    config.write_text(
        "[upstream]\nurl = 'https://apigee.example.com'\nauth = 'service'\nservice_user = 'svc'\n"
        "service_password_env = 'SVC_PASSWORD'\n[audit]\nchain_key_env = 'CHAIN_KEY'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    monkeypatch.setenv("SVC_PASSWORD", "service-secret-pw")
    monkeypatch.setenv("CHAIN_KEY", "chain-key-secret-0123456789")
    monkeypatch.setenv("GATEWAY_SERVER_PORT", "9443")
    assert 0 == main(["config", "check", str(config)])
    out = capsys.readouterr().out
    assert out.startswith(
        f"# {config}: valid. Effective configuration, secrets masked.\n"
        "# server.port is set by the environment (GATEWAY_SERVER_PORT).\n"
        "# chain key: read, 27 bytes (HMAC-SHA-256 chain)\n"
        "# service password: read from $SVC_PASSWORD\n"
    )
    effective = tomllib.loads(out)  # what it prints is TOML again
    assert (9443, "https://apigee.example.com", "********", ["myorg"]) == (
        effective["server"]["port"],
        effective["upstream"]["url"],
        effective["users"][0]["password_hash"],
        effective["users"][0]["orgs"],
    )
    for secret in ("service-secret-pw", "chain-key-secret", user["password_hash"]):
        assert secret not in out


def test_config_check_refuses_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    assert 2 == main(["config", "check", str(config)])
    assert (
        f'gateway: error: {config}: server.port: expected an integer from 0 to 65535, got "eighty"\n'
        == capsys.readouterr().err
    )


async def test_log_level_flag_overrides_the_config(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[audit]\ndatabase = 'audit.db'\n[logging]\nformat = 'json'\nlevel = 'debug'\n")
    async with started(
        "serve", "--config", str(config), "--port", "0", "--log-level", "warning", cwd=tmp_path
    ) as gateway:
        async with aiohttp.ClientSession() as session:
            async with session.delete(gateway.url + SAMPLE_PATH, headers=basic("myname")) as response:
                assert 200 == response.status
            async with session.delete(gateway.url + SAMPLE_PATH, headers=basic("myname", "wrong")) as response:
                assert 401 == response.status
        assert 0 == await gateway.stop(signal.SIGTERM)
    assert [] == gateway.events("request") == gateway.events("started")  # info events are below warning


@pytest.mark.parametrize("text", ["inf", "1e400", "nan"])
def test_infinite_or_undefined_numbers_are_refused(text: str) -> None:
    """Found in review: `inf` passed validation and `serve` then died with a traceback."""
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, environ={"GATEWAY_AUDIT_BUSY_TIMEOUT": text})
    assert "audit.busy_timeout: expected a number greater than 0" in str(caught.value)
