"""`qvl-harness bisect`: arguments, the probe (overlay install + oracle), interrupts and --record."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import sys
import time
from datetime import datetime, timezone

from packaging.utils import canonicalize_name

from harness.bisection.candidates import (
    Point,
    end_of_day,
    index_of,
    stack_points,
    version_points,
)
from harness.bisection.commits import answer, endpoint, points_between
from harness.bisection.engine import Bisection, ProbeLog
from harness.bisection.oracle import BAD, GOOD, SKIP, Oracle, Run
from harness.bisection.output import Reporter, continuation
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.env import pypi
from harness.env.matrix import load_matrix
from harness.env.overlay import Base, Overlays
from harness.releases import code as release_code
from harness.releases.git import Repo

# Companion pins a matrix cell contributes; torch and bitsandbytes always come from the base.
CELL_COMPANIONS = ("unsloth", "unsloth-zoo", "transformers", "peft", "trl")


def companion_source(args, index, exclude_newer):
    """A function giving the companion requirements of a point: fixed pins and same-day picks."""
    fixed, same_day = [], []
    if args.cell:
        cell = load_matrix().cell(args.cell)
        probed = {canonicalize_name(p) for p in args.packages}
        fixed += [f"{p}=={cell.stack[p]}" for p in CELL_COMPANIONS if p in cell.stack and canonicalize_name(p) not in probed]
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
        for name, history in histories.items():
            release = pypi.newest_at(history, end_of_day(point.uploaded))
            if release is None:
                raise HarnessError(f"no {name} release on or before {point.uploaded:%Y-%m-%d}")
            picks.append(release.requirement)
        return fixed + picks

    return companions


def prober(oracle: Oracle, overlays: Overlays, companions=lambda point: []):
    """Install a point (and its companions) into an overlay, fetch the release wheels the suites read, run the oracle."""

    def probe(point: Point) -> Run:
        requirements = [*point.pins, *companions(point)]
        try:
            overlay = overlays.get(requirements)
            if not overlay.error:
                release_code.fetch([r for r in requirements if release_code.is_code_under_test(r)], quiet=True,
                               **overlays.fetch_options)
        except HarnessError as exc:
            return Run(None, SKIP, "", 0.0, str(exc))
        if overlay.error:
            return Run(None, SKIP, "", 0.0, overlay.error)
        return oracle.run(overlay.python, point.label)

    return probe


def run_cli(args) -> int:
    # Started in the background (`nohup ... &`), a process inherits SIGINT ignored; Ctrl-C must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.find_range and (args.good or not args.bad):
        raise HarnessError("--find-range takes one known --bad version and no --good")
    if len(args.packages) > 1 and not args.by_date:
        raise HarnessError("several packages are bisected together only with --by-date")
    if args.record and args.by_date:
        raise HarnessError("--record needs a single-package bisect (a registry range is over one package's versions)")
    args.base_python_given = args.base_python is not None
    args.base_python = args.base_python or sys.executable
    index = pypi.DirectoryIndex(args.release_data) if args.release_data else pypi.PyPIIndex(offline=args.offline)
    exclude_newer = pypi.parse_date(args.exclude_newer) if args.exclude_newer else None
    history = yanked = None
    if args.by_date:
        histories = {p: pypi.history(index, p, exclude_newer=exclude_newer, pre=args.pre) for p in args.packages}
        start = pypi.parse_date(args.range_start) if args.range_start else None
        end = pypi.parse_date(args.range_end) if args.range_end else (exclude_newer or datetime.now(timezone.utc))
        points = stack_points(histories, start, end)
        total = len(points)
    else:
        history = pypi.history(index, args.packages[0], exclude_newer=exclude_newer, pre=args.pre)
        yanked = index.yanked(args.packages[0])
        every = version_points(history)
        first = index_of(every, args.range_start, False, history, yanked) if args.range_start else 0
        last = index_of(every, args.range_end, False, history, yanked) if args.range_end else len(every) - 1
        points, total = every[first:last + 1], len(every)
    repo = None
    if args.commits:
        if args.by_date or args.find_range:
            raise HarnessError("--commits continues a search over one package's releases: not with --by-date or --find-range")
        repo = Repo(args.commits)
        old_end, new_end = (args.bad, args.good) if args.find_fix else (args.good, args.bad)
        if old_end and new_end and not {old_end, new_end} <= {r.version for r in history}:
            # two commits (or a commit and a release) named: search the commits between them directly
            return _commit_searches(args, repo, history, [("first-fixed" if args.find_fix else "first-bad", old_end, new_end)],
                                    _probe_kit(args, index, exclude_newer))
    if len(points) < 2:
        raise HarnessError("fewer than two candidates in range: nothing to bisect")

    def position(value: str | None, default: int) -> tuple[int, bool]:
        return (index_of(points, value, args.by_date, history, yanked), False) if value else (default, True)

    if args.find_range:
        known = index_of(points, args.bad, args.by_date, history, yanked)
        plan = [("first-bad", 0, known, GOOD, True, False), ("first-fixed", known, len(points) - 1, BAD, False, True)]
    elif args.find_fix:
        (lo, lo_implied), (hi, hi_implied) = position(args.bad, 0), position(args.good, len(points) - 1)
        plan = [("first-fixed", lo, hi, BAD, lo_implied, hi_implied)]
    else:
        (lo, lo_implied), (hi, hi_implied) = position(args.good, 0), position(args.bad, len(points) - 1)
        plan = [("first-bad", lo, hi, GOOD, lo_implied, hi_implied)]
    for mode, lo, hi, _, _, _ in plan:
        if lo >= hi:
            older, newer = ("--good", "--bad") if mode == "first-bad" else ("--bad", "--good")
            other = "use --find-fix to find when it was fixed" if mode == "first-bad" else "drop --find-fix to find when it broke"
            raise HarnessError(f"{older} {points[lo].key} must be older than {newer} {points[hi].key}; {other}")

    kit = _probe_kit(args, index, exclude_newer)
    oracle, base, overlays, companions = kit
    config = {"packages": args.packages, "by_date": args.by_date, "oracle": oracle.describe(), "with": args.companions,
              "cell": args.cell, "base": base.python, "import_check": args.import_check}
    session = canonicalize_name("-".join(args.packages)) + "-" + _digest(config)
    log = ProbeLog(cache_dir("bisect") / f"{session}.jsonl", config, args.resume)
    reporter = Reporter(companions)
    bisection = Bisection(points, prober(oracle, overlays, companions), log, reporter)
    reporter.header(args.packages, points, total, args.by_date, oracle.describe(), f"{base.python} (python {base.version})", log)

    started = time.monotonic()
    outcomes = []
    try:
        for mode, lo, hi, old, lo_implied, hi_implied in plan:
            reporter.search(mode.replace("-", " "), points[lo], points[hi], hi - lo + 1)
            outcomes.append((mode, bisection.search(lo, hi, old, lo_implied=lo_implied, hi_implied=hi_implied)))
    except KeyboardInterrupt:
        print("\n")
        for _, outcome in outcomes:
            reporter.outcome(" + ".join(args.packages), outcome, bisection.runs, args.by_date)
        good, bad = _judged_endpoints(bisection, mode)
        reporter.command(f"interrupted during the {mode.replace('-', ' ')} search; continue with",
                         continuation(args, good, bad, mode, points[0].key, points[-1].key))
        return 130

    status = 0
    print()
    for mode, outcome in outcomes:
        reporter.outcome(" + ".join(args.packages), outcome, bisection.runs, args.by_date)
        if outcome.first_new and outcome.last_old:
            good, bad = ((outcome.last_old.key, outcome.first_new.key) if outcome.old == GOOD
                         else (outcome.first_new.key, outcome.last_old.key))
            reporter.command("to re-check this answer", continuation(args, good, bad, mode, None, None))
        print()
        status = max(status, 1 if outcome.ambiguous else 0)
    reporter.skipped(bisection.skips(), sum(len(o.probed) for _, o in outcomes))
    print(f"environments: {overlays.installed} installed, {overlays.reused} reused; oracle runs: {bisection.oracle_runs}"
          + (f" (+{bisection.reused_runs} from the log)" if bisection.reused_runs else "")
          + f"; {time.monotonic() - started:.0f}s")
    if args.record and status == 0:
        _record(args, oracle, outcomes)
    if repo is not None:
        adjacent = [(mode, o.last_old.key, o.first_new.key) for mode, o in outcomes
                    if o.first_new and o.last_old and not o.ambiguous]
        if adjacent:
            print("continuing below the releases, over the commits between them:")
            status = max(status, _commit_searches(args, repo, history, adjacent, kit))
    return status


def _probe_kit(args, index, exclude_newer) -> tuple:
    """What every probe of this bisect shares, releases and commits alike: the oracle, the base and its
    overlays, the companions."""
    oracle = Oracle(pytest_selection=args.oracle_pytest, command=args.oracle_cmd, timeout=args.oracle_timeout)
    base = Base.of(args.base_python)
    overlays = Overlays(base, find_links=args.find_links, no_index=args.no_index, offline=args.offline, import_check=args.import_check)
    return oracle, base, overlays, companion_source(args, index, exclude_newer)


def _commit_searches(args, repo: Repo, history, pairs: list[tuple[str, str, str]], kit: tuple) -> int:
    """Per (mode, old end, new end): the commits between them in ``repo``, searched with the bisect's oracle."""
    package = args.packages[0]
    releases = {r.version for r in history}
    oracle, base, overlays, companions = kit
    status = 0
    for mode, old_end, new_end in pairs:
        (old, old_how), (new, new_how) = (endpoint(repo, package, v, releases) for v in (old_end, new_end))
        points = points_between(repo, package, old, new)
        config = {"packages": args.packages, "commits": str(repo.path), "oracle": oracle.describe(),
                  "with": args.companions, "cell": args.cell, "base": base.python, "import_check": args.import_check}
        log = ProbeLog(cache_dir("bisect") / f"{canonicalize_name(package)}-commits-{_digest(config)}.jsonl", config, args.resume)
        reporter = Reporter(companions)
        bisection = Bisection(points, prober(oracle, overlays, companions), log, reporter)
        reporter.header([package], points, len(points), False, oracle.describe(), f"{base.python} (python {base.version})", log)
        print(f"{old_how}\n{new_how}\nclone: {repo.location}")
        started = time.monotonic()
        old_state = GOOD if mode == "first-bad" else BAD
        reporter.search(f"{mode.replace('-', ' ')} commit", points[0], points[-1], len(points))
        try:
            outcome = bisection.search(0, len(points) - 1, old_state, lo_implied=False, hi_implied=False)
        except KeyboardInterrupt:
            good, bad = _judged_endpoints(bisection, mode)
            ends = (old, new) if mode == "first-bad" else (new, old)
            reporter.command("\ninterrupted; continue with", continuation(args, good or ends[0].sha[:12], bad or ends[1].sha[:12],
                                                                          mode, None, None))
            return 130
        print()
        reporter.outcome(package, outcome, bisection.runs, False)
        for line in answer(repo, outcome):
            print(line)
        if outcome.first_new and outcome.last_old:
            good, bad = ((outcome.last_old.key, outcome.first_new.key) if outcome.old == GOOD
                         else (outcome.first_new.key, outcome.last_old.key))
            reporter.command("to re-check this answer", continuation(args, good, bad, mode, None, None))
        reporter.skipped(bisection.skips(), len(outcome.probed))
        print(f"environments: {overlays.installed} installed, {overlays.reused} reused; oracle runs: {bisection.oracle_runs}"
              + (f" (+{bisection.reused_runs} from the log)" if bisection.reused_runs else "")
              + f"; {time.monotonic() - started:.0f}s")
        status = max(status, 1 if outcome.ambiguous or not outcome.first_new else 0)
    return status


def _judged_endpoints(bisection: Bisection, mode: str) -> tuple[str | None, str | None]:
    """(--good, --bad) for a continuation: the narrowest releases this search judged, never a skipped one."""
    old = bisection.judged_old.key if bisection.judged_old else None
    new = bisection.judged_new.key if bisection.judged_new else None
    return (old, new) if mode == "first-bad" else (new, old)


def _record(args, oracle: Oracle, outcomes) -> None:
    from harness.failures import registry

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
    entry = registry.write_range(args.record, package=args.packages[0], evidence=evidence, found_by=command, **bounds)
    print(f"recorded in {registry.REGISTRY.name}: {entry.id} affected {entry.affected}")


def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
