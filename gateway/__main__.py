"""Allows ``python -m gateway``, which tests use to run the real CLI in a subprocess."""

from __future__ import annotations

from gateway.cli import main

raise SystemExit(main())
