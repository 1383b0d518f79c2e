"""The fleet commands: `gateway collect`, `gateway audit ship`, and the audit commands' `--store`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import aiohttp

from gateway.audit.chain import ChainKey, Head
from gateway.audit.formats import write_columns
from gateway.audit.store import AuditStoreError
from gateway.cli.common import (
    LISTEN,
    CommandError,
    arg,
    command,
    listen,
    listening_config,
    log_level_option,
    override_options,
    run_loop,
    selection_of,
)
from gateway.cli.progress import Progress
from gateway.cli.server import _until_signalled
from gateway.config import INSTANCE_NAME, Config, load_config, postgres_url, read_chain_key
from gateway.fleet import ocsf
from gateway.fleet.collector import build_collector_app, sidecar_keys
from gateway.fleet.formats import WRITERS as FLEET_WRITERS
from gateway.fleet.formats import LocatedStream, write_record
from gateway.fleet.shipper import LocalLog, ShipError, Shipper, acknowledged_mark, instance_of
from gateway.fleet.store import FleetStore, Located, describe
from gateway.fleet.verify import verify_fleet
from gateway.listener import GatewayRunner
from gateway.logs import get_logger

T = TypeVar("T")
EXIT_TAMPERED = 1
STORE_PASSWORD = "PGPASSWORD"

COLLECT_HELP = """\
Run the fleet collector: sidecars ship their audit records to it ([ship] in their config), and
it keeps them in PostgreSQL ([collector] database_url), checking each instance's chain. It
listens on [server] host and port (and TLS), creates or migrates the fleet store's schema at
start-up, and serves GET /audit/events across the fleet to [[users]] with the audit role.

Example:
  gateway collect --config /etc/apigee-audit-gateway/collector.toml
"""
SHIP_HELP = """\
Ship the audit records the collector has not acknowledged ([ship] in the config), then exit:
what `gateway serve` does in the background, once. Prints how many records went and the
collector's mark. Exit 2 when the collector cannot be reached or refuses.

Example:
  gateway audit ship --config /etc/apigee-audit-gateway/config.toml
