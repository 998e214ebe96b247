"""The `qvl-harness` command line: it parses arguments and dispatches to the library; bad input ends
in one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys

from harness.cli import data, env, failures, report
from harness.core import progress
from harness.core.errors import HarnessError

GROUPS = (env, data, failures, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvl-harness", description="Regression and compatibility harness for 4-bit Qwen2-VL loading with Unsloth.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        with progress.on_stderr():
            return args.func(args)
    except HarnessError as exc:
        print(f"qvl-harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
