"""Benchmark: wall time of the CPU suite, and of creating one matrix cell's env with uv vs pip.

    python benchmarks/env_and_suite.py [--cell canary] [--skip-suite]

Envs are built in a temporary directory with each tool's cache as it is (a warm cache is the
usual case on a CI machine; pass --cold to give each tool an empty cache).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.env.matrix import load_matrix

LOCAL_WHEELS = "/opt/wheels"


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def build_env(tool: str, cell, root: Path, cold: bool) -> float:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    if os.path.isdir(LOCAL_WHEELS):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"] = LOCAL_WHEELS
    if cold:
        env["UV_CACHE_DIR"] = env["PIP_CACHE_DIR"] = str(root / f"{tool}-cache")
    venv = root / tool
    python = venv / "bin" / "python"
    if tool == "uv":
        steps = [
            ["uv", "venv", "-q", "--python", sys.executable, str(venv)],
            ["uv", "pip", "install", "-q", "--python", str(python), *cell.companions()],
            ["uv", "pip", "install", "-q", "--python", str(python), "--no-deps", *cell.code_under_test()],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "-q", *cell.companions()],
            [str(python), "-m", "pip", "install", "-q", "--no-deps", *cell.code_under_test()],
        ]
    return sum(timed(step, env) for step in steps)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cell", default="canary")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--skip-suite", action="store_true")
    args = parser.parse_args()
    cell = load_matrix().cell(args.cell)
    rows = []
    if not args.skip_suite:
        rows.append(
            (
                "CPU suite (pytest tests suites)",
                timed([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "tests", "suites"], dict(os.environ)),
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        for tool in ("uv", "pip"):
            rows.append((f"env for cell {cell.name} with {tool}", build_env(tool, cell, Path(tmp), args.cold)))
    for name, seconds in rows:
        print(f"{name:40} {seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
