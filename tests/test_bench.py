"""The benchmarks are not run in CI, but they must not rot: each bench/ script imports what it
names of the gateway (a module renamed under it fails here, not on the day someone measures)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_support import server_url

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCH.glob("*.py")))
def test_every_bench_script_imports(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _bench(script, monkeypatch)


def _bench(script: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    name = f"bench_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def test_the_fleet_query_bench_fills_the_store_as_it_is_today(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its fill is SQL naming every column of the fleet store: when the store gained columns, it
    failed ('INSERT has more target columns than expressions') on the day of measuring."""
    fleet = _bench("fleet.py", monkeypatch)

    await fleet.queries(server_url(), 500, None)

    out = capsys.readouterr().out
    assert "queries: filled 500 records" in out
    assert 3 == out.count("query by")
