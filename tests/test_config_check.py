"""`gateway config check` refuses exactly what `gateway serve` refuses, with the same line.

Both run the one loader (``gateway.config.load_config``), which tries every file and value the
gateway would use (password hashes, TLS files, the upstream URL, the seed) before anything
listens. Each case is a config that `config check` once called valid and `serve` then refused,
ran wrongly, or died on with a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from helpers import USERS
from processes import gateway_cli

from gateway.audit.chain import ChainKey
from gateway.audit.sqlite_file import prepare
from gateway.cli import main

SALT_16, DIGEST_32 = "A" * 22, "A" * 43
USER = USERS[0]


def users(password_hash: str = USER["password_hash"]) -> str:
    return f"[[users]]\nname = 'myname'\npassword_hash = '{password_hash}'\norgs = ['myorg']\n"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate, its key, another certificate's key, and the key encrypted."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    mine, other = authority.issue_cert("127.0.0.1"), authority.issue_cert("127.0.0.1")
    mine.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    mine.private_key_pem.write_to_path(str(folder / "key.pem"))
    other.private_key_pem.write_to_path(str(folder / "other-key.pem"))
    key = serialization.load_pem_private_key(mine.private_key_pem.bytes(), None)
    (folder / "encrypted-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )
    (folder / "junk.pem").write_text("not a certificate\n")
    (folder / "seed.json").write_text('{"users": {"a": "b"}, "orgs": {"myorg": [{"app": "no token"}]}}')
    return folder


CASES = {
    "1-byte digest": (
        "[upstream]\nurl = 'https://api.enterprise.apigee.com'\n" + users(f"$scrypt$ln=10,r=8,p=1${SALT_16}$AA"),
        "users[0].password_hash: the hash is 1 bytes; expected 32 to 64 (a short one lets wrong passwords in)",
    ),
    "plain-text password": (
        users("hunter2-in-clear"),
        "users[0].password_hash: not a hash made by `gateway hash-password` (expected $scrypt$ln=..,r=..,p=..$salt$hash)",
    ),
    "scrypt parameters out of range": (
        users(f"$scrypt$ln=40,r=8,p=1${SALT_16}${DIGEST_32}"),
        "users[0].password_hash: scrypt parameters out of range (ln 10-22, r 1-32, p 1-16)",
    ),
    "scrypt memory beyond what Python allows": (
        users(f"$scrypt$ln=22,r=8,p=1${SALT_16}${DIGEST_32}"),
        "users[0].password_hash: scrypt parameters need more than 1 GiB per check (128 * r * 2^ln bytes); lower ln or r",
    ),
    "key of another certificate": (
        "[server]\nport = 0\ntls_cert = '{tls}/cert.pem'\ntls_key = '{tls}/other-key.pem'\n",
        "server.tls_cert: cannot use the certificate and key: the key does not match the certificate",
    ),
    "encrypted key": (
        "[server]\nport = 0\ntls_cert = '{tls}/cert.pem'\ntls_key = '{tls}/encrypted-key.pem'\n",
        "server.tls_cert: cannot use the key: it is encrypted; give an unencrypted PEM key (readable only by the gateway)",
    ),
    "certificate that is not PEM": (
        "[server]\nport = 0\ntls_cert = '{tls}/junk.pem'\ntls_key = '{tls}/key.pem'\n",
        "server.tls_cert: cannot use the certificate and key: not a PEM certificate chain and its private key",
    ),
    "CA bundle that is not PEM": (
        "[upstream]\nca_bundle = '{tls}/junk.pem'\n",
        "upstream.ca_bundle: cannot use the CA bundle: no PEM certificate in it",
    ),
    "upstream URL with a path": (
        "[upstream]\nurl = 'https://api.enterprise.apigee.com/v1'\n" + users(),
        'upstream.url: must be the base URL without a path ("https://api.enterprise.apigee.com"): the gateway '
        'appends the caller\'s whole path (/v1/o/...), so "/v1" would be sent twice; got "https://api.enterprise.apigee.com/v1"',
    ),
    "seed without tokens": (
        "[stub]\nseed = '{tls}/seed.json'\n",
        None,  # the seed's own message, whatever it is, the same from both
    ),
    "metrics on the gateway's port": (
        "[server]\nport = 18123\n[metrics]\nport = 18123\n",
        "metrics.port: is server.port too; 0 serves /metrics on the gateway's own listener",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_config_check_and_serve_refuse_the_same_config_with_the_same_line(
    tmp_path: Path, tls_files: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, problem = CASES[case]
    config = tmp_path / "gw.toml"
    port = "" if "port = " in text else "[server]\nport = 0\n"
    config.write_text(port + "[audit]\ndatabase = 'audit.db'\n" + text.replace("{tls}", str(tls_files)))
    assert 2 == main(["config", "check", str(config)])
    checked = capsys.readouterr()
    assert "" == checked.out
    served = gateway_cli("serve", "--config", str(config), cwd=tmp_path, timeout=30)
    assert (2, checked.err) == (served.returncode, served.stderr)
    assert 1 == len(served.stderr.splitlines())
    if problem is not None:
        assert f"gateway: error: {config}: {problem}\n" == served.stderr
    else:
        assert served.stderr.startswith(f"gateway: error: {config}: stub.seed: ")
    assert not (tmp_path / "audit.db").exists()  # refused before the log was opened (and before listening)


def test_a_url_with_only_a_slash_is_the_base_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[upstream]\nurl = 'HTTPS://apigee.example.com:8443/'\n" + users())
    assert 0 == main(["config", "check", str(config)])
    assert 'url = "https://apigee.example.com:8443"\n' in capsys.readouterr().out


def test_commands_that_never_listen_nor_call_apigee_do_not_read_tls_files(
    tmp_path: Path, tls_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TLS key may be readable by the gateway's user only; reading the log must not need it."""
    config = tmp_path / "gw.toml"
    config.write_text(
        f"[server]\ntls_cert = '{tls_files}/junk.pem'\ntls_key = '{tls_files}/junk.pem'\n"
        f"[upstream]\nca_bundle = '{tls_files}/junk.pem'\n[audit]\ndatabase = 'audit.db'\n"
    )
    database = tmp_path / "audit.db"
    prepare(database, key=ChainKey(), writable=True)
    for command in (["query"], ["stats"], ["head"], ["verify"], ["export"], ["prune", "--before", "2000-01-01"]):
        assert 0 == main(["audit", *command, "--config", str(config)]), command
    capsys.readouterr()
    assert 2 == main(["audit", "reconcile", "--config", str(config)])  # it calls the upstream: the CA bundle counts
    assert (
        f"gateway: error: {config}: upstream.ca_bundle: cannot use the CA bundle: no PEM certificate in it\n"
        == capsys.readouterr().err
    )
    assert 2 == main(["config", "check", str(config)])
    assert capsys.readouterr().err.startswith(
        f"gateway: error: {config}: server.tls_cert: cannot use the certificate and key: "
    )
