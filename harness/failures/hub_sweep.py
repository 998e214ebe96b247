"""Every name a release's mapper knows, against the hub as it was: the missing-repo class beyond the 72B.

For each name of the release's mapper dicts, with and without 4-bit, the release's own get_model_name
gives a target. Where the name's repo was not known to be missing at the release's date, the target
must have existed: the hub history (harness.data.hub_history) says present, absent (with its evidence)
or unknown, which is listed, never counted as good. An absent target is claimed by the registry entry
whose ``names`` it matches, and that entry's range says whether the release is expected to have it;
one no entry claims, or one outside its entry's range, is a new finding. ``live_sweep`` asks a hub
(huggingface.co on a networked runner) instead, and records each answer as an observation of today.
"""

from __future__ import annotations

import datetime
import functools
from collections import Counter
from dataclasses import dataclass

from packaging.version import Version

from harness.data import hub_history
from harness.env.matrix import load_matrix
from harness.failures import loading, registry
from harness.releases.mapper import ReleaseMapper


@dataclass(frozen=True)
class Row:
    name: str
    four_bit: bool
    target: str  # the repo get_model_name resolved to, or its error
    state: str  # the target's: present, absent, unknown; "error" when the mapping raised
    evidence: str = ""
    claimed_by: str = ""  # the registry id whose names match an absent target

    def describe(self) -> str:
        return f"{self.name!r} (load_in_4bit={self.four_bit}) -> {self.target!r}: {self.state} ({self.evidence})"


@dataclass(frozen=True)
class Sweep:
    release: str  # its label
    version: str
    day: datetime.date  # what the states are judged on
    rows: tuple[Row, ...]
    where: str  # "the hub history" or the hub asked

    def targets(self) -> dict[str, Row]:
        """One row per distinct target (lower case), the worst state first seen."""
        found: dict[str, Row] = {}
        for row in sorted(self.rows, key=lambda r: r.state not in ("absent", "error")):
            found.setdefault(row.target.lower(), row)
        return found

    def counts(self) -> Counter:
        return Counter(row.state for row in self.targets().values())

    def missing(self) -> list[Row]:
        return [r for r in self.rows if r.state in ("absent", "error")]

    def claimed(self, failure_id: str) -> list[Row]:
        """The missing rows the registry entry ``failure_id`` claims (its ``names``), in or out of its range."""
        return [r for r in self.missing() if r.claimed_by == failure_id]

    def expected(self, failures: dict[str, registry.KnownFailure]) -> list[Row]:
        """Missing rows a registry entry claims and whose range has this release: the known failure."""
        return [r for r in self.missing() if r.claimed_by and failures[r.claimed_by].affects(self.version)]

    def new(self, failures: dict[str, registry.KnownFailure]) -> list[Row]:
        """Missing rows no entry explains here: unclaimed, or claimed where the entry's range says fixed."""
        known = self.expected(failures)
        return [r for r in self.missing() if r not in known]

    def summary_rows(self) -> list[list]:
        counts = self.counts()
        absent = counts["absent"] + counts["error"]
        head = [[self.release, str(self.day), counts["present"], absent, counts["unknown"], "", ""]]
        return head + [
            ["", "", "", "", "", f"{r.name} (4bit={r.four_bit}) -> {r.target}", r.claimed_by or "NEW"]
            for r in self.missing()
        ]


SUMMARY_HEADER = ["release", "hub on", "present", "absent", "unknown", "absent row", "claimed by"]


def missing_repo_failures(failures: dict[str, registry.KnownFailure]) -> list[registry.KnownFailure]:
    """The registry entries about missing hub repos: those that name them, whose absent rows they claim."""
    return [f for f in failures.values() if f.names]


def _claim(target: str, failures: dict[str, registry.KnownFailure]) -> str:
    return next((f.id for f in failures.values() if f.claims(target)), "")


def sweep(release: loading.Release, history: hub_history.History | None = None) -> Sweep:
    """The release's mapper against the hub history on the day the release shipped."""
    if history is None:
        return _against_the_recorded_history(release)
    return _sweep(release, history)


