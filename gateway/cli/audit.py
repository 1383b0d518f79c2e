"""`gateway audit ...`: query, show, export, stats, verify, head, reconcile and prune."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import structlog

from gateway.audit.backends import open_store
from gateway.audit.chain import Anchor, ChainKey, Head, Verdict
from gateway.audit.filters import text
from gateway.audit.fingerprint import fingerprint
from gateway.audit.formats import STREAMING, WRITERS, RecordStream, write_columns, write_record
from gateway.audit.query import DEFAULT_LIMIT, AuditFilter, parse_time, positive_int
from gateway.audit.reconcile import reconcile
from gateway.audit.reserve import RESERVE_HEADROOM, DiskReserve
from gateway.audit.store import STATS_GROUPS, AuditStore, AuditStoreError, PruneResult
from gateway.audit.verify import CannotVerify, verify_log
from gateway.cli import fleet
from gateway.cli.common import (
    CommandError,
    Handler,
    arg,
    command,
    config_of,
    database_options,
    filter_options,
    overriding,
    say,
    selection_of,
    user_name,
)
from gateway.cli.progress import Progress
from gateway.config import ACCOUNT_AUTH_MODES, Config, http_url, read_chain_key, resolve
from gateway.config import RECONCILE_PASSWORD_ENV as PASSWORD_ENV
from gateway.upstream import make_session
from gateway.upstream_auth import LoginError, OAuthLogin, login_settings

EXIT_TAMPERED = 1
T = TypeVar("T")


def _reading(
    commands: Any, name: str, handler: Handler, summary: str, help: str, *, filters: bool = True
) -> argparse.ArgumentParser:
    """A command that reads the local log (--config, --db) or the fleet store (--store,
    --instance); ``show`` picks one record, so it needs --instance and takes no filters."""
    parser = command(commands, name, handler, summary, help)
    database_options(parser)
    fleet.store_options(parser, instance_required=name == "show")
    if filters:
        filter_options(parser)
    return parser


def register(commands: Any) -> None:
    audit = command(
        commands,
        "audit",
        None,
        "Read, check and maintain the audit trail.",
        "Read, check and maintain the audit trail.",
    )
    audit_commands = audit.add_subparsers(title="audit commands", required=True, metavar="COMMAND")

    query = _reading(audit_commands, "query", cmd_query, "Find audit records.", QUERY_HELP)
    query.add_argument(
        "--limit",
        type=arg(positive_int),
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N records, newest first (default {DEFAULT_LIMIT})",
    )
    query.add_argument("--format", choices=list(WRITERS), default="table", help="output format (default: table)")

    show = _reading(audit_commands, "show", cmd_show, "Print one audit record, whole.", SHOW_HELP, filters=False)
    show.add_argument(
        "id", type=arg(positive_int), metavar="ID", help="the record's id (first column of `audit query`)"
    )

    export = _reading(audit_commands, "export", cmd_export, "Stream records to standard output.", EXPORT_HELP)
    export.add_argument(
        "--format",
        choices=[*STREAMING, "ocsf"],
        default="jsonl",
        help="output format (default: jsonl; ocsf: OCSF API Activity events, one per line)",
    )

    stats = _reading(
        audit_commands, "stats", cmd_stats, "Count records by actor, org, app, outcome or day.", STATS_HELP
    )
    stats.add_argument(
        "--by",
        choices=[*STATS_GROUPS, "instance"],
        default="outcome",
        help="what to group by (default: outcome; instance only with --store)",
    )

    verify = _reading(
        audit_commands,
        "verify",
        cmd_verify,
        "Check the hash chain; name the first bad record.",
        VERIFY_HELP,
        filters=False,
    )
    verify.add_argument(
        "--silent-after",
        type=overriding("collector", "silent_after"),
        metavar="SECONDS",
        help="with --store: report instances without contact for longer (default: collector.silent_after)",
    )
    chain_key_options(verify, plain=True)
    verify.add_argument(
        "--expect-head",
        type=arg(Anchor.parse),
        metavar="HEAD",
        help="a head anchored earlier, as `audit head` prints it (ID HASH) or its hash: it must be in the chain",
    )

    upgrade = command(audit_commands, "upgrade", cmd_upgrade, "Upgrade a log from before the hash chain.", UPGRADE_HELP)
    database_options(upgrade)
    chain_key_options(upgrade)

    head = command(
        audit_commands, "head", cmd_head, "Print the chain's head, to anchor it outside the host.", HEAD_HELP
    )
    database_options(head)

    settle = command(
        audit_commands, "reconcile", cmd_reconcile, "Settle calls whose outcome is pending or unknown.", RECONCILE_HELP
    )
    database_options(settle)
    chain_key_options(settle)
    settle.add_argument(
        "--upstream",
        type=arg(http_url),
        metavar="URL",
        help="the Apigee (or stub) base URL to ask (default: upstream.url)",
    )
    settle.add_argument(
        "--user",
        type=arg(user_name),
        help=f"Apigee user for the GETs (password from ${PASSWORD_ENV}, or "
        "asked on a terminal); default: the service account of "
        'upstream.auth = "service" or "oauth2"',
    )
    settle.add_argument(
        "--tokens-file",
        type=Path,
        metavar="FILE",
        help="raw tokens, one per line, for intents whose token is not stored",
    )
    settle.add_argument("--operator", type=arg(text), default=None, help="who is reconciling (default: the login name)")

    prune = command(audit_commands, "prune", cmd_prune, "Remove old records, keeping the chain verifiable.", PRUNE_HELP)
    database_options(prune)
    chain_key_options(prune)
    prune.add_argument(
        "--before",
        type=arg(parse_time),
        required=True,
        metavar="T",
        help="remove records older than this: ISO 8601 or an age (90d)",
    )
    prune.add_argument("--operator", type=arg(text), default=None, help="who is pruning (default: the login name)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed, and remove nothing")
    prune.add_argument(
        "--yes", action="store_true", help="confirm removing every record (asked on a terminal; required without one)"
    )
    prune.add_argument(
        "--ignore-shipping",
        action="store_true",
        help="with [ship]: also remove records the collector has not acknowledged (warned about)",
    )
    fleet.register_audit(audit_commands)


def chain_key_options(parser: argparse.ArgumentParser, *, plain: bool = False) -> None:
    """With --db there is no config to name the chain key: these do. ``plain`` adds
    --no-chain-key, for verify, which never takes the file's own word that it has no key."""
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--chain-key-file", type=Path, metavar="FILE", help="with --db: the file holding the chain key")
    given.add_argument(
        "--chain-key-env", metavar="VARIABLE", help="with --db: the environment variable holding the chain key"
    )
    if plain:
        given.add_argument(
            "--no-chain-key",
            action="store_true",
            help="with --db: the log was started without a chain key; check it as a plain chain",
        )