"""


def register(commands: Any) -> None:
    collect = command(commands, "collect", cmd_collect, "Run the fleet collector (PostgreSQL).", COLLECT_HELP)
    collect.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML config with [collector], [[sidecars]] and [server]"
    )
    override_options(collect, LISTEN)
    log_level_option(collect)


def register_audit(audit_commands: Any) -> None:
    ship = command(audit_commands, "ship", cmd_ship, "Ship unacknowledged records to the collector, once.", SHIP_HELP)
    ship.add_argument("--config", type=Path, metavar="FILE", help="the sidecar's config ([ship] and [audit])")


def store_options(parser: argparse.ArgumentParser, *, instance_required: bool = False) -> None:
    """--store (the fleet store instead of the local log) and --instance."""
    parser.add_argument(
        "--store",
        metavar="URL",
        type=arg(_store_url),
        help="read the fleet store (postgresql://user@host/db; password from $PGPASSWORD or ~/.pgpass)",
    )
    parser.add_argument(
        "--instance",
        metavar="ID",
        type=arg(_instance),
        help="with --store: only this sidecar's records" + (" (required)" if instance_required else ""),
    )


def _store_url(text: str) -> str:
    if not text:
        raise ValueError("expected a postgresql:// URL")
    return postgres_url(text)


def _instance(text: str) -> str:
    if not INSTANCE_NAME.fullmatch(text):
        raise ValueError(f"{text[:140]!r} is not an instance id (letters, digits, '.', '_', '-')")
    return text


def uses_store(args: argparse.Namespace) -> bool:
    """Whether an audit command reads the fleet store; --instance alone is a usage error."""
    if getattr(args, "store", None) is None:
        if getattr(args, "instance", None) is not None:
            raise CommandError("--instance goes with --store (the fleet store); a local log holds one instance")
        return False
    if getattr(args, "db", None) is not None:
        raise CommandError("give --store or --db, not both")
    return True


def _read(args: argparse.Namespace, action: Callable[[FleetStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await FleetStore.open(args.store, instance=args.instance)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def fleet_query(args: argparse.Namespace) -> int:
    selection = selection_of(args, limit=args.limit)
    found = _read(args, lambda store: store.located(selection))
    FLEET_WRITERS[args.format](found, sys.stdout)
    return 0


def fleet_show(args: argparse.Namespace) -> int:
    if args.instance is None:
        raise CommandError("a fleet record is identified by its instance and id: give --instance")
    record = _read(args, lambda store: store.get(args.id))
    if record is None:
        raise CommandError(f"no record {args.id} of instance {args.instance} in the fleet store")
    write_record(Located(args.instance, record), sys.stdout)
    return 0


def fleet_export(args: argparse.Namespace) -> int:
    selection = selection_of(args)

    async def export(store: FleetStore) -> None:
        stream = None if args.format == "ocsf" else LocatedStream(args.format, sys.stdout)
        with Progress("export", sys.stderr, enabled=not sys.stdout.isatty()) as progress:
            exported = 0
            async for batch in store.fleet_rows(selection):
                if stream is None:
                    ocsf.write_located(batch, sys.stdout)
                else:
                    stream.write_rows(batch)
                exported += len(batch)
                progress.update(exported)

    _read(args, export)
    return 0


def fleet_stats(args: argparse.Namespace) -> int:
    selection = selection_of(args)
    rows = _read(args, lambda store: store.stats(args.by, selection, include_intents=args.outcome == "pending"))
    write_columns(
        [args.by, "records"], [["-" if value is None else str(value), str(n)] for value, n in rows], sys.stdout
    )
    return 0


def fleet_verify(args: argparse.Namespace) -> int:
    if args.expect_head is not None:
        raise CommandError(
            "--expect-head checks one local log; with --store each instance is checked against the head "
            "the collector acknowledged (anchor a sidecar's head with `audit verify --config` on its host)"
        )
    if args.no_chain_key:
        raise CommandError(
            "--no-chain-key goes with --db; with --store an instance's chain kind is the one it shipped, "
            "and keys come from [[sidecars]] (--config) or --chain-key-file/--chain-key-env with --instance"
        )
    config = load_config(args.config)
    keys = sidecar_keys(config)
    if args.chain_key_file is not None or args.chain_key_env is not None:
        if args.instance is None:
            raise CommandError(
                "--chain-key-file / --chain-key-env with --store need --instance (each sidecar has its own key)"
            )
        keys[args.instance] = ChainKey(
            read_chain_key(
                "--chain-key-file" if args.chain_key_file else "--chain-key-env",
                str(args.chain_key_file or args.chain_key_env),
                os.environ,
                path=args.chain_key_file,
                variable=args.chain_key_env,
            )
        )
    silent_after = args.silent_after if args.silent_after is not None else config.collector.silent_after

    async def verify(store: FleetStore) -> Any:
        with Progress("verify", sys.stderr) as progress:
            if progress.enabled:
                progress.total = await store.size()
            return await verify_fleet(
                store,
                keys,
                silent_after=silent_after,
                progress=progress.update,
                expected=[sidecar.instance for sidecar in config.sidecars],
            )

    verdicts = _read(args, verify)
    if not verdicts:
        raise CommandError("the fleet store holds no instance" + (f" {args.instance}" if args.instance else ""))
    for verdict in verdicts:
        chain = f"{verdict.mode} chain" + (
            ", links only: no key given for this keyed instance" if verdict.links_only else ""
        )
        start = f", starting after record {verdict.start.id} (pruned before it shipped)" if verdict.start.id else ""
        if verdict.problem is not None:
            print(f"{verdict.instance}: TAMPERED: {verdict.problem}; {verdict.checked} records checked")
        elif not verdict.never_seen:
            print(
                f"{verdict.instance}: OK: {verdict.checked} records verified ({chain}{start}); head is record "
                f"{verdict.head.id}, hash {verdict.head.hash}"
            )
        for flag in verdict.flags:
            print(
                f"{verdict.instance}: FLAGGED {flag.kind} at {flag.time.isoformat(timespec='seconds')}: {flag.detail}"
            )
        if verdict.never_seen:
            print(f"{verdict.instance}: SILENT: a sidecar of the config that never reached the collector")
        if verdict.silent_seconds is not None:
            print(
                f"{verdict.instance}: SILENT: no contact for {verdict.silent_seconds:.0f} s (more than {silent_after:g} s)"
            )
    bad = sum(not verdict.intact for verdict in verdicts)
    print(f"{len(verdicts)} instances, {bad} with problems")
    return EXIT_TAMPERED if bad else 0


# collect -------------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    config = listening_config(args)
    return run_loop(_collect(config), tls_listener=bool(config.server.tls_cert))


async def _collect(config: Config) -> int:
    app = build_collector_app(config)
    tls = config.listener_tls()
    runner = GatewayRunner(app, config.server, tls=tls, access_log=None, handle_signals=False, shutdown_timeout=10.0)
    await runner.setup()
    try:
        base = await listen(runner, config, tls=tls is not None)
        get_logger().info("collector_started", listen=base, sidecars=len(config.sidecars))
        print(
            f"apigee-audit-gateway collector: {len(config.sidecars)} sidecars, fleet store "
            f"{describe(config.collector.database_url)}\nListening on {base} (Ctrl-C to stop)",
            flush=True,
        )
        await _until_signalled()
    finally:
        await runner.cleanup()
    return 0


# ship ----------------------------------------------------------------------------------------


def cmd_ship(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not config.ship.url:
        raise CommandError(f"{config.source}: ship.url: not set; nothing to ship to")
    if not config.database_path.is_file():
        raise CommandError(f"{config.source}: audit.database: no audit database at {config.database_path}")

    async def ship() -> tuple[int, Shipper]:
        shipper = Shipper(config, get_logger())
        try:
            return await shipper.ship_all(), shipper
        finally:
            await shipper.close()

    try:
        sent, shipper = asyncio.run(ship())
    except ShipError as exc:
        raise CommandError(f"shipping to {config.ship.url}: {exc}") from None
    except AuditStoreError as exc:  # an empty file, or one that is not a log
        raise CommandError(f"{config.source}: audit.database: {exc}") from None
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise CommandError(f"cannot reach the collector at {config.ship.url}: {type(exc).__name__}") from None
    print(
        f"shipped {sent} records as instance {shipper.instance}; the collector holds up to record {shipper.acknowledged}"
    )
    return 0


# prune ---------------------------------------------------------------------------------------


async def _kept_after(config: Config, mark: Head) -> tuple[str | None, str | None]:
    """Why this log does not hold the collector's mark (None: it does), and the time of its first
    record after the mark."""
    local = LocalLog(config.database_path, config.audit.busy_timeout)
    try:
        return await local.unlike(mark), await local.time_after(mark.id)
    finally:
        await local.close()


def shipping_limit(config: Config, before: str, *, ignore: bool) -> str:
    """``before``, moved back so that prune keeps every record the collector has not acknowledged
    (with ``[ship]`` configured). ``ignore`` (``--ignore-shipping``) prunes them anyway, loudly."""
    if not config.ship.url:
        return before
    try:
        mark = asyncio.run(acknowledged_mark(config))
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ShipError) else type(exc).__name__
        if ignore:
            print(
                f"warning: cannot learn what the collector at {config.ship.url} acknowledged ({reason}); pruning "
                "anyway (--ignore-shipping): records it lacks are lost to the fleet store",
                file=sys.stderr,
            )
            return before
        raise CommandError(
            f"cannot learn what the collector at {config.ship.url} acknowledged ({reason}), so prune "
            "would not know what it may remove; retry when it is up, or pass --ignore-shipping"
        ) from None
    unlike, keep_from = asyncio.run(_kept_after(config, mark))
    if unlike is not None:
        if ignore:
            print(
                f"warning: {unlike}; pruning anyway (--ignore-shipping): records the collector lacks are lost "
                "to the fleet store",
                file=sys.stderr,
            )
            return before
        raise CommandError(
            f"{unlike}, so prune would not know what it may remove; see `audit verify --store` for the "
            "instance's flags, or pass --ignore-shipping"
        )
    if keep_from is None or keep_from >= before:
        return before
    if ignore:
        print(
            f"warning: pruning records the collector has not acknowledged (it holds up to record {mark.id}; "
            f"--ignore-shipping): instance {instance_of(config)} will show a gap in the fleet store",
            file=sys.stderr,
        )
        return before
    print(
        f"note: keeping the records after record {mark.id}, which the collector has not acknowledged yet "
        f"(pruning before {keep_from} instead of {before})",
        file=sys.stderr,
    )
    return keep_from


def ocsf_stream(config: Config, out: TextIO) -> ocsf.OcsfStream:
    """OCSF events of the local log, named by this sidecar's instance id (``ship.instance`` or the host)."""
    return ocsf.OcsfStream(instance_of(config), out)
