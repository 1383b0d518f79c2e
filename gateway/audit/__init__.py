"""The audit trail: records, their storage, the writer that commits them, and queries."""
