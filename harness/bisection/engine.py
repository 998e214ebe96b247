"""The search: probe candidates, remember every verdict, narrow the range like ``git bisect``.

A probe is any function from a candidate and a file for its whole output to a Run (harness.bisection.session
installs an overlay and runs the oracle).
Endpoints are judged twice first, so a flaky oracle stops the search before it misleads it. A
candidate that cannot be judged is skipped, and the next probe is taken away from the skipped ones
(as ``git bisect skip`` does), so a band of releases that do not install is crossed in a few probes,
not walked one by one. Every run is appended to the probe log; ``--resume`` answers from it.
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.bisection.candidates import Point
from harness.bisection.oracle import BAD, GOOD, SKIP, Run
from harness.core.errors import HarnessError

SEALED_EXTRA = 3  # probes past the bound spent inside a band of skips before the answer is left undecided


class ProbeLog:
    """Every probe of one bisect configuration, one JSON line each, only ever appended to.
    With ``reuse``, earlier runs answer for their candidates instead of new probes."""

    def __init__(self, path: Path, config: dict, reuse: bool):
        self.path, self.reuse = path, reuse
        self.logged: dict[str, list[Run]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if "key" in entry:
                    self.logged.setdefault(entry["key"], []).append(Run(**{**entry["run"], "from_log": True}))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"config": config})

    def runs(self, key: str) -> list[Run]:
        return list(self.logged.get(key, [])) if self.reuse else []

    @property
    def count(self) -> int:
        return sum(len(runs) for runs in self.logged.values())

    def add(self, key: str, run: Run) -> None:
        self.logged.setdefault(key, []).append(run)
        self._append({"key": key, "run": {k: v for k, v in asdict(run).items() if k != "from_log"}})

    def output_for(self, key: str, ahead: int = 0) -> Path:
        """Where the next probe of ``key`` (``ahead``: the one so many after it) writes its whole output: beside
        the log, one file per run."""
        name = re.sub(r"[^A-Za-z0-9.=+@-]+", "_", key)[:120]
        return self.path.with_suffix("") / f"{name}-{len(self.logged.get(key, [])) + 1 + ahead}.log"

    def _append(self, entry: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


class UnjudgedEndpoint(HarnessError):
    """A named endpoint that could not be judged (the caller knows which flag named it)."""

    def __init__(self, point: Point, run: Run, older: bool):
        self.point, self.run, self.older = point, run, older
        super().__init__(
            f"cannot judge endpoint {point.label}: {run.reason}; "
            "fix what the probe lacks (see the reason) or choose another endpoint"
        )


@dataclass
class Outcome:
    """What one search found between an old and a new endpoint."""

    old: str  # the state at the old end: GOOD (first bad wanted) or BAD (first fixed wanted)
    size: int  # candidates in the range, endpoints included
    probed: set[str] = field(default_factory=set)
    last_old: Point | None = None
    first_new: Point | None = None
    ambiguous: list[Point] = field(default_factory=list)  # skipped candidates that may be the first new
    note: str = ""  # why there is no transition (an implied endpoint already in the new state)

    @property
    def bound(self) -> int:
        return math.ceil(math.log2(max(self.size, 1))) + 2

    @property
    def new_name(self) -> str:
        return "first bad" if self.old == GOOD else "first fixed"


def pick(lo: int, hi: int, skipped: set[int]) -> tuple[int, bool] | None:
    """The next candidate strictly between ``lo`` and ``hi``, and whether it lies between two skipped
    ones. Judged and skipped candidates cut the range into gaps; releases that cannot be judged come
    in bands, so a gap with a judged end is tried before a gap between two skips (likely inside a
    band), the larger gap first, the one nearer the middle on a tie; the gap's middle is probed."""
    walls = [lo, *sorted(j for j in skipped if lo < j < hi), hi]
    gaps = [
        (not (a in skipped and b in skipped), b - a, -abs((a + b) / 2 - (lo + hi) / 2), a, b)
        for a, b in zip(walls, walls[1:], strict=False)
        if b - a > 1
    ]
    if not gaps:
        return None
    judged_end, _, _, a, b = max(gaps)
    return (a + b) // 2, not judged_end


