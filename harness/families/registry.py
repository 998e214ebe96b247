"""The families: every module of this package that defines ``FAMILY`` is one (adding a family is adding a
module), and what a transformers release runs of them."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

import harness.families as package
from harness.core.errors import HarnessError
from harness.env.stack import dist_version
from harness.families.base import Family, modeling_file
from harness.lab import captioner


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


def source_releases() -> list[str]:
    """The transformers releases whose modeling source the declarations are checked against (`releases fetch`
    caches their wheels): each family's first release and the first release of each of its pixel-cast ranges."""
    versions = set()
    for fam in families():
        versions.add(fam.since)
        for cast in fam.pixel_casts:
            lower = [s.version for s in SpecifierSet(cast.versions) if s.operator in (">=", "==")]
            versions.update(lower or [fam.since])
    # "4.49" and "4.49.0" are one release, named as PyPI names it
    return sorted({".".join(map(str, (*Version(v).release, 0, 0)[:3])) for v in versions}, key=Version)


def source_files() -> set[str]:
    """The modeling files those declarations are read from (a wheelhouse keeps only these of a transformers wheel)."""
    return {modeling_file(m) for f in families() for m in {f.module, *(c.module for c in f.pixel_casts)}}


def captioners() -> list:
    """Every family's captioner (harness.lab.captioner.Base), each named once: the goldens' folders."""
    return list({f.captioner.name: f.captioner for f in families() if f.captioner is not None}.values())


def trains_own_captioner(fam: Family) -> bool:
    """A family with a captioner other than the tiny Qwen2-VL's (which the garbage-output suite grades and the
    prebuild makes on its own): the families suite grades it, the prebuild's family-captioners build makes it."""
    return fam.captioner not in (None, captioner.TINY_QWEN2_VL)


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
