"""What a known failure module offers, so a suite stays a list of tests.

A failure of fixtures/known_failures.toml is reproduced by one module here: a ``Failure`` subclass
names the registry ``id`` and says how to get a release's ``subject`` (the code the reproduction
runs: unsloth's mapper and loader, or unsloth-zoo's hook) and how to ``reproduce`` the failure's
path on it. What counts as a reproduction is the registry's: its ``cause``/``symptom`` pattern,
applied by ``marks`` (harness.failures.registry.expectation_marks). A fourth failure is a registry
entry, one module like missing_repo.py, and one suite file.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import ClassVar

from harness.env.matrix import load_matrix
from harness.failures import registry
from harness.releases import code as release_code


class Failure:
    id: ClassVar[str]

    @functools.cached_property
    def entry(self) -> registry.KnownFailure:
        return registry.known_failure(self.id)

    @property
    def package(self) -> str:
        return self.entry.package

    def subject(self, version: str, origin: str = "wheel"):
        """The release code a reproduction runs; the default is the failure package's own release."""
        if origin == "installed":
            return release_code.installed(self.package)
        return release_code.from_wheel(self.package, version)

    def reproduce(self, subject, **context):
        raise NotImplementedError

    def marks(self, version: str, *, shows: str = "symptom", stack: dict | None = None) -> list:
        return registry.expectation_marks(self.id, version, shows=shows, stack=stack)

    def params(self, *, shows: str = "cause", stack: dict | None = None) -> list:
        """pytest params ``(package, version, origin)`` for each matrix release of the failure's package and
        the installed one (id ``installed-VERSION``: what `qvl-harness bisect` selects with ``-k installed``),
        each marked with the registry's expectation."""
        import pytest

        versions = sorted({cell.stack[self.package] for cell in load_matrix().cells.values()})
        params = [pytest.param((self.package, v, "wheel"), id=f"{self.package}-{v}", marks=self.marks(v, shows=shows, stack=stack))
                  for v in versions]
        try:
            installed = importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return params
        return params + [pytest.param((self.package, installed, "installed"), id=f"installed-{installed}",
                                      marks=self.marks(installed, shows=shows, stack=stack))]


def subject_of(param):
    """The release code of a ``(package, version, origin)`` param."""
    package, version, origin = param
    return release_code.installed(package) if origin == "installed" else release_code.from_wheel(package, version)
