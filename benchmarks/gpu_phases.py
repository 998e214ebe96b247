"""Benchmark: GPU wall time of the hermetic gpu suite, split into unsloth import, model load and tests.

    python benchmarks/gpu_phases.py [pytest args...]      (on a CUDA machine, in the gpu env)

Import and load are timed in this process (a fresh interpreter, so the import is cold); the tests
run as `pytest --require-gpu ...` in a child process and are timed as a whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from harness.pytest import hermetic

    hermetic.isolate_environment()
    start = time.perf_counter()
    from unsloth import FastVisionModel

    imported = time.perf_counter()
    from harness.lab import tinymodel

    path = tinymodel.build()
    built = time.perf_counter()
    model, _ = FastVisionModel.from_pretrained(str(path), load_in_4bit=True)
    loaded = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "--require-gpu", "-q", "-p", "no:warnings", *sys.argv[1:]]
    tests = subprocess.run(cmd, env=dict(os.environ)).returncode
    done = time.perf_counter()
    print(f"unsloth import                {imported - start:7.1f} s")
    print(f"tiny checkpoint (cache)       {built - imported:7.1f} s")
    print(f"FastVisionModel load, 4-bit   {loaded - built:7.1f} s")
    print(f"tests (pytest, exit {tests})       {done - loaded:7.1f} s")
    return tests


if __name__ == "__main__":
    sys.exit(main())
