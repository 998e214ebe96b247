"""Probes and installs of the real release bisects, first run (empty harness cache) and repeat run.

Needs the network (PyPI: release data and wheels). Each bisect starts from one known-bad release
of the seed reports and no range: `--find-range` for 404 (the first release that forces the
missing 72B repo and the first that stops), `--find-fix` for dtype-grad (the first unsloth-zoo
release with the fix). A bisect whose suite is not in the checkout is left out.

    .venv/bin/python benchmarks/bisect_probes.py [--only 404] [--cache DIR]

Targets: each search at most ceil(log2 N)+2 probes; the repeat run installs nothing.
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

REPO_ROOT = Path(__file__).resolve().parent.parent
BISECTS = {
    "404": [
        "unsloth",
        "--find-range",
        "--bad",
        "2024.12.11",
        "--oracle-pytest",
        "suites/test_404_missing_repo.py -k installed",
    ],
    "dtype-grad": [
        "unsloth-zoo",
        "--find-fix",
        "--bad",
        "2025.1.3",
        "--oracle-pytest",
        "suites/test_dtype_grad.py -k installed",
    ],
}


def run_bisect(argv: list[str], env: dict) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "bisect", *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        print("    " + line, end="", flush=True)
        lines.append(line)
    return proc.wait(), "".join(lines), time.monotonic() - started


def summarize(output: str) -> dict:
    found = re.findall(r"^(first bad|first fixed): (\S+)", output, re.M)
    found += [("note", n) for n in re.findall(r"^((?:no \w+ release|not \w+ yet).*)$", output, re.M)]
    env = re.search(r"environments: (\d+) installed, (\d+) reused; oracle runs: (\d+)", output)
    return {
        "probes": [
            (int(p), int(b))
            for p, b in re.findall(r"^probes: (\d+) \(at most ceil\(log2 \d+\)\+2 = (\d+)\)", output, re.M)
        ],
        "installed": int(env.group(1)) if env else None,
        "reused": int(env.group(2)) if env else None,
        "oracle_runs": int(env.group(3)) if env else None,
        "found": found,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BISECTS), help="run only these bisects")
    parser.add_argument("--cache", type=Path, help="harness cache to use (default: a new empty one)")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.mkdtemp(prefix="qvl-bisect-bench-"))
    env = {**os.environ, "QVL_CACHE": str(cache)}
    rows, failed = [], False
    for name in args.only or BISECTS:
        argv = BISECTS[name]
        suite = argv[argv.index("--oracle-pytest") + 1].split()[0]
        if not (REPO_ROOT / suite).is_file():
            print(f"{name}: {suite} is not in this checkout; left out")
            continue
        for attempt in ("first", "repeat"):
            print(f"== {name}, {attempt} run: qvl-harness bisect {' '.join(argv)}")
            status, output, seconds = run_bisect(argv, env)
            summary = summarize(output)
            within = all(p <= b for p, b in summary["probes"])
            failed |= status != 0 or not within or (attempt == "repeat" and summary["installed"] != 0)
            rows.append((name, attempt, status, summary, seconds))
    print(f"\ncache: {cache}")
    print(
        f"{'bisect':11} {'run':7} {'exit':>4} {'probes (bound)':>16} {'installed':>9} {'reused':>6} {'oracle runs':>11} {'seconds':>8}  found"  # noqa: E501 (a message kept whole, to be found by grep)
    )
    for name, attempt, status, s, seconds in rows:
        probes = ", ".join(f"{p} ({b})" for p, b in s["probes"])
        found = "; ".join(f"{k}: {v}" for k, v in s["found"])
        print(
            f"{name:11} {attempt:7} {status:>4} {probes:>16} {s['installed']!s:>9} {s['reused']!s:>6} {s['oracle_runs']!s:>11} {seconds:>8.0f}  {found}"  # noqa: E501 (a message kept whole, to be found by grep)
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
