"""Run-to-run comparison: what changed between two runs (results files of `pytest --report-dir`).

Like transformers' notification_service, a run is read against the previous one so a person sees
what is new, not everything that is red: each test of each cell is a new failure, fixed, still
failing, flaky (its re-runs disagreed, harness.nightly.triage), a new test or a removed one. A test
fails when it failed or errored; a known failure that reproduces as the registry expects (xfailed)
is not a failure, an XPASS(strict) is. Each cell's stack change comes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.pytest import results

FAILING = {"failed", "error"}
PASSING = {"passed", "xfailed"}  # a re-run with one of these makes a new failure flaky
# The classes in the order a report leads with them.
KINDS = ("new failure", "flaky", "fixed", "still failing", "new test", "removed test")


@dataclass(frozen=True)
class Change:
    cell: str
    test: str
    kind: str
    before: str | None  # the previous run's outcome; None for a new test
    after: str | None  # this run's outcome; None for a removed test
    message: str = ""  # the failure message (this run's; the previous run's for a fixed test)
    reruns: tuple[str, ...] = ()  # outcomes of the flake check's re-runs
    culprit: dict | None = None  # the triage's answer for this test: harness.nightly.triage


@dataclass
class Comparison:
    previous_created: dict[str, str]  # cell -> when its previous run started
    changes: list[Change] = field(default_factory=list)
    stack_changes: dict[str, list[tuple[str, str | None, str | None]]] = field(default_factory=dict)
    cells_added: list[str] = field(default_factory=list)
    cells_removed: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of(kind)) for kind in KINDS}


def load_runs(path: Path) -> dict[str, dict]:
    """The runs in ``path``: one results file, or a folder of ``results-<cell>.json`` (cell -> results)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("results-*.json"))
        if not files:
            raise HarnessError(f"{path}: no results-*.json in this folder (written by pytest --report-dir {path})")
    elif path.is_file():
        files = [path]
    else:
        raise HarnessError(f"{path}: no such results file or folder")
    runs: dict[str, dict] = {}
    for file in files:
        run = results.read(file)
        if run["cell"] in runs:
            raise HarnessError(f"{path}: two results files of cell {run['cell']!r}")
        runs[run["cell"]] = run
    return runs


def outcomes(run: dict) -> dict[str, dict]:
    return {t["test"]: t for t in run["tests"]}


def classify(before: dict | None, after: dict | None, reruns: tuple[str, ...]) -> str | None:
    """The kind of change of one test, or None when it is unchanged (passing, skipped or failing the same way)."""
    if after is None:
        return "removed test"
    failing_now = after["outcome"] in FAILING
    if failing_now and PASSING & set(reruns):
        return "flaky"
    if before is None:
        return "new failure" if failing_now else "new test"
    failing_before = before["outcome"] in FAILING
    if failing_now:
        return "still failing" if failing_before else "new failure"
    return "fixed" if failing_before else None


def compare(previous: dict[str, dict], current: dict[str, dict]) -> Comparison:
    comparison = Comparison(previous_created={cell: run["created"] for cell, run in previous.items()})
    comparison.cells_added = [cell for cell in current if cell not in previous]
    comparison.cells_removed = [cell for cell in previous if cell not in current]
    for cell, run in current.items():
        before_run = previous.get(cell)
        before = outcomes(before_run) if before_run else {}
        after = outcomes(run)
        triage = run.get("triage") or {}
        reruns, culprits = triage.get("reruns", {}), _culprits_by_test(triage)
        for test in [*after, *(t for t in before if t not in after)]:
            tried = tuple(reruns.get(test, ()))
            kind = classify(before.get(test), after.get(test), tried)
            if kind is None:
                continue
            shown = after.get(test) if kind != "fixed" else before.get(test)
            comparison.changes.append(
                Change(
                    cell,
                    test,
                    kind,
                    before[test]["outcome"] if test in before else None,
                    after[test]["outcome"] if test in after else None,
                    (shown or {}).get("message", ""),
                    tried,
                    culprits.get(test),
                )
            )
        if before_run:
            comparison.stack_changes[cell] = stack_change(before_run["stack"], run["stack"])
    order = {kind: i for i, kind in enumerate(KINDS)}
    comparison.changes.sort(key=lambda c: (order[c.kind], c.cell, c.test))
    return comparison


def stack_change(before: dict, after: dict) -> list[tuple[str, str | None, str | None]]:
    """(package, before, after) for every package whose version differs between two stacks."""
    old, new = before.get("packages", {}), after.get("packages", {})
    return [
        (name, old.get(name), new.get(name)) for name in dict.fromkeys([*new, *old]) if old.get(name) != new.get(name)
    ]


def _culprits_by_test(triage: dict) -> dict[str, dict]:
    return {test: culprit for culprit in triage.get("culprits", []) for test in culprit["tests"]}
