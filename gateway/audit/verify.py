"""``gateway audit verify``: walk the whole chain and name the first record that is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import aclosing

from gateway.audit.chain import EMPTY, ChainKey, ChainWalker, Head, Verdict
from gateway.audit.sqlite import SQLiteAuditStore


async def verify_log(
    store: SQLiteAuditStore, key: ChainKey, *, expect_head: str | None = None, progress: Callable[[int], object] | None = None
) -> Verdict:
    """Check every record's link and hash, from the genesis value or the retention checkpoint.

    With ``expect_head`` (a head hash anchored earlier, outside the host), the walk must also
    meet that hash, which proves that nothing up to it was cut off or rebuilt. ``progress`` is
    told the records checked so far after each batch, for a caller that shows it.
    """
    first = await store.first_id()
    start = EMPTY
    if first is not None and first > 1:
        checkpoint = await store.checkpoint_before(first)
        if checkpoint is None:
            missing = "record 1" if first == 2 else f"records 1-{first - 1}"
            return Verdict(0, EMPTY, f"record {first}: {missing} missing, and no retention checkpoint accounts for them")
        start = Head(first - 1, json.loads(checkpoint.snapshot or "{}")["last_pruned_hash"])
    walker = ChainWalker(key, start, expect_head)
    async with aclosing(store.rows()) as batches:
        async for batch in batches:
            problem = walker.check(batch)
            if problem is not None:
                return walker.verdict(problem)
            if progress is not None:
                progress(walker.checked)
    if not walker.anchor_found:
        return walker.verdict(
            f"the expected head {expect_head} is not in the chain: records up to it were cut off, or the chain was rebuilt"
        )
    return walker.verdict()
