"""``gateway audit verify --store``: every instance's chain in the fleet store, walked on its own.

Each instance is checked as its own log would be (``ChainWalker``, with that instance's key when
the config gives it; without it a keyed chain is checked for its links only, and the report says
so), from where its chain starts in the store. It also reports what the collector flagged
(refused gaps, forks, rewrites, forged batches) and instances silent for longer than
``collector.silent_after``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field

from gateway.audit.chain import EMPTY, ChainKey, ChainWalker, Head
from gateway.audit.record import FIELDS, Row
from gateway.fleet.store import Flag, FleetStore, InstanceState

_PREV, _HASH = len(FIELDS) - 2, len(FIELDS) - 1
_PLAIN = ChainKey(None)


@dataclass
class InstanceVerdict:
    instance: str
    checked: int
    head: Head
    mode: str
    problem: str | None = None
    links_only: bool = False
    """A keyed chain whose key was not given: links checked, hashes not."""
    start: Head = EMPTY
    silent_seconds: float | None = None
    """Seconds since the instance's last contact, when longer than allowed."""
    never_seen: bool = False
    """A sidecar of the config that has never reached the collector (wrong URL or credentials,
    never started): as silent as one can be."""
    flags: list[Flag] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.problem is None and not self.flags and self.silent_seconds is None and not self.never_seen


async def verify_fleet(
    store: FleetStore,
    keys: dict[str, ChainKey],
    *,
    silent_after: float,
    progress: Callable[[int], object] | None = None,
    expected: Iterable[str] = (),
) -> list[InstanceVerdict]:
    """One verdict per instance in the store's scope (all of them, or the one it is scoped to),
    and per ``expected`` instance (the config's ``[[sidecars]]``) the store has never heard of."""
    flags = await store.flags()
    verdicts = []
    checked = 0
    for state in await store.instances():
        verdict = await _verify_instance(store.scoped(state.instance), state, keys.get(state.instance))
        verdict.flags = [flag for flag in flags if flag.instance == state.instance]
        if state.quiet_seconds > silent_after:
            verdict.silent_seconds = state.quiet_seconds
        verdicts.append(verdict)
        checked += verdict.checked
        if progress is not None:
            progress(checked)
    for instance, count in await store.unmarked():
        verdicts.append(
            InstanceVerdict(
                instance,
                0,
                EMPTY,
                "-",
                problem=f"{count} records held, but the collector's mark of this instance is gone from the fleet "
                "store: the store was edited",
            )
        )
    known = {verdict.instance for verdict in verdicts}
    for flag in flags:  # refused before the instance ever stored a record (a forged first batch, say)
        if flag.instance not in known:
            known.add(flag.instance)
            verdicts.append(
                InstanceVerdict(flag.instance, 0, EMPTY, "-", flags=[f for f in flags if f.instance == flag.instance])
            )
    for instance in expected:
        if instance not in known and store.instance in (None, instance):
            known.add(instance)
            verdicts.append(InstanceVerdict(instance, 0, EMPTY, "-", never_seen=True))
    return verdicts


async def _verify_instance(store: FleetStore, state: InstanceState, key: ChainKey | None) -> InstanceVerdict:
    mode = state.chain_mode or "sha256"
    verdict = InstanceVerdict(state.instance, 0, state.start, mode, start=state.start)
    if key is not None and (key.mode, key.check) != (mode, state.key_check):
        verdict.problem = (
            f"the instance says it keeps a {mode} chain (key check {state.key_check}), not one under the key "
            "configured for it: its log was rebuilt, or the key is not its own"
        )
        return verdict
    if key is None and mode == ChainKey(None).mode:
        key = ChainKey(None)
    verdict.links_only = key is None
    walker = ChainWalker(key, state.start) if key is not None else None
    head = state.start
    async with aclosing(store.rows()) as batches:
        async for batch in batches:
            if walker is not None:
                problem = walker.check(batch)
                head, verdict.checked = walker.head, walker.checked
            else:
                problem, head, counted = _links(batch, head)
                verdict.checked += counted
            if problem is not None:
                verdict.problem, verdict.head = problem, head
                return verdict
    verdict.head = head
    if state.start.id and await store.pruned_hash(state.start.id) != state.start.hash:
        verdict.problem = (
            f"its chain starts after record {state.start.id} here, and no prune checkpoint of this instance "
            "held vouches for that record's hash: records before the start were removed from the fleet store "
            "(or the checkpoint is not shipped yet)"
        )
    elif head != state.head:
        if head.id > state.head.id:
            what = "records past its mark were added to the fleet store"
        elif head.id < state.head.id:
            what = "records were removed from the fleet store"
        else:
            what = f"record {head.id} is not the one it acknowledged (hash {state.head.hash}): the store was edited"
        verdict.problem = (
            f"the store's events end at record {head.id}, but the collector acknowledged up to record "
            f"{state.head.id}: {what}"
        )
    return verdict


def _links(rows: list[Row], head: Head) -> tuple[str | None, Head, int]:
    """Ids consecutive and each prev_hash the hash before: what can be checked without the key.
    And no record may hash as a plain chain: under an HMAC key none ever does, so one that does
    means the instance was marked keyed in the store to have its content go unchecked."""
    counted = 0
    for row in rows:
        if row[0] != head.id + 1:
            return f"record {row[0]}: expected record {head.id + 1} (records missing or out of order)", head, counted
        if row[_PREV] != head.hash:
            return f"record {row[0]}: prev_hash does not link to record {head.id}", head, counted
        if ChainWalker(_PLAIN, head).check([row]) is None:
            return (
                f"record {row[0]}: hashed as a plain sha256 chain, though the instance is marked keyed: the "
                "store was edited",
                head,
                counted,
            )
        head = Head(row[0], row[_HASH])
        counted += 1
    return None, head, counted
