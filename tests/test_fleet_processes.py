"""The fleet as it runs: `gateway collect` and `gateway serve` processes, killed and restarted.

Three sidecars serve deletes while they ship; the collector is killed in the middle of their
batches and comes back on the same port; a sidecar is killed and restarted. In the end every
record of every sidecar is in the fleet store exactly once, as committed locally, and
`gateway audit verify --store` finds every chain intact. Then the CLI: one query finds a token
deleted on two hosts, prune keeps what the collector has not acknowledged, and OCSF export.
"""

from __future__ import annotations

import asyncio
import json
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fleet_support import SIDECAR_PASSWORDS, SIDECARS, central_rows, eventually, fetch
from helpers import USERS, rows
from processes import Running, completed, started

from gateway.audit.record import FIELDS

AUTH = {"Authorization": aiohttp.encode_basic_auth("myname", "mypass")}


def toml_value(value: Any) -> str:
    return json.dumps(value)


def write_collector(folder: Path, url: str, port: int) -> Path:
    lines = [
        "[server]",
        f"port = {port}",
        "[collector]",
        f"database_url = {toml_value(url)}",
        "[logging]",
        'format = "json"',
    ]
    for sidecar in SIDECARS:
        lines += [
            "[[sidecars]]",
            f"instance = {toml_value(sidecar['instance'])}",
            f"password_hash = {toml_value(sidecar['password_hash'])}",
        ]
    user = USERS[1]
    lines += [
        "[[users]]",
        f"name = {toml_value(user['name'])}",
        f"password_hash = {toml_value(user['password_hash'])}",
        'orgs = ["*"]',
        'roles = ["audit"]',
    ]
    path = folder / "collector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sidecar(folder: Path, name: str, collector_port: int, **ship: Any) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "ship.password").write_text(SIDECAR_PASSWORDS[name] + "\n")
    settings = {
        "url": f"http://127.0.0.1:{collector_port}",
        "instance": name,
        "password_file": "ship.password",
        "interval": 0.05,
        "max_backoff": 0.3,
        "batch_size": 50,
        **ship,
    }
    lines = [
        "[server]",
        "port = 0",
        "[audit]",
        'database = "audit.db"',
        "reserve_mb = 0",
        "[stub]",
        "generated_tokens = 100000",
        "[logging]",
        'format = "json"',
        "[ship]",
        *(f"{key} = {toml_value(value)}" for key, value in settings.items()),
    ]
    path = folder / "gw.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def delete_many(base: str, tokens: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for token in tokens:
            async with session.delete(f"{base}/v1/o/myorg/oauth2/accesstokens/{token}", headers=AUTH) as response:
                assert response.status in (200, 404)


async def shipped_once(tmp_path: Path, fleet_url: str, port: int, tokens: list[str]) -> tuple[Path, Path, Path]:
    """A collector and sidecar host-a, run until the collector holds the deletes of ``tokens``,
    then stopped: the collector's config, the sidecar's config and its folder."""
    collector_config = write_collector(tmp_path, fleet_url, port)
    folder = tmp_path / "host-a"
    config = write_sidecar(folder, "host-a", port)
    async with started("collect", "--config", str(collector_config), cwd=tmp_path):
        async with started("serve", "--config", str(config), cwd=folder) as sidecar:
            await delete_many(sidecar.url, tokens)
            await eventually(lambda: caught_up(sidecar, folder))
    return collector_config, config, folder


