"""The known-failure registry (fixtures/known_failures.toml) and the expectations it sets.

An entry names the package whose releases have the cause (``affected``), the other packages' ranges
the cause needs (``requires``: dtype-grad's hook runs only where unsloth calls it), the ranges where
the cause shows as the user's symptom (``symptom_requires``: garbage output needs transformers <4.52;
``symptom_affected``: the part of ``affected`` where it can, where later releases of the package itself
declare requirements that exclude those conditions), and two patterns: ``cause`` (what a test of the
cause fails with) and ``symptom`` (what a test of the user's path fails with, the seed's message where
there was one). A test marked with
``expectation_marks`` must fail with the matching pattern where the registry expects the failure
(then it reports as xfailed, "reproduced"), and must pass elsewhere. A failure with any other text
stays a failure with its own text, never a reproduction; a pass where a failure was expected is
flagged as XPASS(strict).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.core import packages, schema
from harness.core.errors import HarnessError
from harness.core.paths import FIXTURES_DIR
from harness.releases.code import is_code_under_test

REGISTRY = FIXTURES_DIR / "known_failures.toml"
REQUIRED = {"id", "package", "affected", "symptom", "seed", "description", "evidence", "found_by", "suite"}
OPTIONAL = {
    "requires",
    "symptom_requires",
    "symptom_affected",
    "edges",
    "cause",
    "path",
    "workaround",
    "history",
    "reported_as",
    "commits",
    "names",
}
COMMIT_KEYS = {"introduced", "fixed", "found_by"}
PACKAGES = packages.KNOWN
SHOWS = ("cause", "symptom")


@dataclass(frozen=True)
class KnownFailure:
    id: str
    package: str
    affected: SpecifierSet
    symptom: str  # regex a test of the user's path fails with
    seed: str
    description: str
    evidence: str
    found_by: str  # the command that found the range
    suite: str
    requires: dict[str, SpecifierSet] = field(default_factory=dict)
    symptom_requires: dict[str, SpecifierSet] = field(default_factory=dict)
    cause: str = ""  # regex a test of the cause fails with ("" = the symptom's)
    path: str = ""
    workaround: str = ""
    history: str = ""  # the projects' issues and commits the range was checked against
    reported_as: tuple[str, ...] = ()  # regexes: how users describe it when no test message is pasted (known match)
    commits: dict[str, str] = field(default_factory=dict)  # the commits that brought the cause in and took it out
    symptom_affected: SpecifierSet | None = None  # where ``package``'s symptom can show (None: all of affected)
    edges: tuple[str, ...] = ()  # releases either side of the ranges' edges, whose code tests/test_registry.py reads
    names: tuple[str, ...] = ()  # regexes (full match, any case) of the missing hub repos it is about (the hub sweep)

    def placed(self, version: str, repo, sha: str) -> str:
        """The version a commit stands for here: the release its __version__ names, unless the commits the
        registry records say it already has the fix (or the cause), which a commit between releases can."""
        fixed, introduced = self.commits.get("fixed"), self.commits.get("introduced")
        lower = [s.version for s in self.affected if s.operator == ">="]
        if fixed and self.first_fixed and repo.is_ancestor(fixed, sha):
            return max(version, self.first_fixed, key=Version)
        if introduced and lower and repo.is_ancestor(introduced, sha) and Version(version) < Version(lower[0]):
            return lower[0]
        return version

    def affects(self, version: str) -> bool:
        """Whether ``package==version`` has the cause (pre-releases count)."""
        return self.affected.contains(Version(version), prereleases=True)

    def conditions(self, shows: str) -> dict[str, SpecifierSet]:
        symptom_range = {self.package: self.symptom_affected} if self.symptom_affected is not None else {}
        return {**self.requires, **({**self.symptom_requires, **symptom_range} if shows == "symptom" else {})}

    def range_of(self, shows: str) -> SpecifierSet:
        """The releases of ``package`` where a test of the cause or of the symptom is expected to fail."""
        return self.symptom_affected if shows == "symptom" and self.symptom_affected is not None else self.affected

    def unmet(self, shows: str, stack: dict[str, str | None]) -> list[str]:
        """The conditions ``stack`` (package -> version) does not meet, as "transformers 5.17.0 is not <4.52"."""
        problems = []
        for package, spec in self.conditions(shows).items():
            version = stack.get(package)
            if version is None or not spec.contains(Version(version).base_version, prereleases=True):
                problems.append(f"{package} {version or '(not installed)'} is not {spec}")
        return problems

    def expected(self, version: str, shows: str, stack: dict[str, str | None]) -> bool:
        return self.affects(version) and not self.unmet(shows, {**stack, self.package: version})

    def claims(self, repo: str) -> bool:
        """Whether a missing hub repo is this failure's (its ``names``)."""
        return any(re.fullmatch(p, repo, re.I) for p in self.names)

    def pattern(self, shows: str) -> str:
        return self.cause if shows == "cause" and self.cause else self.symptom

    def matches(self, shows: str, text: str) -> bool:
        return re.search(self.pattern(shows), text, re.I | re.S) is not None

    @property
    def first_fixed(self) -> str | None:
        upper = [s.version for s in self.affected if s.operator == "<"]
        return upper[0] if upper else None


