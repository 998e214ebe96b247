"""Benchmark: where the GPU main job's wall time goes, per phase and per test module.

    python benchmarks/gpu_phases.py [pytest args...]   (in the gpu env on a CUDA machine; default: tests suites)
    python benchmarks/gpu_phases.py --tox               (`tox -e gpu` itself: install and fetch timed too)
    python benchmarks/gpu_phases.py --log GPU.LOG       (the table from a `tox -e gpu` log already written)
    python benchmarks/gpu_phases.py --timed-log LOG [RESULTS.json]
        (a `.ci/gpu-offline` log whose every line starts with the seconds since the command began, as README's
        "Where the time goes" writes it: install and fetch, workers, builds, each worker's end; with the run's
        results file, each test module's share of the worker seconds)

In the env: the unsloth import and one FastVisionModel 4-bit load are timed in this process (a fresh
interpreter, so the import is cold), then the tests run as `tox -e gpu` runs them (`pytest --require-gpu -n
auto --dist loadgroup`) in a child with a junit xml; printed: each phase (the builds beside the workers, the
tests) and each test module's share of the workers' time. With --tox or --log, fresh_ci's per-phase table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fresh_ci  # noqa: E402
import phases  # noqa: E402

DURATIONS = {"PYTEST_ADDOPTS": "--durations=0 --durations-min=0"}


def through_tox() -> int:
    run = subprocess.run(["tox", "-e", "gpu"], capture_output=True, text=True, env={**os.environ, **DURATIONS})
    log = run.stdout + run.stderr
    Path("gpu-phases.log").write_text(log)
    fresh_ci.report(log, top=15)
    print(f"exit {run.returncode}; log: gpu-phases.log")
    return run.returncode


def in_this_env(pytest_args: list[str]) -> int:
    from harness.pytest import hermetic

    hermetic.isolate_environment()
    start = time.perf_counter()
    from unsloth import FastVisionModel

    imported = time.perf_counter()
    from harness.lab import tinymodel

    model, _ = FastVisionModel.from_pretrained(str(tinymodel.build()), load_in_4bit=True)
    loaded = time.perf_counter()
    junit = Path(tempfile.mkdtemp(prefix="qvl-gpu-phases-")) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "--require-gpu", "-n", "auto", "--dist", "loadgroup", "-p", "no:warnings"]
    run = subprocess.run(
        [*cmd, f"--junit-xml={junit}", *(pytest_args or ["tests", "suites"])], capture_output=True, text=True
    )
    done = time.perf_counter()
    lines = (run.stdout + run.stderr).splitlines()
    print("\n".join(lines[-3:]))
    print(f"unsloth import                {imported - start:7.1f} s")
    print(f"FastVisionModel load, 4-bit   {loaded - imported:7.1f} s  (tiny checkpoint from the cache)")
    for phase, seconds in phases.builds(lines).items():
        print(f"{phase}  {seconds:7.1f} s")
    print(f"pytest (exit {run.returncode}), wall          {done - loaded:7.1f} s")
    phases.print_shares("test modules (worker seconds)", phases.modules_from_junit(junit), top=20)
    return run.returncode


RESULT = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] [A-Z]+ ")  # pytest -v's line as a worker's test ends


def timed_log(log: Path, results: Path | None) -> None:
    stamped = [
        (int(second), text)
        for second, _, text in (line.partition(" ") for line in log.read_text(errors="replace").splitlines())
        if second.isdigit()
    ]
    if not stamped:
        sys.exit(f"gpu_phases: {log}: no line starts with the seconds since the command began")
    first = {}
    for second, text in stamped:
        for mark, key in (("test session starts", "pytest"), ("created: ", "workers")):
            if mark in text:
                first.setdefault(key, second)
    ends = {found.group(1): second for second, text in stamped if (found := RESULT.match(text))}
    print(f"install and fetch             0-{first.get('pytest', '?')} s")
    print(f"workers created               {first.get('workers', '?')} s")
    for phase, seconds in phases.builds([text for _, text in stamped]).items():
        print(f"{phase}  {seconds:.0f} s")
    if ends:
        print(f"workers done                  {min(ends.values())}-{max(ends.values())} s ({len(ends)} workers)")
    print(f"last line                     {stamped[-1][0]} s: {stamped[-1][1][:120]}")
    if results:
        seconds = defaultdict(float)
        for test in json.loads(results.read_text())["tests"]:
            seconds[test["test"].split("::")[0]] += test["seconds"]
        phases.print_shares("test modules (worker seconds)", dict(seconds), top=15)


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--timed-log"]:
        paths = [Path(a) for a in args[1:]]
        if not 1 <= len(paths) <= 2 or not all(p.is_file() for p in paths):
            sys.exit(f"gpu_phases: --timed-log needs a log file and at most a results file, got {args[1:]}")
        timed_log(paths[0], paths[1] if len(paths) == 2 else None)
        return 0
    if args[:1] == ["--tox"]:
        return through_tox()
    if args[:1] == ["--log"]:
        if len(args) != 2 or not Path(args[1]).is_file():
            sys.exit(f"gpu_phases: --log needs one tox -e gpu log file, got {args[1:]}")
        fresh_ci.report(Path(args[1]).read_text(errors="replace"), top=15)
        return 0
    return in_this_env(args)


if __name__ == "__main__":
    sys.exit(main())
