"""Shared pytest fixtures: tiny checkpoints, processors and the X-ray fixtures (session-scoped)."""

from __future__ import annotations

import pytest

from . import tinymodel, xrays


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
