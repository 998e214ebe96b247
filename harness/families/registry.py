"""The families: every module of this package that defines ``FAMILY`` is one (adding a family is adding a
module), and what a transformers release runs of them."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

import harness.families as package
from harness.core.errors import HarnessError
from harness.env.stack import dist_version
from harness.families.base import Family


def families() -> list[Family]:
    """Every family module's FAMILY, by id; the package's search path is scanned on each call."""
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        family = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "FAMILY", None)
        if isinstance(family, Family):
            if family.id in found:
                raise HarnessError(f"two family modules declare the id {family.id!r}")
            found[family.id] = family
    return sorted(found.values(), key=lambda f: f.id)


def family(family_id: str) -> Family:
    known = {f.id: f for f in families()}
    if family_id not in known:
        raise HarnessError(f"unknown family {family_id!r}; known families: {', '.join(known)}")
    return known[family_id]


@dataclass(frozen=True)
class Plan:
    """What a transformers release runs: the families it has, and the rest with the release each needs."""

    transformers: str
    runs: tuple[Family, ...]
    not_run: tuple[Family, ...]

    def reason(self, fam: Family) -> str:
        return f"not run: needs transformers >= {fam.since} (this run: {self.transformers})"


def plan(transformers_version: str | None = None) -> Plan:
    version = transformers_version or dist_version("transformers")
    if version is None:
        raise HarnessError("transformers is not installed here: run in a cell env or name a transformers version")
    every = families()
    return Plan(
        version, tuple(f for f in every if f.available(version)), tuple(f for f in every if not f.available(version))
    )


def params() -> list:
    """pytest params, one per family: those the installed transformers lacks skip with what they need."""
    import pytest

    here = plan()
    return [
        pytest.param(f, id=f.id, marks=() if f in here.runs else pytest.mark.skip(reason=here.reason(f)))
        for f in families()
    ]
