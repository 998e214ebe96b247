"""`qvl-harness bisect`: the first release that broke (or fixed) something, searched over real releases.

The candidates are one package's releases ordered by upload time (or, with ``--by-date``, the
states of a whole stack of packages over time). Each probe installs the release into an overlay
venv (harness.overlay) over the base environment and runs an oracle in it, judged like
``git bisect run``: exit 0 good, 1-127 bad, 125 skip, anything else aborts. A pytest oracle runs
with ``--runxfail`` (the registry's expectations must not turn a failure into a pass) and exits
2-5 (collection error, internal error, usage error, nothing collected), a run where every
selected test skipped and a run whose every failure is a HarnessError (the harness cannot run the
check on this release, e.g. it predates the code the suite reads) count as skip: they say
nothing about the release. An install or import
failure is a skip as well. Both endpoints are judged twice first, so a flaky oracle stops the
search before it misleads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timezone
from pathlib import Path

from packaging.utils import canonicalize_name

from . import pypi, releases
from .errors import HarnessError
from .overlay import Base, Overlay, Overlays
from .paths import REPO_ROOT, cache_dir

GOOD, BAD, SKIP = "good", "bad", "skip"
SKIP_EXIT = 125
PYTEST_SKIP_EXITS = {2: "interrupted or collection error", 3: "pytest internal error", 4: "pytest usage error", 5: "no tests collected"}
TAIL_LINES = 12
# Companion pins a matrix cell contributes; torch and bitsandbytes always come from the base.
CELL_COMPANIONS = ("unsloth", "unsloth_zoo", "transformers", "peft", "trl")


@dataclass(frozen=True)
class Point:
    """One candidate: a release (or a stack state) that a probe installs and judges."""

    key: str  # the version, or the ISO moment in --by-date mode; what --good/--bad take
    label: str
    uploaded: datetime
    pins: tuple[str, ...]


@dataclass
class Run:
    exit: int | None
    verdict: str
    tail: str
    seconds: float

    @property
    def reason(self) -> str:
        lines = self.tail.strip().splitlines()
        return lines[-1] if lines else f"exit {self.exit}"

    def describe(self) -> str:
        return f"{self.verdict} (exit {self.exit}, {self.seconds:.1f}s)" if self.exit is not None else f"{self.verdict} ({self.reason})"


def verdict_of(code: int) -> str:
    if code == 0:
        return GOOD
    if code == SKIP_EXIT:
        return SKIP
    if 1 <= code <= 127:
        return BAD
    raise HarnessError(f"the oracle exited {code} (killed or out of range): aborting, as `git bisect run` does")


class Oracle:
    """A pytest selection (run from the checkout) or a shell command, run inside an overlay."""

    def __init__(self, *, pytest_selection: str | None = None, command: str | None = None, timeout: float = 1800):
        if bool(pytest_selection) == bool(command):
            raise HarnessError("give exactly one oracle: --oracle-pytest SELECTION or --oracle-cmd COMMAND")
        self.pytest_selection, self.command, self.timeout = pytest_selection, command, timeout

    def describe(self) -> str:
        return f"pytest {self.pytest_selection}" if self.pytest_selection else self.command

    def run(self, overlay: Overlay, point: Point) -> Run:
        env = {**os.environ, "VIRTUAL_ENV": str(overlay.path), "PATH": f"{overlay.bin}{os.pathsep}{os.environ.get('PATH', '')}",
               "QVL_PROBE_PYTHON": str(overlay.python), "QVL_PROBE": point.label}
        env.pop("PYTHONHOME", None)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="qvl-oracle-") as tmp:
            junit = Path(tmp, "junit.xml")
            if self.pytest_selection:
                cmd = [str(overlay.python), "-m", "pytest", *shlex.split(self.pytest_selection), "-q", "--tb=short",
                       "--runxfail", f"--junitxml={junit}"]
                code, output = self._execute(cmd, env, cwd=REPO_ROOT, shell=False)
            else:
                code, output = self._execute(self.command, env, cwd=Path.cwd(), shell=True)
            tail = "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])
            seconds = time.monotonic() - started
            if code is None:
                return Run(None, SKIP, f"{tail}\noracle timed out after {self.timeout:.0f}s: skipped", seconds)
            if self.pytest_selection:
                if code in PYTEST_SKIP_EXITS:
                    return Run(code, SKIP, f"{tail}\npytest exit {code} ({PYTEST_SKIP_EXITS[code]}): skipped", seconds)
                if code == 0 and _all_skipped(junit):
                    return Run(code, SKIP, f"{tail}\nevery selected test skipped: skipped", seconds)
                if code == 1 and _only_harness_errors(junit):
                    return Run(code, SKIP, f"{tail}\nevery failure is a harness error (the suite cannot judge this release): skipped", seconds)
            return Run(code, verdict_of(code), tail, seconds)

    def _execute(self, cmd, env, cwd, shell) -> tuple[int | None, str]:
        """Exit status and output; None on timeout (the whole process group is killed)."""
        proc = subprocess.Popen(cmd, shell=shell, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return None, output
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        code = proc.returncode
        return (128 - code if code < 0 else code), output  # a signal reads as 128+N, which aborts


def _only_harness_errors(junit: Path) -> bool:
    """Whether every failing test failed with a HarnessError (the plugin reports it as "qvl-harness: ...")."""
    try:
        cases = list(ET.parse(junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return False
    problems = [p for case in cases for p in case if p.tag in ("failure", "error")]
    prefixes = ("qvl-harness:", "harness.errors.HarnessError")
    return bool(problems) and all((p.get("message") or "").startswith(prefixes) for p in problems)


def _all_skipped(junit: Path) -> bool:
    try:
        cases = ET.parse(junit).getroot().iter("testcase")
    except (OSError, ET.ParseError):
        return False
    outcomes = [case.find("skipped") for case in cases]
    return bool(outcomes) and all(o is not None and o.get("type") == "pytest.skip" for o in outcomes)


class ProbeLog:
    """Every oracle run of a bisect configuration, in cache_dir('bisect'); ``--resume`` reuses them."""

    def __init__(self, path: Path, config: dict, resume: bool):
        self.path = path
        data = json.loads(path.read_text()) if resume and path.is_file() else {}
        if data and data.get("config") != config:
            raise HarnessError(f"{path} belongs to a different bisect configuration; run without --resume")
        self.data = {"config": config, "runs": data.get("runs", {})}

    def runs(self, key: str) -> list[Run]:
        return [Run(**r) for r in self.data["runs"].get(key, [])]

    def add(self, key: str, run: Run) -> None:
        self.data["runs"].setdefault(key, []).append(run.__dict__)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


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


class Bisection:
    """Probes points (install + oracle), caches their verdicts and runs the searches."""

    def __init__(self, points: list[Point], oracle: Oracle, overlays: Overlays, companions, log: ProbeLog, out=print):
        self.points, self.oracle, self.overlays, self.companions, self.log, self.out = points, oracle, overlays, companions, log, out
        self.runs: dict[str, list[Run]] = {}
        self.oracle_runs = 0
        self.reused_runs = 0
        self.lo = self.hi = 0  # the current narrowed range, for the resume line on interrupt

    def judge(self, i: int, times: int, step: str) -> str:
        point = self.points[i]
        runs = self.runs.setdefault(point.key, [])
        if not runs:
            logged = self.log.runs(point.key)[:times]
            runs.extend(logged)
            self.reused_runs += len(logged)
        self.out(f"{step} probing {point.label} ...", end=" ", flush=True)
        if len(runs) < times and not (runs and runs[0].exit is None and runs[0].verdict == SKIP):
            try:
                requirements = [*point.pins, *self.companions(point)]
                overlay = self.overlays.get(requirements)
                error = overlay.error
                if not error:  # the suites read the release code under test from the release cache
                    releases.fetch([r for r in requirements if r.split("==")[0] in releases.WHEEL_NAMES], quiet=True,
                                   **self.overlays.fetch_options)
            except HarnessError as exc:
                overlay, error = None, str(exc)
            if error:
                run = Run(None, SKIP, f"{' '.join(point.pins)}: {error}", 0.0)
                runs.append(run)
                self.log.add(point.key, run)
            while overlay and not error and len(runs) < times:
                run = self.oracle.run(overlay, point)
                self.oracle_runs += 1
                runs.append(run)
                self.log.add(point.key, run)
        verdicts = {r.verdict for r in runs}
        self.out(", ".join(r.describe() for r in runs))
        if len(verdicts) > 1:
            raise HarnessError(
                f"flaky oracle: {point.label} was judged {' then '.join(r.verdict for r in runs)} "
                f"(exits {', '.join(str(r.exit) for r in runs)}); make the oracle deterministic before bisecting"
            )
        return runs[0].verdict

    def search(self, lo: int, hi: int, old: str, *, lo_implied: bool, hi_implied: bool) -> Outcome:
        """The first point in (lo, hi] whose state differs from ``old``; lo is older than hi.

        An implied endpoint (the oldest or newest candidate, not named by the user) that cannot be
        judged counts as a skipped candidate, with a virtual endpoint just outside the range.
        """
        new = BAD if old == GOOD else GOOD
        outcome = Outcome(old=old, size=hi - lo + 1)
        first, last = lo, hi
        self.lo, self.hi = lo, hi
        skipped: set[int] = set()

        def step(remaining: int) -> str:
            done = len(outcome.probed)
            return f"[{done + 1}/~{done + max(remaining, 1)}]"

        # Endpoints first, each judged twice, so a flaky oracle stops the search before it misleads it.
        for older_side in (True, False):
            i = lo if older_side else hi
            expected, implied = (old, lo_implied) if older_side else (new, hi_implied)
            progress = step((2 if older_side else 1) + math.ceil(math.log2(max(hi - lo, 1))))
            outcome.probed.add(self.points[i].key)
            verdict = self.judge(i, 2, progress)
            point = self.points[i]
            if verdict == SKIP:
                if not implied:
                    raise HarnessError(f"cannot judge endpoint {point.label} ({self.runs[point.key][-1].reason}); choose another")
                skipped.add(i)
                lo, hi = (lo - 1, hi) if older_side else (lo, hi + 1)
            elif verdict != expected:
                if not implied:
                    raise HarnessError(_endpoint_hint(point, verdict, expected, self.runs[point.key][0]))
                outcome.note = (f"no {old} release in range: {point.label}, the oldest candidate, is already {verdict}" if older_side
                                else f"not {'fixed' if old == BAD else 'broken'} yet: {point.label}, the newest candidate, is still {verdict}")
                return outcome
        while candidates := [j for j in range(lo + 1, hi) if j not in skipped]:
            middle = (lo + hi) // 2
            pick = min(candidates, key=lambda j: (abs(j - middle), j))
            progress = step(math.ceil(math.log2(len(candidates) + 1)))
            outcome.probed.add(self.points[pick].key)
            verdict = self.judge(pick, 1, progress)
            if verdict == SKIP:
                skipped.add(pick)
            elif verdict == old:
                lo = pick
            else:
                hi = pick
            self.lo, self.hi = max(lo, first), min(hi, last)
        outcome.last_old = self.points[lo] if lo >= first else None
        outcome.first_new = self.points[hi] if hi <= last else None
        outcome.ambiguous = [self.points[j] for j in sorted(skipped) if lo < j < hi]
        return outcome

    def evidence(self, point: Point) -> list[str]:
        lines = []
        for run in self.runs.get(point.key, [])[:1]:
            lines.append(f"  {point.label}: {run.describe()}" + (f" x{len(self.runs[point.key])}" if len(self.runs[point.key]) > 1 else ""))
            lines.extend(f"    | {line}" for line in run.tail.splitlines())
        return lines


def _endpoint_hint(point: Point, verdict: str, expected: str, run: Run) -> str:
    flag = "--good" if expected == GOOD else "--bad"
    return (f"{flag} {point.key} is {verdict}, not {expected} ({run.describe()}): pick another {expected} release; "
            "bisect looks for the first bad after a good one, --find-fix for the first good after a bad one")


# ---- candidates --------------------------------------------------------------------------------


def _end_of_day(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(timezone.utc).date(), dtime.max, tzinfo=timezone.utc)


def version_points(releases: list[pypi.Release]) -> list[Point]:
    return [Point(r.version, r.requirement, r.uploaded, (r.requirement,)) for r in releases]


def stack_points(histories: dict[str, list[pypi.Release]], start: datetime | None, end: datetime) -> list[Point]:
    """The states of a stack over time: every upload of any of its packages that changes the state."""
    earliest = max(h[0].uploaded for h in histories.values())  # every package has a release from here on
    start = max(start or earliest, earliest)
    moments = sorted({r.uploaded for h in histories.values() for r in h if start < r.uploaded <= end} | {start})
    points: list[Point] = []
    previous: tuple[str, ...] = ()
    for moment in moments:
        state = tuple(pypi.newest_at(h, moment).requirement for h in histories.values())
        if state == previous:
            continue
        changed = [req for req in state if req not in previous]
        key = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(Point(key, f"@{key} ({' '.join(changed)})", moment, state))
        previous = state
    return points


def _index_of(points: list[Point], value: str, by_date: bool, releases: list[pypi.Release] | None) -> int:
    if by_date:
        moment = pypi.parse_date(value)
        index = max((i for i, p in enumerate(points) if p.uploaded <= moment), default=None)
        if index is None:
            raise HarnessError(f"{value} is before the first state in range ({points[0].key})")
        return index
    key = pypi.release_of(releases, value).version
    for i, point in enumerate(points):
        if point.key == key:
            return i
    raise HarnessError(f"{value} is outside the range {points[0].key} .. {points[-1].key}")


# ---- command line ------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "bisect",
        help="find the first release that broke (or fixed) something",
        description="Bisect a package's releases (by upload time) with an oracle: exit 0 good, 1-127 bad, 125 skip.",
    )
    p.add_argument("packages", nargs="+", metavar="PACKAGE", help="the package whose releases are bisected (several with --by-date)")
    p.add_argument("--good", metavar="VERSION", help="a good release (a date with --by-date)")
    p.add_argument("--bad", metavar="VERSION", help="a bad release (a date with --by-date)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--find-fix", action="store_true", help="the older endpoint is bad: find the first good release after it")
    mode.add_argument("--find-range", action="store_true",
                      help="given only --bad: find the first bad release before it and the first fixed one after it")
    p.add_argument("--by-date", action="store_true",
                   help="bisect the whole stack of PACKAGEs by date: each probe pins every package to its newest release "
                        "at that moment (uv's --exclude-newer choice); --good/--bad/--range-* take dates")
    p.add_argument("--range-start", metavar="VERSION", help="oldest candidate (default: the first release)")
    p.add_argument("--range-end", metavar="VERSION", help="newest candidate (default: the latest release)")
    p.add_argument("--exclude-newer", metavar="DATE", help="ignore releases uploaded after DATE (e.g. 2025-02-01)")
    p.add_argument("--pre", action="store_true", help="include pre-releases")
    oracle = p.add_mutually_exclusive_group(required=True)
    oracle.add_argument("--oracle-pytest", metavar="SELECTION", help='pytest arguments run from the checkout, e.g. "suites/test_404_missing_repo.py -k installed"')
    oracle.add_argument("--oracle-cmd", metavar="COMMAND", help="a shell command run with the probe venv first on PATH ($QVL_PROBE_PYTHON)")
    p.add_argument("--oracle-timeout", type=float, default=1800, metavar="SECONDS", help="a probe running longer is skipped")
    p.add_argument("--with", dest="companions", action="append", default=[], metavar="REQ",
                   help="also install PKG==VERSION in every probe, or PKG@same-day: its newest release of the probed release's day")
    p.add_argument("--cell", help="take companion pins (unsloth, unsloth-zoo, transformers, peft, trl) from this matrix cell")
    p.add_argument("--base-python", default=sys.executable, help="the environment probes sit on (default: this python)")
    p.add_argument("--import-check", action="append", default=[], metavar="MODULE", help="a probe whose MODULE does not import is skipped")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", help="extra wheel directory for installs")
    p.add_argument("--no-index", action="store_true", help="install only from --find-links")
    p.add_argument("--offline", action="store_true", help="no network: cached release data, cached or local wheels")
    p.add_argument("--release-data", type=Path, metavar="DIR", help="read <DIR>/<package>.json (PyPI JSON format) instead of PyPI")
    p.add_argument("--resume", action="store_true", help="reuse the oracle runs logged by an interrupted run of the same bisect")
    p.add_argument("--record", metavar="FAILURE_ID", help="write the found range and evidence into fixtures/known_failures.toml")
    p.set_defaults(func=run_cli)


def _resume_command(args, good: str | None, bad: str | None, mode: str) -> str:
    """The command that repeats this bisect over a narrowed range."""
    cmd = ["qvl-harness", "bisect", *args.packages]
    if mode != "first-bad":
        cmd.append("--find-fix")
    if good:
        cmd += ["--good", good]
    if bad:
        cmd += ["--bad", bad]
    for flag in ("by_date", "pre", "no_index", "offline"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    for flag in ("exclude_newer", "oracle_pytest", "oracle_cmd", "cell", "release_data"):
        if getattr(args, flag):
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    if args.oracle_timeout != 1800:
        cmd += ["--oracle-timeout", f"{args.oracle_timeout:g}"]
    if args.base_python != sys.executable:
        cmd += ["--base-python", args.base_python]
    for flag, values in (("--with", args.companions), ("--import-check", args.import_check), ("--find-links", args.find_links)):
        for value in values:
            cmd += [flag, value]
    return shlex.join(cmd)


def _companion_source(args, index, exclude_newer):
    """A function giving the companion requirements of a point: fixed pins and same-day picks."""
    fixed, same_day = [], []
    if args.cell:
        from .matrix import DIST_NAMES, load_matrix

        cell = load_matrix().cell(args.cell)
        probed = {canonicalize_name(p) for p in args.packages}
        fixed += [f"{DIST_NAMES.get(k, k)}=={cell.pins[k]}" for k in CELL_COMPANIONS
                  if k in cell.pins and canonicalize_name(DIST_NAMES.get(k, k)) not in probed]
    for text in args.companions:
        if text.endswith("@same-day"):
            same_day.append(text.removesuffix("@same-day"))
        elif "==" in text:
            fixed.append(text)
        else:
            raise HarnessError(f"--with {text!r}: expected PKG==VERSION or PKG@same-day")
    histories = {name: pypi.history(index, name, exclude_newer=exclude_newer) for name in same_day}

    def companions(point: Point) -> list[str]:
        picks = []
        for name, releases in histories.items():
            release = pypi.newest_at(releases, _end_of_day(point.uploaded))
            if release is None:
                raise HarnessError(f"no {name} release on or before {point.uploaded:%Y-%m-%d}")
            picks.append(release.requirement)
        return fixed + picks

    return companions


def run_cli(args) -> int:
    if args.find_range and (args.good or not args.bad):
        raise HarnessError("--find-range takes one known --bad version and no --good")
    if len(args.packages) > 1 and not args.by_date:
        raise HarnessError("several packages are bisected together only with --by-date")
    if args.record and args.by_date:
        raise HarnessError("--record needs a single-package bisect (a registry range is over one package's versions)")
    index = pypi.DirectoryIndex(args.release_data) if args.release_data else pypi.PyPIIndex(offline=args.offline)
    exclude_newer = pypi.parse_date(args.exclude_newer) if args.exclude_newer else None
    releases = None
    if args.by_date:
        histories = {p: pypi.history(index, p, exclude_newer=exclude_newer, pre=args.pre) for p in args.packages}
        start = pypi.parse_date(args.range_start) if args.range_start else None
        end = pypi.parse_date(args.range_end) if args.range_end else (exclude_newer or datetime.now(timezone.utc))
        points = stack_points(histories, start, end)
    else:
        releases = pypi.history(index, args.packages[0], exclude_newer=exclude_newer, pre=args.pre)
        points = version_points(releases)
        first = _index_of(points, args.range_start, False, releases) if args.range_start else 0
        last = _index_of(points, args.range_end, False, releases) if args.range_end else len(points) - 1
        points = points[first:last + 1]
    if len(points) < 2:
        raise HarnessError("fewer than two candidates in range: nothing to bisect")

    def position(value: str | None, default: int) -> tuple[int, bool]:
        return (_index_of(points, value, args.by_date, releases), False) if value else (default, True)

    oracle = Oracle(pytest_selection=args.oracle_pytest, command=args.oracle_cmd, timeout=args.oracle_timeout)
    base = Base.of(args.base_python)
    overlays = Overlays(base, find_links=args.find_links, no_index=args.no_index, offline=args.offline, import_check=args.import_check)
    companions = _companion_source(args, index, exclude_newer)
    config = {"packages": args.packages, "by_date": args.by_date, "oracle": oracle.describe(), "with": args.companions,
              "cell": args.cell, "base": base.python, "import_check": args.import_check}
    session = canonicalize_name("-".join(args.packages)) + "-" + _digest(config)
    log = ProbeLog(cache_dir("bisect") / f"{session}.json", config, args.resume)
    bisection = Bisection(points, oracle, overlays, companions, log, out=print)

    print(f"bisecting {' + '.join(args.packages)}: {len(points)} candidates {points[0].key} .. {points[-1].key} (by upload time)")
    print(f"oracle: {oracle.describe()}\nbase: {base.python} (python {base.version})\nlog: {log.path}")
    if args.find_range:
        known = _index_of(points, args.bad, args.by_date, releases)
        plan = [("first-bad", 0, known, GOOD, True, False), ("first-fixed", known, len(points) - 1, BAD, False, True)]
    elif args.find_fix:
        lo, lo_implied = position(args.bad, 0)
        hi, hi_implied = position(args.good, len(points) - 1)
        plan = [("first-fixed", lo, hi, BAD, lo_implied, hi_implied)]
    else:
        lo, lo_implied = position(args.good, 0)
        hi, hi_implied = position(args.bad, len(points) - 1)
        plan = [("first-bad", lo, hi, GOOD, lo_implied, hi_implied)]
    for mode, lo, hi, _, _, _ in plan:
        if lo >= hi:
            older, newer = ("--good", "--bad") if mode == "first-bad" else ("--bad", "--good")
            other = "use --find-fix to find when it was fixed" if mode == "first-bad" else "drop --find-fix to find when it broke"
            raise HarnessError(f"{older} {points[lo].key} must be older than {newer} {points[hi].key}; {other}")

    started = time.monotonic()
    outcomes = []
    try:
        for mode, lo, hi, old, lo_implied, hi_implied in plan:
            print(f"\n== {mode.replace('-', ' ')}: {points[lo].key} .. {points[hi].key} ({hi - lo + 1} candidates)")
            outcomes.append((mode, bisection.search(lo, hi, old, lo_implied=lo_implied, hi_implied=hi_implied)))
    except KeyboardInterrupt:
        print("\n")
        for done_mode, outcome in outcomes:
            _report(args, bisection, done_mode, outcome)
        lo_key, hi_key = points[bisection.lo].key, points[bisection.hi].key
        good, bad = (lo_key, hi_key) if mode == "first-bad" else (hi_key, lo_key)
        print(f"interrupted during the {mode.replace('-', ' ')} search; resume with either of:\n"
              f"  {_resume_command(args, good, bad, mode)}\n  (the same command with --resume reuses every logged run)")
        return 130

    status = 0
    print()
    for mode, outcome in outcomes:
        status = max(status, _report(args, bisection, mode, outcome))
    print(f"environments: {overlays.installed} installed, {overlays.reused} reused; oracle runs: {bisection.oracle_runs}"
          + (f" (+{bisection.reused_runs} from the log)" if bisection.reused_runs else "")
          + f"; {time.monotonic() - started:.0f}s")
    if args.record and status == 0:
        _record(args, oracle, outcomes)
    return status


def _report(args, bisection: Bisection, mode: str, outcome: Outcome) -> int:
    """Print one search's result; 1 when skips left it undecided."""
    pkg = " + ".join(args.packages)
    print(f"-- {pkg}: {outcome.new_name} --")
    if outcome.note:
        print(outcome.note)
    elif outcome.ambiguous:
        names = ", ".join(p.key for p in [*outcome.ambiguous, outcome.first_new] if p)
        tail = "" if outcome.first_new else f", or none in range ({outcome.last_old.label} is the newest judged and is {outcome.old})"
        print(f"undecided: the {outcome.new_name} is one of {names}{tail}: the releases between could not be judged")
        for point in outcome.ambiguous:
            print(f"  {point.label}: {bisection.runs[point.key][-1].reason}")
    else:
        last_name = "last good" if outcome.old == GOOD else "last bad"
        print(f"{outcome.new_name}: {outcome.first_new.label} (uploaded {outcome.first_new.uploaded:%Y-%m-%d %H:%M} UTC)")
        print(f"{last_name}: {outcome.last_old.label} (uploaded {outcome.last_old.uploaded:%Y-%m-%d %H:%M} UTC)")
        if args.by_date:
            print(f"pins of the {outcome.new_name}: {' '.join(outcome.first_new.pins)}")
        print("evidence:")
        for point in (outcome.last_old, outcome.first_new):
            print("\n".join(bisection.evidence(point)))
    print(f"probes: {len(outcome.probed)} (at most ceil(log2 {outcome.size})+2 = {outcome.bound})")
    if outcome.first_new and outcome.last_old:
        good, bad = (outcome.last_old.key, outcome.first_new.key) if outcome.old == GOOD else (outcome.first_new.key, outcome.last_old.key)
        print(f"resume: {_resume_command(args, good, bad, mode)}")
    print()
    return 1 if outcome.ambiguous else 0


