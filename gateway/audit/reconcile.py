"""``gateway audit reconcile``: settle the calls whose fate was never known.

A pending intent alone means the gateway stopped between forwarding a DELETE and recording
what came back; an ``unknown`` outcome means the call left but no usable answer came back
(read timeout, reset). Either way, whether the token was deleted is open. Reconciliation finds
out and appends the settled outcome with the same request id, chained like any other record:

1. If the raw token is at hand (``audit.store_raw_tokens``, or given by the operator), the
   upstream is asked (GET on the token): gone means ``deleted``, still there ``not_deleted``.
2. Otherwise a later record for the same token answers it: a later successful delete means
   the token still existed, so the pending one did not delete it (``not_deleted``); a later
   ``not_found`` means it was gone by then (``deleted``).
3. Otherwise it stays pending, and the report says why.

The log never holds raw tokens unless the operator opted in, so step 1 needs them from
whoever issued the deletions (the client's own records) when they are not stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.audit import records
from gateway.audit.record import AuditRecord, Outcome
from gateway.audit.store import AuditStore

AskUpstream = Callable[[str, str], Awaitable[int]]
"""GET the token (org, raw token) upstream; the HTTP status (raise on no answer)."""


@dataclass(frozen=True)
class Settled:
    intent: AuditRecord
    outcome: AuditRecord


@dataclass(frozen=True)
class Unsettled:
    intent: AuditRecord
    reason: str


UPSTREAM_OPTIONS = "--upstream URL (or a --config whose upstream.url is the Apigee it went to)"
NO_CREDENTIALS = (
    "no credentials were sent: give --user (password in $GATEWAY_UPSTREAM_PASSWORD) or a --config with "
    'upstream.auth = "service"'
)


async def reconcile(
    store: AuditStore,
    *,
    operator: str,
    ask_upstream: AskUpstream | None,
    tokens: Mapping[str, str],
    progress: Callable[[int, int], object] | None = None,
    asking_as: str | None = None,
) -> tuple[list[Settled], list[Unsettled]]:
    """Decide each open call; returns the outcome records to append and what stays open.

    ``tokens`` maps SHA-256 fingerprints to raw tokens the operator supplied. ``progress`` is
    told (calls decided so far, open calls in all) before each call and once at the end: asking
    the upstream about thousands of calls takes a while. ``asking_as`` says whom the GETs
    authenticate as (None: nobody). A call left open says what would settle it.
    """
    settled: list[Settled] = []
    unsettled: list[Unsettled] = []
    open_calls = await store.unsettled()
    for decided, intent in enumerate(open_calls):
        if progress is not None:
            progress(decided, len(open_calls))
        raw = intent.token or (tokens.get(intent.token_sha256) if intent.token_sha256 else None)
        if raw is not None and intent.org is not None and ask_upstream is not None:
            try:
                status = await ask_upstream(intent.org, raw)
            except Exception as exc:
                unsettled.append(Unsettled(intent, f"the upstream gave no answer ({type(exc).__name__})"))
                continue
            if status in (200, 404):
                outcome = Outcome.NOT_DELETED if status == 200 else Outcome.DELETED
                evidence: dict[str, object] = {"asked_upstream": f"GET on the token answered {status}"}
                settled.append(Settled(intent, records.reconciled(intent, outcome, operator, evidence, status)))
            else:
                unsettled.append(Unsettled(intent, _refused(status, asking_as)))
            continue
        later = (
            await store.later_outcome_for_token(intent.token_sha256, intent.id or 0) if intent.token_sha256 else None
        )
        if later is not None:
            outcome = Outcome.NOT_DELETED if later.outcome == Outcome.DELETED else Outcome.DELETED
            evidence = {"later_record": later.id, "later_outcome": later.outcome}
            settled.append(Settled(intent, records.reconciled(intent, outcome, operator, evidence, None)))
            continue
        if raw is not None and intent.org is None:
            unsettled.append(Unsettled(intent, "the record names no organisation to ask the upstream about"))
        else:
            unsettled.append(Unsettled(intent, _missing(raw is not None, bool(tokens), ask_upstream is not None)))
    if progress is not None:
        progress(len(open_calls), len(open_calls))
    return settled, unsettled


def _missing(token_known: bool, tokens_given: bool, upstream: bool) -> str:
    """What would let reconcile settle a call it could not, said as the options to give."""
    if token_known:  # then only the upstream to ask is missing
        return f"the raw token is known, but there is no upstream to ask: give {UPSTREAM_OPTIONS}"
    not_given = ", not in --tokens-file," if tokens_given else ""
    reason = f"the raw token is not stored{not_given} and no later record for it exists; give it with --tokens-file"
    return reason if upstream else f"{reason}, and the upstream to ask with {UPSTREAM_OPTIONS}"


def _refused(status: int, asking_as: str | None) -> str:
    answered = f"the upstream answered {status} to GET on the token"
    if status == 401:
        return (
            f"{answered}: {NO_CREDENTIALS}"
            if asking_as is None
            else (f"{answered}: it refused the credentials of {asking_as}; check them")
        )
    if status == 403:
        return f"{answered}: {asking_as or 'the caller'} may not read this organisation's tokens"
    return answered
