"""The package passes ``mypy --strict`` (configured in pyproject.toml): its annotations are part
of how it explains itself, and a wrong one is a bug waiting for a caller."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_type_checks_strictly() -> None:
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "gateway")])
    assert status == 0, stdout + stderr
