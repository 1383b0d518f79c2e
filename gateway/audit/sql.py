"""What every SQL backend asks the same way: which columns the filters compare, and what the
stats group by. Each backend only spells its placeholders (``?`` or ``$n``) into these."""

from __future__ import annotations

EQUALITY_FILTERS = ("org", "token_sha256", "actor", "app", "outcome", "action", "resource_type", "resource")
"""Filters that select records whose column equals the value given."""

COMPARISONS = (("since", "time >= {}"), ("until", "time < {}"), ("after_id", "id > {}"))
"""Filters that bound a column, each with its condition; ``{}`` is the backend's placeholder."""

STATS_EXPRESSIONS = {
    "actor": "actor",
    "org": "org",
    "app": "app",
    "outcome": "outcome",
    "action": "action",
    "resource_type": "resource_type",
    "day": "substr(time, 1, 10)",
}
"""What ``stats --by`` groups on, as an expression both SQLite and PostgreSQL evaluate alike."""
