"""Triage a report: which known failure a pasted error or symptom is, and whether a stack is inside it.

A maintainer pastes a user's traceback or description; each registry entry's messages (the
``symptom`` and ``cause`` patterns a test fails with, and ``reported_as``: how users describe it)
are searched in the text, and the user's stack is held against the entry's range and conditions.
The answer: the failure, whether that stack has it, the first fixed release, the workaround, and
the matrix cell and suite that reproduce it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness.core import packages
from harness.core.errors import HarnessError
from harness.env.matrix import Matrix, failure_state
from harness.failures.registry import KnownFailure

FIELDS = {"symptom": "its symptom", "cause": "its cause", "reported_as": "how users report it"}
# How sure a stack makes a match, best first.
VERDICTS = ("has it", "stack not given", "incomplete stack", "cause without the symptom", "outside the range")


@dataclass(frozen=True)
class Match:
    failure: KnownFailure
    matched: str  # the text that matched
    field: str  # which message matched: symptom, cause or reported_as
    verdict: str  # one of VERDICTS
    why: str  # the stack's side of the verdict, in words


def parse_stack(text: str) -> dict[str, str]:
    """ "unsloth==2024.11.11 unsloth-zoo==2024.11.8 transformers==4.46.3" (spaces or commas) as {package: version}."""
    stack = {}
    known = {canonicalize_name(p): p for p in packages.KNOWN}
    for item in re.split(r"[\s,]+", text.strip()):
        name, sep, version = item.partition("==")
        if not item:
            continue
        if not sep or not name or not version:
            raise HarnessError(
                f'--stack: {item!r} is not PACKAGE==VERSION (e.g. "unsloth==2024.11.11 transformers==4.46.3")'
            )
        package = known.get(canonicalize_name(name))
        if package is None:
            raise HarnessError(
                f"--stack: unknown package {name!r}; the registry's packages are {', '.join(sorted(packages.STACK))}"
            )
        try:
            Version(version)
        except InvalidVersion:
            raise HarnessError(f"--stack: {version!r} is not a version ({item})") from None
        stack[package] = version
    return stack


def messages(failure: KnownFailure) -> list[tuple[str, str]]:
    return [
        ("symptom", failure.symptom),
        *([("cause", failure.cause)] if failure.cause else []),
        *(("reported_as", p) for p in failure.reported_as),
    ]


def assess(failure: KnownFailure, stack: dict[str, str] | None) -> tuple[str, str]:
    """(verdict, why) of ``stack`` against the failure's range and the conditions its symptom needs."""
    if stack is None:
        return "stack not given", f"affects {failure.package}{failure.affected}; give --stack to check a user's"
    version = stack.get(failure.package)
    needed = [p for p in (failure.package, *failure.conditions("symptom")) if p not in stack]
    if version is not None and not failure.affects(version):
        return (
            "outside the range",
            f"{failure.package} {version} is outside {failure.affected}: not this failure, or not this release",
        )
    if needed:
        return "incomplete stack", f"give {' '.join(f'{p}==VERSION' for p in needed)} to decide"
    unmet = failure.unmet("symptom", stack)
    if unmet:
        return "cause without the symptom", f"{failure.package} {version} has the cause, but {'; '.join(unmet)}"
    conditions = ", ".join(f"{p} {stack[p]} is {s}" for p, s in failure.conditions("symptom").items())
    return "has it", f"{failure.package} {version} is inside {failure.affected}" + (
        f"; {conditions}" if conditions else ""
    )


def match(text: str, registry: dict[str, KnownFailure], stack: dict[str, str] | None) -> list[Match]:
    """Every failure whose messages occur in ``text``, the likeliest first."""
    found = []
    for failure in registry.values():
        for field, pattern in messages(failure):
            hit = re.search(pattern, text, re.I | re.S)
            if hit:
                verdict, why = assess(failure, stack)
                found.append(Match(failure, " ".join(hit.group(0).split())[:80], field, verdict, why))
                break
    return sorted(found, key=lambda m: VERDICTS.index(m.verdict))


def reproducing_cell(failure: KnownFailure, matrix: Matrix, stack: dict[str, str] | None) -> str | None:
    """The matrix cell that reproduces ``failure``, the one nearest the user's release first."""
    cells = [
        c for c in matrix.cells.values() if failure.id in c.failures and failure_state(failure, c.stack) == "reproduces"
    ]
    if not cells:
        return None
    wanted = Version((stack or {}).get(failure.package, "0"))
    return min(cells, key=lambda c: abs(_ordinal(Version(c.stack[failure.package])) - _ordinal(wanted))).name


def _ordinal(version: Version) -> float:
    return sum(part / 100**i for i, part in enumerate(version.release[:4]))


def explain(found: Match, matrix: Matrix, stack: dict[str, str] | None) -> list[str]:
    failure = found.failure
    lines = [
        f"{failure.id}: {failure.description}",
        f"  matched:     {found.matched!r} ({FIELDS[found.field]})",
        f"  your stack:  {found.verdict}: {found.why}",
    ]
    if failure.first_fixed:
        lines.append(f"  fixed in:    {failure.package} {failure.first_fixed}")
    if failure.workaround:
        lines.append(f"  workaround:  {failure.workaround}")
    cell = reproducing_cell(failure, matrix, stack)
    lines.append(f"  reproduce:   tox -e cell-{cell} -- {failure.suite}" if cell else f"  reproduce:   {failure.suite}")
    if failure.path:
        lines.append(f"  happens on:  {failure.path}")
    return lines