def _specifiers(where: str, key: str, value) -> dict[str, SpecifierSet]:
    if not isinstance(value, dict):
        raise HarnessError(f'{where}: {key} must be a table of package = "specifier"')
    for package in value:
        if package not in PACKAGES:
            raise HarnessError(f"{where}: {key}: unknown package {package!r}; known: {', '.join(sorted(PACKAGES))}")
    return {package: schema.specifier(where, f"{key}.{package}", text) for package, text in value.items()}


def _symptom_range(label: str, entry: dict) -> SpecifierSet | None:
    """``symptom_affected``: a range inside ``affected`` (the symptom needs the cause)."""
    if "symptom_affected" not in entry:
        return None
    inner, outer = (schema.specifier(label, key, entry[key]) for key in ("symptom_affected", "affected"))
    for side, ops, tightest in (("lower", (">=", ">"), max), ("upper", ("<", "<="), min)):
        bound = [Version(s.version) for s in outer if s.operator in ops]
        mine = [Version(s.version) for s in inner if s.operator in ops]
        if bound and (not mine or tightest([*mine, tightest(bound)]) != tightest(mine)):
            raise HarnessError(
                f"{label}: symptom_affected {str(inner)!r} reaches past affected {str(outer)!r} "
                f"on its {side} side; the symptom needs the cause"
            )
    return inner


def parse_registry(text: str, where: str = REGISTRY.name) -> dict[str, KnownFailure]:
    return registry_of(schema.parse_toml(text, where), where)


def registry_of(data: dict, where: str) -> dict[str, KnownFailure]:
    """The entries of a parsed registry, each checked."""
    failures: dict[str, KnownFailure] = {}
    for number, entry in enumerate(data.get("failure", []), 1):
        label = f"{where}: entry #{number} ({entry.get('id', '?')})"
        schema.keys(label, entry, REQUIRED, OPTIONAL)
        if entry["id"] in failures:
            raise HarnessError(
                f"{label}: duplicate id {entry['id']!r} (entry #{list(failures).index(entry['id']) + 1} has it)"
            )
        if entry["package"] not in PACKAGES:
            raise HarnessError(f"{label}: unknown package {entry['package']!r}; known: {', '.join(sorted(PACKAGES))}")
        reported_as = schema.string_list(label, "reported_as", entry.get("reported_as", []))
        names = schema.string_list(label, "names", entry.get("names", []))
        edges = schema.string_list(label, "edges", entry.get("edges", []))
        wrong = [e for e in edges if not is_code_under_test(e)]
        if wrong:
            raise HarnessError(f"{label}: edges: {wrong[0]!r} is not unsloth==VERSION or unsloth-zoo==VERSION")
        commits = schema.keys(f"{label} commits", entry.get("commits", {}), set(), COMMIT_KEYS)
        for key in ("introduced", "fixed"):
            if key in commits and not re.fullmatch(r"[0-9a-f]{40}", str(commits[key])):
                raise HarnessError(
                    f"{label}: commits.{key} must be a full 40-character commit id, got {commits[key]!r}"
                )
        for key, pattern in [
            ("symptom", entry.get("symptom", "")),
            ("cause", entry.get("cause", "")),
            *(("reported_as", p) for p in reported_as),
            *(("names", p) for p in names),
        ]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise HarnessError(f"{label}: {key} {pattern!r} is not a regular expression: {exc}") from None
        failures[entry["id"]] = KnownFailure(
            **{
                **entry,
                "affected": schema.specifier(label, "affected", entry["affected"]),
                "requires": _specifiers(label, "requires", entry.get("requires", {})),
                "symptom_requires": _specifiers(label, "symptom_requires", entry.get("symptom_requires", {})),
                "symptom_affected": _symptom_range(label, entry),
                "reported_as": reported_as,
                "edges": edges,
                "names": names,
                "commits": dict(commits),
            }
        )
    return failures


