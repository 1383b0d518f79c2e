"""The shipper: every sidecar sends its committed audit records to the collector, in the background.

It reads the local SQLite log (the point of truth) after the collector's high-water mark and
posts batches; the collector's answer is the new mark. Nothing here is on the request path: the
gateway's calls never wait for it, and a collector that is down only makes the lag grow. The
mark lives at the collector, so shipping is at-least-once: after a restart, an error, or a
batch whose answer was lost, the shipper asks the collector for its mark and resends from there
(the collector takes a resent record it holds unchanged as a duplicate). While the collector is
unreachable or refuses, it waits ``ship.interval`` doubling up to ``ship.max_backoff``; when it
is idle, it still asks for the mark every ``HEARTBEAT`` seconds, so the fleet can tell a quiet
sidecar from a silent one.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.audit.backends import open_store
from gateway.audit.chain import Head
from gateway.audit.record import FIELDS, Row, utc_timestamp
from gateway.audit.store import AuditStore, AuditStoreError
from gateway.config import Config
from gateway.fleet import protocol
from gateway.fleet.values import MAX_ID, is_hash, row_problem
from gateway.logs import Logger
from gateway.metrics import Metrics

HEARTBEAT = 60.0
"""Seconds between mark requests while there is nothing to ship (the collector's last contact)."""
_TIME = FIELDS.index("time")


class ShipError(Exception):
    """The collector did not take a batch (or could not be asked): why, in one line, and the
    refusal's code when it answered one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def instance_of(config: Config) -> str:
    """This sidecar's instance id: ``ship.instance``, or the host name."""
    return config.ship.instance or socket.gethostname()


class LocalLog:
    """The sidecar's own log, read through the audit store's interface (opened on first use,
    reopened after a failure): the shipper never names the engine that keeps it."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._store: AuditStore | None = None

    async def _opened(self) -> AuditStore:
        if self._store is None:
            self._store = await open_store(self.path, busy_timeout=self._busy_timeout)
        return self._store

    async def chain(self) -> dict[str, str | None]:
        mode, check = await (await self._opened()).chain_mode()
        return {"mode": mode, "key_check": check}

    async def after(self, mark: int, limit: int) -> list[Row]:
        """Up to ``limit`` records after id ``mark``, oldest first, as rows in ``FIELDS`` order."""
        return await (await self._opened()).rows_after(mark, limit)

    async def head(self) -> Head:
        return await (await self._opened()).head()

    async def hash_of(self, record_id: int) -> str | None:
        """The hash of record ``record_id`` as this log holds it (None: not held, or pruned)."""
        record = await (await self._opened()).get(record_id) if record_id > 0 else None
        return None if record is None else record.hash

    async def lag(self, mark: int) -> tuple[int, str | None]:
        """The newest id, and the time of the first record after ``mark`` (None: none)."""
        head = await (await self._opened()).head()
        first = await self.after(mark, 1)
        return head.id, (first[0][_TIME] if first else None)

    async def time_after(self, mark: int) -> str | None:
        """The time of the first record after ``mark`` (what prune must keep), if any."""
        return (await self.lag(mark))[1]

    async def unlike(self, mark: Head) -> str | None:
        """Why the collector's ``mark`` is not a record of this log (None: it is, or was pruned
        from it): then nothing here is acknowledged, whatever the ids say."""
        head = await self.head()
        if head.id < mark.id:
            return (
                f"the collector holds up to record {mark.id}, past this log's newest record {head.id}: this "
                "log is not the one it acknowledged (deleted or replaced, or a second sidecar ships as this instance)"
            )
        held = await self.hash_of(mark.id)
        if held is not None and held != mark.hash:
            return (
                f"record {mark.id} of this log is not the record {mark.id} the collector holds (hash {mark.hash}): "
                "this log is not the one it acknowledged"
            )
        return None

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()


class CollectorClient:
    """The sidecar's side of ``gateway.fleet.protocol``."""

    def __init__(self, config: Config) -> None:
        ship = config.ship
        self.instance = instance_of(config)
        self._base = f"{ship.url}{protocol.BASE}/{self.instance}"
        self._auth = {"Authorization": aiohttp.encode_basic_auth(self.instance, config.ship_password)}
        context: ssl.SSLContext | None = None
        if ship.ca_bundle:
            context = ssl.create_default_context(cafile=str(config.path(ship.ca_bundle)))
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=ship.timeout),
            connector=aiohttp.TCPConnector(ssl=context or True, limit=2),
        )

    async def mark(self) -> Head:
        """The collector's mark: the id and hash of the newest record it holds for this instance."""
        async with self._session.get(self._base, headers=self._auth) as response:
            return _mark_of(await self._answer(response))

    async def send(self, body: bytes) -> tuple[Head, int]:
        """Post a batch: the collector's new mark, and how many records it took as new."""
        async with self._session.post(
            f"{self._base}/records", data=body, headers={**self._auth, "Content-Type": "application/json"}
        ) as response:
            answer = await self._answer(response)
        accepted = answer.get("accepted")
        if isinstance(accepted, bool) or not isinstance(accepted, int) or accepted < 0:
            raise ShipError(f"the collector's answer is not a batch's: accepted is {str(accepted)[:40]!r}")
        return _mark_of(answer), accepted

    @staticmethod
    async def _answer(response: aiohttp.ClientResponse) -> dict[str, Any]:
        text = await response.read()
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = None
        if response.status != 200 or not isinstance(body, dict):
            detail = body.get("message") if isinstance(body, dict) else text[:200].decode("utf-8", "replace")
            code = body.get("code") if isinstance(body, dict) else None
            raise ShipError(
                f"the collector answered {response.status}" + (f" {code}" if code else "") + f": {detail}",
                code if isinstance(code, str) else None,
            )
        return body

    async def close(self) -> None:
        await self._session.close()


