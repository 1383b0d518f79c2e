"""Config: validated at start-up, every error one line naming file and key; docs held to the code."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, USERS

from gateway.config import SECTIONS, ConfigError, UserConfig, load_config

EXAMPLE = ROOT / "config.example.toml"
HASH = USERS[0]["password_hash"]


def declared() -> list[tuple[str, dataclasses.Field[Any]]]:
    keys = [(f"{section}.{f.name}", f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    return keys + [(f"users.{f.name}", f) for f in dataclasses.fields(UserConfig)]


def normalised(text: str) -> str:
    return " ".join(text.split())


class TestDocumentation:
    def test_example_config_is_valid(self) -> None:
        config = load_config(EXAMPLE)
        assert ("stub", "myname") == (config.upstream.url, config.users[0].name)

    def test_example_sets_every_key_to_its_default_under_its_help_text(self) -> None:
        """config.example.toml documents each declared key, with its help and (outside users) its default."""
        text = EXAMPLE.read_text()
        data = tomllib.loads(text)
        comments = normalised(" ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#")))
        for key, declaration in declared():
            section, name = key.split(".")
            table = data[section][0] if section == "users" else data[section]
            assert name in table, f"{key} is missing from config.example.toml"
            if section != "users":  # the example user is an example, not a default
                expected = list(declaration.default) if isinstance(declaration.default, tuple) else declaration.default
                assert expected == table[name], f"{key} is not set to its default"
            assert normalised(declaration.metadata["help"]) in comments, f"{key}'s help text is not in the example"


def config_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    return str(error.value).replace(str(path), "gw.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'abc'", 'gw.toml: server.port: expected an integer from 0 to 65535, got "abc"'),
        ("[server]\nport = 70000", "gw.toml: server.port: expected an integer from 0 to 65535, got 70000"),
        (
            "[server]\nhots = 'x'",
            "gw.toml: server.hots: unknown key; expected one of host, port, tls_cert, tls_key, max_connections, header_timeout, body_timeout, keepalive_timeout, send_timeout",
        ),
        (
            "[servr]\nhost = 'x'",
            "gw.toml: servr: unknown section; expected one of server, upstream, audit, logging, stub, throttle, metrics, ship, collector, users, sidecars",
        ),
        ("server = 3", "gw.toml: server: expected a table, got 3"),
        (
            "[upstream]\nurl = 'ftp://x'",
            'gw.toml: upstream.url: expected "stub" or an http(s) URL such as "https://api.enterprise.apigee.com", got "ftp://x"',
        ),
        (
            "[upstream]\nurl = 'https://u:p@x'",
            "gw.toml: upstream.url: must not contain credentials; use upstream.auth instead",
        ),
        (
            "[upstream]\nauth = 'oauth'",
            'gw.toml: upstream.auth: expected one of "passthrough", "service", "oauth2"; got "oauth"',
        ),
        ("[upstream]\nread_timeout = 0", "gw.toml: upstream.read_timeout: expected a number greater than 0, got 0"),
        (
            "[server]\nmax_connections = -1",
            "gw.toml: server.max_connections: expected a whole number, 0 or more, got -1",
        ),
        ("[server]\nheader_timeout = 0", "gw.toml: server.header_timeout: expected a number greater than 0, got 0"),
        (
            "[server]\nkeepalive_timeout = 0",
            "gw.toml: server.keepalive_timeout: expected a number greater than 0, got 0",
        ),
        (
            "[upstream]\nconnect_timeout = 10\ntotal_timeout = 10",
            "gw.toml: upstream.total_timeout: must be more than upstream.connect_timeout, which it includes",
        ),
        ("[upstream]\nverify_tls = 'yes'", 'gw.toml: upstream.verify_tls: expected true or false, got "yes"'),
        ("[upstream]\nca_bundle = 'nope.pem'", "gw.toml: upstream.ca_bundle: no such file: {dir}/nope.pem"),
        (
            "[upstream]\nurl = 'https://api.enterprise.apigee.com'",
            'gw.toml: users: no [[users]] declared; the demo user only exists with the embedded stub (upstream.url = "stub")',
        ),
        (
            "[upstream]\nauth = 'service'\nservice_user = 'svc'",
            'gw.toml: upstream.service_password_env: required when upstream.auth = "service"',
        ),
        (
            "[upstream]\nauth = 'service'\nservice_user = 'svc'\nservice_password_env = 'GW_TEST_UNSET'",
            "gw.toml: upstream.service_password_env: environment variable GW_TEST_UNSET is not set or empty",
        ),
        (
            "[logging]\nlevel = 'loud'",
            'gw.toml: logging.level: expected one of "debug", "info", "warning", "error"; got "loud"',
        ),
        ("[stub]\nseed = 'absent.json'", "gw.toml: stub.seed: no such file: {dir}/absent.json"),
        ("[[users]]\nname = 'a'\norgs = ['*']", "gw.toml: users[0].password_hash: missing; this key is required"),
        (
            "[[users]]\nname = 'a:b'\npassword_hash = '{hash}'\norgs = ['*']",
            "gw.toml: users[0].name: expected a non-empty user name without ':', got \"a:b\"",
        ),
        (
            "[[users]]\nname = 'a'\npassword_hash = '{hash}'\norgs = []",
            "gw.toml: users[0].orgs: expected a non-empty list of strings, got []",
        ),
        (
            "[[users]]\nname = 'a'\npassword_hash = '{hash}'\norgs = ['*', 'x']",
            'gw.toml: users[0].orgs: "*" already means every one; list it alone',
        ),
        (
            "[[users]]\nname = 'a'\npassword_hash = '{hash}'\norgs = ['x']\nroles = ['admin']",
            'gw.toml: users[0].roles: unknown value "admin"; expected any of "revoke", "audit", "read", "manage", "global"',
        ),
        (
            "[[users]]\nname = 'a'\npassword_hash = '{hash}'\norgs = ['x']\n[[users]]\nname = 'a'\npassword_hash = '{hash}'\norgs = ['x']",
            'gw.toml: users[1].name: user "a" is declared twice',
        ),
        ("users = 'me'", "gw.toml: users: expected an array of tables ([[users]])"),
        (
            "[server\nport = 1",
            "gw.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 8)",
        ),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    assert message.replace("{dir}", str(tmp_path)) == config_error(tmp_path, text.replace("{hash}", HASH))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "absent.toml")
    assert f"{tmp_path}/absent.toml: cannot read: No such file or directory" == str(error.value)


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "gw.toml"
    path.write_text("[audit]\ndatabase = 'data/audit.db'\n")
    assert tmp_path / "etc" / "data" / "audit.db" == load_config(path).database_path


def test_service_password_comes_from_the_environment_and_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[upstream]\nauth = 'service'\nservice_user = 'svc'\nservice_password_env = 'GW_PW'\n")
    config = load_config(path, environ={"GW_PW": "hunter2-secret"})
    assert "hunter2-secret" == config.service_password
    assert "hunter2-secret" not in repr(config)


def test_no_file_means_the_demo_defaults(tmp_path: Path) -> None:
    config = load_config(None)
    assert ("stub", (), "127.0.0.1", 8080) == (
        config.upstream.url,
        config.users,
        config.server.host,
        config.server.port,
    )


SALT_16, DIGEST_32 = "A" * 22, "A" * 43
"""Unpadded base64 of 16 and 32 zero bytes: the shortest salt and digest accepted."""


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ("$scrypt$ln=10,r=8,p=1$c2FsdA$AA", "the salt is 4 bytes; expected 16 to 64"),
        (
            f"$scrypt$ln=10,r=8,p=1${SALT_16}$AA",
            "the hash is 1 bytes; expected 32 to 64 (a short one lets wrong passwords in)",
        ),
        (
            f"$scrypt$ln=10,r=8,p=1${SALT_16}${'A' * 42}",
            "the hash is 31 bytes; expected 32 to 64 (a short one lets wrong passwords in)",
        ),
        (f"$scrypt$ln=10,r=8,p=1${'A' * 20}${DIGEST_32}", "the salt is 15 bytes; expected 16 to 64"),
        (
            f"$scrypt$ln=10,r=8,p=1${SALT_16}${'A' * 87}",
            "the hash is 65 bytes; expected 32 to 64 (a short one lets wrong passwords in)",
        ),
        (f"$scrypt$ln=10,r=8,p=1${SALT_16}${'A' * 41}", "the hash is not valid base64"),
        (f"$scrypt$ln=99,r=8,p=1${SALT_16}${DIGEST_32}", "scrypt parameters out of range (ln 10-22, r 1-32, p 1-16)"),
        (f"$scrypt$ln=9,r=8,p=1${SALT_16}${DIGEST_32}", "scrypt parameters out of range (ln 10-22, r 1-32, p 1-16)"),
        (
            f"$scrypt$ln=22,r=32,p=16${SALT_16}${DIGEST_32}",
            "scrypt parameters need more than 1 GiB per check (128 * r * 2^ln bytes); lower ln or r",
        ),
        (
            f"$scrypt$ln=21,r=8,p=1${SALT_16}${DIGEST_32}",
            "scrypt parameters need more than 1 GiB per check (128 * r * 2^ln bytes); lower ln or r",
        ),
        (
            f"$scrypt$ln=١٠,r=8,p=1${SALT_16}${DIGEST_32}",
            "not a hash made by `gateway hash-password` (expected $scrypt$ln=..,r=..,p=..$salt$hash)",
        ),
        (
            "correct-horse-battery",
            "not a hash made by `gateway hash-password` (expected $scrypt$ln=..,r=..,p=..$salt$hash)",
        ),
    ],
)
def test_password_hashes_that_could_let_wrong_passwords_in_are_refused_at_load(
    tmp_path: Path, stored: str, problem: str
) -> None:
    """Found by a tester: a 1-byte digest loaded, and then one random password in 256 logged in.
    The hash is never quoted back: it may be a password pasted by mistake."""
    text = f"[[users]]\nname = 'a'\npassword_hash = '{stored}'\norgs = ['*']\n"
    assert f"gw.toml: users[0].password_hash: {problem}" == config_error(tmp_path, text)


def test_the_largest_usable_scrypt_cost_is_accepted(tmp_path: Path) -> None:
    """ln=20, r=8 needs exactly 1 GiB: the bound, which Python's own 2 GiB limit leaves room for."""
    path = tmp_path / "gw.toml"
    stored = f"$scrypt$ln=20,r=8,p=16${SALT_16}${'A' * 86}"
    path.write_text(f"[[users]]\nname = 'a'\npassword_hash = '{stored}'\norgs = ['*']\n")
    assert stored == load_config(path, environ={}).users[0].password_hash