def load_registry(path: Path | None = None) -> dict[str, KnownFailure]:
    path = Path(path or REGISTRY)
    return dict(
        _checked(schema.read_text(path, "known-failure registry"), path.name)
    )  # the entries are frozen; the dict is the caller's


@functools.lru_cache(maxsize=8)  # a suite asks for the registry at every mark and verdict: parse each text once
def _checked(text: str, where: str) -> dict[str, KnownFailure]:
    return parse_registry(text, where)


def edge_releases(failures: dict[str, KnownFailure]) -> list[str]:
    """The releases the registry's edges were checked in: `qvl-harness releases fetch` fetches them by default."""
    return list(dict.fromkeys(e for failure in failures.values() for e in failure.edges))


def known_failure(failure_id: str, path: Path | None = None) -> KnownFailure:
    registry = load_registry(path)
    try:
        return registry[failure_id]
    except KeyError:
        raise HarnessError(f"unknown known-failure id {failure_id!r}; known: {', '.join(registry)}") from None


def installed_stack() -> dict[str, str | None]:
    from harness.env.stack import dist_version

    return {package: dist_version(package) for package in PACKAGES}


def expectation_marks(
    failure_id: str, version: str, *, shows: str = "symptom", stack: dict | None = None, commit: tuple | None = None
) -> list:
    """pytest marks for a test of ``failure_id``'s cause or symptom against ``package==version``.

    ``stack`` (package -> version) is what the conditions are judged on: the installed versions,
    overridden by what the test itself stands for (a test that calls unsloth-zoo's hook the way
    unsloth >= 2025.1.1 does passes {"unsloth": "2025.1.1"}). ``commit`` = (repo, sha) when the code is a
    commit rather than a release: where it stands is then ``KnownFailure.placed``.
    """
    import pytest

    if shows not in SHOWS:
        raise HarnessError(f"shows must be one of {SHOWS}, not {shows!r}")
    failure = known_failure(failure_id)
    standing = failure.placed(version, *commit) if commit else version
    expected = failure.expected(standing, shows, {**installed_stack(), **(stack or {})})
    return [pytest.mark.known_failure(failure_id, version=version, shows=shows, expected=expected)]


def judge(failure: KnownFailure, marker, passed: bool, failure_text: str) -> tuple[str, str]:
    """How a marked test's outcome reads: ("reproduced" | "unexpected pass" | "wrong failure" | "", why)."""
    version, shows = marker.kwargs["version"], marker.kwargs["shows"]
    where = f"{failure.package}=={version}"
    if not marker.kwargs["expected"]:
        return "", ""
    if passed:
        return "unexpected pass", (
            f"known failure {failure.id!r} ({shows}) was expected in {where} "
            f"(affected {failure.range_of(shows)}) but the test passed"
        )
    if failure.matches(shows, failure_text):
        return "reproduced", (
            f"known failure {failure.id!r} ({shows}) reproduces in {where} (affected {failure.range_of(shows)})"
        )
    return "wrong failure", (
        f"known failure {failure.id!r} ({shows}) was expected in {where}, but the test failed "
        f"with something else (wanted /{failure.pattern(shows)}/)"
    )


