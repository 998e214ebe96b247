"""What a known failure module offers, so a suite stays a list of tests.

A failure of fixtures/known_failures.toml is reproduced by one module here: a ``Failure`` subclass
names the registry ``id`` and says how to get a release's ``subject`` (the code the reproduction
runs: unsloth's mapper and loader, or unsloth-zoo's hook) and how to ``reproduce`` the failure's
path on it. What counts as a reproduction is the registry's: its ``cause``/``symptom`` pattern,
applied by ``marks`` (harness.failures.registry.expectation_marks). A new failure is a registry
entry, one module like missing_repo.py declaring its subclass, and one suite file: ``failure_classes``
finds the subclass by scanning this package, as the families' registry finds a family module.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from typing import ClassVar

from packaging.version import Version

import harness.failures as package
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.env.matrix import load_matrix
from harness.failures import registry
from harness.releases import code as release_code
from harness.releases.git import Repo, local_path


class Failure:
    id: ClassVar[str]
    # What a reproduction fails with, per registry pattern ("cause", "symptom"): the harness's own assertion
    # messages (module constants the suites format), or the release's error text where the release raises.
    # tests/test_known_failures.py holds the registry's patterns to them.
    messages: ClassVar[dict[str, tuple[str, ...]]] = {}

    @functools.cached_property
    def entry(self) -> registry.KnownFailure:
        return registry.known_failure(self.id)

    @property
    def package(self) -> str:
        return self.entry.package

    def subject(self, version: str, origin: str = "wheel"):
        """The release code a reproduction runs; the default is the failure package's own release."""
        return release_code.of(self.package, version, origin)

    def reproduce(self, subject, **context):
        raise NotImplementedError

    def marks(self, version: str, *, shows: str = "symptom", stack: dict | None = None) -> list:
        return registry.expectation_marks(self.id, version, shows=shows, stack=stack)

    def marks_for(self, code: release_code.ReleaseCode, *, shows: str = "symptom", stack: dict | None = None) -> list:
        """The expectation for ``code``: a release's, or a commit's as the registry places it."""
        return registry.expectation_marks(self.id, code.version, shows=shows, stack=stack, commit=commit_at(code))

    def params(self, *, shows: str = "cause", stack: dict | None = None) -> list:
        """pytest params ``(package, version, origin)`` for each matrix release of the failure's package and
        the installed one (id ``installed-VERSION``: what `qvl-harness bisect` selects with ``-k installed``),
        each marked with the registry's expectation."""
        import pytest

        cells = load_matrix().cells.values()
        releases = {(cell.stack[self.package], "wheel", None) for cell in cells if self.package not in cell.sources}
        commits = {
            (cell.stack[self.package], f"git:{s.repo.path}@{s.commit.sha}", (s.repo, s.commit.sha))
            for cell in cells
            for name, s in cell.sources.items()
            if name == self.package
        }
        params = [
            pytest.param(
                (self.package, v, origin),
                id=f"{self.package}-{v}",
                marks=registry.expectation_marks(self.id, v, shows=shows, stack=stack, commit=commit),
            )
            for v, origin, commit in sorted(releases | commits, key=lambda p: Version(p[0]))
        ]
        try:
            installed = release_code.installed(self.package).version
        except HarnessError:
            return params
        return params + [
            pytest.param(
                (self.package, installed, "installed"),
                id=f"installed-{installed}",
                marks=self.marks_for(release_code.installed(self.package), shows=shows, stack=stack),
            )
        ]


def commit_at(code: release_code.ReleaseCode) -> tuple[Repo, str] | None:
    """(clone, commit id) of code that is a commit whose clone is on this machine (the registry's commits are
    placed in it); None for a release, or a commit installed from a remote URL (its version decides)."""
    commit = code.commit()
    clone = local_path(commit[0]) if commit else None
    return (Repo(clone), commit[1]) if clone is not None and clone.exists() else None


def subject_of(param):
    """The release code of a ``(package, version, origin)`` param."""
    return release_code.of(*param)


def failure_classes() -> dict[str, type[Failure]]:
    """Registry id -> the Failure subclass that declares it, from every module of this package (a class
    counts where it sets ``id`` itself); the package's search path is scanned on each call."""
    found: dict[str, type[Failure]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, Failure) and "id" in vars(cls)):
                continue
            if cls.__module__ != module.__name__:
                continue  # imported from the module that declares it
            if cls.id in found:
                raise HarnessError(
                    f"two failure classes declare the id {cls.id!r}: {qualified(found[cls.id])} and {qualified(cls)}"
                )
            found[cls.id] = cls
    return found


def disagreements(failures: dict[str, registry.KnownFailure], classes: dict[str, type[Failure]]) -> list[str]:
    """One line per registry entry without its class or its suite file, and per class without its entry."""
    problems = [
        f"{registry.REGISTRY.name}: entry {fid!r} has no Failure class (declare one with id = {fid!r} in a "
        f"module of harness/failures)"
        for fid in failures
        if fid not in classes
    ]
    problems += [
        f"{registry.REGISTRY.name}: entry {fid!r}: suite {failure.suite} does not exist"
        for fid, failure in failures.items()
        if not (REPO_ROOT / failure.suite).is_file()
    ]
    problems += [
        f"{qualified(cls)}: id {fid!r} is not in {registry.REGISTRY.name}"
        for fid, cls in classes.items()
        if fid not in failures
    ]
    return problems


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
