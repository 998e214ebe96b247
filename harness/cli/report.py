"""Commands about runs: the HTML report, the comparison with the previous run, and the nightly's triage."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from harness.core.errors import HarnessError
from harness.env import pypi
from harness.env.overlay import Base, Overlays
from harness.nightly import diff, triage
from harness.report import html, markdown


def register(sub) -> None:
    reports = sub.add_parser("report", help="HTML run reports and run-to-run comparison").add_subparsers(
        dest="action", required=True
    )
    p = reports.add_parser(
        "build",
        help="render results-*.json files (pytest --report-dir) into one HTML file",
        description="Example: qvl-harness report build reports/results-*.json --previous last-night/ --out report.html",
    )
    p.add_argument("results", nargs="+", type=Path, help="results files, one per cell")
    p.add_argument(
        "--out", type=Path, default=Path("report.html"), help="the HTML file to write (default: report.html)"
    )
    p.add_argument(
        "--previous",
        type=Path,
        metavar="PATH",
        help="the previous run's results file or folder: the report leads with what changed since",
    )
    p.set_defaults(func=cmd_build)

    p = reports.add_parser(
        "diff",
        help="what changed since the previous run: new failures, fixed, still failing, flaky, "
        "new and removed tests, stack changes",
        description="Example: qvl-harness report diff last-night/ reports/ --markdown summary.md. "
        "Exit 1 when there is a new failure.",
    )
    p.add_argument("previous", type=Path, help="the previous run: a results file or a folder of results-*.json")
    p.add_argument("current", type=Path, help="this run: a results file or a folder of results-*.json")
    p.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the Markdown summary to FILE ('-' for stdout only)"
    )
    p.add_argument("--json", action="store_true", help="every change as JSON instead of the summary")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser(
        "triage",
        help="re-run this run's new failures to rule out flakes, then bisect what changed "
        "between the two runs' stacks for the first bad release",
        description="Run it in the cell's environment (tox exec -e cell-NAME -- qvl-harness triage ...). "
        "Example: qvl-harness triage --previous last-night/ --current reports/ --budget 1800. "
        "Exit 1 when a re-run or a probe crashed and a new failure could not be judged.",
    )
    p.add_argument("--previous", type=Path, required=True, help="the previous run's results file or folder")
    p.add_argument(
        "--current", type=Path, required=True, help="this run's results file or folder (its triage is written into it)"
    )
    p.add_argument(
        "--cell", default=os.environ.get("QVL_CELL"), help="the cell to triage (default: $QVL_CELL, or the only one)"
    )
    p.add_argument("--reruns", type=int, default=3, help="re-runs of each new failure (default 3)")
    p.add_argument(
        "--budget", type=float, default=1800, metavar="SECONDS", help="time for the whole triage (default 1800)"
    )
    p.add_argument(
        "--oracle-timeout", type=float, default=900, metavar="SECONDS", help="one run of one test (default 900)"
    )
    p.add_argument("--base-python", default=sys.executable, help="the cell's environment (default: this python)")
    p.add_argument(
        "--release-data", type=Path, metavar="DIR", help="read <DIR>/<package>.json (PyPI JSON format) instead of PyPI"
    )
    p.add_argument(
        "--find-links", action="append", default=[], metavar="DIR", help="extra wheel directory for installs"
    )
    p.add_argument("--no-index", action="store_true", help="install only from --find-links")
    p.add_argument("--offline", action="store_true", help="no network: cached release data, cached or local wheels")
    p.set_defaults(func=cmd_triage)


def cmd_build(args) -> int:
    print(html.render(args.results, args.out, previous=args.previous))
    return 0


def cmd_diff(args) -> int:
    comparison = diff.compare(diff.load_runs(args.previous), diff.load_runs(args.current))
    if args.json:
        print(json.dumps([asdict(c) for c in comparison.changes], indent=2))
    else:
        text = markdown.summary(comparison)
        print(text, end="")
        if args.markdown and str(args.markdown) != "-":
            try:
                args.markdown.write_text(text)
            except OSError as error:
                raise HarnessError(f"--markdown {args.markdown}: cannot write it: {error.strerror}") from None
    return 1 if comparison.of("new failure") else 0


def cmd_triage(args) -> int:
    if args.reruns < 1:
        raise HarnessError("--reruns must be at least 1: a new failure is re-run before anything is bisected")
    previous, current = diff.load_runs(args.previous), diff.load_runs(args.current)
    cell = args.cell or (next(iter(current)) if len(current) == 1 else None)
    if cell is None:
        raise HarnessError(f"{args.current} holds cells {', '.join(current)}: name one with --cell")
    if cell not in current:
        raise HarnessError(f"{args.current} has no results of cell {cell!r} (it has {', '.join(current) or 'none'})")
    if cell not in previous:
        print(f"no previous run of cell {cell} in {args.previous}: nothing to compare with, nothing to triage")
        return 0
    index = pypi.DirectoryIndex(args.release_data) if args.release_data else pypi.PyPIIndex(offline=args.offline)
    overlays = Overlays(
        Base.of(args.base_python), find_links=args.find_links, no_index=args.no_index, offline=args.offline
    )
    settings = triage.Settings(args.reruns, args.budget, args.oracle_timeout, args.base_python, overlays, index)
    path = args.current / f"results-{cell}.json" if args.current.is_dir() else args.current
    record = triage.Triage(previous[cell], current[cell], path, settings).run()
    found = [c for c in record["culprits"] if c["status"] == "found"]
    unjudged = [c for c in record["culprits"] if c["status"] == triage.COULD_NOT_JUDGE]
    print(
        f"triage written into {path}: {len(record['reruns'])} re-checked, "
        f"{sum(bool(diff.PASSING & set(r)) for r in record['reruns'].values())} flaky, {len(found)} culprit(s) found, "
        f"{len(unjudged)} could not be judged in {record['seconds']:.0f}s"
        + "".join(f"\n  first bad: {c['first_bad']} for {', '.join(c['tests'])}" for c in found)
        + "".join(f"\n  could not judge {', '.join(c['tests'])}: {c['note']}" for c in unjudged)
    )
    return 1 if unjudged else 0
