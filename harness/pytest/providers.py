"""Shared pytest fixtures: tiny checkpoints, processors, the X-ray fixtures and local hubs (session-scoped)."""

from __future__ import annotations

import pytest

from harness.data import hub_server, xrays
from harness.lab import tinymodel


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """Path of the 16-bit tiny Qwen2-VL (built once per transformers version, cached)."""
    return tinymodel.build()


@pytest.fixture(scope="session")
def tiny_processor(tiny_checkpoint):
    return tinymodel.load_processor(tiny_checkpoint)


@pytest.fixture(scope="session")
def xray_fixtures():
    """The usable fixtures of fixtures/xrays.toml (a refused entry is reported by tests/test_xrays.py)."""
    return xrays.usable(xrays.load_manifest())


@pytest.fixture(scope="session")
def chest_xray(xray_fixtures):
    return next(f for f in xray_fixtures if f.body_part == "CHEST")


@pytest.fixture(scope="session")
def hub_for():
    """``hub_for(snapshot, base=None)`` -> a started local hub serving that snapshot (a name of
    fixtures/hub/, a path, or a Snapshot) with stand-ins made from ``base`` (default: the tiny
    Qwen2-VL); one server per snapshot and base for the session, stopped at its end."""
    started: dict[tuple, hub_server.LocalHub] = {}

    def start(snapshot="2024-12", base=None) -> hub_server.LocalHub:
        key = (getattr(snapshot, "name", str(snapshot)), str(base))
        if key not in started:
            started[key] = hub_server.LocalHub(snapshot, tinymodel.standins(base)).start()
        return started[key]

    yield start
    for server in started.values():
        server.stop()
