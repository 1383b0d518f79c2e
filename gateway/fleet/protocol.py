"""What a sidecar and the collector say to each other: routes, the batch, the refusals.

    GET  /fleet/v1/instances/{instance}           -> {"instance", "mark", "hash", "schema_version"}
    POST /fleet/v1/instances/{instance}/records   {"fields": [...], "chain": {"mode", "key_check"},
                                                   "records": [[value, ...], ...]}
                                                  -> {"instance", "mark", "hash", "accepted", "duplicates"}

Both take HTTP Basic credentials: user name = the instance id, password = the sidecar's own (its
hash in the collector's ``[[sidecars]]``). ``mark`` is the high-water mark: the id of the newest
record the collector holds for the instance (0: none), ``hash`` its hash. Records are rows in
the order ``fields`` names, which must be exactly the collector's record fields, consecutive
ids, oldest first. Refusals are Apigee-shaped (``{"code", "message", "contexts"}``).
"""

from __future__ import annotations

from gateway.errors import GatewayError

BASE = "/fleet/v1/instances"

BAD_BATCH = GatewayError(400, "collector.bad_batch", "The batch is malformed")
UNAUTHORIZED = GatewayError(401, "collector.unauthorized", "Missing or invalid sidecar credentials")
WRONG_INSTANCE = GatewayError(403, "collector.wrong_instance", "These credentials may not ship as this instance")
CHAIN_GAP = GatewayError(409, "collector.chain_gap", "Records are missing between the collector's mark and the batch")
CHAIN_FORK = GatewayError(409, "collector.chain_fork", "The batch does not continue the chain the collector holds")
CHAIN_REWRITE = GatewayError(
    409, "collector.chain_rewrite", "The batch's records do not match their hashes, or its chain changed kind or key"
)
BATCH_TOO_LARGE = GatewayError(
    413, "collector.batch_too_large", "The batch holds more records than collector.max_batch"
)
UNKNOWN_FIELDS = GatewayError(422, "collector.unknown_fields", "The batch's record fields are not the collector's")
STORE_UNAVAILABLE = GatewayError(503, "collector.store_unavailable", "The fleet store cannot be written right now")

ALL = (
    BAD_BATCH,
    UNAUTHORIZED,
    WRONG_INSTANCE,
    CHAIN_GAP,
    CHAIN_FORK,
    CHAIN_REWRITE,
    BATCH_TOO_LARGE,
    UNKNOWN_FIELDS,
    STORE_UNAVAILABLE,
)
"""Every refusal of the collector's fleet routes (docs/fleet.md lists them; a test compares)."""
FLAGGED = {CHAIN_GAP.code: "gap", CHAIN_FORK.code: "fork", CHAIN_REWRITE.code: "rewrite", WRONG_INSTANCE.code: "forged"}
"""Refusals that are also written to the store's flags (``audit verify --store`` reports them)."""