class Bisection:
    """Probes points, keeps their verdicts and runs the searches; ``lo``/``hi`` hold the narrowest
    judged range of the search in progress (for the resume line after an interruption)."""

    def __init__(self, points: list[Point], probe, log: ProbeLog, reporter, side_by_side: int = 1):
        self.points, self.probe, self.log, self.reporter = points, probe, log, reporter
        self.side_by_side = side_by_side  # probes at once where several are wanted together
        self.runs: dict[str, list[Run]] = {}
        self.oracle_runs = 0
        self.reused_runs = 0
        self.judged_old: Point | None = None
        self.judged_new: Point | None = None

    def judge(self, point: Point, times: int, step: str) -> str:
        """The verdict on ``point`` (any point, searched or not) after ``times`` agreeing runs."""
        return self.judge_together([(point, times, step)])[0]

    def judge_together(self, asked: list[tuple[Point, int, str]]) -> list[str]:
        """The verdicts on several points, each as ``judge`` gives it; the probes they still need run side by
        side, ``side_by_side`` at a time (each probe is a process of its own). A run that could not judge ends
        its point's probing, as one after another: a repeat that ran beside it is dropped, not logged."""
        pending: dict[str, tuple[Point, str, list[Run], int]] = {}
        for point, times, step in asked:
            runs = self.runs.setdefault(point.key, [])
            if point.key in pending or _settled(runs, times):
                continue  # judged earlier in this session (and shown then)
            if not runs:
                logged = self.log.runs(point.key)[:times]
                runs.extend(logged)
                self.reused_runs += len(logged)
            pending[point.key] = (point, step, runs, 0 if _settled(runs, times) else times - len(runs))
        jobs = [
            (point, self.log.output_for(point.key, ahead=i))
            for point, _, _, missing in pending.values()
            for i in range(missing)
        ]
        alone = len(pending) == 1  # one point: its line starts before its probes, as a person watching expects
        for point, step, _, _ in list(pending.values())[:alone]:
            self.reporter.probing(step, point)
        done, failed = self._probe_all(jobs)
        flaky = None
        for point, step, runs, missing in pending.values():
            if not alone:
                self.reporter.probing(step, point)
            for run in done[:missing]:
                if run is None or (runs and runs[-1].verdict == SKIP):
                    continue
                self.oracle_runs += run.exit is not None
                runs.append(run)
                self.log.add(point.key, run)
            done = done[missing:]
            self.reporter.judged(runs)
            if len({r.verdict for r in runs}) > 1 and flaky is None:
                flaky = HarnessError(
                    f"flaky oracle: {point.label} was judged {' then '.join(r.verdict for r in runs)} "
                    f"(exits {', '.join(str(r.exit) for r in runs)}); make the oracle deterministic before bisecting"
                )
        if failed or flaky:
            raise failed or flaky
        return [self.runs[point.key][0].verdict for point, _, _ in asked]

    def _probe_all(self, jobs: list[tuple[Point, Path]]) -> tuple[list[Run | None], BaseException | None]:
        """Each job's run in order (None where its probe raised), and the first exception a probe raised."""
        if len(jobs) <= 1 or self.side_by_side <= 1:
            runs: list[Run | None] = []
            for i, (point, output) in enumerate(jobs):
                if i and jobs[i - 1][0].key == point.key and (runs[-1] is None or runs[-1].verdict == SKIP):
                    runs.append(None)  # its point could not be judged: no repeat
                    continue
                try:
                    runs.append(self.probe(point, output))
                except Exception as exc:  # noqa: BLE001 - out of budget, an environment that cannot be built
                    return runs + [None] * (len(jobs) - len(runs)), exc
            return runs, None
        pool = ThreadPoolExecutor(min(self.side_by_side, len(jobs)), thread_name_prefix="probe")
        try:
            futures = [pool.submit(self.probe, point, output) for point, output in jobs]
            wait(futures)
        except BaseException:  # Ctrl-C: the probes' processes get it from the terminal too
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        failed = next((f.exception() for f in futures if f.exception() is not None), None)
        return [None if f.exception() else f.result() for f in futures], failed

    def search(self, lo: int, hi: int, old: str, *, lo_implied: bool, hi_implied: bool) -> Outcome:
        """The first point in (lo, hi] whose state differs from ``old``; lo is older than hi.

        An implied endpoint (the oldest or newest candidate, not named by the user) that cannot be
        judged counts as a skipped candidate, with a virtual endpoint just outside the range.
        """
        new = BAD if old == GOOD else GOOD
        outcome = Outcome(old=old, size=hi - lo + 1)
        first, last = lo, hi
        skipped: set[int] = set()
        self.judged_old = self.judged_new = None

        def step(remaining: int) -> str:
            done = len(outcome.probed)
            return f"[{done + 1}/~{done + max(remaining, 1)}]"

        for older_side in (True, False):
            i = lo if older_side else hi
            expected, implied = (old, lo_implied) if older_side else (new, hi_implied)
            label = step((2 if older_side else 1) + math.ceil(math.log2(max(hi - lo, 1))))
            outcome.probed.add(self.points[i].key)
            verdict = self.judge(self.points[i], 2, label)
            point = self.points[i]
            if verdict == SKIP:
                if not implied:
                    raise UnjudgedEndpoint(point, self.runs[point.key][-1], older_side)
                skipped.add(i)
                lo, hi = (lo - 1, hi) if older_side else (lo, hi + 1)
            elif verdict != expected:
                if not implied:
                    raise HarnessError(_endpoint_hint(point, verdict, expected, self.runs[point.key][0]))
                outcome.note = (
                    f"no {old} release in range: {point.label}, the oldest candidate, is already {verdict}"
                    if older_side
                    else f"not {'fixed' if old == BAD else 'broken'} yet: {point.label}, the newest candidate, is still {verdict}"  # noqa: E501 (a message kept whole, to be found by grep)
                )
                return outcome
            elif older_side:
                self.judged_old = point
            else:
                self.judged_new = point
        while (picked := pick(lo, hi, skipped)) is not None:
            choice, inside_band = picked
            if inside_band and len(outcome.probed) >= outcome.bound + SEALED_EXTRA:
                break  # only gaps between skipped releases are left: say which candidates remain, do not walk the band
            remaining = len([j for j in range(lo + 1, hi) if j not in skipped])
            label = step(math.ceil(math.log2(remaining + 1)))
            outcome.probed.add(self.points[choice].key)
            verdict = self.judge(self.points[choice], 1, label)
            if verdict == SKIP:
                skipped.add(choice)
            elif verdict == old:
                lo, self.judged_old = choice, self.points[choice]
            else:
                hi, self.judged_new = choice, self.points[choice]
        outcome.last_old = self.points[lo] if lo >= first else None
        outcome.first_new = self.points[hi] if hi <= last else None
        outcome.ambiguous = [self.points[j] for j in range(lo + 1, hi)]  # skipped, or untried between skipped ones
        return outcome

    def skips(self) -> list[tuple[Point, Run]]:
        """Every candidate that could not be judged, with its run."""
        by_key = {p.key: p for p in self.points}
        return [(by_key[k], runs[-1]) for k, runs in self.runs.items() if runs and runs[-1].verdict == SKIP]


def _settled(runs: list[Run], times: int) -> bool:
    return len(runs) >= times or bool(runs and runs[-1].verdict == SKIP)


def _endpoint_hint(point: Point, verdict: str, expected: str, run: Run) -> str:
    flag = "--good" if expected == GOOD else "--bad"
    return (
        f"{flag} {point.key} is {verdict}, not {expected} ({run.describe()}): pick another {expected} release; "
        "bisect looks for the first bad after a good one, --find-fix for the first good after a bad one"
    )
