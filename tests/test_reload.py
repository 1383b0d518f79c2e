"""SIGHUP reloads ``[[users]]`` (issue 10, item 24: it used to end the gateway at once).

A password change or a removed user takes effect without a restart, cached credentials
included; a file that is not valid changes nothing and is one error line.
"""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import aiohttp
from processes import started

from gateway.passwords import hash_password

HASHES = {password: hash_password(password, log2_n=10) for password in ("alice-one", "alice-two", "bob-pass")}


def header(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_config(path: Path, users: dict[str, str]) -> None:
    """A gateway on the embedded stub whose users are ``name -> password`` (all auditors)."""
    tables = "".join(
        f"[[users]]\nname = '{name}'\npassword_hash = '{HASHES[password]}'\norgs = ['*']\nroles = ['audit']\n"
        for name, password in users.items()
    )
    path.write_text(f"[audit]\ndatabase = 'audit.db'\n[logging]\nformat = 'json'\n{tables}")


async def test_sighup_reloads_the_users_and_an_invalid_file_keeps_them(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    write_config(config, {"alice": "alice-one", "bob": "bob-pass"})
    async with started("serve", "--config", str(config), "--port", "0", cwd=tmp_path) as gateway:
        async with aiohttp.ClientSession() as session:

            async def read(user: str, password: str) -> int:
                async with session.get(f"{gateway.url}/audit/events", headers=header(user, password)) as response:
                    return response.status

            assert [200, 200] == [await read("alice", "alice-one"), await read("bob", "bob-pass")]  # now cached
            write_config(config, {"alice": "alice-two"})
            gateway.process.send_signal(signal.SIGHUP)
            assert {"count": 1, "level": "info"}.items() <= (await gateway.logged("users_reloaded")).items()
            # The old password and the removed user stop working at once, cached or not.
            assert [401, 200, 401] == [
                await read("alice", "alice-one"),
                await read("alice", "alice-two"),
                await read("bob", "bob-pass"),
            ]

            config.write_text(config.read_text().replace(HASHES["alice-two"], "not-a-hash"))
            gateway.process.send_signal(signal.SIGHUP)
            failed = await gateway.logged("users_reload_failed")
            assert "error" == failed["level"]
            assert failed["error"].startswith(
                f"{config}: users[0].password_hash: not a hash made by `gateway hash-password`"
            )
            config.write_text("[[users]\n")
            gateway.process.send_signal(signal.SIGHUP)
            assert (await gateway.logged("users_reload_failed", 2))["error"].startswith(f"{config}: invalid TOML")
            assert [200, 401] == [await read("alice", "alice-two"), await read("alice", "alice-one")]

            write_config(config, {"alice": "alice-one", "bob": "bob-pass"})
            gateway.process.send_signal(signal.SIGHUP)
            assert 2 == (await gateway.logged("users_reloaded", 2))["count"]
            assert [200, 401, 200] == [
                await read("alice", "alice-one"),
                await read("alice", "alice-two"),
                await read("bob", "bob-pass"),
            ]
        assert 0 == await gateway.stop(signal.SIGTERM)
    assert 2 == len(gateway.events("users_reload_failed")) == len(gateway.events("users_reloaded"))
    logged = "\n".join(gateway.stderr)
    for encoded in HASHES.values():
        assert encoded not in logged
        assert encoded.rsplit("$", 1)[1] not in logged