async def caught_up(sidecar: Running, folder: Path) -> bool:
    """The collector acknowledged the newest record of the sidecar's file (read from the file: the
    shipper's own idea of the head may be a moment old)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sidecar.url}/readyz") as response:
            shipping = (await response.json())["shipping"]
    newest = rows(folder / "audit.db")[-1]["id"]
    return bool(shipping["acknowledged_id"] == newest and shipping["lag_records"] == 0)


def local_rows(folder: Path) -> list[tuple[Any, ...]]:
    return [tuple(row[field] for field in FIELDS) for row in rows(folder / "audit.db")]


async def test_three_sidecars_ship_through_kills_of_the_collector_and_a_sidecar(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    collector_config = write_collector(tmp_path, fleet_url, port)
    names = ["host-a", "host-b", "host-c"]
    configs = {name: write_sidecar(tmp_path / name, name, port) for name in names}
    async with AsyncExitStack() as stack:

        async def start(*args: str, cwd: Path) -> Running:
            return await stack.enter_async_context(started(*args, cwd=cwd))

        collector = await start("collect", "--config", str(collector_config), cwd=tmp_path)
        sidecars = {name: await start("serve", "--config", str(configs[name]), cwd=tmp_path / name) for name in names}
        tokens = [[f"load{n}" for n in range(first, first + 40)] for first in (0, 40, 80)]
        # Deletes on every sidecar while the collector is killed in the middle of their batches.
        load = asyncio.gather(*(delete_many(sidecar.url, tokens[0]) for sidecar in sidecars.values()))
        await collector.logged("fleet_batch")
        collector.process.kill()
        await collector.exited()
        await load
        await asyncio.gather(*(delete_many(sidecar.url, tokens[1]) for sidecar in sidecars.values()))
        collector = await start("collect", "--config", str(collector_config), cwd=tmp_path)
        # A sidecar killed and restarted resumes from the collector's mark.
        sidecars["host-b"].process.kill()
        await sidecars["host-b"].exited()
        sidecars["host-b"] = await start("serve", "--config", str(configs["host-b"]), cwd=tmp_path / "host-b")
        await asyncio.gather(*(delete_many(sidecar.url, tokens[2]) for sidecar in sidecars.values()))
        for name, sidecar in sidecars.items():
            await eventually(lambda name=name, sidecar=sidecar: caught_up(sidecar, tmp_path / name), timeout=30)
        for name in names:
            assert local_rows(tmp_path / name) == await central_rows(fleet_url, name), name
        status, output = await completed(
            "audit", "verify", "--store", fleet_url, "--config", str(collector_config), cwd=tmp_path
        )
        assert 0 == status, output
        assert "3 instances, 0 with problems" in output


async def test_a_query_on_the_fleet_store_finds_a_delete_on_each_sidecar(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    collector_config = write_collector(tmp_path, fleet_url, unused_tcp_port)
    async with started("collect", "--config", str(collector_config), cwd=tmp_path):
        for name in ("host-a", "host-b"):
            config = write_sidecar(tmp_path / name, name, unused_tcp_port)
            async with started("serve", "--config", str(config), cwd=tmp_path / name) as sidecar:
                await delete_many(sidecar.url, ["taFM3LHUTQAFhL0dIFg81XhRc7vC"])
                await eventually(lambda sidecar=sidecar, folder=tmp_path / name: caught_up(sidecar, folder))
                assert 0 == await sidecar.stop(signal.SIGTERM)
    status, output = await completed(
        "audit",
        "query",
        "--store",
        fleet_url,
        "--token",
        "taFM3LHUTQAFhL0dIFg81XhRc7vC",
        "--outcome",
        "deleted",
        "--format",
        "json",
        cwd=tmp_path,
    )
    assert 0 == status, output
    found = json.loads(output)
    assert [("host-a", 2, "deleted"), ("host-b", 2, "deleted")] == sorted(
        (r["instance"], r["id"], r["outcome"]) for r in found
    )
    status, output = await completed("audit", "show", "2", "--store", fleet_url, "--instance", "host-b", cwd=tmp_path)
    assert (0, "host-b") == (status, json.loads(output)["instance"])
    status, output = await completed("audit", "stats", "--store", fleet_url, "--by", "instance", cwd=tmp_path)
    assert [["host-a", "1"], ["host-b", "1"]] == [line.split() for line in output.splitlines()[2:]]
    status, output = await completed("audit", "show", "2", "--store", fleet_url, cwd=tmp_path)
    assert (2, "gateway: error: a fleet record is identified by its instance and id: give --instance\n") == (
        status,
        output,
    )
    status, output = await completed("audit", "query", "--instance", "host-a", cwd=tmp_path)
    assert 2 == status and "--instance goes with --store" in output
    status, output = await completed("audit", "query", "--store", "postgresql://u:secret@127.0.0.1/x", cwd=tmp_path)
    assert (
        2 == status
        and "must not contain a password" in output
        and "secret" not in output.replace("must not contain", "")
    )


async def test_prune_keeps_records_the_collector_has_not_acknowledged(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    collector_config = write_collector(tmp_path, fleet_url, unused_tcp_port)
    folder = tmp_path / "host-a"
    config = write_sidecar(folder, "host-a", unused_tcp_port)
    # The collector is down: records are committed locally, nothing is acknowledged.
    async with started("serve", "--config", str(config), cwd=folder) as sidecar:
        await delete_many(sidecar.url, ["load1", "load2"])
        assert 0 == await sidecar.stop(signal.SIGTERM)
    status, output = await completed(
        "audit", "prune", "--config", str(config), "--before", "2099-01-01T00:00:00Z", "--yes", cwd=folder
    )
    assert 2 == status
    assert "cannot learn what the collector at" in output and "pass --ignore-shipping" in output
    assert 4 == len(rows(folder / "audit.db"))
    async with started("collect", "--config", str(collector_config), cwd=tmp_path):
        # Nothing acknowledged yet: prune keeps everything.
        status, output = await completed(
            "audit", "prune", "--config", str(config), "--before", "2099-01-01T00:00:00Z", "--yes", cwd=folder
        )
        assert 0 == status, output
        assert "keeping the records after record 0" in output
        assert 4 == len(rows(folder / "audit.db"))
        status, output = await completed("audit", "ship", "--config", str(config), cwd=folder)
        assert (0, "shipped 4 records as instance host-a; the collector holds up to record 4\n") == (status, output)
        # Acknowledged: prune removes them (and its checkpoint is shipped later like any record).
        status, output = await completed(
            "audit", "prune", "--config", str(config), "--before", "2099-01-01T00:00:00Z", "--yes", cwd=folder
        )
        assert 0 == status, output
        assert "pruned 4 records" in output
        assert ["pruned"] == [row["outcome"] for row in rows(folder / "audit.db")]
        status, output = await completed("audit", "ship", "--config", str(config), cwd=folder)
        assert 0 == status, output
    assert 5 == len(await central_rows(fleet_url, "host-a"))


async def test_prune_refuses_when_the_collector_holds_another_log(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    """The collector holds records 1-4 of the first log; the file is deleted and a new one has
    records 1-2 (refused by the collector as a fork). Ids alone would say "all acknowledged":
    prune compares the mark's hash and removes nothing the collector does not hold."""
    collector_config = write_collector(tmp_path, fleet_url, unused_tcp_port)
    folder = tmp_path / "host-a"
    config = write_sidecar(folder, "host-a", unused_tcp_port)
    prune = ("audit", "prune", "--config", str(config), "--before", "2099-01-01T00:00:00Z", "--yes")
    async with started("collect", "--config", str(collector_config), cwd=tmp_path):
        async with started("serve", "--config", str(config), cwd=folder) as sidecar:
            await delete_many(sidecar.url, ["load1", "load2"])
            await eventually(lambda: caught_up(sidecar, folder))
        for new_log in ((), ("load3", "load4", "load5")):
            # A new log behind the mark (2 records), then one past it whose record 4 differs.
            for file in folder.glob("audit.db*"):
                file.unlink()
            async with started("serve", "--config", str(config), cwd=folder) as sidecar:
                await delete_many(sidecar.url, ["load3", *new_log])
                assert 0 == await sidecar.stop(signal.SIGTERM)
            kept = local_rows(folder)
            status, output = await completed(*prune, cwd=folder)
            assert 2 == status, output
            assert "this log is not the one it acknowledged" in output and "pass --ignore-shipping" in output
            assert kept == local_rows(folder)
        status, output = await completed(*prune, "--ignore-shipping", cwd=folder)
        assert 0 == status, output
        assert "warning: record 4 of this log is not the record 4 the collector holds" in output
        assert "pruned 8 records" in output
    assert 4 == len(await central_rows(fleet_url, "host-a"))