@functools.cache  # each release's sweep (about 2,500 mapper calls) serves several tests of a run
def _against_the_recorded_history(release: loading.Release) -> Sweep:
    return _sweep(release, hub_history.load())


def _sweep(release: loading.Release, history: hub_history.History) -> Sweep:
    day, failures = release.shipped, registry.load_registry()
    mapper = ReleaseMapper(release.unsloth)
    rows = []
    for name in mapper.mapper_names():
        if history.state(name, day).state == "absent":
            continue  # nobody could load this name then: nothing to check
        for four_bit in (True, False):
            run = mapper.resolve(name, four_bit)
            if run.error is not None:
                rows.append(Row(name, four_bit, run.error, "error", "get_model_name raised"))
                continue
            answer = history.state(run.resolved, day)
            claim = _claim(run.resolved, failures) if answer.state == "absent" else ""
            rows.append(Row(name, four_bit, run.resolved, answer.state, answer.describe(), claim))
    return Sweep(release.unsloth.label, release.unsloth.version, day, tuple(rows), "the hub history")


def live_sweep(
    release: loading.Release, repo_exists, where: str, today: datetime.date
) -> tuple[Sweep, list[tuple[str, hub_history.Observation]]]:
    """The release's mapper against a hub asked now (``repo_exists(repo) -> bool``), and each answer as an
    observation of ``today``."""
    failures, mapper = registry.load_registry(), ReleaseMapper(release.unsloth)
    asked: dict[str, tuple[str, bool]] = {}

    def exists(repo: str) -> bool:
        if repo.lower() not in asked:
            asked[repo.lower()] = (repo, repo_exists(repo))
        return asked[repo.lower()][1]

    rows = []
    source = f"{where} asked by the hub sweep of {release.unsloth.label} {hub_history.LIVE}"
    for name in mapper.mapper_names():
        if not exists(name):
            continue
        for four_bit in (True, False):
            run = mapper.resolve(name, four_bit)
            if run.error is not None:
                rows.append(Row(name, four_bit, run.error, "error", "get_model_name raised"))
            elif exists(run.resolved):
                rows.append(Row(name, four_bit, run.resolved, "present", f"on {where} {today}"))
            else:
                rows.append(
                    Row(
                        name,
                        four_bit,
                        run.resolved,
                        "absent",
                        f"missing on {where} {today}",
                        _claim(run.resolved, failures),
                    )
                )
    observations = [
        (repo, hub_history.Observation("present" if found else "absent", today, source))
        for repo, found in asked.values()
    ]
    return Sweep(release.unsloth.label, release.unsloth.version, today, tuple(rows), where), observations


# --- which releases, and what they map ----------------------------------------------------------------


def covered_releases() -> list[loading.Release]:
    """The unsloth code of every matrix cell (a release or a commit) with its zoo, one each, oldest first."""
    found: dict[str, loading.Release] = {}
    for cell in load_matrix().cells.values():
        release = loading.Release(loading.cell_code(cell, "unsloth"), loading.cell_code(cell, "unsloth-zoo"))
        found.setdefault(release.unsloth.label, release)
    return sorted(found.values(), key=lambda r: (Version(r.unsloth.version), r.unsloth.label))


def canary_release() -> loading.Release:
    cell = next(c for c in load_matrix().cells.values() if c.role == "canary")
    return loading.Release(loading.cell_code(cell, "unsloth"), loading.cell_code(cell, "unsloth-zoo"))


def mapped_repos(releases: list[loading.Release]) -> dict[str, tuple[str, set[str], set[str]]]:
    """Every repo the releases' mappers name (a name, or a target of one): lower-case id ->
    (id as first seen, the releases naming it, the names mapping to it)."""
    found: dict[str, tuple[str, set[str], set[str]]] = {}
    for release in releases:
        mapper = ReleaseMapper(release.unsloth)
        for name in mapper.mapper_names():
            found.setdefault(name.lower(), (name, set(), set()))[1].add(release.unsloth.label)
            for four_bit in (True, False):
                target = mapper.resolve(name, four_bit).resolved
                if target:
                    entry = found.setdefault(target.lower(), (target, set(), set()))
                    entry[1].add(release.unsloth.label)
                    entry[2].add(name.lower())
    return found
