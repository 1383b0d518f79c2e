"""What the collector's handlers share (the fleet routes and the query API alike)."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Histogram

from gateway.auth import Authenticator
from gateway.fleet.ingest import Ingest
from gateway.fleet.store import FleetStore, describe
from gateway.health import SharedCheck
from gateway.logs import Logger
from gateway.metrics import LATENCY_BUCKETS, Metrics


class Collector:
    """What the collector's handlers share, built once at start-up."""

    def __init__(
        self,
        store: FleetStore,
        ingest: Ingest,
        sidecars: Authenticator,
        users: Authenticator,
        metrics: Metrics,
        log: Logger,
        max_batch: int,
    ) -> None:
        self.store = store
        self.ingest = ingest
        self.sidecars = sidecars
        self.users = users
        self.metrics = metrics
        self.log = log
        self.max_batch = max_batch
        self.batches = Counter(
            "collector_batches",
            "Batches answered, by outcome code (ok, or the refusal's).",
            ["code"],
            registry=metrics.registry,
        )
        self.records = Counter(
            "collector_records_accepted", "New records written to the fleet store.", registry=metrics.registry
        )
        self.duplicates = Counter(
            "collector_records_duplicate",
            "Records resent that the store already held (changed nothing).",
            registry=metrics.registry,
        )
        self.seconds = Histogram(
            "collector_batch_seconds",
            "Time to check and commit one batch.",
            buckets=LATENCY_BUCKETS,
            registry=metrics.registry,
        )
        self.ready = SharedCheck(self._store_problem)

    async def _store_problem(self) -> str | None:
        try:
            async with self.store.pool.acquire(timeout=2.0) as db:
                await db.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return f"cannot reach the fleet store {describe(self.store.url)}: {type(exc).__name__}"
        return None


COLLECTOR = web.AppKey("collector", Collector)
