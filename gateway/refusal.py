"""A step's "no": the answer to send, and the record the audit log should keep of it.

Each step of the request path (``gateway.handler``) returns what the next step needs, or raises
a Refusal. The handler is then the one place that writes the refusal's record (when one is due)
and logs the request, from the facts as they finally stand.
"""

from __future__ import annotations

from aiohttp import web

from gateway.audit.record import AuditRecord


class Refusal(Exception):
    def __init__(
        self,
        response: web.Response,
        *,
        record: AuditRecord | None = None,
        if_unrecorded: web.Response | None = None,
        limited: bool = False,
    ) -> None:
        """``record``: what the audit log keeps of it (None: nothing on its own, e.g. a path that
        is not served, or a throttled login, which the throttle sums up per window). When the
        record is the call's outcome (the upstream failed after the intent), it must be durable
        before the answer leaves: ``if_unrecorded`` is sent instead if it cannot be written.
        ``limited``: written only within the throttle's allowance for failed logins, so that
        no flood of them can fill the log."""
        super().__init__(response.status)
        self.response = response
        self.record = record
        self.if_unrecorded = if_unrecorded
        self.limited = limited
