"""Flake check, then culprit: what the nightly does with a new failure before a person looks.

As transformers' check_bad_commit.py does: each new failure of a cell is re-run a few times in the
cell's environment; one that passes in any re-run is flaky and goes no further. One that fails
every time, where the previous run passed it, is bisected over what changed between the two runs'
stacks (harness.bisection.candidates.between_stacks: every release of each changed package in
upload order, packages released together as one step) with that test as the oracle, judged as the
nightly judged it (the registry's expectations kept, the nightly's own failure message counting as
bad). A step that moved several packages is split: each package alone over the last good stack.
The answer goes into the current results file ("triage"), where `report diff` and `report build`
read it. A re-run or a probe that crashed judges nothing: that test's answer is "could not judge" with
the reason, never a culprit or "no release to blame". Bounded by a time budget; probes are logged and
environments cached, so running the same triage again continues where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from harness.bisection.candidates import Point, between_stacks
from harness.bisection.engine import Bisection
from harness.bisection.oracle import BAD, GOOD, OUTSIDE_THE_MATRIX, SKIP, Oracle, Run
from harness.bisection.session import open_bisection, prober
from harness.core import atomic
from harness.core.errors import HarnessError, one_line
from harness.core.noise import without_noise
from harness.core.packages import STACK
from harness.core.paths import REPO_ROOT
from harness.env import pypi
from harness.env.overlay import Overlays
from harness.nightly.diff import PASSING, classify, outcomes, stack_change
from harness.pytest import results

RELEASED_TOGETHER = timedelta(hours=1)
# Re-runs, and probes wanted together (both ends, the packages of a split step), run at once: each is a pytest
# process that spends most of its time importing, and one after another they made most of a triage's time.
SIDE_BY_SIDE = os.cpu_count() or 1
# What a stack records that an overlay can pin (python and the driver are the runner's).
BISECTABLE = set(STACK) - {"torch"}
COULD_NOT_JUDGE = "could not judge"  # the answer's status when a re-run or a probe crashed: no verdict
NOT_RUN = "not run"  # a re-run's outcome for a test it has no result of


class OutOfBudget(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    reruns: int
    budget: float  # seconds for the whole triage
    oracle_timeout: float
    base_python: str
    overlays: Overlays
    index: object  # pypi.PyPIIndex or pypi.DirectoryIndex


def failure_pattern(message: str) -> str:
    """A regex for "the same failure" as ``message``: its first line, with numbers left open (request ids,
    addresses and timings differ from run to run)."""
    first = message.strip().splitlines()[0][:120] if message.strip() else ""
    return re.sub(r"\d+", r"\\d+", re.escape(first)) if first else r"(?!)"


class Triage:
    def __init__(self, previous: dict, current: dict, current_path: Path, settings: Settings, out=print):
        self.previous, self.current, self.path, self.settings, self.out = previous, current, current_path, settings, out
        self.deadline = time.monotonic() + settings.budget
        self.crashes: list[str] = []  # why re-runs gave no result, one line each
        self.rootdir = Path(current["rootdir"] or REPO_ROOT)  # where the run's test ids are relative to

    def new_failures(self) -> list[dict]:
        before, after = outcomes(self.previous), outcomes(self.current)
        return [after[t] for t in after if classify(before.get(t), after[t], ()) == "new failure"]

    def run(self) -> dict:
        """Triage every new failure of the current run against the previous one; writes and returns the section."""
        started = time.monotonic()
        record = {"previous": self.previous["created"], "reruns": {}, "culprits": [], "seconds": 0.0}
        new = self.new_failures()
        self.out(
            f"triage of cell {self.current['cell']}: {len(new)} new failure(s) since the run of {self.previous['created']}"  # noqa: E501 (a message kept whole, to be found by grep)
        )
        if new and time.monotonic() > self.deadline:
            record["culprits"] = [self._answer(t, "out of budget", "not re-run: " + self._resume_hint()) for t in new]
            return self._write(record, started)
        record["reruns"] = self.rerun([t["test"] for t in new]) if new else {}
        before = outcomes(self.previous)
        found: list[tuple[dict, Point, Point]] = []
        for test in new:
            reruns = record["reruns"][test["test"]]
            if PASSING & set(reruns):
                self.out(f"  flaky: {test['test']} (re-runs: {', '.join(reruns)})")
            elif NOT_RUN in reruns:
                why = "; ".join(dict.fromkeys(self.crashes)) or "the re-runs ran without it"
                record["culprits"].append(
                    self._answer(
                        test,
                        COULD_NOT_JUDGE,
                        f"{reruns.count(NOT_RUN)} of {len(reruns)} re-runs have no result for it "
                        f"({why}): run the triage in cell {self.current['cell']}'s environment",
                    )
                )
            elif test["test"] not in before:
                record["culprits"].append(
                    self._answer(test, "new test", "no previous run of this test to compare with")
                )
            elif not self._shares_culprit(test, found):
                answer, points = self.culprit(test)
                record["culprits"].append(answer)
                if points:
                    found.append((answer, *points))
        return self._write(record, started)

    def _write(self, record: dict, started: float) -> dict:
        record["seconds"] = round(time.monotonic() - started, 1)
        self.current["triage"] = record
        atomic.write_text(self.path, json.dumps(self.current, indent=2, sort_keys=True) + "\n")
        return record

    def _resume_hint(self) -> str:
        return (
            f"the {self.settings.budget:.0f}s budget is spent; run the same triage again to continue from the probe log"
        )

    def _answer(self, test: dict, status: str, note: str, **found) -> dict:
        self.out(f"  {test['test']}: {status}: {note}")
        return {"tests": [test["test"]], "status": status, "note": note, **found}

    def _oracle(self, test: dict) -> Oracle:
        return Oracle(
            pytest_selection=shlex.quote(test["test"]),
            timeout=self.settings.oracle_timeout,
            runxfail=self.current["runxfail"],
            patterns=[failure_pattern(test["message"])],
            rootdir=self.rootdir,
        )

    # --- flake check ---------------------------------------------------------------------------

    def rerun(self, tests: list[str]) -> dict[str, list[str]]:
        """Each test's outcome in each re-run: all of them in one pytest run per round, the rounds side by side,
        in this run's environment, judged as the nightly judged them (its --runxfail or not)."""
        seen: dict[str, list[str]] = {test: [] for test in tests}
        rounds = range(1, self.settings.reruns + 1)
        with ThreadPoolExecutor(max(1, min(SIDE_BY_SIDE, len(rounds))), thread_name_prefix="rerun") as pool:
            answers = list(pool.map(lambda _: self._rerun_once(tests), rounds))
        for round_, (ran, why) in zip(rounds, answers, strict=True):
            if not ran:
                self.out(f"  re-run {round_}: no results ({why})")
                self.crashes.append(why)
            for test in tests:
                seen[test].append(ran[test]["outcome"] if test in ran else NOT_RUN)
            self.out(
                f"  re-run {round_}/{self.settings.reruns}: "
                + ", ".join(f"{o} x{n}" for o, n in Counter(seen[t][-1] for t in tests).items())
            )
        return seen

    def _rerun_once(self, tests: list[str]) -> tuple[dict, str]:
        """One pytest run of ``tests``: their results (empty when it gave none) and why it gave none."""
        with tempfile.TemporaryDirectory(prefix="qvl-rerun-") as tmp:
            cmd = [
                self.settings.base_python,
                "-m",
                "pytest",
                *tests,
                "-q",
                "-p",
                "no:cacheprovider",
                f"--rootdir={self.rootdir}",
                f"--report-dir={tmp}",
                "--cell",
                OUTSIDE_THE_MATRIX,
                *["--runxfail"] * self.current["runxfail"],
            ]
            try:
                done = subprocess.run(
                    cmd, cwd=self.rootdir, capture_output=True, text=True, timeout=self.settings.oracle_timeout
                )
            except subprocess.TimeoutExpired:
                return {}, f"timed out after {self.settings.oracle_timeout:.0f}s"
            tail = "\n".join(without_noise(done.stdout + done.stderr).strip().splitlines()[-3:])
            why = f"pytest exit {done.returncode}: {one_line(tail)}"
            try:
                return outcomes(results.read(Path(tmp) / f"results-{OUTSIDE_THE_MATRIX}.json")), why
            except HarnessError:  # no results file: pytest (or the plugin) did not get that far
                return {}, why

    # --- culprit -------------------------------------------------------------------------------

    def _session(self, test: dict) -> tuple[list[Point], Bisection, Oracle] | dict:
        """The steps between the two stacks and a bisection of them for ``test`` (its probes logged and
        reused), or the answer saying why the stacks cannot be bisected."""
        changed = stack_change(self.previous["stack"], self.current["stack"])
        movable = [(name, old, new) for name, old, new in changed if name in BISECTABLE]
        if not movable:
            what = ", ".join(f"{n} {o} -> {v}" for n, o, v in changed) or "nothing"
            return self._answer(
                test,
                "no release to blame",
                f"no installable package changed between the runs (changed: "
                f"{what}): the checkout, the data or the runner did",
            )
        missing = [name for name, old, new in movable if old is None or new is None]
        if missing:
            return self._answer(test, "not bisected", f"{', '.join(missing)} was added or removed between the runs")
        before = {name: old for name, old, _ in movable}
        after = {name: new for name, _, new in movable}
        try:
            points = between_stacks(
                before, after, {name: pypi.history(self.settings.index, name) for name in before}, RELEASED_TOGETHER
            )
        except HarnessError as exc:
            return self._answer(test, "not bisected", str(exc))
        oracle = self._oracle(test)
        config = {
            "triage": test["test"],
            "before": before,
            "after": after,
            "oracle": oracle.describe(),
            "runxfail": oracle.runxfail,
            "base": self.settings.base_python,
        }
        bisection = open_bisection(
            "triage", config, points, self._prober(oracle), resume=True, out=self.out, side_by_side=SIDE_BY_SIDE
        )
        return points, bisection, oracle

    def _shares_culprit(self, test: dict, found: list[tuple[dict, Point, Point]]) -> bool:
        """Whether an answer already found explains ``test`` too: good at its last good step, bad at its first bad."""
        if not found:
            return False
        session = self._session(test)
        if isinstance(session, dict):
            return False
        _, bisection, _ = session
        for answer, good, bad in found:
            try:
                if bisection.judge_together([(good, 1, "[same culprit?]"), (bad, 1, "[same culprit?]")]) == [GOOD, BAD]:
                    answer["tests"].append(test["test"])
                    self.out(
                        f"  {test['test']}: the same culprit ({answer['first_bad']}): good at its last good step, bad at its first bad"  # noqa: E501 (a message kept whole, to be found by grep)
                    )
                    return True
            except (OutOfBudget, HarnessError):
                return False
        return False

    def culprit(self, test: dict) -> tuple[dict, tuple[Point, Point] | None]:
        """The first release between the two runs' stacks that fails ``test``, with the steps that show it."""
        session = self._session(test)
        if isinstance(session, dict):
            return session, None
        points, bisection, oracle = session
        bisection.reporter.header(
            [pin.split("==")[0] for pin in points[0].pins],
            points,
            len(points),
            False,
            oracle.describe(),
            self.settings.base_python,
            bisection.log,
        )
        try:
            ends = [(points[0], 2, "[previous stack]"), (points[-1], 2, "[this stack]")]
            ends = bisection.judge_together(ends + _ahead(points))[:2]
            if SKIP in ends:
                end = points[ends.index(SKIP)]
                return self._answer(
                    test,
                    COULD_NOT_JUDGE,
                    f"{end.label} could not be judged: {bisection.runs[end.key][-1].describe()}",
                    probes=_probes(bisection),
                ), None
            if ends != [GOOD, BAD]:
                return self._answer(test, "not bisected", _ends_note(ends, bisection, points)), None
            outcome = bisection.search(0, len(points) - 1, GOOD, lo_implied=False, hi_implied=False)
            bisection.reporter.outcome("the stack", outcome, bisection.runs, False)
            if outcome.first_new is None or outcome.ambiguous:
                names = ", ".join(p.key for p in [*outcome.ambiguous, outcome.first_new] if p)
                return self._answer(
                    test,
                    COULD_NOT_JUDGE,
                    f"the first bad step is one of {names}: the steps between could not be judged",
                    probes=_probes(bisection),
                ), None
            good, bad = outcome.last_old, outcome.first_new
            first_bad, split = bad.key, ""
            moved = [pin for pin in bad.pins if pin not in good.pins]
            if len(moved) > 1:
                first_bad, split = self._split(moved, good, bisection)
        except OutOfBudget:
            return self._answer(test, "out of budget", self._resume_hint(), probes=_probes(bisection)), None
        except HarnessError as exc:  # a flaky oracle, an environment that cannot be built
            return self._answer(test, "not bisected", str(exc), probes=_probes(bisection)), None
        evidence = "; ".join(f"{p.label}: {'/'.join(r.verdict for r in bisection.runs[p.key])}" for p in (good, bad))
        answer = self._answer(
            test,
            "found",
            f"first bad: {first_bad}" + (f" ({split})" if split else ""),
            first_bad=first_bad,
            last_good=good.label,
            step=bad.key,
            evidence=evidence + (f"; {split}" if split else ""),
            probes=_probes(bisection),
            from_log=bisection.reused_runs,
            uploaded=f"{bad.uploaded:%Y-%m-%d %H:%M} UTC",
        )
        return answer, (good, bad)

    def _prober(self, oracle: Oracle):
        install_and_run = prober(oracle, self.settings.overlays)

        def probe(point: Point, output: Path) -> Run:
            if time.monotonic() > self.deadline:
                raise OutOfBudget
            return install_and_run(point, output)

        return probe

    def _split(self, moved: list[str], good: Point, bisection: Bisection) -> tuple[str, str]:
        """Which of the packages one step moved together breaks the test: the one that is bad on its own over
        the last good stack, or the only one not good alone when every other is (it needs its companions)."""
        alone = []
        for pin in moved:
            name = pin.split("==")[0]
            pins = tuple(pin if p.split("==")[0] == name else p for p in good.pins)
            alone.append(
                (
                    Point(f"{pin} alone", f"{pin} alone over the last good stack", good.uploaded, pins),
                    1,
                    f"[split {pin}]",
                )
            )
        verdicts = dict(zip(moved, bisection.judge_together(alone), strict=True))
        said = ", ".join(f"{pin} alone: {bisection.runs[f'{pin} alone'][-1].describe()}" for pin in verdicts)
        bad = [pin for pin, verdict in verdicts.items() if verdict == BAD]
        not_good = [pin for pin, verdict in verdicts.items() if verdict != GOOD]
        blamed = bad if bad else not_good
        if len(blamed) == 1:
            others = ", ".join(p for p in moved if p != blamed[0])
            return blamed[0], f"released together with {others}; {said}"
        return " + ".join(moved), f"bad only together; {said}"


def _ahead(points: list[Point]) -> list[tuple[Point, int, str]]:
    """The steps between the ends, to probe beside the ends' four runs where all of them fit side by side: the
    search then answers from their verdicts, in the time of one probe instead of one per halving. Where they do
    not fit, none (the search probes what it needs, one halving at a time)."""
    between = points[1:-1]
    if 4 + len(between) > SIDE_BY_SIDE:
        return []
    return [(point, 1, f"[ahead {i}/{len(between)}]") for i, point in enumerate(between, 1)]


def _probes(bisection: Bisection) -> int:
    return bisection.oracle_runs + bisection.reused_runs


def _ends_note(ends: list[str], bisection: Bisection, points: list[Point]) -> str:
    previous, current = ends
    if previous != GOOD:
        run = bisection.runs[points[0].key][-1]
        return (
            f"the previous stack is {previous} now too ({run.describe()}): what broke is not in the packages "
            "(the checkout, the data or the runner changed)"
        )
    run = bisection.runs[points[-1].key][-1]
    return f"this stack is {current} when the test runs alone in a fresh environment ({run.describe()}): not reproducible by release"  # noqa: E501 (a message kept whole, to be found by grep)
