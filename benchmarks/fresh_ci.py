"""Benchmark: `.ci/run` as CI meets it, from a new clone with an empty harness cache, timed per env.

    python benchmarks/fresh_ci.py [--keep]      (pip's and uv's package caches stay as they are)

Clones this checkout's HEAD into a temporary folder, runs `.ci/run` there with QVL_CACHE in a new
temporary folder, and prints per tox env: seconds, and the pytest tally (passed / xfailed /
skipped / failed), then the total wall time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tally(log: str) -> dict[str, str]:
    """Per tox env: the last pytest summary line it printed and its seconds."""
    rows, env = {}, None
    for line in log.splitlines():
        started = re.match(r"^([\w.-]+): commands\[\d+\]> ", line)
        if started:
            env = started.group(1)
        summary = re.search(r"=+ (.*? in [\d.]+s.*?) =+$", line)
        if summary and env:
            rows.setdefault(env, {})["tests"] = summary.group(1)
        done = re.match(r"^\s+([\w.-]+): (OK|FAIL\w*)[^(]*\(([\d.]+)", line)
        if done:
            rows.setdefault(done.group(1), {}).update(status=done.group(2), seconds=done.group(3))
    return rows


def main() -> int:
    keep = "--keep" in sys.argv
    work = Path(tempfile.mkdtemp(prefix="qvl-fresh-ci-"))
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "clone")], check=True)
    started = time.monotonic()
    run = subprocess.run(
        ["bash", ".ci/run"],
        cwd=work / "clone",
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "CI": "true"},
    )
    total = time.monotonic() - started
    log = run.stdout + run.stderr
    (work / "ci.log").write_text(log)
    print(f"{'env':22} {'status':7} {'seconds':>8}  tests")
    for env, row in tally(log).items():
        print(f"{env:22} {row.get('status', '?'):7} {row.get('seconds', '?'):>8}  {row.get('tests', '')}")
    print(f"total {total:.0f} s, exit {run.returncode}; log: {work / 'ci.log'}")
    if not keep:
        subprocess.run(["rm", "-rf", str(work / "clone")])
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
