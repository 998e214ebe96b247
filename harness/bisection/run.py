"""The bisect driver: a BisectRequest checked, its release (or stack-state) search, the commit search below
two adjacent releases, interrupts (a command that continues) and --record."""

from __future__ import annotations

import re
import shlex
import time
from datetime import datetime, timezone

from packaging.utils import canonicalize_name

from harness.bisection import inputs
from harness.bisection.candidates import Point, end_of_day, index_of, stack_points, version_points
from harness.bisection.commits import answer, endpoint, points_between
from harness.bisection.engine import Bisection, UnjudgedEndpoint
from harness.bisection.oracle import BAD, GOOD, Oracle
from harness.bisection.request import BisectRequest
from harness.bisection.session import open_bisection, prober
from harness.core.errors import HarnessError
from harness.env import pypi
from harness.env.matrix import load_matrix
from harness.env.overlay import Base, Overlays
from harness.failures import registry
from harness.releases.git import Repo

# Companion pins a matrix cell contributes; torch and bitsandbytes always come from the base.
CELL_COMPANIONS = ("unsloth", "unsloth-zoo", "transformers", "peft", "trl")


def companion_source(request: BisectRequest, index, exclude_newer):
    """A function giving the companion requirements of a point: fixed pins and same-day picks."""
    fixed, same_day = [], []
    if request.cell:
        cell = load_matrix().cell(request.cell)
        probed = {canonicalize_name(p) for p in request.packages}
        fixed += [
            f"{p}=={cell.stack[p]}" for p in CELL_COMPANIONS if p in cell.stack and canonicalize_name(p) not in probed
        ]
    for text in request.companions:
        if text.endswith("@same-day"):
            same_day.append(text.removesuffix("@same-day"))
        elif "==" in text:
            fixed.append(text)
        else:
            raise HarnessError(f"--with {text!r}: expected PKG==VERSION or PKG@same-day")
    histories = {name: pypi.history(index, name, exclude_newer=exclude_newer) for name in same_day}

    def companions(point: Point) -> list[str]:
        picks = []
        for name, history in histories.items():
            release = pypi.newest_at(history, end_of_day(point.uploaded))
            if release is None:
                raise HarnessError(f"no {name} release on or before {point.uploaded:%Y-%m-%d}")
            picks.append(release.requirement)
        return fixed + picks

    return companions


