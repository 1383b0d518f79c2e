"""The fleet tier on a real PostgreSQL server: collector, shipper, fleet queries and verify.

Collectors and gateways run in-process on loopback; the central rows are read straight from
PostgreSQL. See ``fleet_support`` for where the server comes from.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from audit_support import make_log, tamper
from docs_markdown import Document, code_spans, read
from fleet_support import (
    SIDECAR_PASSWORDS,
    batch_body,
    central_rows,
    chain_rows,
    eventually,
    fetch,
    post,
    records,
    ship_auth,
    shipped_all,
    sidecar_config,
    start_collector,
)
from helpers import SAMPLE_PATH, USERS, AppClient, GatewayFactory, basic, copy_database, make_config, rows
from pytest_aiohttp import AiohttpServer

from gateway.audit.chain import ChainKey, Head
from gateway.audit.record import FIELDS
from gateway.config import Config
from gateway.fleet import protocol
from gateway.fleet.collector import build_collector_app
from gateway.fleet.schema import EVENTS, MIGRATIONS, SCHEMA_VERSION, missing_fields, stored_fields
from gateway.fleet.shipper import Shipper
from gateway.fleet.store import FleetStore
from gateway.runtime import RUNTIME

KEY = b"k" * 32


class TestSchema:
    def test_every_record_field_has_a_column_from_the_migrations(self) -> None:
        """The migrations add exactly the record's fields; a field added without one is named."""
        assert () == missing_fields()
        assert FIELDS == stored_fields()
        assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))

    async def test_the_collector_creates_the_schema_and_records_its_version(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        await start_collector(aiohttp_server, tmp_path, fleet_url)
        columns = await fetch(
            fleet_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            EVENTS,
        )
        # Version 2 appended the fields of schema 4 after those of version 1.
        appended = ("action", "resource_type", "resource", "params")
        expected = [f for f in FIELDS if f not in appended] + list(appended)
        assert [("instance",), *((field,) for field in expected)] == columns
        assert [(1,), (2,)] == await fetch(fleet_url, "SELECT version FROM fleet_schema ORDER BY version")

    async def test_a_newer_schema_stops_the_collector_and_the_readers(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        await start_collector(aiohttp_server, tmp_path, fleet_url)
        await fetch(fleet_url, "INSERT INTO fleet_schema (version, description) VALUES (99, 'from the future')")
        with pytest.raises(Exception, match="schema version 99, newer than this gateway's 2"):
            await start_collector(aiohttp_server, tmp_path, fleet_url)
        with pytest.raises(Exception, match="schema version 99, newer than this gateway's 2"):
            await FleetStore.open(fleet_url)

    async def test_readers_refuse_a_database_without_a_fleet_store(self, fleet_url: str) -> None:
        with pytest.raises(Exception, match="holds no fleet store: start `gateway collect` on it once to create it"):
            await FleetStore.open(fleet_url)


class TestIngest:
    async def test_a_batch_is_stored_whole_and_answered_with_the_mark(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(3))
        status, answer = await post(collector, "host-a", batch_body(batch))
        assert (200, 3, 0, 3, batch[-1][-1]) == (
            status,
            answer["accepted"],
            answer["duplicates"],
            answer["mark"],
            answer["hash"],
        )
        assert [tuple(row) for row in batch] == await central_rows(fleet_url, "host-a")

    async def test_a_resent_batch_changes_nothing(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(4))
        await post(collector, "host-a", batch_body(batch))
        before = await central_rows(fleet_url, "host-a")
        status, answer = await post(collector, "host-a", batch_body(batch))
        assert (200, 0, 4, 4) == (status, answer["accepted"], answer["duplicates"], answer["mark"])
        # Overlapping: two held, two new.
        more = chain_rows(records(2, start=4), Head(4, batch[-1][-1]))
        status, answer = await post(collector, "host-a", batch_body(batch[2:] + more))
        assert (200, 2, 2, 6) == (status, answer["accepted"], answer["duplicates"], answer["mark"])
        assert before + [tuple(row) for row in more] == await central_rows(fleet_url, "host-a")

    async def test_a_batch_for_another_instance_is_refused_and_flagged(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        status, answer = await post(collector, "host-b", batch_body(chain_rows(records(2))), as_instance="host-a")
        assert (403, "collector.wrong_instance") == (status, answer["code"])
        assert [] == await central_rows(fleet_url, "host-b")
        assert [("host-b", "forged")] == await fetch(fleet_url, "SELECT instance, kind FROM fleet_flags")

    async def test_wrong_sidecar_credentials_are_refused(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                collector.make_url(f"{protocol.BASE}/host-a/records"),
                data=batch_body(chain_rows(records(1))),
                headers=ship_auth("host-a", "wrong"),
            ) as response:
                assert (401, "collector.unauthorized") == (response.status, (await response.json())["code"])
            # A [[users]] account is not a sidecar.
            async with session.get(collector.make_url(f"{protocol.BASE}/myname"), headers=basic("myname")) as response:
                assert 401 == response.status
        assert [] == await central_rows(fleet_url, "host-a")

    async def test_a_gap_is_refused_and_flagged(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(6))
        await post(collector, "host-a", batch_body(batch[:3]))
        status, answer = await post(collector, "host-a", batch_body(batch[4:]))
        assert (409, "collector.chain_gap") == (status, answer["code"])
        assert "record 4 missing" in answer["message"]
        assert 3 == len(await central_rows(fleet_url, "host-a"))
        assert [("gap", 5)] == await fetch(fleet_url, "SELECT kind, record_id FROM fleet_flags")

    async def test_a_fork_is_refused_and_flagged(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """Same id, other hash: a resent record that changed, or a next record linking elsewhere."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(3))
        await post(collector, "host-a", batch_body(batch))
        other = chain_rows(records(3, actor="mallory"))
        status, answer = await post(collector, "host-a", batch_body(other))
        assert (409, "collector.chain_fork") == (status, answer["code"])
        assert "record 1 is held with hash" in answer["message"]
        beyond = chain_rows(records(1, start=3), Head(3, other[-1][-1]))
        status, answer = await post(collector, "host-a", batch_body(beyond))
        assert (409, "collector.chain_fork") == (status, answer["code"])
        assert [tuple(row) for row in batch] == await central_rows(fleet_url, "host-a")
        assert [("fork", 1), ("fork", 4)] == await fetch(
            fleet_url, "SELECT kind, record_id FROM fleet_flags ORDER BY id"
        )

    async def test_a_resent_record_the_collector_does_not_hold_is_a_fork_not_a_duplicate(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """An instance whose chain starts late here (its log was pruned before it shipped) holds
        nothing before its start: a record sent from there cannot be compared, so it is no
        duplicate. Nor is one removed from the store."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(6))
        status, answer = await post(collector, "host-a", batch_body(batch[3:]))
        assert (200, 3, 6) == (status, answer["accepted"], answer["mark"])
        status, answer = await post(collector, "host-a", batch_body(batch[1:3]))
        assert (409, "collector.chain_fork") == (status, answer["code"])
        assert (
            "record 2 is not held by the collector (the instance's chain starts after record 3 here)"
            in (answer["message"])
        )
        await fetch(fleet_url, "DELETE FROM fleet_events WHERE instance = 'host-a' AND id = 5")
        status, answer = await post(collector, "host-a", batch_body(batch[4:5]))
        assert (409, "collector.chain_fork") == (status, answer["code"])
        assert "record 5 is not held by the collector (it is missing from the fleet store)" in answer["message"]
        assert [("fork", 2), ("fork", 5)] == await fetch(
            fleet_url, "SELECT kind, record_id FROM fleet_flags ORDER BY id"
        )

    async def test_an_edited_record_is_refused_as_a_rewrite(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(3))
        edited = list(batch[1])
        edited[FIELDS.index("actor")] = "mallory"
        status, answer = await post(collector, "host-a", batch_body([batch[0], tuple(edited), batch[2]]))
        assert (409, "collector.chain_rewrite") == (status, answer["code"])
        assert [] == await central_rows(fleet_url, "host-a")

    async def test_a_changed_chain_key_is_refused_as_a_rewrite(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(2))
        await post(collector, "host-a", batch_body(batch))
        keyed = chain_rows(records(1, start=2), Head(2, batch[-1][-1]), ChainKey(KEY))
        status, answer = await post(collector, "host-a", batch_body(keyed, ChainKey(KEY)))
        assert (409, "collector.chain_rewrite") == (status, answer["code"])

    async def test_a_keyed_instance_is_checked_with_its_key(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        sidecars = [{"instance": "host-a", "password_hash": USERS[0]["password_hash"], "chain_key_env": "HOST_A_KEY"}]
        config = make_config(
            tmp_path, collector={"database_url": fleet_url}, sidecars=sidecars, environ={"HOST_A_KEY": KEY.decode()}
        )
        collector = await aiohttp_server(build_collector_app(config))
        good = chain_rows(records(2), key=ChainKey(KEY))
        forged = chain_rows(records(2), key=ChainKey(b"x" * 32))
        async with aiohttp.ClientSession() as session:
            for body, expected in (
                (batch_body(forged, ChainKey(b"x" * 32)), 409),
                (batch_body(good, ChainKey(KEY)), 200),
            ):
                async with session.post(
                    collector.make_url(f"{protocol.BASE}/host-a/records"),
                    data=body,
                    headers=ship_auth("host-a", "mypass"),
                ) as response:
                    assert expected == response.status

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            (
                [*FIELDS[:-2], "approver", *FIELDS[-2:]],
                "fields this collector does not know (approver): upgrade the collector",
            ),
            (
                [f for f in FIELDS if f != "token"],
                "lacks record fields this collector's store has (token): upgrade the sidecar",
            ),
        ],
    )
    async def test_fields_the_collector_does_not_know_are_refused_not_truncated(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path, fields: list[str], message: str
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        status, answer = await post(collector, "host-a", batch_body(chain_rows(records(1)), fields=fields))
        assert (422, "collector.unknown_fields") == (status, answer["code"])
        assert message in answer["message"]
        assert [] == await central_rows(fleet_url, "host-a")

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b"{", "The batch is not JSON"),
            (b"[]", 'must be an object with "fields"'),
            (orjson.dumps({"fields": list(FIELDS), "chain": {"mode": "md5"}, "records": []}), '"chain" must be'),
            (
                orjson.dumps({"fields": list(FIELDS), "chain": {"mode": "sha256", "key_check": None}, "records": []}),
                "holds no record",
            ),
            (
                orjson.dumps(
                    {"fields": list(FIELDS), "chain": {"mode": "sha256", "key_check": None}, "records": [[1]]}
                ),
                "Record 0 of the batch is not a list of 23 values",
            ),
        ],
    )
    async def test_a_malformed_batch_gets_400_naming_the_problem(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path, body: bytes, message: str
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        status, answer = await post(collector, "host-a", body)
        assert (400, "collector.bad_batch") == (status, answer["code"])
        assert message in answer["message"]

    async def test_a_batch_over_max_batch_gets_413(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url, max_batch=2)
        status, answer = await post(collector, "host-a", batch_body(chain_rows(records(3))))
        assert (413, "collector.batch_too_large") == (status, answer["code"])

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("time", "not-a-time", "time is not a UTC time as the gateway writes it"),
            ("time", "2026-02-30T10:00:00.000Z", "time is not a UTC time"),
            ("time", "2026-11-24 18:00:00", "time is not a UTC time"),
            ("outcome", "banana", "outcome is not an outcome the gateway records"),
            ("method", "", "method is not an HTTP method"),
            ("method", "DE LETE", "method is not an HTTP method"),
            ("request_id", "", "request_id is not non-empty text"),
            ("snapshot", "{not json", "snapshot is not JSON text"),
            ("snapshot", "NaN", "snapshot is not JSON text"),
            ("params", "[1,", "params is not JSON text"),
            ("params", "[1]", "params is not a JSON object"),
            ("token_sha256", "xyz", "token_sha256 is not a SHA-256 hash"),
            ("token_sha256", "A" * 64, "token_sha256 is not a SHA-256 hash"),
            ("upstream_status", -5, "upstream_status is not an HTTP status"),
            ("upstream_status", True, "upstream_status is not an HTTP status"),
            ("latency_ms", -1.0, "latency_ms is not a duration"),
            ("action", "nuke.all", "action is not an action the gateway records"),
            ("resource_type", "planet", "resource_type is not a resource type the gateway records"),
            ("client_ip", "here", "client_ip is not an IP address"),
            ("client_ip", 5, "client_ip is not an IP address"),
            ("token_hint", "c7vCxx", "token_hint is not a token hint (text of at most 4 characters)"),
            ("actor", 7, "actor is not text"),
            ("outcome", None, "has no outcome"),
        ],
    )
    async def test_a_value_the_local_log_cannot_hold_refuses_the_batch_whole(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path, field: str, value: Any, message: str
    ) -> None:
        """Checked by form, not only by JSON type: a time that is not one, a snapshot that is not
        JSON... would break fleet queries, verify and the OCSF export later. The record is
        correctly chained, and the batch's other records are good: nothing of it is stored."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        items = records(3)
        items[1] = items[1]._replace(**{field: value})
        status, answer = await post(collector, "host-a", batch_body(chain_rows(items)))
        assert (400, "collector.bad_batch") == (status, answer["code"])
        assert f"Record 1 of the batch (id 2): {message}" in answer["message"]
        assert [] == await central_rows(fleet_url, "host-a")
        assert [] == await fetch(fleet_url, "SELECT instance FROM fleet_instances")

    @pytest.mark.parametrize(
        ("position", "value", "message"),
        [
            (-1, "NOT|HEX", "hash is not a SHA-256 hash"),
            (-2, "0" * 63, "prev_hash is not a SHA-256 hash"),
            (0, 0, "id is not a record id"),
            (0, 2**63, "id is not a record id"),
        ],
    )
    async def test_chain_values_are_checked_by_form_even_when_the_collector_has_no_key(
        self,
        fleet_url: str,
        aiohttp_server: AiohttpServer,
        tmp_path: Path,
        position: int,
        value: Any,
        message: str,
    ) -> None:
        """A keyed chain whose key the collector lacks is checked for its links only: its hashes
        must still be hashes."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        key = ChainKey(KEY)
        row = list(chain_rows(records(1), key=key)[0])
        row[position] = value
        status, answer = await post(collector, "host-a", batch_body([tuple(row)], key))
        assert (400, "collector.bad_batch") == (status, answer["code"])
        assert message in answer["message"]
        assert [] == await central_rows(fleet_url, "host-a")

    @pytest.mark.parametrize(
        ("chain", "message"),
        [
            ({"mode": "hmac-sha256", "key_check": "whatever"}, "key_check is 64 lowercase hexadecimal digits"),
            ({"mode": "hmac-sha256", "key_check": None}, "key_check is 64 lowercase hexadecimal digits"),
            ({"mode": "sha256", "key_check": "0" * 64}, "a sha256 chain has no key_check"),
        ],
    )
    async def test_a_chain_description_the_sidecar_cannot_have_is_refused(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path, chain: dict[str, Any], message: str
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        body = orjson.dumps({"fields": list(FIELDS), "chain": chain, "records": chain_rows(records(1))})
        status, answer = await post(collector, "host-a", body)
        assert (400, "collector.bad_batch") == (status, answer["code"])
        assert message in answer["message"]
        assert [] == await central_rows(fleet_url, "host-a")

    def test_every_record_field_has_a_check(self) -> None:
        from gateway.fleet.values import FIELD_CHECKS

        assert FIELDS == tuple(FIELD_CHECKS)

    async def test_a_body_over_max_body_mb_gets_413_whatever_max_batch_allows(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """The body cap was max_batch x 64 KiB (312 MiB by default), read whole into memory by
        any sidecar's credential. It is collector.max_body_mb; the shipper halves its batch."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url, max_body_mb=1)
        big = orjson.dumps({"blob": "x" * 400_000}).decode()
        batch = chain_rows([item._replace(snapshot=big) for item in records(3)])
        status, answer = await post(collector, "host-a", batch_body(batch))
        assert (413, "collector.batch_too_large") == (status, answer["code"])
        assert [] == await central_rows(fleet_url, "host-a")
        for part in (batch[:2], batch[2:]):  # what a shipper does on 413: halve
            assert 200 == (await post(collector, "host-a", batch_body(part)))[0]
        assert [tuple(row) for row in batch] == await central_rows(fleet_url, "host-a")

    async def test_text_postgresql_cannot_hold_is_kept_exactly(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """U+0000 in a claimed user name (a denied record) is stored, found and verified; it never
        blocks the instance's shipping."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows([*records(1, actor="mal\x00lory"), *records(1, actor="\x01odd", start=1)])
        status, _ = await post(collector, "host-a", batch_body(batch))
        assert 200 == status
        store = await FleetStore.open(fleet_url, instance="host-a")
        try:
            assert [tuple(row) for row in batch] == [row async for batch_ in store.rows() for row in batch_]
            from gateway.audit.query import AuditFilter

            assert ["mal\x00lory"] == [r.actor for r in await store.query(AuditFilter(actor="mal\x00lory"))]
        finally:
            await store.close()


class TestShipping:
    async def test_two_sidecars_ship_and_one_query_finds_both(
        self, fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        clients = [await gateway(sidecar_config(tmp_path, name, collector)) for name in ("host-a", "host-b")]
        for client in clients:
            async with client.delete(SAMPLE_PATH, headers=basic("myname")) as response:
                assert 200 == response.status
        for client in clients:
            await eventually(lambda client=client: shipped_all(client))
        for name in ("host-a", "host-b"):
            local = [tuple(row[f] for f in FIELDS) for row in rows(tmp_path / name / "audit.db")]
            assert local == await central_rows(fleet_url, name)
        store = await FleetStore.open(fleet_url)
        try:
            from gateway.audit.fingerprint import fingerprint
            from gateway.audit.query import AuditFilter

            found = await store.located(
                AuditFilter(token_sha256=fingerprint(SAMPLE_PATH.rsplit("/", 1)[1]), outcome="deleted")
            )
            assert ["host-a", "host-b"] == sorted(item.instance for item in found)
        finally:
            await store.close()

    async def test_readyz_shows_the_lag_while_the_collector_is_down_and_stays_ready(
        self,
        fleet_url: str,
        aiohttp_server: AiohttpServer,
        gateway: GatewayFactory,
        tmp_path: Path,
        unused_tcp_port: int,
    ) -> None:
        """Collector down: deletes go on, /readyz says ready with the lag and the error; back up,
        the sidecar catches up: nothing lost, nothing doubled."""
        client = await gateway(sidecar_config(tmp_path, "host-a", f"http://127.0.0.1:{unused_tcp_port}"))
        for token in ("taFM3LHUTQAFhL0dIFg81XhRc7vC", "nope"):
            async with client.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")) as response:
                assert response.status in (200, 404)
        shipper = client.app[RUNTIME].shipper
        assert shipper is not None
        await eventually(lambda: _true(shipper.last_error is not None and shipper.local_head == 4))
        async with client.get("/readyz") as response:
            body = await response.json()
        assert (200, "ready", 4, None) == (
            response.status,
            body["status"],
            body["shipping"]["lag_records"],
            body["shipping"]["acknowledged_id"],
        )
        assert body["shipping"]["lag_seconds"] > 0
        assert "cannot reach the collector" in body["shipping"]["last_error"]
        assert body["shipping"]["refused"] is None  # down is not refused: nothing to look at but the collector
        await start_collector(aiohttp_server, tmp_path, fleet_url, port=unused_tcp_port)
        await eventually(lambda client=client: shipped_all(client))
        async with client.get("/readyz") as response:
            shipping = (await response.json())["shipping"]
        assert (0, 0.0, None, 4) == (
            shipping["lag_records"],
            shipping["lag_seconds"],
            shipping["last_error"],
            shipping["acknowledged_id"],
        )
        local = [tuple(row[f] for f in FIELDS) for row in rows(tmp_path / "host-a" / "audit.db")]
        assert local == await central_rows(fleet_url, "host-a")
        async with client.get("/metrics") as response:
            text = await response.text()
        assert "gateway_ship_lag_records 0.0" in text and "gateway_ship_records_total 4.0" in text

    async def test_batches_shrink_to_what_the_collector_takes(
        self, fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
    ) -> None:
        """ship.batch_size above collector.max_batch: every batch was refused 413 and resent as
        it was, forever. The shipper halves it until it passes."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url, max_batch=3)
        client = await gateway(sidecar_config(tmp_path, "host-a", collector, batch_size=50))
        for token in ("load1", "load2", "load3", "load4"):
            async with client.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")) as r:
                assert 200 == r.status
        await eventually(lambda: shipped_all(client))
        local = [tuple(row[f] for f in FIELDS) for row in rows(tmp_path / "host-a" / "audit.db")]
        assert local == await central_rows(fleet_url, "host-a")


async def _replaced_log(gateway: GatewayFactory, config: Config, shipped: int) -> tuple[AppClient, Shipper]:
    """A sidecar ships ``shipped`` deletes; its log file is deleted; restarted on a new one, it
    makes one delete (records 1-2) and its shipper is refused as a fork of record 2."""
    first = await gateway(config)
    for n in range(shipped):
        async with first.delete(f"/v1/o/myorg/oauth2/accesstokens/load{n}", headers=basic("myname")) as response:
            assert 200 == response.status
    await eventually(lambda: shipped_all(first))
    await first.close()
    for suffix in ("", "-wal", "-shm"):  # the whole log (the file alone, WAL left, stops start-up)
        config.database_path.with_name(config.database_path.name + suffix).unlink(missing_ok=True)
    second = await gateway(config)
    async with second.delete(f"/v1/o/myorg/oauth2/accesstokens/load{shipped}", headers=basic("myname")) as response:
        assert 200 == response.status
    shipper = second.app[RUNTIME].shipper
    assert shipper is not None
    await eventually(lambda: _true(shipper.last_error is not None and "record 2 " in shipper.last_error[1]))
    return second, shipper


async def _true(value: bool) -> bool:
    return value


def test_a_collector_url_with_a_port_out_of_range_is_refused_at_load(tmp_path: Path) -> None:
    """It was accepted, and every shipping attempt then failed with 'cannot reach the collector:
    InvalidUrlClientError', as if the collector were down."""
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"ship\.url: Port out of range 0-65535"):
        make_config(tmp_path, ship={"url": "http://127.0.0.1:99999", "password_env": "PW"}, environ={"PW": "x"})


@pytest.mark.parametrize("size", [0, 100_001, 2**63])
def test_a_batch_size_past_what_a_batch_can_hold_is_refused_at_load(tmp_path: Path, size: int) -> None:
    """2**63 was accepted, and every read of the log then failed with an OverflowError."""
    from gateway.config import ConfigError

    expected = rf"expected a whole number from 1 to 100000, got {size}"
    with pytest.raises(ConfigError, match=rf"ship\.batch_size: {expected}"):
        make_config(
            tmp_path, ship={"url": "http://127.0.0.1:1", "batch_size": size, "password_env": "PW"}, environ={"PW": "x"}
        )
    with pytest.raises(ConfigError, match=rf"collector\.max_batch: {expected}"):
        make_config(tmp_path, collector={"database_url": "postgresql://h/db", "max_batch": size})


@pytest.mark.parametrize("instance", [".", ".."])
def test_an_instance_id_a_url_path_would_drop_is_refused(tmp_path: Path, instance: str) -> None:
    """'.' and '..' are path segments a URL resolves away: the shipper's requests would go to
    another route (the mark of instance 'records')."""
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"ship\.instance: expected an instance id .*not '\.' or '\.\.'"):
        make_config(
            tmp_path,
            ship={"url": "http://127.0.0.1:1", "instance": instance, "password_env": "PW"},
            environ={"PW": "x"},
        )
    with pytest.raises(ConfigError, match=r"sidecars\[0\]\.instance"):
        make_config(
            tmp_path,
            collector={"database_url": "postgresql://h/db"},
            sidecars=[{"instance": instance, "password_hash": USERS[0]["password_hash"]}],
        )


class TestFleetVerify:
    async def test_a_late_start_is_vouched_for_by_the_instances_prune_checkpoint(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """A sidecar pruned records 1-3 before it first shipped: its chain starts after record 3
        here, which its checkpoint (record 7) vouches for. Records removed centrally with the
        start moved to match are not: nothing vouches for the new start."""
        from gateway.audit.record import AuditRecord
        from gateway.fleet.verify import verify_fleet

        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        first = chain_rows(records(6))
        details = {"pruned_through_id": 3, "last_pruned_hash": first[2][-1], "removed": 3}
        checkpoint = AuditRecord(
            "prune-1",
            "2026-11-24T19:00:00.000Z",
            "root",
            None,
            "PRUNE",
            None,
            None,
            None,
            "pruned",
            snapshot=orjson.dumps(details).decode(),
        )
        rows_ = first[3:] + chain_rows([checkpoint], Head(6, first[-1][-1]))
        status, _ = await post(collector, "host-a", batch_body(rows_))
        assert 200 == status
        status, _ = await post(collector, "host-b", batch_body(first[3:]))  # its checkpoint not shipped
        assert 200 == status

        async def verdicts() -> dict[str, str | None]:
            store = await FleetStore.open(fleet_url)
            try:
                return {v.instance: v.problem for v in await verify_fleet(store, {}, silent_after=3600)}
            finally:
                await store.close()

        found = await verdicts()
        assert found["host-a"] is None
        assert "its chain starts after record 3 here, and no prune checkpoint" in str(found["host-b"])
        await fetch(fleet_url, "DELETE FROM fleet_events WHERE instance = 'host-a' AND id IN (4, 5)")
        await fetch(
            fleet_url,
            "UPDATE fleet_instances SET start_id = 5, start_hash = $1 WHERE instance = 'host-a'",
            first[4][-1],
        )
        assert "its chain starts after record 5 here, and no prune checkpoint" in str((await verdicts())["host-a"])

    async def test_silence_is_measured_by_the_stores_clock_not_the_readers(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """verify run on a host whose clock is two hours ahead (an analyst's laptop): the contact
        the collector just recorded is not two hours old. The clock patched is the standard
        library's, as the reader's host would have it wrong."""
        from datetime import datetime, timedelta

        import gateway.fleet.verify
        from gateway.fleet.verify import verify_fleet

        class Ahead(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> Any:
                return datetime.now(tz) + timedelta(hours=2)

        monkeypatch.setattr(gateway.fleet.verify, "datetime", Ahead, raising=False)
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        assert 200 == (await post(collector, "host-a", batch_body(chain_rows(records(1)))))[0]
        store = await FleetStore.open(fleet_url)
        try:
            (verdict,) = await verify_fleet(store, {}, silent_after=3600)
            assert verdict.silent_seconds is None
            await fetch(fleet_url, "UPDATE fleet_instances SET last_seen = now() - interval '2 hours'")
            (verdict,) = await verify_fleet(store, {}, silent_after=3600)
            assert verdict.silent_seconds is not None and 7200 <= verdict.silent_seconds < 7300
        finally:
            await store.close()

    async def test_a_plain_chain_marked_keyed_in_the_store_is_tampered_not_links_only(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        """Without the key, verify checks a keyed instance's links only. Marking a plain instance
        keyed in the store, then editing a record, would pass; but its other records still hash
        as a plain chain, which no HMAC-keyed record does."""
        from gateway.fleet.verify import verify_fleet

        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        assert 200 == (await post(collector, "host-a", batch_body(chain_rows(records(3)))))[0]
        keyed = chain_rows(records(3), key=ChainKey(KEY))
        assert 200 == (await post(collector, "host-b", batch_body(keyed, ChainKey(KEY))))[0]
        await fetch(
            fleet_url,
            "UPDATE fleet_instances SET chain_mode = 'hmac-sha256', key_check = $1 WHERE instance = 'host-a'",
            ChainKey(KEY).check,
        )
        await fetch(fleet_url, "UPDATE fleet_events SET actor = 'mallory' WHERE instance = 'host-a' AND id = 2")
        store = await FleetStore.open(fleet_url)
        try:
            found = {v.instance: v for v in await verify_fleet(store, {}, silent_after=3600)}
        finally:
            await store.close()
        assert (True, None) == (found["host-b"].links_only, found["host-b"].problem)
        assert "record 1: hashed as a plain sha256 chain, though the instance is marked keyed" in str(
            found["host-a"].problem
        )

    async def test_records_added_past_the_mark_are_named_as_added(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        from gateway.fleet.verify import verify_fleet

        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        batch = chain_rows(records(3))
        assert 200 == (await post(collector, "host-a", batch_body(batch[:2])))[0]
        columns = ", ".join(("instance", *FIELDS))
        placeholders = ", ".join(f"${n}" for n in range(1, len(FIELDS) + 2))
        await fetch(fleet_url, f"INSERT INTO fleet_events ({columns}) VALUES ({placeholders})", "host-a", *batch[2])
        store = await FleetStore.open(fleet_url)
        try:
            (verdict,) = await verify_fleet(store, {}, silent_after=3600)
        finally:
            await store.close()
        assert verdict.problem == (
            "the store's events end at record 3, but the collector acknowledged up to record 2: records past "
            "its mark were added to the fleet store"
        )

    async def test_asking_the_mark_counts_as_contact_for_a_sidecar_with_nothing_shipped(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        async with aiohttp.ClientSession() as session:
            async with session.get(collector.make_url(f"{protocol.BASE}/host-b"), headers=ship_auth("host-b")) as r:
                assert (200, 0) == (r.status, (await r.json())["mark"])
        assert [("host-b", 0)] == await fetch(fleet_url, "SELECT instance, head_id FROM fleet_instances")


class TestFleetApi:
    async def test_events_across_the_fleet_with_instance_and_org_scoping(
        self, fleet_url: str, aiohttp_server: AiohttpServer, tmp_path: Path
    ) -> None:
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        await post(collector, "host-a", batch_body(chain_rows(records(3))))
        await post(collector, "host-b", batch_body(chain_rows(records(2, org="otherorg"))))
        async with aiohttp.ClientSession() as session:
            async with session.get(collector.make_url("/audit/events?limit=2"), headers=basic("auditor")) as response:
                page = await response.json()
            assert 200 == response.status
            assert [("host-a", 3), ("host-b", 2)] == [(e["instance"], e["id"]) for e in page["events"]]
            async with session.get(
                collector.make_url(f"/audit/events?limit=10&cursor={page['next']}"), headers=basic("auditor")
            ) as response:
                rest = await response.json()
            assert [("host-a", 2), ("host-b", 1), ("host-a", 1)] == [(e["instance"], e["id"]) for e in rest["events"]]
            async with session.get(
                collector.make_url("/audit/events?instance=host-b"), headers=basic("myname")
            ) as response:
                assert (200, []) == (response.status, (await response.json())["events"])  # myname sees myorg only
            async with session.get(collector.make_url("/audit/events/host-a/2"), headers=basic("myname")) as response:
                record = await response.json()
            assert ("host-a", 2, {"app": "app1"}) == (record["instance"], record["id"], record["snapshot"])
            async with session.get(
                collector.make_url("/audit/events?org=otherorg"), headers=basic("myname")
            ) as response:
                assert (403, "gateway.forbidden") == (response.status, (await response.json())["code"])
            async with session.get(
                collector.make_url("/audit/events?instance=../x"), headers=basic("auditor")
            ) as response:
                assert (400, "gateway.bad_request") == (response.status, (await response.json())["code"])
            async with session.get(collector.make_url("/audit/events"), headers=basic("outsider")) as response:
                assert 403 == response.status
            # A cursor no page gave (an id past 64 bits) is the client's error, not the store's.
            beyond = base64.urlsafe_b64encode(f"2026|host-a|{2**70}".encode()).decode()
            async with session.get(
                collector.make_url(f"/audit/events?cursor={beyond}"), headers=basic("auditor")
            ) as response:
                assert (400, "gateway.bad_request") == (response.status, (await response.json())["code"])


DOCS = Path(__file__).resolve().parents[1] / "docs"


def doc_page(name: str) -> Document:
    return read(DOCS / name, f"docs/{name}")


def fleet_page() -> Document:
    return doc_page("fleet.md")


def test_the_docs_list_every_collector_refusal() -> None:
    table = fleet_page().table("Status", "Code", "When")
    assert [(error.status, error.code) for error in protocol.ALL] == [
        (int(status), code_spans(code)[0]) for status, code, _ in table.rows
    ]


def test_a_successful_revocation_is_an_ocsf_success_on_its_own_resource_type() -> None:
    """succeeded (a revoke, approve, creation...) was exported as a Failure, and every resource
    as an access_token."""
    from gateway.fleet.ocsf import event

    revoked = records(1)[0]._replace(
        method="POST",
        outcome="succeeded",
        action="key.revoke",
        resource_type="consumer_key",
        resource="developers/a@example.com/apps/app1/keys/{key}",
    )
    out = event(chain_rows([revoked])[0], "host-a")
    assert (1, "Success", "consumer_key") == (out["status_id"], out["status"], out["resources"][0]["type"])
    assert (3, "Update", 600303) == (out["activity_id"], out["activity_name"], out["type_uid"])  # not a Create
    older = event(chain_rows(records(1))[0], "host-a")  # a record before schema 4: no resource_type
    assert (1, "access_token") == (older["status_id"], older["resources"][0]["type"])


def test_the_docs_show_the_ocsf_mapping() -> None:
    from gateway.fleet.ocsf import MAPPING

    table = fleet_page().table("Record field", "OCSF attribute", "Note")
    assert [(field, attribute) for field, attribute, _ in MAPPING] == [
        (code_spans(field)[0], code_spans(attribute)[0]) for field, attribute, _ in table.rows
    ]


async def test_every_metric_of_the_collector_has_a_row(fleet_url: str, aiohttp_server: Any, tmp_path: Path) -> None:
    """Its own families in docs/fleet.md, the rest in the gateway's table (docs/operations.md)."""
    collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
    async with aiohttp.ClientSession() as session, session.get(collector.make_url("/metrics")) as response:
        exposition = await response.text()
    exposed = {
        (name, kind)
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE)
        if not name.endswith("_created")
    }
    own = {
        (code_spans(metric)[0].partition("{")[0], kind)
        for metric, kind, _ in fleet_page().table("Metric", "Type", "What").rows
    }
    gateway = {
        (code_spans(metric)[0].partition("{")[0], kind)
        for metric, kind, _ in doc_page("operations.md").table("Metric", "Type", "What").rows
    }
    assert {name for name, _ in exposed if name.startswith("collector_")} == {name for name, _ in own}
    assert sorted(exposed - own) == sorted(exposed & gateway)


class TestSidecarSide:
    async def test_a_replaced_local_log_is_sent_and_flagged_not_silently_skipped(
        self, fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
    ) -> None:
        """The collector holds records 1-4; the sidecar's file is replaced by a fresh one (ids
        from 1 again): its records are sent anyway and refused as a fork, never skipped as
        'already acknowledged'."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        _, shipper = await _replaced_log(gateway, sidecar_config(tmp_path, "host-a", collector), 2)
        assert shipper.last_error is not None
        assert "collector.chain_fork" in shipper.last_error[1]
        assert 2 == shipper.lag_records
        await eventually(lambda: _true(shipper.failures >= 3))  # retried: flagged once all the same
        # Its head is sent: record 1 (the intent) if the shipper looked between the two commits, then 2.
        assert await fetch(fleet_url, "SELECT kind, record_id FROM fleet_flags ORDER BY id") in (
            [("fork", 2)],
            [("fork", 1), ("fork", 2)],
        )
        assert 4 == len(await central_rows(fleet_url, "host-a"))

    async def test_a_replaced_log_as_long_as_the_shipped_one_is_flagged_not_idle(
        self, fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
    ) -> None:
        """The new file's head is the collector's mark by id (2), not by hash: nothing is after
        the mark, yet the new records are not shipped. Flagged, never 'caught up'."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        second, shipper = await _replaced_log(gateway, sidecar_config(tmp_path, "host-a", collector), 1)
        assert shipper.last_error is not None and "collector.chain_fork" in shipper.last_error[1]
        async with second.get("/readyz") as response:
            shipping = (await response.json())["shipping"]
        assert (2, 2, "collector.chain_fork") == (
            shipping["local_head_id"],
            shipping["lag_records"],
            shipping["refused"],
        )
        assert shipping["lag_seconds"] > 0
        async with second.get("/metrics") as response:
            assert "gateway_ship_refused 1.0" in await response.text()
        assert await fetch(fleet_url, "SELECT kind, record_id FROM fleet_flags ORDER BY id") in (
            [("fork", 2)],
            [("fork", 1), ("fork", 2)],
        )

    async def test_a_second_sidecar_shipping_as_the_same_instance_is_flagged_not_stalled(
        self, fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
    ) -> None:
        """A cloned host: its log shares records 1-4 with the original, which shipped 1-8. Behind
        the mark, it used to resend its first batch (duplicates, 200) forever, its own records
        never compared. Its head is sent instead: held unchanged, all is shipped; else a fork."""
        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        original = await gateway(sidecar_config(tmp_path, "host-a", collector))
        for token in ("load1", "load2"):
            async with original.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")) as r:
                assert 200 == r.status
        await eventually(lambda: shipped_all(original))
        (tmp_path / "clone").mkdir()
        copy_database(tmp_path / "host-a" / "audit.db", tmp_path / "clone" / "audit.db")
        for token in ("load3", "load4"):
            async with original.delete(f"/v1/o/myorg/oauth2/accesstokens/{token}", headers=basic("myname")) as r:
                assert 200 == r.status
        await eventually(lambda: shipped_all(original))
        await original.close()
        config = make_config(
            tmp_path / "clone",
            ship={
                "url": str(collector.make_url("")).rstrip("/"),
                "instance": "host-a",
                "password_env": "PW",
                "interval": 0.05,
                "max_backoff": 0.2,
                "batch_size": 2,
            },
            stub={"generated_tokens": 1000},
            environ={"PW": SIDECAR_PASSWORDS["host-a"]},
        )
        clone = await gateway(config)
        shipper = clone.app[RUNTIME].shipper
        assert shipper is not None
        # Its whole log is a prefix of what the collector holds: nothing to ship, nothing wrong.
        await eventually(lambda: _true(shipper.acknowledged == 8 and shipper.lag_records == 0))
        assert shipper.last_error is None
        async with clone.delete("/v1/o/myorg/oauth2/accesstokens/load5", headers=basic("myname")) as response:
            assert 200 == response.status
        await eventually(lambda: _true(shipper.last_error is not None and "record 6 " in shipper.last_error[1]))
        assert shipper.last_error is not None and "collector.chain_fork" in shipper.last_error[1]
        assert 6 == shipper.lag_records
        assert await fetch(fleet_url, "SELECT kind, record_id FROM fleet_flags ORDER BY id") in (
            [("fork", 6)],
            [("fork", 5), ("fork", 6)],
        )
        assert 8 == len(await central_rows(fleet_url, "host-a"))

    @pytest.mark.parametrize(
        "answer",
        [{"mark": True, "hash": "0" * 64}, {"mark": 2.5, "hash": "0" * 64}, {"mark": 3, "hash": "x"}, {"status": "ok"}],
    )
    async def test_an_answer_that_is_not_a_mark_is_not_taken_for_one(
        self, aiohttp_server: AiohttpServer, tmp_path: Path, answer: dict[str, Any]
    ) -> None:
        """ship.url naming something else that answers JSON: prune and the shipper act on the
        mark, so it must be one (a whole number and a hash), never `true` read as record 1."""
        from aiohttp import web

        from gateway.fleet.shipper import CollectorClient, ShipError

        async def answer_json(request: web.Request) -> web.Response:
            return web.json_response(answer)

        app = web.Application()
        app.router.add_get("/{tail:.*}", answer_json)
        other = await aiohttp_server(app)
        client = CollectorClient(sidecar_config(tmp_path, "host-a", other))
        try:
            with pytest.raises(ShipError, match=r"the answer is not a collector's mark .*: is ship\.url the collector"):
                await client.mark()
        finally:
            await client.close()

    async def test_no_sidecar_password_reaches_a_log(
        self,
        fleet_url: str,
        aiohttp_server: AiohttpServer,
        gateway: GatewayFactory,
        tmp_path: Path,
        log_output: io.StringIO,
    ) -> None:
        from gateway.logs import flush_logs

        collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
        client = await gateway(sidecar_config(tmp_path, "host-a", collector))
        async with client.delete(SAMPLE_PATH, headers=basic("myname")) as response:
            assert 200 == response.status
        await eventually(lambda client=client: shipped_all(client))
        await post(collector, "host-b", batch_body(chain_rows(records(1))), as_instance="host-a")
        flush_logs()
        logged = log_output.getvalue()
        assert '"event":"fleet_batch"' in logged and '"event":"fleet_batch_refused"' in logged
        header = ship_auth("host-a")["Authorization"]
        for secret in (SIDECAR_PASSWORDS["host-a"], header, header.split()[1], SAMPLE_PATH.rsplit("/", 1)[1]):
            assert secret not in logged

    def test_config_check_masks_sidecar_hashes(self, tmp_path: Path) -> None:

        from fleet_support import SIDECARS

        from gateway.cli.config_check import write_effective

        out = io.StringIO()
        write_effective(
            make_config(tmp_path, collector={"database_url": "postgresql://audit@db/fleet"}, sidecars=SIDECARS), out
        )
        assert '[[sidecars]]\ninstance = "host-a"\npassword_hash = "********"' in out.getvalue()
        assert SIDECARS[0]["password_hash"] not in out.getvalue()


async def test_a_record_edited_into_bytes_stops_shipping_there_and_says_which(
    fleet_url: str, aiohttp_server: AiohttpServer, gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A BLOB (no gateway writes one) in record 3 of the sidecar's log: records 1 and 2 reach
    the collector, record 3 is named in /readyz, and the gateway serves on while the shipper
    retries. Before, the batch failed to encode with a TypeError that ended the shipping task
    in silence."""
    collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
    config = sidecar_config(tmp_path, "host-a", collector)
    make_log(config.database_path, 4)
    tamper(config.database_path, "UPDATE audit_events SET snapshot = x'00' WHERE id = 3")
    client = await gateway(config)
    shipper = client.app[RUNTIME].shipper
    assert shipper is not None

    await eventually(lambda: _true(shipper.last_error is not None and shipper.acknowledged == 2))
    async with client.delete("/v1/o/myorg/oauth2/accesstokens/load1", headers=basic("myname")) as response:
        assert 200 == response.status
    await eventually(lambda: _true(shipper.local_head == 6))  # the shipper still runs: its next round saw it
    async with client.get("/readyz") as response:
        shipping = (await response.json())["shipping"]

    assert (2, 6) == (shipping["acknowledged_id"], shipping["local_head_id"])
    assert shipping["last_error"] == (
        "record 3 of the local log cannot be shipped (snapshot is not JSON text): the file was edited"
    )
    local = [tuple(row[f] for f in FIELDS) for row in rows(config.database_path)][:2]
    assert local == await central_rows(fleet_url, "host-a")


@pytest.mark.parametrize(
    ("edit", "shipped", "named"),
    [
        ("time = x'00' WHERE id = 3", 2, "record 3 of the local log cannot be shipped (time is not a UTC time"),
        ("time = 'yesterday' WHERE id = 3", 2, "record 3 of the local log cannot be shipped (time is not a UTC time"),
        ("time = 'yesterday' WHERE id = 1", 0, "record 1 of the local log cannot be shipped (time is not a UTC time"),
    ],
    ids=["bytes", "not-a-time", "first-not-a-time"],
)
async def test_a_record_edited_so_its_time_is_not_one_is_named_and_readyz_and_metrics_still_answer(
    fleet_url: str,
    aiohttp_server: AiohttpServer,
    gateway: GatewayFactory,
    tmp_path: Path,
    edit: str,
    shipped: int,
    named: str,
) -> None:
    """The shipper computed its lag from the oldest unshipped record's time, as the log holds
    it: /readyz and /metrics answered 500 (fromisoformat of bytes, or of 'yesterday'). And the
    collector refused the whole batch as malformed, so the records before the edited one never
    reached it either."""
    collector = await start_collector(aiohttp_server, tmp_path, fleet_url)
    config = sidecar_config(tmp_path, "host-a", collector)
    make_log(config.database_path, 4)
    tamper(config.database_path, f"UPDATE audit_events SET {edit}")
    client = await gateway(config)
    shipper = client.app[RUNTIME].shipper
    assert shipper is not None

    await eventually(lambda: _true(shipper.last_error is not None and named in shipper.last_error[1]))
    async with client.get("/readyz") as response:
        readyz = response.status, (await response.json())["shipping"]
    async with client.get("/metrics") as response:
        metrics = response.status, await response.text()

    assert 200 == readyz[0] and readyz[1]["last_error"].startswith(named)
    assert readyz[1]["acknowledged_id"] == shipped
    assert 200 == metrics[0]
    assert f"\ngateway_ship_lag_records {4 - shipped}.0\n" in metrics[1]
    assert "\ngateway_ship_lag_seconds NaN\n" in metrics[1]  # the age of a record without a time: unknown
    assert readyz[1]["lag_seconds"] is None
    local = [tuple(row[f] for f in FIELDS) for row in rows(config.database_path)][:shipped]
    assert local == await central_rows(fleet_url, "host-a")
