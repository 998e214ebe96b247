"""What a bisect tells a person: the plan, a line per probe, each search's answer with its evidence,
the skipped candidates with their reasons, and a command that continues or re-checks the search.
What comes from an earlier run's probe log says so; evidence names the file with the probe's whole output."""

from __future__ import annotations

import shlex
from datetime import timezone

from harness.bisection.candidates import Point
from harness.bisection.engine import Outcome
from harness.bisection.oracle import GOOD, Run


class Reporter:
    def __init__(self, companions, out=print):
        self.companions, self.out = companions, out

    def header(
        self, packages: list[str], points: list[Point], total: int, by_date: bool, oracle: str, base: str, log
    ) -> None:
        of = f" of {total} releases" if total != len(points) and not by_date else ""
        self.out(
            f"bisecting {' + '.join(packages)}: {len(points)} candidates {points[0].key} .. {points[-1].key}{of} "
            f"({'stack states by date' if by_date else 'by upload time'})"
        )
        earlier = f" ({log.count} earlier probes; --resume answers from them)" if log.count and not log.reuse else ""
        self.out(f"oracle: {oracle}\nbase: {base}\nlog: {log.path}{earlier}")

    def search(self, name: str, first: Point, last: Point, size: int) -> None:
        self.out(f"\n== {name}: {first.key} .. {last.key} ({size} candidates)")

    def probing(self, step: str, point: Point) -> None:
        companions = self.companions(point)
        pins = f" (with {' '.join(companions)})" if companions else ""
        self.out(f"{step} probing {point.label}{pins} ...", end=" ", flush=True)

    def judged(self, runs: list[Run]) -> None:
        self.out(", ".join(r.describe() for r in runs), flush=True)

    def outcome(self, package: str, outcome: Outcome, runs: dict[str, list[Run]], by_date: bool) -> None:
        self.out(f"-- {package}: {outcome.new_name} --")
        if outcome.note:
            self.out(outcome.note)
        elif outcome.ambiguous:
            names = ", ".join(p.key for p in [*outcome.ambiguous, outcome.first_new] if p)
            tail = (
                ""
                if outcome.first_new
                else f", or none in range ({outcome.last_old.label} is the newest judged and is {outcome.old})"
            )
            self.out(
                f"undecided: the {outcome.new_name} is one of {names}{tail}: the releases between could not be judged"
            )
            self.out(
                f"WARNING: {len(outcome.ambiguous)} candidate(s) could not be judged and leave the answer undecided: "
                "fix what their probes lack (the reasons below), then continue with --resume"
            )
            for point in outcome.ambiguous:
                self.out(
                    f"  {point.label}: {runs[point.key][-1].reason if point.key in runs else 'not tried (between releases that could not be judged)'}"  # noqa: E501 (a message kept whole, to be found by grep)
                )
        else:
            last_name = "last good" if outcome.old == GOOD else "last bad"
            when = "committed" if " @ " in outcome.first_new.label else "uploaded"
            for name, point in ((outcome.new_name, outcome.first_new), (last_name, outcome.last_old)):
                self.out(f"{name}: {point.label} ({when} {point.uploaded.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC)")
            if by_date:
                self.out(f"pins of the {outcome.new_name}: {' '.join(outcome.first_new.pins)}")
            self.out("evidence:")
            for point in (outcome.last_old, outcome.first_new):
                point_runs = runs.get(point.key, [])
                self.out(
                    f"  {point.label}: {point_runs[0].describe()}"
                    + (f" x{len(point_runs)}" if len(point_runs) > 1 else "")
                )
                self.out("\n".join(f"    | {line}" for line in point_runs[0].tail.splitlines()))
                if point_runs[0].output:
                    self.out(f"    whole output: {point_runs[0].output}")
        self.out(f"probes: {len(outcome.probed)} (at most ceil(log2 {outcome.size})+2 = {outcome.bound})")

    def skipped(self, skips: list[tuple[Point, Run]], probes: int, undecided: bool) -> None:
        """The candidates that could not be judged; a warning when they are most of the probes of an answer
        that looks decided (an undecided one was warned of with its answer)."""
        if not skips:
            return
        self.out(f"could not judge {len(skips)} candidate(s):")
        for point, run in skips:
            self.out(f"  {point.label}: {run.describe()}")
        if len(skips) * 2 > probes and not undecided:
            self.out(
                f"WARNING: {len(skips)} of {probes} probes could not judge their release: the oracle or the probe "
                "environment may not fit these releases (see the reasons above) before trusting the answer"
            )

    def command(self, label: str, argv: list[str]) -> None:
        self.out(f"{label}: {shlex.join(argv)}")