KEEP = object()


def write_range(
    failure_id: str, *, package: str, evidence: str, found_by: str, lower=KEEP, upper=KEEP, path: Path | None = None
) -> KnownFailure:
    """Write a bisected range into the entry ``failure_id``: ``>=lower`` and ``<upper``, with the
    evidence and the command that found it.

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
        raise HarnessError(
            f'{path.name}: write entry {failure_id!r} as id = "{failure_id}" to let bisect record into it'
        )
    start = max(text.rfind("[[failure]]", 0, found.start()), 0)
    end = text.find("[[failure]]", found.end())
    end = len(text) if end < 0 else end
    block = text[start:end]
    for key, value in (("affected", affected), ("evidence", evidence), ("found_by", found_by)):
        # json.dumps writes a valid TOML basic string (same escapes).
        block, count = re.subn(
            rf"^{key} = .*$", lambda _, key=key, value=value: f"{key} = {json.dumps(value)}", block, count=1, flags=re.M
        )
        if not count:
            raise HarnessError(f"{path.name}: entry {failure_id!r} has no {key} line to update")
    updated = text[:start] + block + text[end:]
    entry = parse_registry(updated, path.name)[failure_id]
    from harness.core.atomic import write_text

    write_text(path, updated)
    return entry


# --- command line ----------------------------------------------------------------------------------


def describe(failure: KnownFailure) -> list[str]:
    lines = [
        f"{failure.id}: {failure.description}",
        f"  affected:   {failure.package}{failure.affected}"
        + (f" (first fixed {failure.first_fixed})" if failure.first_fixed else ""),
    ]
    if failure.requires:
        lines.append("  requires:   " + ", ".join(f"{p}{s}" for p, s in failure.requires.items()))
    if failure.symptom_requires:
        lines.append("  shows with: " + ", ".join(f"{p}{s}" for p, s in failure.symptom_requires.items()))
    if failure.symptom_affected is not None:
        lines.append(f"  symptom in: {failure.package}{failure.symptom_affected} (the cause: {failure.affected})")
    if failure.path:
        lines.append(f"  path:       {failure.path}")
    lines += [f"  symptom:    /{failure.symptom}/"] + ([f"  cause:      /{failure.cause}/"] if failure.cause else [])
    lines += [f"  reported:   /{p}/" for p in failure.reported_as]
    lines += [f"  seed:       {failure.seed}", f"  found by:   {failure.found_by}", f"  evidence:   {failure.evidence}"]
    if failure.commits:
        lines.append(
            "  commits:    " + ", ".join(f"{k} {v[:7] if k != 'found_by' else v}" for k, v in failure.commits.items())
        )
    if failure.history:
        lines.append(f"  history:    {failure.history}")
    if failure.workaround:
        lines.append(f"  workaround: {failure.workaround}")
    return lines + [f"  suite:      {failure.suite}"]


def as_json(failure: KnownFailure) -> dict:
    data = dict(failure.__dict__)
    data["affected"] = str(failure.affected)
    for key in ("requires", "symptom_requires"):
        data[key] = {p: str(s) for p, s in data[key].items()}
    data["symptom_affected"] = str(failure.symptom_affected) if failure.symptom_affected is not None else None
    return data


def check_matrix(matrix, registry: dict[str, KnownFailure]):
    """Every failure a cell lists exists, and a control cell lies outside every range it lists."""
    for cell in matrix.cells.values():
        where = f"{matrix.path.name} [cells.{cell.name}]"
        unknown = [f for f in cell.failures if f not in registry]
        if unknown:
            raise HarnessError(f"{where}: failures: unknown id(s) {unknown}; known: {', '.join(registry)}")
        if cell.role == "control":
            inside = {f: s for f, s in cell.failure_states(registry).items() if s in ("reproduces", "cause only")}
            if inside:
                fid = next(iter(inside))
                raise HarnessError(
                    f"{where}: role control, but {registry[fid].package} {cell.stack[registry[fid].package]} "
                    f"is inside {fid}'s range {registry[fid].affected} ({inside[fid]})"
                )
    return matrix
