"""The `qvl-harness` command line: it parses arguments and dispatches to the library; bad input ends
in one line on stderr and exit status 2 (a usage error, a HarnessError, a file the system refuses, the
stack missing outside a cell env); a reader that goes away (`| head`) ends it quietly, as Unix tools end."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys

from harness.cli import data, env, failures, families, report
from harness.cli.args import OneLineParser
from harness.core import auto_updates, cellenv, progress
from harness.core.errors import HarnessError

GROUPS = (env, data, failures, families, report)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="qvl-harness", description="Regression and compatibility harness for 4-bit Qwen2-VL loading with Unsloth."
    )
    parser.set_defaults(argv=[])  # main() fills it: the command line a hint repeats
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    auto_updates.disable()  # releases it imports or runs, and the probes and re-runs inheriting it
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        with progress.on_stderr():
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at interpreter exit
            return status
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        return _leave_quietly()
    except HarnessError as exc:
        return _error(str(exc))
    except ModuleNotFoundError as exc:
        line = cellenv.missing_stack(exc, argv)
        if line is None:
            raise
        return _error(line)
    except OSError as exc:  # a file or folder the user named, refused by the system
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        return _error(f"{names}: {exc.strerror}" if names and exc.strerror else str(exc) or type(exc).__name__)


def _error(line: str) -> int:
    print(f"qvl-harness: error: {line}", file=sys.stderr)
    return 2


def _stdout_closed() -> bool:
    """Whether stdout's reader went away, as opposed to a broken pipe to a subprocess or a socket (a bug)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll here, or stdout is no file
        return False


def _leave_quietly() -> int:
    """Exit like a Unix tool killed by SIGPIPE (status 141), without the interpreter's flush of what stdout
    still buffers raising again at exit. SIGPIPE itself stays ignored: restoring its default would kill the
    local hub whenever a client hangs up mid-reply."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