async def test_prune_ignore_shipping_removes_unacknowledged_records_loudly(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    folder = tmp_path / "host-a"
    config = write_sidecar(folder, "host-a", unused_tcp_port)
    async with started("serve", "--config", str(config), cwd=folder) as sidecar:
        await delete_many(sidecar.url, ["load1"])
        assert 0 == await sidecar.stop(signal.SIGTERM)
    status, output = await completed(
        "audit",
        "prune",
        "--config",
        str(config),
        "--before",
        "2099-01-01T00:00:00Z",
        "--yes",
        "--ignore-shipping",
        cwd=folder,
    )
    assert 0 == status, output
    assert "warning: cannot learn what the collector" in output and "pruned 2 records" in output


async def test_verify_reports_gaps_and_silent_instances(fleet_url: str, tmp_path: Path, unused_tcp_port: int) -> None:
    await shipped_once(tmp_path, fleet_url, unused_tcp_port, ["load1", "load2"])
    status, output = await completed("audit", "verify", "--store", fleet_url, "--silent-after", "3600", cwd=tmp_path)
    assert (0, "host-a: OK: 4 records verified (sha256 chain); head is record 4") == (status, output.split(", hash")[0])
    # Someone with write access to the fleet store removes a record: verify names it.
    await fetch(fleet_url, "DELETE FROM fleet_events WHERE instance = 'host-a' AND id = 2")
    await fetch(fleet_url, "UPDATE fleet_instances SET last_seen = now() - interval '2 hours'")
    status, output = await completed("audit", "verify", "--store", fleet_url, "--silent-after", "3600", cwd=tmp_path)
    assert 1 == status
    assert "host-a: TAMPERED: record 3: record 2 missing" in output
    assert "host-a: SILENT: no contact for" in output


async def test_verify_names_sidecars_never_heard_of_and_records_without_a_mark(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    """host-b and host-c are in the collector's config but never shipped (a wrong URL or
    password looks the same from here): SILENT, not absent. Then the store is edited: host-a's
    mark is removed, its records stay: TAMPERED, with or without --instance."""
    collector_config, _, _ = await shipped_once(tmp_path, fleet_url, unused_tcp_port, ["load1"])
    verify = ("audit", "verify", "--store", fleet_url, "--config", str(collector_config))
    status, output = await completed(*verify, cwd=tmp_path)
    assert 1 == status
    assert output.startswith("host-a: OK: 2 records verified (sha256 chain); head is record 2")
    assert output.endswith(
        "host-b: SILENT: a sidecar of the config that never reached the collector\n"
        "host-c: SILENT: a sidecar of the config that never reached the collector\n"
        "3 instances, 2 with problems\n"
    )
    await fetch(fleet_url, "DELETE FROM fleet_instances WHERE instance = 'host-a'")
    for scope in ((), ("--instance", "host-a")):
        status, output = await completed(*verify, *scope, cwd=tmp_path)
        assert 1 == status, output
        assert (
            "host-a: TAMPERED: 2 records held, but the collector's mark of this instance is gone from the fleet "
            "store: the store was edited; 0 records checked\n"
        ) in output


async def test_export_ocsf_locally_and_from_the_fleet_store(
    fleet_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    _, config, folder = await shipped_once(tmp_path, fleet_url, unused_tcp_port, ["taFM3LHUTQAFhL0dIFg81XhRc7vC"])
    status, local = await completed("audit", "export", "--config", str(config), "--format", "ocsf", cwd=folder)
    assert 0 == status, local
    status, central = await completed("audit", "export", "--store", fleet_url, "--format", "ocsf", cwd=tmp_path)
    assert 0 == status, central
    assert local == central
    intent, outcome = (json.loads(line) for line in local.splitlines())
    assert (6003, 4, 600304, 0, "pending") == (
        intent["class_uid"],
        intent["activity_id"],
        intent["type_uid"],
        intent["status_id"],
        intent["status_detail"],
    )
    assert (600304, 1, "Success", 200, "myname", "host-a:2", "host-a") == (
        outcome["type_uid"],
        outcome["status_id"],
        outcome["status"],
        outcome["http_status"],
        outcome["actor"]["user"]["name"],
        outcome["metadata"]["uid"],
        outcome["device"]["hostname"],
    )
    assert outcome["resources"][0]["data"]["app"] == "app1"
    assert "taFM3LHUTQAFhL0dIFg81XhRc7vC" not in local


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres@127.0.0.1:99999/x", "Port out of range 0-65535"),
        ("postgresql://postgres@127.0.0.1:5432,127.0.0.1:70000/x", "Port out of range 0-65535"),
        ("postgresql://postgres@127.0.0.1:5432/x?password=hunter2", "must not contain a password"),
    ],
)
async def test_a_bad_store_url_is_one_line_never_a_traceback_nor_its_password(
    tmp_path: Path, url: str, message: str
) -> None:
    status, output = await completed("audit", "query", "--store", url, cwd=tmp_path)
    assert 2 == status
    assert message in output and "Traceback" not in output and "hunter2" not in output
