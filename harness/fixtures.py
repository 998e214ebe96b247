"""Shared pytest fixtures: tiny checkpoints, processors, the X-ray fixtures and local hubs (session-scoped)."""

from __future__ import annotations

import pytest

from . import hub, tinymodel, xrays


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """Path of the 16-bit tiny Qwen2-VL (built once per transformers version, cached)."""
    return tinymodel.build()


@pytest.fixture(scope="session")
def tiny_processor(tiny_checkpoint):
    return tinymodel.load_processor(tiny_checkpoint)


@pytest.fixture(scope="session")
def xray_fixtures():
    """Every fixture of fixtures/xrays.toml; a broken entry fails the run with its reason."""
    return xrays.load_manifest()


@pytest.fixture(scope="session")
def chest_xray(xray_fixtures):
    return next(f for f in xray_fixtures if f.body_part == "CHEST")


@pytest.fixture(scope="session")
def hub_for():
    """``hub_for(snapshot)`` -> a started local hub serving that snapshot (fixtures/hub/NAME.toml or a
    path); one server per snapshot for the session, stopped at its end."""
    started: dict[str, hub.LocalHub] = {}

    def start(snapshot: str = "2024-12") -> hub.LocalHub:
        if str(snapshot) not in started:
            started[str(snapshot)] = hub.LocalHub(snapshot).start()
        return started[str(snapshot)]

    yield start
    for server in started.values():
        server.stop()
