"""Commands about run reports."""

from __future__ import annotations

from pathlib import Path

from harness.report import html


def register(sub) -> None:
    reports = sub.add_parser("report", help="HTML run reports").add_subparsers(dest="action", required=True)
    p = reports.add_parser("build", help="render results-*.json files (pytest --report-dir) into one HTML file",
                           description="Example: qvl-harness report build reports/results-*.json --out report.html")
    p.add_argument("results", nargs="+", type=Path, help="results files, one per cell")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="the HTML file to write (default: report.html)")
    p.set_defaults(func=cmd_build)


def cmd_build(args) -> int:
    print(html.render(args.results, args.out))
    return 0