def _mark_of(answer: dict[str, Any]) -> Head:
    """The mark in a collector's answer, checked: prune and the shipper act on it, so a wrong
    URL answering something else must not pass for an acknowledgement."""
    mark, digest = answer.get("mark"), answer.get("hash")
    if isinstance(mark, bool) or not isinstance(mark, int) or not 0 <= mark <= MAX_ID or not is_hash(digest):
        raise ShipError(
            f"the answer is not a collector's mark (mark {str(mark)[:40]!r}, hash {str(digest)[:80]!r}): "
            "is ship.url the collector?"
        )
    return Head(mark, digest)


def encode_batch(chain: dict[str, str | None], rows: list[Row]) -> bytes:
    return orjson.dumps({"fields": FIELDS, "chain": chain, "records": rows})


def _encoded(chain: dict[str, str | None], rows: list[Row]) -> tuple[bytes, list[Row]]:
    """The batch's body and its rows. A value JSON cannot carry (bytes: an SQLite BLOB, which no
    gateway writes, so the file was edited) ends the batch before its record, so all before it
    still reach the collector; a batch that starts with one cannot be sent at all."""
    try:
        return encode_batch(chain, rows), rows
    except TypeError:
        rows = _before_unshippable(rows)
        if not rows:
            raise AuditStoreError(
                "a record of the local log holds a value JSON cannot carry: the file was edited"
            ) from None
        return encode_batch(chain, rows), rows


def _before_unshippable(rows: list[Row]) -> list[Row]:
    """The rows before the first one the collector cannot take (checked here as it checks them),
    after it refused the batch as malformed: they still go. Raises when the first row is the bad
    one (naming it, never quoting its value), and returns [] when none is bad here (the refusal
    stands as it was said)."""
    bad = next(((n, problem) for n, row in enumerate(rows) if (problem := row_problem(list(row)))), None)
    if bad is None:
        return []
    if bad[0] == 0:
        raise AuditStoreError(f"record {rows[0][0]} of the local log cannot be shipped ({bad[1]}): the file was edited")
    return rows[: bad[0]]


def _reason(exc: BaseException) -> str:
    """Why a round failed, in one line for /readyz and the log. Never an unforeseen error's own
    message: it might quote a record's value."""
    if isinstance(exc, ShipError | AuditStoreError):
        return str(exc)
    if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
        return f"cannot reach the collector: {type(exc).__name__}"
    return f"shipping failed on an unexpected {type(exc).__name__}; retried with backoff"


