"""apigee-audit-gateway: an audited sidecar for Apigee Edge token deletions."""

from __future__ import annotations

__version__ = "0.1.0"
