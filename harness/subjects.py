"""Which releases a suite runs against: every matrix cell's, and the installed one."""

from __future__ import annotations

import importlib.metadata

from . import known, releases
from .matrix import load_matrix
from .release_load import Release


def release_params(package: str, failure_id: str, *, shows: str = "cause", stack: dict | None = None) -> list:
    """pytest params of ``(package, version, origin)`` for each distinct matrix release of ``package``
    plus the installed one (id ``installed-VERSION``, what `qvl-harness bisect` selects with
    ``-k installed``), each marked with the registry's expectation for ``failure_id``."""
    import pytest

    key = package.replace("-", "_")
    versions = sorted({cell.pins[key] for cell in load_matrix().cells.values()})
    params = [pytest.param((package, v, "wheel"), id=f"{package}-{v}",
                           marks=known.expectation_marks(failure_id, v, shows=shows, stack=stack)) for v in versions]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return params
    params.append(pytest.param((package, version, "installed"), id=f"installed-{version}",
                               marks=known.expectation_marks(failure_id, version, shows=shows, stack=stack)))
    return params


def release_code(param) -> releases.ReleaseCode:
    package, version, origin = param
    return releases.installed(package) if origin == "installed" else releases.from_wheel(package, version)


def installed_release() -> Release | None:
    """The installed unsloth and unsloth-zoo, read from their release wheels (the same files, and the
    wheel carries the ship date); None where either is not installed."""
    try:
        versions = [importlib.metadata.version(p) for p in ("unsloth", "unsloth-zoo")]
    except importlib.metadata.PackageNotFoundError:
        return None
    return Release(releases.from_wheel("unsloth", versions[0]), releases.from_wheel("unsloth-zoo", versions[1]))


def matrix_releases() -> list[Release]:
    """The (unsloth, unsloth-zoo) pair of every matrix cell, each once."""
    pairs = dict.fromkeys((c.pins["unsloth"], c.pins["unsloth_zoo"]) for c in load_matrix().cells.values())
    return [Release(releases.from_wheel("unsloth", u), releases.from_wheel("unsloth-zoo", z)) for u, z in pairs]
