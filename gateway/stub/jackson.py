"""Serialise JSON the way Apigee Edge (Java, Jackson's default pretty printer) does.

The upstream documentation shows responses in this form (``"key" : value``, arrays inline as
``[ "a", "b" ]``); the stub must reproduce them byte for byte, which ``json.dumps`` cannot.
The documented sample has no indentation, so neither does this printer.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> str:
    """Render ``value`` (from ``json.loads``) in Jackson's pretty-printed style."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{ }")
            return
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            out.append(",\n" if index else "\n")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(" : ")
            _write(item, out)
        out.append("\n}")
    elif isinstance(value, list):
        if not value:
            out.append("[ ]")
            return
        out.append("[ ")
        for index, item in enumerate(value):
            if index:
                out.append(", ")
            _write(item, out)
        out.append(" ]")
    elif isinstance(value, Decimal):
        out.append(str(value))
    else:
        # str, int, float, bool and None print the same in both dialects.
        out.append(json.dumps(value, ensure_ascii=False))