class Shipper:
    """Ships the local log to the collector; ``status()`` is what /readyz and the metrics show."""

    def __init__(self, config: Config, log: Logger) -> None:
        self._config = config
        self._log = log
        self.instance = instance_of(config)
        self.local = LocalLog(config.database_path, config.audit.busy_timeout)
        self.client = CollectorClient(config)
        self.mark: Head | None = None
        """The collector's mark as last heard; None until asked (or after an error)."""
        self._held_head: Head | None = None
        """This log's head when the collector last said it holds it (at or below its mark)."""
        self.local_head = 0
        self._oldest_unshipped: Any = None
        """The time of the oldest record not acknowledged, as the log holds it (None: none)."""
        self.last_success: float | None = None
        self.last_error: tuple[float, str] | None = None
        self.shipped = 0
        """Records the collector took as new, since start."""
        self.failures = 0
        self._batch_size = config.ship.batch_size
        """Records per batch: ship.batch_size, or less once the collector found that too many."""
        self.refused: str | None = None
        """The collector's code while it refuses this sidecar's records for a problem it flags
        (a gap, a fork, a rewrite, forged): retrying cannot cure it, someone must look."""
        self._chain: dict[str, str | None] | None = None
        self._idle_since = time.monotonic()

    # What is shown -------------------------------------------------------------------------

    @property
    def acknowledged(self) -> int | None:
        """The id of the collector's mark (None: not known right now)."""
        return None if self.mark is None else self.mark.id

    @property
    def lag_records(self) -> int:
        acknowledged = self.acknowledged or 0
        if self.local_head > acknowledged:
            return self.local_head - acknowledged
        held = self._held_head is not None and self._held_head.id == self.local_head
        return 0 if held or self.local_head == 0 else self.local_head

    @property
    def lag_seconds(self) -> float:
        """The oldest unshipped record's age; NaN when its time is not a time (an edited log):
        unknown, and /readyz and the metrics must answer all the same."""
        if self._oldest_unshipped is None:
            return 0.0
        try:
            oldest = datetime.fromisoformat(self._oldest_unshipped).timestamp()
        except (TypeError, ValueError):
            return math.nan
        return max(0.0, time.time() - oldest)

    def status(self) -> dict[str, Any]:
        return {
            "collector": self._config.ship.url,
            "instance": self.instance,
            "acknowledged_id": self.acknowledged,
            "local_head_id": self.local_head,
            "lag_records": self.lag_records,
            "lag_seconds": None if math.isnan(lag := self.lag_seconds) else round(lag, 3),
            "last_success": utc_timestamp(self.last_success) if self.last_success is not None else None,
            "last_error": self.last_error[1] if self.last_error is not None else None,
            "refused": self.refused,
        }

    def register_metrics(self, metrics: Metrics) -> None:
        metrics.read_at_scrape(
            "gateway_ship_lag_records",
            "Committed audit records the collector has not acknowledged.",
            lambda: self.lag_records,
        )
        metrics.read_at_scrape(
            "gateway_ship_lag_seconds",
            "Age of the oldest record the collector has not acknowledged (0: none).",
            lambda: self.lag_seconds,
        )
        metrics.read_at_scrape(
            "gateway_ship_last_success_timestamp_seconds",
            "When the collector last acknowledged a batch or mark.",
            lambda: self.last_success or 0.0,
        )
        metrics.read_at_scrape(
            "gateway_ship_records",
            "Records the collector took as new from this sidecar.",
            lambda: self.shipped,
            counter=True,
        )
        metrics.read_at_scrape(
            "gateway_ship_refused",
            "1 while the collector refuses this sidecar's records as a gap, fork, rewrite or forgery (flagged).",
            lambda: 0 if self.refused is None else 1,
        )
        metrics.read_at_scrape(
            "gateway_ship_failures",
            "Attempts to ship or ask the mark that failed.",
            lambda: self.failures,
            counter=True,
        )

    # Shipping -----------------------------------------------------------------------------

    async def step(self) -> int:
        """One round: learn the mark if unknown, send the next batch; how many records were sent
        (0: nothing to ship). Raises ShipError (or aiohttp's errors) when the collector fails."""
        if self._chain is None:
            self._chain = await self.local.chain()
        if self.mark is None:
            self.mark = await self.client.mark()
            # Contact, but not yet a cure: a refusal stands until a batch is taken or nothing is left.
            self.last_success = time.time()
        mark = self.mark
        rows = await self._next_rows(mark)
        if not rows:
            self._succeeded()
            return 0
        new_mark, accepted, rows = await self._send(rows)
        head, oldest = await self.local.lag(new_mark.id)
        # What /readyz and the metrics show changes at once, with no await in between: a reader
        # must never see the new mark beside the old lag or the last round's error.
        self.mark, self.local_head, self._oldest_unshipped = new_mark, head, oldest
        self.shipped += accepted
        if rows[-1][0] <= mark.id:
            # A probe (see _next_rows): the collector holds this log's head as it is here.
            self._held_head = Head(rows[-1][0], rows[-1][-1])
        self._succeeded()
        return len(rows) if accepted or rows[-1][0] > mark.id else 0

    async def _send(self, rows: list[Row]) -> tuple[Head, int, list[Row]]:
        """Post ``rows`` (or their first part): the new mark, the records taken, the rows sent.
        A batch the collector finds too large (``collector.max_batch`` below ``ship.batch_size``,
        or records too big for its body limit) is halved until it passes, and batches stay that
        size: retrying the same batch would stall shipping for good."""
        assert self._chain is not None
        while True:
            body, rows = await asyncio.to_thread(_encoded, self._chain, rows)
            try:
                mark, accepted = await self.client.send(body)
                return mark, accepted, rows
            except ShipError as exc:
                before = _before_unshippable(rows) if exc.code == protocol.BAD_BATCH.code else []
                if before:
                    rows = before  # nothing was stored: the records before the bad one go on their own
                    continue
                if exc.code != protocol.BATCH_TOO_LARGE.code or len(rows) == 1:
                    self.mark = None
                    raise
                self._batch_size = max(1, len(rows) // 2)
                rows = rows[: self._batch_size]  # nothing was stored: the mark still holds
                self._log.warning(
                    "ship_batch_reduced", collector=self._config.ship.url, batch_size=self._batch_size, reason=str(exc)
                )
            except BaseException:
                self.mark = None  # the batch may have been stored: ask again before resending
                raise

    async def _next_rows(self, mark: Head) -> list[Row]:
        """What to send after ``mark``. Normally the records after it: the collector checks that
        the first links to the record it holds. When this log ends at or before the mark, there
        is nothing after it, yet this log may not be the one the collector holds (a log deleted
        or replaced, a cloned host, two sidecars with one instance id): then its head record is
        sent, which the collector holds unchanged (a duplicate: all is shipped) or refuses and
        flags as a fork. Never skipped in silence."""
        head = await self.local.head()
        self.local_head = head.id
        if head.id > mark.id:
            rows = await self.local.after(mark.id, self._batch_size)
            self._oldest_unshipped = rows[0][_TIME] if rows else None
            return rows
        if head.id == 0 or head == self._held_head or head == mark:
            self._held_head = head
            self._oldest_unshipped = None
            return []
        rows = await self.local.after(head.id - 1, 1)
        first = await self.local.after(0, 1)
        self._oldest_unshipped = first[0][_TIME] if first else None
        return rows

    def _succeeded(self) -> None:
        self.last_success = time.time()
        self.refused = None
        if self.last_error is not None:
            self._log.info("ship_resumed", collector=self._config.ship.url, acknowledged_id=self.acknowledged)
        self.last_error = None

    def _failed(self, exc: BaseException) -> str:
        reason = _reason(exc)
        self.failures += 1
        code = exc.code if isinstance(exc, ShipError) else None
        self.refused = code if code in protocol.FLAGGED else None
        first = self.last_error is None or self.last_error[1] != reason
        self.last_error = (time.time(), reason)
        if first:
            self._log.warning(
                "ship_failed",
                collector=self._config.ship.url,
                instance=self.instance,
                reason=reason,
                lag_records=self.lag_records,
            )
        return reason

    async def run(self) -> None:
        """Ship until cancelled: again at once after a batch went, a look every ``interval`` once
        caught up, backing off while the collector fails."""
        ship = self._config.ship
        backoff = ship.interval
        while True:
            try:
                sent = await self.step()
                backoff = ship.interval
                if sent:
                    # Records came while this batch was out: send them at once. Under load the
                    # batches grow by themselves; the lag stays about one round trip.
                    self._idle_since = time.monotonic()
                    continue
                if time.monotonic() - self._idle_since >= HEARTBEAT:
                    self.mark = None  # ask the mark: a heartbeat, and a check against a reset collector
                    self._idle_since = time.monotonic()
                await asyncio.sleep(ship.interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                if not isinstance(exc, ShipError | aiohttp.ClientError | OSError | TimeoutError):
                    # The local log (or something unforeseen): opened afresh from here on.
                    self._chain = None
                    await self.local.close()
                await self._refresh_lag()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, ship.max_backoff)

    async def _refresh_lag(self) -> None:
        try:
            self.local_head, self._oldest_unshipped = await self.local.lag(self.acknowledged or 0)
        except Exception:
            pass

    async def ship_all(self) -> int:
        """Ship everything committed so far (``gateway audit ship``); the records sent."""
        total = 0
        while sent := await self.step():
            total += sent
        return total

    async def close(self) -> None:
        await self.client.close()
        await self.local.close()


@asynccontextmanager
async def start_shipping(config: Config, log: Logger, metrics: Metrics) -> AsyncIterator[Shipper | None]:
    """The gateway's one seam for shipping: a background task for its lifetime when ``[ship]``
    names a collector (None otherwise). Stopping it cancels a batch in flight: the collector
    either committed it (the next start learns so from the mark) or not (it is sent again)."""
    if not config.ship.url:
        yield None
        return
    shipper = Shipper(config, log)
    shipper.register_metrics(metrics)
    task = asyncio.create_task(shipper.run(), name="audit-shipper")
    log.info("ship_started", collector=config.ship.url, instance=shipper.instance, batch_size=config.ship.batch_size)
    try:
        yield shipper
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await shipper.close()


async def acknowledged_mark(config: Config) -> Head:
    """The collector's mark for this sidecar, asked once (for ``audit prune``)."""
    client = CollectorClient(config)
    try:
        return await client.mark()
    finally:
        await client.close()
