"""Which releases a cross-release suite runs against: every matrix cell's, and the installed one."""

from __future__ import annotations

import importlib.metadata

from . import known, releases
from .matrix import load_matrix


def release_params(package: str, failure_id: str, raises) -> list:
    """pytest params of ``ReleaseCode`` for each distinct matrix release of ``package`` plus the
    installed one (id ``installed-VERSION``, what `qvl-harness bisect` selects with ``-k installed``),
    each marked with the known-failure expectation for ``failure_id``."""
    import pytest

    key = package.replace("-", "_")
    versions = sorted({cell.pins[key] for cell in load_matrix().cells.values()})
    params = [
        pytest.param((package, v, "wheel"), id=f"{package}-{v}", marks=known.expectation_marks(failure_id, v, raises))
        for v in versions
    ]
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return params
    params.append(
        pytest.param((package, version, "installed"), id=f"installed-{version}",
                     marks=known.expectation_marks(failure_id, version, raises))
    )
    return params


def release_code(param) -> releases.ReleaseCode:
    package, version, origin = param
    return releases.installed(package) if origin == "installed" else releases.from_wheel(package, version)