def chain_key_of(args: argparse.Namespace, config: Config) -> ChainKey | None:
    """The chain the caller expects: the config's key, or with --db what the options say
    (None when they say nothing)."""
    given = [name for name in ("chain_key_file", "chain_key_env", "no_chain_key") if getattr(args, name, None)]
    if getattr(args, "db", None) is None:
        if given:
            raise CommandError(
                f"--{given[0].replace('_', '-')} goes with --db; with a config the key is "
                "audit.chain_key_env or audit.chain_key_file"
            )
        return ChainKey(config.chain_secret)
    if args.chain_key_file is not None:
        return ChainKey(
            read_chain_key("--chain-key-file", str(args.chain_key_file), os.environ, path=args.chain_key_file)
        )
    if args.chain_key_env is not None:
        return ChainKey(read_chain_key("--chain-key-env", args.chain_key_env, os.environ, variable=args.chain_key_env))
    if getattr(args, "no_chain_key", False):
        return ChainKey(None)
    return None


QUERY_HELP = """\
Find audit records, newest first. Filters combine (AND).

Example:
  gateway audit query --token taFM3LHUTQAFhL0dIFg81XhRc7vC
  gateway audit query --actor alice --since 7d --format csv
"""
SHOW_HELP = """\
Print one audit record with every field, as JSON.

Example:
  gateway audit show 42
"""
EXPORT_HELP = """\
Stream every matching record to standard output, oldest first, in constant memory.

Example:
  gateway audit export --since 30d --format csv > last-month.csv
"""
STATS_HELP = """\
Count records grouped by actor, org, app, outcome or day, largest first. Intents (pending)
are left out unless asked for with --outcome pending, so each call counts once.

Example:
  gateway audit stats --by actor --outcome deleted --since 7d
"""
VERIFY_HELP = """\
Walk the whole hash chain, streaming. Exit 0 with a one-line summary when it is intact;
exit 1 naming the first record whose content, link or place is wrong.

The kind of chain to expect comes from the config (its chain key, or none), never from the
file alone: whoever can write the file could rewrite a keyed log as a plain one. With --db,
say it: --chain-key-file or --chain-key-env for a keyed log, --no-chain-key for a plain one.
--expect-head takes a head exactly as `audit head` printed it (ID HASH), or the hash alone.
Exit 2 when it cannot decide (no key for a keyed log, an anchor removed by a prune).

Example:
  gateway audit verify --config /etc/apigee-audit-gateway/config.toml
  gateway audit verify --db gateway-audit.db --chain-key-file /etc/apigee-audit-gateway/chain.key
  gateway audit verify --config gw.toml --expect-head "$(cat anchored-head.txt)"
"""
HEAD_HELP = """\
Print the newest record's id and hash. Kept somewhere the host cannot rewrite, it lets
`audit verify --expect-head` prove later that nothing up to it was cut off or rebuilt.

Example:
  gateway audit head --config /etc/apigee-audit-gateway/config.toml
"""
RECONCILE_HELP = """\
Settle the calls whose fate is open: intents that never got an outcome (the gateway stopped
between forwarding and recording) and "unknown" outcomes (the call left, but no usable answer
came back). With the raw token (stored by audit.store_raw_tokens, or given in --tokens-file)
it asks the upstream: a token that is gone means "deleted", one still there "not_deleted".
Otherwise a later record for the same token decides. Each answer is appended as the call's
outcome, with its request id. Exit 0 when all are settled, 1 when some remain.

Example:
  gateway audit reconcile --config /etc/apigee-audit-gateway/config.toml --tokens-file revoked.txt
"""
UPGRADE_HELP = """\
Upgrade an audit log written before the hash chain existed (schema version 1) to the current
version, chaining its records as they are now. `gateway serve` refuses to do this on its own:
the chain would vouch for whatever the file holds, and whoever can write it could rebuild an
edited log as version 1 for the next start to sign. Run this only for a log you know is that old.
Later versions are upgraded by `gateway serve` itself.

Example:
  gateway audit upgrade --config /etc/apigee-audit-gateway/config.toml
"""
PRUNE_HELP = """\
Remove the records older than a time from the start of the log. A "pruned" checkpoint record
(who, when, how many, and the last removed record's hash) is appended, so `audit verify`
still checks everything that remains. --dry-run says what would go. Removing every record
asks for confirmation on a terminal, and needs --yes without one.

Example:
  gateway audit prune --config /etc/apigee-audit-gateway/config.toml --before 400d --dry-run
  gateway audit prune --config /etc/apigee-audit-gateway/config.toml --before 400d
"""


