"""Benchmark: `.ci/run` as CI meets it, from a new clone with an empty harness cache, timed per env and phase.

    python benchmarks/fresh_ci.py [--keep] [--top N]     (pip's and uv's package caches stay as they are)
    python benchmarks/fresh_ci.py --log CI.LOG [--top N]  (the same table from a log already written)

Clones this checkout's HEAD into a temporary folder and runs `.ci/run` there with QVL_CACHE in a new
temporary folder and pytest's --durations=0 (PYTEST_ADDOPTS, passed through by tox.ini). Per tox env it
prints the phases: install (venv and companions, then the code under test), fetch (release wheels), the
builds and trainings inside pytest, pytest as a whole, the tally; then the share of each test module.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import phases  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV_STEP = re.compile(r"^([\w.-]+): (?:commands|commands_pre|install_deps|install_package)\S*> ")
SUMMARY = re.compile(r"=+ (.*? in [\d.]+s.*?) =+$")
# tox's closing lines: "  cell-x: OK (37.48=setup[1.92]+cmd[0.16,0.40,34.99] seconds)"
TOX_DONE = re.compile(r"^  congratulations :\) \(([\d.]+) seconds\)", re.M)
DONE = re.compile(r"^\s+([\w.-]+): (OK|FAIL\w*)[^(]*\(([\d.]+)=setup\[([\d.]+)\]\+cmd\[([\d.,]+)\]")


def per_env(log: str) -> dict[str, dict]:
    """Per tox env: its lines, status, seconds, phases and the last pytest summary line."""
    rows, env = {}, None
    for line in log.splitlines():
        step = ENV_STEP.match(line)
        if step:
            env = step.group(1)
        done = DONE.match(line)
        if done:
            name, status, total, setup, commands = done.groups()
            steps = [float(c) for c in commands.split(",")]
            # commands_pre: the code under test, the release wheels; then pytest (check has one command)
            pre_install, fetch, *tests = steps if len(steps) == 3 else (0.0, 0.0, *steps)
            rows.setdefault(name, {"lines": []}).update(
                status=status, seconds=float(total), install=float(setup) + pre_install, fetch=fetch, pytest=sum(tests)
            )
            continue
        if env:
            row = rows.setdefault(env, {"lines": []})
            row["lines"].append(line)
            summary = SUMMARY.search(line)
            if summary:
                row["tests"] = summary.group(1)
    return rows


def report(log: str, top: int) -> None:
    rows = per_env(log)
    print(f"{'env':20} {'status':6} {'total':>6} {'install':>7} {'fetch':>5} {'builds':>6} {'pytest':>6}  tests")
    trainings = 0
    for env, row in rows.items():
        made = phases.builds(row["lines"])
        trainings += phases.trainings(row["lines"])
        timed = [
            f"{row[k]:{w}.0f}" if k in row else f"{'?':>{w}}" for k, w in (("seconds", 6), ("install", 7), ("fetch", 5))
        ]
        timed += [f"{sum(made.values()):6.0f}", f"{row.get('pytest', 0):6.0f}"]
        print(f"{env:20} {row.get('status', '?'):6} {' '.join(timed)}  {row.get('tests', '')}")
    for env, row in rows.items():
        for phase, seconds in phases.builds(row["lines"]).items():
            print(f"  {env}: {phase}: {seconds:.0f} s")
        phases.print_shares(env, phases.modules_from_durations(row["lines"]), top)
    # envs side by side can both find it missing: one trains it under its lock while the other waits, and both say so
    print(f"envs that trained the tiny captioner or waited for its training: {trainings}")
    # each tox command's own wall: `tox -m cpu -p auto` runs its envs side by side, so theirs overlap
    walls = [f"{float(m.group(1)):.0f} s" for m in TOX_DONE.finditer(log)]
    print(f"tox commands (check, then the cpu envs side by side): {', '.join(walls) or '?'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="read this .ci/run log instead of running CI")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    parser.add_argument("--top", type=int, default=5, help="test modules shown per env (default 5)")
    args = parser.parse_args()
    if args.log:
        if not args.log.is_file():
            sys.exit(f"fresh_ci: --log {args.log}: no such file")
        report(args.log.read_text(errors="replace"), args.top)
        return 0
    work = Path(tempfile.mkdtemp(prefix="qvl-fresh-ci-"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "clone")], check=True)
    started = time.monotonic()
    run = subprocess.run(
        ["bash", ".ci/run"],
        cwd=work / "clone",
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true", "PYTEST_ADDOPTS": "--durations=0 --durations-min=0"},
    )
    total = time.monotonic() - started
    log = run.stdout + run.stderr
    (work / "ci.log").write_text(log)
    report(log, args.top)
    print(f"total {total:.0f} s, exit {run.returncode}; log: {work / 'ci.log'}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(work / "clone")])
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