def bisect(request: BisectRequest) -> int:
    """Run the bisect ``request`` asks for; 0 when every search found its answer, 1 when one is undecided."""
    index = (
        pypi.DirectoryIndex(request.release_data) if request.release_data else pypi.PyPIIndex(offline=request.offline)
    )
    exclude_newer = pypi.parse_date(request.exclude_newer) if request.exclude_newer else None
    oracle = Oracle(pytest_selection=request.oracle_pytest, command=request.oracle_cmd, timeout=request.oracle_timeout)
    repo = Repo(request.commits) if request.commits else None
    inputs.check(request, index, exclude_newer, oracle, _installed_by_probe(request))
    history = None
    if request.by_date:
        histories = {p: pypi.history(index, p, exclude_newer=exclude_newer, pre=request.pre) for p in request.packages}
        start = pypi.parse_date(request.range_start) if request.range_start else None
        end = pypi.parse_date(request.range_end) if request.range_end else (exclude_newer or datetime.now(timezone.utc))
        points = stack_points(histories, start, end)
        total = len(points)
    else:
        history = pypi.history(index, request.package, exclude_newer=exclude_newer, pre=request.pre)
        every = version_points(history)
        first = index_of(every, request.range_start, False, history) if request.range_start else 0
        last = index_of(every, request.range_end, False, history) if request.range_end else len(every) - 1
        points, total = every[first : last + 1], len(every)
    if repo is not None:
        old_end, new_end = (request.bad, request.good) if request.find_fix else (request.good, request.bad)
        if old_end and new_end and not {old_end, new_end} <= {r.version for r in history}:
            # two commits (or a commit and a release) named: search the commits between them directly
            mode = "first-fixed" if request.find_fix else "first-bad"
            return _commit_searches(
                request, repo, history, [(mode, old_end, new_end)], _probe_kit(request, oracle, index, exclude_newer)
            )
    if len(points) < 2:
        raise HarnessError("fewer than two candidates in range: nothing to bisect")

    def position(value: str | None, default: int) -> tuple[int, bool]:
        return (index_of(points, value, request.by_date, history), False) if value else (default, True)

    if request.find_range:
        known = index_of(points, request.bad, request.by_date, history)
        plan = [("first-bad", 0, known, GOOD, True, False), ("first-fixed", known, len(points) - 1, BAD, False, True)]
    elif request.find_fix:
        (lo, lo_implied), (hi, hi_implied) = position(request.bad, 0), position(request.good, len(points) - 1)
        plan = [("first-fixed", lo, hi, BAD, lo_implied, hi_implied)]
    else:
        (lo, lo_implied), (hi, hi_implied) = position(request.good, 0), position(request.bad, len(points) - 1)
        plan = [("first-bad", lo, hi, GOOD, lo_implied, hi_implied)]
    for mode, lo, hi, _, _, _ in plan:
        if lo == hi:
            raise HarnessError(f"--good and --bad both fall on {points[lo].label}: nothing between them to bisect")
        if lo > hi:
            older, newer = ("--good", "--bad") if mode == "first-bad" else ("--bad", "--good")
            other = (
                "use --find-fix to find when it was fixed"
                if mode == "first-bad"
                else "drop --find-fix to find when it broke"
            )
            raise HarnessError(f"{older} {points[lo].key} must be older than {newer} {points[hi].key}; {other}")

    kit = _probe_kit(request, oracle, index, exclude_newer)
    _, base, overlays, companions = kit
    config = {
        "packages": list(request.packages),
        "by_date": request.by_date,
        "oracle": oracle.describe(),
        "with": list(request.companions),
        "cell": request.cell,
        "base": base.python,
        "import_check": list(request.import_check),
    }
    bisection = open_bisection(
        canonicalize_name("-".join(request.packages)),
        config,
        points,
        prober(oracle, overlays, companions),
        resume=request.resume,
        companions=companions,
    )
    reporter = bisection.reporter
    reporter.header(
        list(request.packages),
        points,
        total,
        request.by_date,
        oracle.describe(),
        f"{base.python} (python {base.version})",
        bisection.log,
    )

    started = time.monotonic()
    outcomes = []
    try:
        for mode, lo, hi, old, lo_implied, hi_implied in plan:
            reporter.search(mode.replace("-", " "), points[lo], points[hi], hi - lo + 1)
            outcomes.append((mode, bisection.search(lo, hi, old, lo_implied=lo_implied, hi_implied=hi_implied)))
    except UnjudgedEndpoint as exc:
        raise HarnessError(_crossing_hint(exc, mode, request)) from None
    except KeyboardInterrupt:
        print("\n")
        for _, outcome in outcomes:
            reporter.outcome(" + ".join(request.packages), outcome, bisection.runs, request.by_date)
        good, bad = _judged_endpoints(bisection, mode)
        reporter.command(
            f"interrupted during the {mode.replace('-', ' ')} search; continue with",
            request.command(good, bad, mode, points[0].key, points[-1].key),
        )
        return 130

    status = 0
    print()
    for mode, outcome in outcomes:
        reporter.outcome(" + ".join(request.packages), outcome, bisection.runs, request.by_date)
        if outcome.first_new and outcome.last_old:
            reporter.command("to re-check this answer", request.command(*_answer_ends(outcome), mode))
        print()
        status = max(status, 1 if outcome.ambiguous else 0)
    reporter.skipped(bisection.skips(), sum(len(o.probed) for _, o in outcomes), any(o.ambiguous for _, o in outcomes))
    _totals(overlays, bisection, started)
    if request.record and status == 0:
        _record(request, oracle, outcomes)
    if repo is not None:
        adjacent = [
            (mode, o.last_old.key, o.first_new.key)
            for mode, o in outcomes
            if o.first_new and o.last_old and not o.ambiguous
        ]
        if adjacent:
            print("continuing below the releases, over the commits between them:")
            status = max(status, _commit_searches(request, repo, history, adjacent, kit))
    return status


def _installed_by_probe(request: BisectRequest) -> set[str]:
    """The packages each probe installs: the bisected ones, the companions, a cell's companion pins."""
    names = [
        *request.packages,
        *(re.split(r"==|@", text)[0] for text in request.companions),
        *(CELL_COMPANIONS if request.cell else ()),
    ]
    return {canonicalize_name(name) for name in names}


def _probe_kit(request: BisectRequest, oracle: Oracle, index, exclude_newer) -> tuple:
    """What every probe of this bisect shares, releases and commits alike: the oracle, the base and its
    overlays, the companions."""
    base = Base.of(request.python)
    overlays = Overlays(
        base,
        find_links=request.find_links,
        no_index=request.no_index,
        offline=request.offline,
        import_check=request.import_check,
    )
    return oracle, base, overlays, companion_source(request, index, exclude_newer)


