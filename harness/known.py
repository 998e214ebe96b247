"""The known-failure registry (fixtures/known_failures.toml) and the expectations it sets."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from .errors import HarnessError
from .paths import FIXTURES_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REGISTRY = FIXTURES_DIR / "known_failures.toml"
FIELDS = {"id", "package", "affected", "evidence", "description", "seed", "suite"}


@dataclass(frozen=True)
class KnownFailure:
    id: str
    package: str
    affected: SpecifierSet
    evidence: str
    description: str
    seed: str
    suite: str

    def reproduces_in(self, version: str) -> bool:
        """Whether the failure must reproduce with ``package==version`` (prereleases count)."""
        if not str(self.affected):
            raise HarnessError(f"known failure {self.id!r} has no affected range yet (evidence: {self.evidence})")
        return self.affected.contains(Version(version), prereleases=True)

    def expectation(self, version: str) -> str:
        return "reproduces" if self.reproduces_in(version) else "passes"


def load_registry(path: Path = REGISTRY) -> dict[str, KnownFailure]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read known-failure registry {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path.name}: not valid TOML: {exc}") from None
    failures = {}
    for entry in data.get("failure", []):
        missing = FIELDS - set(entry)
        if missing or set(entry) - FIELDS:
            raise HarnessError(f"{path.name}: entry {entry.get('id', '?')!r} must have exactly {sorted(FIELDS)}")
        try:
            affected = SpecifierSet(entry["affected"])
        except InvalidSpecifier:
            raise HarnessError(f"{path.name}: {entry['id']}: affected {entry['affected']!r} is not a version specifier") from None
        failures[entry["id"]] = KnownFailure(**{**entry, "affected": affected})
    return failures


def known_failure(failure_id: str, path: Path = REGISTRY) -> KnownFailure:
    registry = load_registry(path)
    try:
        return registry[failure_id]
    except KeyError:
        raise HarnessError(f"unknown known-failure id {failure_id!r}; known: {', '.join(registry)}") from None


def expectation_marks(failure_id: str, version: str, raises) -> list:
    """pytest marks for a test that demonstrates ``failure_id`` against ``package==version``.

    Inside the registry's affected range the test must fail with ``raises`` (strict xfail: a
    release that stops reproducing is flagged as XPASS(strict)); outside it, it must pass.
    """
    import pytest

    failure = known_failure(failure_id)
    marks = [pytest.mark.known_failure(failure_id)]
    if failure.reproduces_in(version):
        marks.append(
            pytest.mark.xfail(
                raises=raises,
                strict=True,
                reason=f"known failure {failure_id!r} reproduces in {failure.package}=={version} (affected {failure.affected})",
            )
        )
    return marks


KEEP = object()


def record(failure_id: str, *, package: str, evidence: str, lower=KEEP, upper=KEEP, path: Path | None = None) -> KnownFailure:
    """Write a bisected range into the entry ``failure_id``: ``>=lower`` and ``<upper``.

    ``lower``/``upper`` is a version, None (unbounded on that side) or KEEP (the entry's current
    bound stays). The entry's other fields and the file's comments are left as they are.
    """
    path = path or REGISTRY
    failure = known_failure(failure_id, path)
    if failure.package != package:
        raise HarnessError(f"known failure {failure_id!r} is about {failure.package}, not {package}")
    clauses = {"lower": [], "upper": [], "other": []}
    for spec in failure.affected:
        side = "lower" if spec.operator in (">=", ">") else "upper" if spec.operator in ("<", "<=") else "other"
        clauses[side].append(str(spec))
    for side, bound, op in (("lower", lower, ">="), ("upper", upper, "<")):
        if bound is not KEEP:
            clauses[side] = [f"{op}{bound}"] if bound else []
    affected = ",".join(clauses["lower"] + clauses["upper"] + clauses["other"])
    text = path.read_text()
    found = re.search(rf'^id = "{re.escape(failure_id)}"$', text, re.M)
    if not found:
        raise HarnessError(f"{path.name}: write entry {failure_id!r} as id = \"{failure_id}\" to let bisect record into it")
    start = max(text.rfind("[[failure]]", 0, found.start()), 0)
    end = text.find("[[failure]]", found.end())
    end = len(text) if end < 0 else end
    block = text[start:end]
    for key, value in (("affected", affected), ("evidence", evidence)):
        # json.dumps writes a valid TOML basic string (same escapes).
        block, count = re.subn(rf"^{key} = .*$", lambda _: f"{key} = {json.dumps(value)}", block, count=1, flags=re.M)
        if not count:
            raise HarnessError(f"{path.name}: entry {failure_id!r} has no {key} line to update")
    updated = text[:start] + block + text[end:]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(updated)
    try:
        entry = load_registry(tmp)[failure_id]
    except HarnessError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return entry


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("known", help="the known-failure registry: ids, affected ranges, suites")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_known)


def _cmd_known(args) -> int:
    failures = list(load_registry(REGISTRY).values())
    if args.json:
        print(json.dumps([{**f.__dict__, "affected": str(f.affected)} for f in failures], indent=2))
        return 0
    rows = [("ID", "PACKAGE", "AFFECTED", "SUITE", "DESCRIPTION")]
    rows += [(f.id, f.package, str(f.affected) or "(not bisected)", f.suite, f.description) for f in failures]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    for f in failures:
        print(f"\n{f.id}: {f.evidence}")
    return 0
