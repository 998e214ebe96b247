"""Commands about known failures: the registry, and bisecting releases for one."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

from harness.bisection import run
from harness.bisection.request import DEFAULT_ORACLE_TIMEOUT, BisectRequest
from harness.core.errors import HarnessError
from harness.env.matrix import load_matrix
from harness.failures import match, registry


def register(sub) -> None:
    p = sub.add_parser(
        "known",
        help="the known-failure registry: ids, ranges, conditions, messages, evidence",
        description='Examples: qvl-harness known; qvl-harness known match "PASTED ERROR" --stack '
        '"unsloth==2025.1.5 unsloth-zoo==2025.1.3 transformers==4.48.0"',
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_known)
    actions = p.add_subparsers(dest="action")
    m = actions.add_parser(
        "match",
        help="which known failure a pasted error or symptom is, and whether a stack has it",
        description='Example: qvl-harness known match "a shirt with geometric patterns" --stack '
        '"unsloth==2024.11.11 unsloth-zoo==2024.11.8 transformers==4.46.3". Exit 1 when nothing matches.',
    )
    m.add_argument("text", help="the error message, traceback or description ('-' reads it from stdin)")
    m.add_argument("--stack", help='the user\'s versions: "unsloth==X unsloth-zoo==Y transformers==Z"')
    m.set_defaults(func=cmd_match)
    _register_bisect(sub)


def cmd_known(args) -> int:
    failures = list(registry.load_registry().values())
    if args.json:
        print(json.dumps([registry.as_json(f) for f in failures], indent=2))
        return 0
    print("\n\n".join("\n".join(registry.describe(f)) for f in failures))
    return 0


def cmd_match(args) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise HarnessError("known match: the text is empty; paste the error message or describe the symptom")
    stack = match.parse_stack(args.stack) if args.stack else None
    known = registry.load_registry()
    found = match.match(text, known, stack)
    if not found:
        print(
            f"no known failure matches this text (the registry knows {', '.join(known)}); if it reproduces, "
            "it is a new one: README, 'Adding a known failure'"
        )
        return 1
    matrix = load_matrix()
    print("\n".join(match.explain(found[0], matrix, stack)))
    for other in found[1:]:
        print(f"also matches {other.failure.id} ({other.matched!r}): {other.verdict}: {other.why}")
    return 0


def _register_bisect(sub) -> None:
    p = sub.add_parser(
        "bisect",
        help="find the first release that broke (or fixed) something",
        description="Bisect a package's releases (by upload time) with an oracle: exit 0 good, 1-127 bad, 125 skip. "
        "Example: qvl-harness bisect unsloth --find-fix --bad 2024.11.11 --good 2025.1.6 --with unsloth-zoo@same-day "
        "--base-python .tox/cell-u2024-11-11/bin/python --oracle-pytest "
        "'suites/test_garbage_output.py::test_captions_match_goldens[reported]'",
    )
    p.add_argument(
        "packages",
        nargs="+",
        metavar="PACKAGE",
        help="the package whose releases are bisected (several with --by-date)",
    )
    p.add_argument("--good", metavar="VERSION", help="a good release (a date with --by-date, a commit with --commits)")
    p.add_argument("--bad", metavar="VERSION", help="a bad release (a date with --by-date, a commit with --commits)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--find-fix", action="store_true", help="the older endpoint is bad: find the first good release after it"
    )
    mode.add_argument(
        "--find-range",
        action="store_true",
        help="given only --bad: find the first bad release before it and the first fixed one after it",
    )
    p.add_argument(
        "--by-date",
        action="store_true",
        help="bisect the whole stack of PACKAGEs by date: each probe pins every package to its newest release "
        "at that moment (uv's --exclude-newer choice); --good/--bad/--range-* take dates",
    )
    p.add_argument("--range-start", metavar="VERSION", help="oldest candidate (default: the first release)")
    p.add_argument("--range-end", metavar="VERSION", help="newest candidate (default: the latest release)")
    p.add_argument("--exclude-newer", metavar="DATE", help="ignore releases uploaded after DATE (e.g. 2025-02-01)")
    p.add_argument("--pre", action="store_true", help="include pre-releases")
    oracle = p.add_mutually_exclusive_group(required=True)
    oracle.add_argument(
        "--oracle-pytest",
        metavar="SELECTION",
        help='pytest arguments run from the checkout, e.g. "suites/test_404_missing_repo.py -k installed"',
    )
    oracle.add_argument(
        "--oracle-cmd",
        metavar="COMMAND",
        help="a shell command run with the probe venv first on PATH ($QVL_PROBE_PYTHON)",
    )
    p.add_argument(
        "--oracle-timeout",
        type=float,
        default=DEFAULT_ORACLE_TIMEOUT,
        metavar="SECONDS",
        help="a probe running longer is skipped",
    )
    p.add_argument(
        "--with",
        dest="companions",
        action="append",
        default=[],
        metavar="REQ",
        help="also install PKG==VERSION in every probe, or PKG@same-day: its newest release of the probed release's day",  # noqa: E501 (a message kept whole, to be found by grep)
    )
    p.add_argument(
        "--cell", help="take companion pins (unsloth, unsloth-zoo, transformers, peft, trl) from this matrix cell"
    )
    p.add_argument("--base-python", help="the environment probes sit on (default: this python)")
    p.add_argument(
        "--import-check",
        action="append",
        default=[],
        metavar="MODULE",
        help="a probe whose MODULE does not import is skipped",
    )
    p.add_argument(
        "--find-links", action="append", default=[], metavar="DIR", help="extra wheel directory for installs"
    )
    p.add_argument("--no-index", action="store_true", help="install only from --find-links")
    p.add_argument("--offline", action="store_true", help="no network: cached release data, cached or local wheels")
    p.add_argument(
        "--release-data", type=Path, metavar="DIR", help="read <DIR>/<package>.json (PyPI JSON format) instead of PyPI"
    )
    p.add_argument(
        "--commits",
        metavar="REPO",
        help="a local clone (or bundle) of the package: when the release search ends "
        "with two adjacent releases, go on over the commits between them; or name two commits with --good/--bad",
    )
    p.add_argument(
        "--resume", action="store_true", help="answer from the probes logged by earlier runs of the same bisect"
    )
    p.add_argument(
        "--record", metavar="FAILURE_ID", help="write the found range and evidence into fixtures/known_failures.toml"
    )
    p.set_defaults(func=cmd_bisect)


def cmd_bisect(args) -> int:
    # Started in the background (`nohup ... &`), a process inherits SIGINT ignored; Ctrl-C must still stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asked = {f.name: getattr(args, f.name) for f in fields(BisectRequest)}
    return run.bisect(BisectRequest(**{name: tuple(v) if isinstance(v, list) else v for name, v in asked.items()}))
