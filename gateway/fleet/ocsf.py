"""Audit records as OCSF API Activity events (class 6003), for SIEMs: ``audit export --format ocsf``.

One JSON object per line. ``MAPPING`` is the one statement of which record field goes where;
``docs/fleet.md`` shows it as a table (a test compares them). The activity follows the HTTP
method (DELETE is Delete, 4, so ``type_uid`` 600304); the status follows the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

import orjson

from gateway import __version__
from gateway.audit.record import FIELDS, Outcome, Row

CLASS_UID = 6003
CATEGORY_UID = 6
OCSF_VERSION = "1.3.0"
ACTIVITIES = {
    "POST": (1, "Create"),
    "GET": (2, "Read"),
    "PUT": (3, "Update"),
    "PATCH": (3, "Update"),
    "DELETE": (4, "Delete"),
}
OTHER_ACTIVITY = (99, "Other")
ACTION_VERBS = {"create": "POST", "delete": "DELETE", "read": "GET"}
"""What a record's action says it did, as the method whose activity it is; every other verb
(revoke, approve, update, active, inactive) changes a resource: Update. A POST ?action=revoke
is no Create."""


def activity_of(method: str, action: str | None) -> tuple[int, str]:
    if action is None:
        return ACTIVITIES.get(method, OTHER_ACTIVITY)
    return ACTIVITIES[ACTION_VERBS.get(action.rpartition(".")[2], "PUT")]


SUCCESS, FAILURE, UNKNOWN = (1, "Success"), (2, "Failure"), (0, "Unknown")
STATUSES = {
    Outcome.DELETED.value: SUCCESS,
    Outcome.SUCCEEDED.value: SUCCESS,
    Outcome.PRUNED.value: SUCCESS,
    Outcome.PENDING.value: UNKNOWN,
    Outcome.UNKNOWN.value: UNKNOWN,
}
"""Every other outcome (not_found, denied, forbidden, rejected, upstream_error, not_deleted) is a Failure."""
SEVERITIES = {
    Outcome.DENIED.value: (3, "Medium"),
    Outcome.FORBIDDEN.value: (3, "Medium"),
    Outcome.UNKNOWN.value: (2, "Low"),
    Outcome.UPSTREAM_ERROR.value: (2, "Low"),
}
"""Refused credentials and rights are worth a look; everything else is Informational (1)."""

MAPPING: tuple[tuple[str, str, str], ...] = (
    (
        "(action, method)",
        "activity_id, activity_name, type_uid, type_name",
        "by the action's verb: delete 4 Delete (600304), create 1 Create, read 2 Read, others (revoke, approve, "
        "update, active, inactive) 3 Update; without an action by the method: DELETE 4, GET 2, POST 1, "
        "PUT/PATCH 3, others (PRUNE, THROTTLE) 99 Other",
    ),
    ("time", "time (epoch ms), metadata.original_time", "the record's ISO 8601 UTC time"),
    (
        "outcome",
        "status_id, status, status_detail",
        "deleted, succeeded, pruned: 1 Success; pending, unknown: 0 Unknown; others: 2 Failure; "
        "status_detail is the outcome",
    ),
    (
        "outcome",
        "severity_id, severity",
        "denied, forbidden: 3 Medium; upstream_error, unknown: 2 Low; others: 1 Informational",
    ),
    ("actor", "actor.user.name", "the gateway user (for denied: the name claimed)"),
    ("client_ip", "src_endpoint.ip", ""),
    ("method", "api.operation", "the HTTP method"),
    ("request_id", "api.request.uid", "pairs an intent with its outcome"),
    ("upstream_status", "http_status (and api.response.code)", ""),
    ("error_code", "api.response.error, status_code", ""),
    ("org", "api.service.name", "the Apigee organisation acted on"),
    (
        "resource_type",
        "resources[0].type",
        "access_token, consumer_key, app, developer...; access_token before schema 4",
    ),
    ("token_sha256", "resources[0].uid", "the credential only as its fingerprint"),
    ("token_hint", "resources[0].name", "its last 4 characters, as …XXXX"),
    ("app", "resources[0].labels", "app:NAME"),
    ("client_id", "resources[0].labels", "client_id:KEY"),
    ("snapshot", "resources[0].data", "the stored (redacted) snapshot, as JSON"),
    ("latency_ms", "duration", "milliseconds"),
    ("(instance)", "device.hostname, metadata.log_name", "the sidecar the record came from"),
    ("id", "metadata.uid, metadata.sequence", "instance:id; the id"),
    ("hash", "metadata.correlation_uid", "the record's chain hash"),
    ("prev_hash, token", "unmapped.prev_hash, unmapped.token", "token only when stored raw (audit.store_raw_tokens)"),
)
"""(record field, OCSF attribute, note): the mapping as docs/fleet.md shows it."""
_INDEX = {name: index for index, name in enumerate(FIELDS)}


def event(row: Row, instance: str) -> dict[str, Any]:
    """One record (a row in ``FIELDS`` order) as an OCSF API Activity event."""
    value = dict(zip(FIELDS, row, strict=True))
    activity_id, activity = activity_of(str(value["method"]), value["action"])
    status_id, status = STATUSES.get(value["outcome"], FAILURE)
    severity_id, severity = SEVERITIES.get(value["outcome"], (1, "Informational"))
    moment = int(datetime.fromisoformat(value["time"]).timestamp() * 1000)
    labels = [f"{name}:{value[name]}" for name in ("app", "client_id") if value[name] is not None]
    resource: dict[str, Any] = {"type": value["resource_type"] or "access_token"}
    if value["token_sha256"] is not None:
        resource["uid"] = value["token_sha256"]
    if value["token_hint"]:
        resource["name"] = f"…{value['token_hint']}"
    if labels:
        resource["labels"] = labels
    if value["snapshot"] is not None:
        resource["data"] = orjson.Fragment(value["snapshot"])
    response: dict[str, Any] = {}
    if value["upstream_status"] is not None:
        response["code"] = value["upstream_status"]
    if value["error_code"] is not None:
        response["error"] = value["error_code"]
    out: dict[str, Any] = {
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"API Activity: {activity}",
        "time": moment,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "status_detail": value["outcome"],
        "actor": {"user": {"name": value["actor"]}} if value["actor"] is not None else {},
        "api": {
            "operation": value["method"],
            "request": {"uid": value["request_id"]},
            "response": response,
            **({"service": {"name": value["org"]}} if value["org"] is not None else {}),
        },
        "resources": [resource],
        "device": {"hostname": instance, "type_id": 0},
        "metadata": {
            "version": OCSF_VERSION,
            "uid": f"{instance}:{value['id']}",
            "sequence": value["id"],
            "original_time": value["time"],
            "log_name": instance,
            "correlation_uid": value["hash"],
            "product": {"name": "apigee-audit-gateway", "vendor_name": "apigee-audit-gateway", "version": __version__},
        },
        "unmapped": {
            "prev_hash": value["prev_hash"],
            **({"token": value["token"]} if value["token"] is not None else {}),
        },
    }
    if value["client_ip"] is not None:
        out["src_endpoint"] = {"ip": value["client_ip"]}
    if value["upstream_status"] is not None:
        out["http_status"] = value["upstream_status"]
    if value["error_code"] is not None:
        out["status_code"] = value["error_code"]
    if value["latency_ms"] is not None:
        out["duration"] = round(value["latency_ms"])
    return out


def write_events(rows: Iterable[Row], instance: str, out: TextIO) -> None:
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out.write("".join(dumps(event(row, instance), option=newline).decode() for row in rows))


def write_located(rows: Iterable[Row], out: TextIO) -> None:
    """Rows of (instance, *FIELDS), as the fleet store gives them."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out.write("".join(dumps(event(row[1:], row[0]), option=newline).decode() for row in rows))


class OcsfStream:
    """A local log's rows as OCSF events, a batch at a time (``audit export --format ocsf``)."""

    def __init__(self, instance: str, out: TextIO) -> None:
        self._instance = instance
        self._out = out

    def write_rows(self, rows: Iterable[Row]) -> None:
        write_events(rows, self._instance, self._out)