def _record(args, oracle: Oracle, outcomes: list[tuple[str, Outcome]]) -> None:
    from . import known

    bounds, found = {}, []
    for mode, outcome in outcomes:
        side = "lower" if mode == "first-bad" else "upper"
        bounds[side] = outcome.first_new.key if outcome.first_new else None
        if outcome.first_new:
            last = "last good" if mode == "first-bad" else "last bad"
            found.append(f"{outcome.new_name} {outcome.first_new.key} ({last} {outcome.last_old.key})")
        else:
            found.append(outcome.note)
    probes = sum(len(o.probed) for _, o in outcomes)
    evidence = (f"qvl-harness bisect {datetime.now(timezone.utc):%Y-%m-%d} over PyPI upload order, {probes} probes: "
                f"{'; '.join(found)}; oracle: {oracle.describe()}")
    argv = list(args.argv)
    if "--record" in argv:  # the command that found the range, without the request to record it
        del argv[argv.index("--record"):argv.index("--record") + 2]
    command = shlex.join(["qvl-harness", *[a for a in argv if not a.startswith("--record=")]])
    entry = known.record(args.record, package=args.packages[0], evidence=evidence, found_by=command, **bounds)
    print(f"recorded in {known.REGISTRY.name}: {entry.id} affected {entry.affected}")


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