def _crossing_hint(exc: UnjudgedEndpoint, mode: str, request: BisectRequest) -> str:
    """A named endpoint that could not be judged: a range bound in its place lets the search cross it."""
    if request.find_range:
        return str(exc)
    named = (
        ("--good" if mode == "first-bad" else "--bad") if exc.older else ("--bad" if mode == "first-bad" else "--good")
    )
    bound = "--range-start" if exc.older else "--range-end"
    key = exc.point.key
    return (
        f"cannot judge endpoint {exc.point.label}: {exc.run.reason}; fix what the probe lacks, choose another "
        f"endpoint, or name it {bound} {key} instead of {named} {key} to let the search cross releases that "
        "cannot be judged"
    )


def _answer_ends(outcome) -> tuple[str, str]:
    """(good, bad) of a found transition."""
    if outcome.old == GOOD:
        return outcome.last_old.key, outcome.first_new.key
    return outcome.first_new.key, outcome.last_old.key


def _totals(overlays: Overlays, bisection: Bisection, started: float) -> None:
    print(
        f"environments: {overlays.installed} installed, {overlays.reused} reused; oracle runs: {bisection.oracle_runs}"
        + (f" (+{bisection.reused_runs} from the log)" if bisection.reused_runs else "")
        + f"; {time.monotonic() - started:.0f}s"
    )


def _commit_searches(request: BisectRequest, repo: Repo, history, pairs: list[tuple[str, str, str]], kit: tuple) -> int:
    """Per (mode, old end, new end): the commits between them in ``repo``, searched with the bisect's oracle."""
    package = request.package
    releases = {r.version for r in history}
    oracle, base, overlays, companions = kit
    status = 0
    for mode, old_end, new_end in pairs:
        (old, old_how), (new, new_how) = (endpoint(repo, package, v, releases) for v in (old_end, new_end))
        if old.sha == new.sha:
            raise HarnessError(
                f"{old_end} and {new_end} are the same commit {old.sha[:12]}: nothing between them to bisect"
            )
        points = points_between(repo, package, old, new)
        config = {
            "packages": list(request.packages),
            "commits": str(repo.path),
            "oracle": oracle.describe(),
            "with": list(request.companions),
            "cell": request.cell,
            "base": base.python,
            "import_check": list(request.import_check),
        }
        bisection = open_bisection(
            f"{canonicalize_name(package)}-commits",
            config,
            points,
            prober(oracle, overlays, companions),
            resume=request.resume,
            companions=companions,
        )
        reporter = bisection.reporter
        reporter.header(
            [package],
            points,
            len(points),
            False,
            oracle.describe(),
            f"{base.python} (python {base.version})",
            bisection.log,
        )
        print(f"{old_how}\n{new_how}\nclone: {repo.location}")
        started = time.monotonic()
        old_state = GOOD if mode == "first-bad" else BAD
        reporter.search(f"{mode.replace('-', ' ')} commit", points[0], points[-1], len(points))
        try:
            outcome = bisection.search(0, len(points) - 1, old_state, lo_implied=False, hi_implied=False)
        except KeyboardInterrupt:
            good, bad = _judged_endpoints(bisection, mode)
            ends = (old, new) if mode == "first-bad" else (new, old)
            reporter.command(
                "\ninterrupted; continue with", request.command(good or ends[0].sha[:12], bad or ends[1].sha[:12], mode)
            )
            return 130
        print()
        reporter.outcome(package, outcome, bisection.runs, False)
        for line in answer(repo, outcome):
            print(line)
        if outcome.first_new and outcome.last_old:
            reporter.command("to re-check this answer", request.command(*_answer_ends(outcome), mode))
        reporter.skipped(bisection.skips(), len(outcome.probed), bool(outcome.ambiguous))
        _totals(overlays, bisection, started)
        status = max(status, 1 if outcome.ambiguous or not outcome.first_new else 0)
    return status


def _judged_endpoints(bisection: Bisection, mode: str) -> tuple[str | None, str | None]:
    """(--good, --bad) for a continuation: the narrowest releases this search judged, never a skipped one."""
    old = bisection.judged_old.key if bisection.judged_old else None
    new = bisection.judged_new.key if bisection.judged_new else None
    return (old, new) if mode == "first-bad" else (new, old)


def _record(request: BisectRequest, oracle: Oracle, outcomes) -> None:
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
    evidence = (
        f"qvl-harness bisect {datetime.now(timezone.utc):%Y-%m-%d} over PyPI upload order, {probes} probes: "
        f"{'; '.join(found)}; oracle: {oracle.describe()}"
    )
    asked = "find-range" if request.find_range else "first-fixed" if request.find_fix else "first-bad"
    command = shlex.join(
        request.command(request.good, request.bad, asked, request.range_start, request.range_end, resume=False)
    )
    entry = registry.write_range(request.record, package=request.package, evidence=evidence, found_by=command, **bounds)
    print(f"recorded in {registry.REGISTRY.name}: {entry.id} affected {entry.affected}")
