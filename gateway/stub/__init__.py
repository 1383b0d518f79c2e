"""A local emulator of Apigee Edge's credential surface and login server; the gateway's default upstream."""

from __future__ import annotations

from gateway.stub.app import make_stub_app
from gateway.stub.seed import Seed, SeedError, demo_seed, load_seed
from gateway.stub.settings import StubSettings

__all__ = ["Seed", "SeedError", "StubSettings", "demo_seed", "load_seed", "make_stub_app"]
