"""TLS on both sides: HTTPS on the listener (from [server]), and the upstream's certificate
verified against the system's CAs or a given bundle."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
from helpers import ROOT, SAMPLE_PATH, USERS, GatewayFactory, basic, make_config, rows
from processes import started
from pytest_aiohttp import AiohttpServer
from tls_support import client_context, server_files
from upstream_samples import documented_sample

from gateway.cli import main
from gateway.stub import demo_seed, make_stub_app


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def test_the_listener_speaks_https(tmp_path: Path, authority: trustme.CA) -> None:
    server_files(authority, tmp_path)
    user = USERS[0]
    config = tmp_path / "gw.toml"
    config.write_text(
        f"[server]\ntls_cert = 'cert.pem'\ntls_key = 'key.pem'\n[audit]\ndatabase = 'audit.db'\n"
        f"[[users]]\nname = '{user['name']}'\npassword_hash = '{user['password_hash']}'\norgs = ['myorg']\n"
    )
    async with started("serve", "--config", str(config), "--port", "0", cwd=ROOT) as gateway:
        url = gateway.url
        assert url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(authority))) as session:
            async with session.delete(url + SAMPLE_PATH, headers=basic("myname")) as response:
                assert (200, documented_sample()) == (response.status, await response.read())
        async with aiohttp.ClientSession() as session:  # the system's CAs do not know this one
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.delete(url + SAMPLE_PATH, headers=basic("myname"))
        assert 0 == await gateway.stop(signal.SIGTERM)
    assert ["pending", "deleted"] == [row["outcome"] for row in rows(tmp_path / "audit.db")]


async def test_every_new_https_connection_completes_its_handshake_at_once(
    tmp_path: Path, authority: trustme.CA
) -> None:
    """Fresh connections one after another, each through its handshake well within the head
    deadline. Under uvloop (the `speed` extra, installed by the test extra so that this runs
    there) the client's hello could reach the HTTP parser before the handshake began, and about
    every other connection hung until header_timeout and was reset."""
    server_files(authority, tmp_path)
    config = tmp_path / "gw.toml"
    config.write_text(
        "[server]\ntls_cert = 'cert.pem'\ntls_key = 'key.pem'\nheader_timeout = 30\n[audit]\ndatabase = 'audit.db'\n"
    )
    async with started("serve", "--config", str(config), "--port", "0", cwd=ROOT) as gateway:
        host, port = gateway.url.removeprefix("https://").split(":")
        for _ in range(20):
            async with asyncio.timeout(5):  # a hung handshake waits for header_timeout, 30 s
                _, writer = await asyncio.open_connection(host, int(port), ssl=client_context(authority))
            writer.close()
            await writer.wait_closed()
        assert 0 == await gateway.stop(signal.SIGTERM)


def test_an_unusable_certificate_is_a_one_line_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    config = tmp_path / "gw.toml"
    config.write_text(
        "[server]\nport = 0\ntls_cert = 'cert.pem'\ntls_key = 'key.pem'\n[audit]\ndatabase = 'audit.db'\n"
    )
    assert 2 == main(["serve", "--config", str(config)])
    err = capsys.readouterr().err
    assert err.startswith(f"gateway: error: {config}: server.tls_cert: cannot use the certificate and key: ")
    assert 1 == len(err.splitlines())
    config.write_text("[server]\ntls_cert = 'cert.pem'\n")
    assert 2 == main(["serve", "--config", str(config)])
    assert (
        f"gateway: error: {config}: server.tls_key: HTTPS needs both server.tls_cert and server.tls_key\n"
        == capsys.readouterr().err
    )


async def test_the_upstream_certificate_is_verified(
    tmp_path: Path, authority: trustme.CA, aiohttp_server: AiohttpServer, gateway: GatewayFactory
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    stub = await aiohttp_server(make_stub_app(demo_seed()), ssl=server_context)
    upstream = str(stub.make_url("")).rstrip("/")
    assert upstream.startswith("https://")
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    (tmp_path / "with-ca").mkdir()
    (tmp_path / "system-cas").mkdir()
    trusting = await gateway(
        make_config(tmp_path / "with-ca", upstream={"url": upstream, "ca_bundle": str(tmp_path / "ca.pem")})
    )
    response = await trusting.delete(SAMPLE_PATH, headers=basic("myname"))
    assert (200, documented_sample()) == (response.status, await response.read())

    doubting = await gateway(make_config(tmp_path / "system-cas", upstream=upstream))
    response = await doubting.delete("/v1/o/myorg/oauth2/accesstokens/anyToken", headers=basic("myname"))
    assert 502 == response.status
    message = (await response.json())["message"]
    assert message.startswith("The upstream could not be reached or gave no valid answer: cannot connect: ")
    assert "certificate verify failed" in message
    outcome = rows(tmp_path / "system-cas" / "audit.db")[-1]
    assert ("upstream_error", "upstream.connect_failed") == (outcome["outcome"], outcome["error_code"])
