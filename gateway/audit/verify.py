"""``gateway audit verify``: walk the whole chain and name the first record that is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing

from gateway.audit.chain import EMPTY, Anchor, ChainKey, ChainWalker, Head, Verdict
from gateway.audit.store import AuditStore, ChainModeMismatch


class CannotVerify(Exception):
    """Verify was not given what it needs to decide (the key of a keyed log, an anchor that a
    prune removed): neither intact nor tampered can be said, so the command says what to pass."""


async def verify_log(
    store: AuditStore,
    key: ChainKey | None,
    *,
    expect_head: Anchor | None = None,
    progress: Callable[[int], object] | None = None,
) -> Verdict:
    """Check every record's link and hash, from the genesis value or the retention checkpoint.

    ``key`` is the chain the caller expects (a key, or ``ChainKey(None)`` for a plain chain);
    ``None`` means the caller did not say. The file's own word on its kind of chain is never
    enough: whoever can write the file can rewrite a keyed log as a plain one, so a plain chain
    is checked only when the caller expects one, and a log expected keyed that says it is plain
    is tampered. With ``expect_head`` (anchored earlier, outside the host), the walk must also
    meet that head, which proves that nothing up to it was cut off or rebuilt. ``progress`` is
    told the records checked so far after each batch.
    """
    try:
        mode, check = await store.chain_mode()
    except ChainModeMismatch as exc:
        return Verdict(0, EMPTY, str(exc))
    if key is None or (key.secret is None and mode != key.mode):
        raise CannotVerify(_which_key(store, mode))
    if mode != key.mode:
        return Verdict(
            0,
            EMPTY,
            f"the log says it keeps a {mode} chain, but it is expected keyed ({key.mode}): "
            "a keyed log rewritten without its key, or not the log of this key",
        )
    if check != key.check:
        return Verdict(
            0,
            EMPTY,
            "the log's chain key check does not match the key given: the log was rewritten "
            "under another key, or the key is not this log's",
        )
    first = await store.first_id()
    start = EMPTY
    if first is not None and first > 1:
        checkpoint = await store.checkpoint_before(first)
        if checkpoint is None:
            missing = "record 1" if first == 2 else f"records 1-{first - 1}"
            return Verdict(
                0, EMPTY, f"record {first}: {missing} missing, and no retention checkpoint accounts for them"
            )
        start = Head(first - 1, json.loads(checkpoint.snapshot or "{}")["last_pruned_hash"])
    if expect_head is not None and expect_head.id is not None and expect_head.id < start.id:
        return await _verify_pruned_anchor(store, key, expect_head, start, progress)
    walker = ChainWalker(key, start, expect_head)
    async with aclosing(store.rows()) as batches:
        async for batch in batches:
            problem = walker.check(batch)
            if problem is not None:
                return walker.verdict(problem)
            if progress is not None:
                progress(walker.checked)
    if not walker.anchor_found:
        assert expect_head is not None
        if expect_head.id is not None and expect_head.id > walker.head.id:
            return walker.verdict(
                f"the expected head is record {expect_head.id}, past the end of the log "
                f"(record {walker.head.id}): records up to it were cut off"
            )
        if expect_head.id is None and start.id > 0:
            raise CannotVerify(
                f"the expected head {expect_head.hash} is not among the records the log keeps, and records 1-{start.id} "
                "were pruned: it may have been one of them. Give the anchor as `ID HASH` (as `audit head` prints "
                "it) to check it against the prune's checkpoint"
            )
        return walker.verdict(
            f"the expected head {expect_head.hash} is not in the chain: records up to it were cut off, or the chain was rebuilt"
        )
    return walker.verdict()


async def _verify_pruned_anchor(
    store: AuditStore, key: ChainKey, anchor: Anchor, start: Head, progress: Callable[[int], object] | None
) -> Verdict:
    """An anchor older than the latest prune: a kept checkpoint that removed exactly up to it
    still vouches for its hash; otherwise it cannot be checked any more."""
    assert anchor.id is not None
    vouched = await store.pruned_hash(anchor.id)
    if vouched is None:
        raise CannotVerify(
            f"the expected head is record {anchor.id}, which a prune removed (the log now starts after record "
            f"{start.id}) and no checkpoint ends there; check against a head anchored after the last prune"
        )
    verdict = await verify_log(store, key, progress=progress)
    if verdict.problem is None and vouched != anchor.hash:
        return Verdict(
            verdict.checked,
            verdict.head,
            f"record {anchor.id} (pruned): the checkpoint that removed it "
            f"gives its hash as {vouched}, not the expected {anchor.hash}",
        )
    return Verdict(verdict.checked, verdict.head, verdict.problem, verdict.problem is None)


def _which_key(store: AuditStore, mode: str) -> str:
    if mode != ChainKey(None).mode:
        return (
            f"{store.path} keeps a {mode} chain, which cannot be checked without its key: pass --config with "
            "audit.chain_key_env or audit.chain_key_file, or --chain-key-file FILE / --chain-key-env VARIABLE"
        )
    return (
        f"{store.path} says it keeps a plain {mode} chain (no key). Whoever can write the file can rebuild such "
        "a chain, and a keyed log rewritten without its key says the same: pass --no-chain-key to check it as "
        "a plain chain, or its key (--chain-key-file FILE / --chain-key-env VARIABLE) if it was started keyed"
    )
