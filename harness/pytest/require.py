"""One-line requirements for a test, like transformers' ``require_*`` decorators: where one is not met
the test is skipped, and the skip says what it needs and what this run has."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.env.stack import dist_version

# A CUDA GPU; the plugin skips it elsewhere with the reason (and `tox -e gpu` refuses without one).
gpu = pytest.mark.gpu


def versions(**specs: str):
    """Installed packages within ranges: ``@require.versions(transformers="<4.52")``."""
    unmet = []
    for name, spec in specs.items():
        installed = dist_version(name.replace("_", "-")) or dist_version(name)
        if installed is None or not SpecifierSet(spec).contains(Version(installed).base_version, prereleases=True):
            unmet.append(f"{name}{spec} (this run: {installed or 'not installed'})")
    return pytest.mark.skipif(bool(unmet), reason="needs " + "; ".join(unmet))


def installed(*packages: str, hint: str = ""):
    missing = [p for p in packages if dist_version(p) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"needs {', '.join(missing)} installed" + (f": {hint}" if hint else "")
    )


def program(path: str, hint: str):
    """An executable, by absolute path or on PATH."""
    found = Path(path).is_file() if "/" in path else shutil.which(path) is not None
    return pytest.mark.skipif(not found, reason=f"{path} is absent: {hint}")


def symptom_conditions(failure, hint: str = ""):
    """The stack the registry says a failure's symptom shows on (its requires and symptom_requires)."""
    from harness.failures.registry import installed_stack

    unmet = failure.entry.unmet("symptom", installed_stack())
    return pytest.mark.skipif(
        bool(unmet), reason=f"the {failure.id} symptom needs " + "; ".join(unmet) + (f": {hint}" if hint else "")
    )