def _read(
    args: argparse.Namespace,
    config: Config,
    action: Callable[[AuditStore], Awaitable[T]],
    *,
    key: ChainKey | None = None,
    writable: bool = False,
) -> T:
    """Run ``action`` on the config's audit log. ``writable``: for a command that appends (with
    the log's ``key``), which upgrades an older log but never makes a new one: only `gateway
    serve` does, so a mistyped path is an error naming it, never a new empty log."""

    async def run() -> T:
        with _naming(args, config):
            store = await open_store(
                config.database_path, key=key, writable=writable, busy_timeout=config.audit.busy_timeout
            )
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


@contextmanager
def _naming(args: argparse.Namespace, config: Config) -> Iterator[None]:
    """A log that cannot be opened is reported with where its path came from: ``--db``, or the
    config file's ``audit.database``."""
    try:
        yield
    except AuditStoreError as exc:
        where = "--db" if getattr(args, "db", None) is not None else f"{config.source}: audit.database"
        raise CommandError(f"{where}: {exc}") from None


def cmd_query(args: argparse.Namespace) -> int:
    if fleet.uses_store(args):
        return fleet.fleet_query(args)
    selection = selection_of(args, limit=args.limit)
    records = _read(args, config_of(args), lambda store: store.query(selection))
    WRITERS[args.format](records, sys.stdout)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if fleet.uses_store(args):
        return fleet.fleet_show(args)
    config = config_of(args)
    record = _read(args, config, lambda store: store.get(args.id))
    if record is None:
        raise CommandError(f"no record {args.id} in {config.database_path}")
    write_record(record, sys.stdout)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if fleet.uses_store(args):
        return fleet.fleet_export(args)
    selection = selection_of(args)
    stream = (
        fleet.ocsf_stream(config_of(args), sys.stdout)
        if args.format == "ocsf"
        else RecordStream(args.format, sys.stdout, for_terminal=sys.stdout.isatty())
    )

    async def export(store: AuditStore) -> None:
        # Records shown on the same terminal would be garbled by the progress line.
        with Progress("export", sys.stderr, enabled=not sys.stdout.isatty()) as progress:
            # Only the whole log's size is cheap to know; a filtered selection is counted as it goes.
            if progress.enabled and selection == AuditFilter(limit=None):
                progress.total = await store.size()
            exported = 0
            # Closed here even when the output fails (a reader gone): not after the store is.
            async with aclosing(store.rows(selection)) as batches:
                async for batch in batches:
                    stream.write_rows(batch)
                    exported += len(batch)
                    progress.update(exported)

    _read(args, config_of(args), export)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    if fleet.uses_store(args):
        return fleet.fleet_stats(args)
    if args.by == "instance":
        raise CommandError("--by instance needs --store (a local log holds one instance)")
    selection = selection_of(args)
    rows = _read(
        args, config_of(args), lambda store: store.stats(args.by, selection, include_intents=args.outcome == "pending")
    )
    write_columns(
        [args.by, "records"], [["-" if value is None else str(value), str(n)] for value, n in rows], sys.stdout
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if fleet.uses_store(args):
        return fleet.fleet_verify(args)
    config = config_of(args, uses={"chain_key"})
    key = chain_key_of(args, config)

    async def verify(store: AuditStore) -> Verdict:
        with Progress("verify", sys.stderr) as progress:
            if progress.enabled:
                progress.total = await store.size()
            return await verify_log(store, key, expect_head=args.expect_head, progress=progress.update)

    try:
        verdict = _read(args, config, verify)
    except CannotVerify as exc:
        raise CommandError(str(exc)) from None
    if verdict.problem is not None:
        say(f"TAMPERED: {verdict.problem}; {verdict.checked} records checked")
        return EXIT_TAMPERED
    assert key is not None
    anchored = f"; contains the expected head {args.expect_head}" if args.expect_head else ""
    say(
        f"OK: {verdict.checked} records verified ({key.mode} chain); head is record {verdict.head.id}, hash {verdict.head.hash}{anchored}"
    )
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    config = config_of(args, uses={"chain_key"})
    key = chain_key_of(args, config) or ChainKey(None)

    async def upgrade() -> None:
        with _naming(args, config):
            store = await open_store(
                config.database_path,
                key=key,
                writable=True,
                busy_timeout=config.audit.busy_timeout,
                chain_unchained=True,
            )
        await store.close()

    asyncio.run(upgrade())
    say(
        f"{config.database_path}: upgraded to the current schema; records from before the chain are chained as they are now"
    )
    return 0


def cmd_head(args: argparse.Namespace) -> int:
    head = _read(args, config_of(args), lambda store: store.head())
    say(f"{head.id} {head.hash}")
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    config = config_of(args, uses={"chain_key", "upstream_tls"})
    key = chain_key_of(args, config) or ChainKey(None)
    tokens = _read_tokens(args.tokens_file) if args.tokens_file else {}
    operator = _operator(args.operator)
    base_url = args.upstream or (None if config.uses_stub else config.upstream.url)
    basic = _upstream_authorization(config, args.user)
    logs_in = args.user is None and config.upstream.auth == "oauth2"

    async def run(store: AuditStore) -> tuple[list[Any], list[Any]]:
        async with make_session(
            connect_timeout=config.upstream.connect_timeout,
            read_timeout=config.upstream.read_timeout,
            total_timeout=config.upstream.total_timeout,
            verify_tls=config.upstream.verify_tls,
            ca_bundle=str(config.path(config.upstream.ca_bundle)) if config.upstream.ca_bundle else None,
        ) as session:
            authorization = await _bearer(config, session, base_url) if base_url and logs_in else basic

            async def ask(org: str, token: str) -> int:
                url = f"{base_url}/v1/o/{org}/oauth2/accesstokens/{token}"
                async with session.get(
                    url, headers={"Authorization": authorization} if authorization else None
                ) as response:
                    return response.status

            with Progress("reconcile", sys.stderr, unit="open calls") as progress:
                settled, unsettled = await reconcile(
                    store,
                    operator=operator,
                    ask_upstream=ask if base_url else None,
                    tokens=tokens,
                    progress=progress.update,
                    asking_as=_asking_as(config, args.user),
                )
        if settled:
            appender = store.appender()
            try:
                heads.append(appender.append([item.outcome for item in settled]))
            finally:
                appender.close()
        return settled, unsettled

    heads: list[Head] = []
    settled, unsettled = _read(args, config, run, key=key, writable=True)
    if settled:
        first = heads[0].id - len(settled) + 1
        for offset, item in enumerate(settled):
            say(
                f"record {item.intent.id} (request {item.intent.request_id}): {item.outcome.outcome}, recorded as {first + offset}"
            )
    for item in unsettled:
        say(f"record {item.intent.id} (request {item.intent.request_id}): still open: {item.reason}")
    say(f"{len(settled)} settled, {len(unsettled)} still open")
    return 0 if not unsettled else 1


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--tokens-file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return {fingerprint(token): token for token in lines}


def _upstream_authorization(config: Config, user: str | None) -> str | None:
    if user is not None:
        return aiohttp.encode_basic_auth(user, _upstream_password(user))
    if config.upstream.auth == "service":
        config = resolve(config, {"service_password"})
        return aiohttp.encode_basic_auth(config.upstream.service_user, config.service_password)
    return None


async def _bearer(config: Config, session: aiohttp.ClientSession, base_url: str) -> str:
    """``upstream.auth = "oauth2"``: the service account's bearer token, obtained as ``serve``
    obtains it (with the embedded stub's config, from the stub at ``base_url``)."""
    # Quiet: the command's own lines are its output; a failure is its one error line.
    quiet = structlog.wrap_logger(None, wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    login = OAuthLogin(login_settings(resolve(config, {"service_password"}), base_url), session, quiet)
    try:
        return await login.authorization()
    except LoginError as exc:
        raise CommandError(f'{exc.detail} (upstream.auth = "oauth2")') from None


def _operator(given: str | None) -> str:
    """Who runs the command, for the record: --operator, else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no $USER and no passwd entry, as in a container run as a bare uid
        raise CommandError("cannot tell who is running this (no login name): give --operator NAME") from None


def _asking_as(config: Config, user: str | None) -> str | None:
    """Whom the GETs authenticate as, for the messages of calls the upstream refused."""
    if user is not None:
        return f"--user {user}"
    upstream = config.upstream
    if upstream.auth not in ACCOUNT_AUTH_MODES:
        return None
    return f"the service account {upstream.service_user}" + (" (OAuth 2.0)" if upstream.auth == "oauth2" else "")


def _upstream_password(user: str) -> str:
    """From the environment, or asked on the terminal; never a traceback when neither is there."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        if not sys.stdin.isatty():
            raise CommandError(f"--user {user} needs its Apigee password in ${PASSWORD_ENV} (no terminal to ask it on)")
        try:
            password = getpass.getpass(f"Apigee password for {user}: ")
        except (EOFError, UnicodeDecodeError):
            raise CommandError(f"no password read for --user {user}") from None
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"the password in ${PASSWORD_ENV} is not valid UTF-8") from None
    return password


def cmd_prune(args: argparse.Namespace) -> int:
    config = config_of(args, uses={"chain_key", "fleet_secrets"})
    key = chain_key_of(args, config) or ChainKey(None)
    path = config.database_path
    before = fleet.shipping_limit(config, args.before, ignore=args.ignore_shipping)

    async def prune(store: AuditStore) -> PruneResult | None:
        appender = store.appender()
        try:
            plan = appender.plan_prune(before)
            if plan.last_removed is None:
                return PruneResult(0, None)
            if args.dry_run:
                say(
                    f"would prune {plan.removed} records (ids {plan.first_id}-{plan.last_removed}, {plan.oldest} to "
                    f"{plan.newest}) before {before}; {plan.kept} records would remain"
                )
                return None
            if plan.everything and not args.yes:
                _confirm_removing_everything(path, plan.removed, before)
            # One transaction, nothing to count as it goes: say what is under way until it is done.
            with Progress("prune", sys.stderr) as progress:
                progress.note(f"removing records before {before} ...")
                result = appender.prune(before, actor=_operator(args.operator))
                appender.fold_wal()
            return result
        finally:
            appender.close()

    reserve = (
        DiskReserve.found(path, config.audit.reserve_mb) if args.db else DiskReserve(path, config.audit.reserve_mb)
    )
    # On a full disk, the room the prune (even opening the log) works in. Taken again after it,
    # but never made beside a log that could not be opened (a mistyped path): none was there.
    released = False if args.dry_run else reserve.release()
    pruned = False
    try:
        result = _read(args, config, prune, key=key, writable=True)
        pruned = True
    finally:
        not_restored = reserve.ensure(headroom=RESERVE_HEADROOM) if released or (pruned and not args.dry_run) else None
    if result is None:
        return 0
    if result.checkpoint is None:
        say(f"nothing to prune: no record before {before}")
        return 0
    say(f"pruned {result.removed} records before {before}; checkpoint is record {result.checkpoint.id}")
    if not_restored is not None:
        print(
            f"warning: the disk reserve is not in place: {not_restored}; free disk space so that the next "
            "prune on a full disk has room",
            file=sys.stderr,
        )
    return 0


def _confirm_removing_everything(path: Path, count: int, before: str) -> None:
    """Emptying the log is allowed (the checkpoint keeps the chain going), but never by accident."""
    what = f"pruning before {before} removes every record of {path} ({count})"
    if not sys.stdin.isatty():
        raise CommandError(f"{what}; pass --yes to do it, or --dry-run to see what would go")
    # The question goes where the answer comes from: the terminal, not standard output.
    sys.stderr.write(f"{what}. Remove them all? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandError("nothing pruned")
