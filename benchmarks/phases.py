"""Where a run's time goes, read from what it printed: pytest's --durations lines or a junit xml per test
module, and the harness's build lines (the prebuild's "built once beside ..." and the captioner's training).

Shared by fresh_ci.py and gpu_phases.py, so both print the same table and the next slow module stands out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+([^\s:]+\.py)::")
BUILT = re.compile(r"qvl-harness: built once (?:before|beside) [^,]*, in (\d+)s: (.*)$")
TRAINED = re.compile(r"qvl-harness: training the tiny (?:\S+ )?captioner .*: done in (\d+)s")


def modules_from_durations(lines: list[str]) -> dict[str, float]:
    """Seconds per test module (setup, call and teardown) from `pytest --durations=0` output."""
    seconds = defaultdict(float)
    for line in lines:
        found = DURATION.match(line)
        if found:
            seconds[found.group(3)] += float(found.group(1))
    return dict(seconds)


def modules_from_junit(path: Path) -> dict[str, float]:
    """Seconds per test module from a pytest junit xml (its classname is the module's dotted path)."""
    seconds = defaultdict(float)
    for case in ElementTree.parse(path).iter("testcase"):
        parts = case.get("classname", "").split(".")
        cut = next((i for i, p in enumerate(parts) if p.startswith("test_")), len(parts) - 1)
        seconds["/".join(parts[: cut + 1]) + ".py"] += float(case.get("time") or 0)
    return dict(seconds)


def builds(lines: list[str]) -> dict[str, float]:
    """The build phases a run printed: the prebuild (what it made) and each training of the captioner."""
    found = {}
    for line in lines:
        built, trained = BUILT.search(line), TRAINED.search(line)
        if built:
            found[f"builds: {built.group(2)}"] = float(built.group(1))
        if trained:
            found["training the captioner"] = found.get("training the captioner", 0.0) + float(trained.group(1))
    return found


def trainings(lines: list[str]) -> int:
    """How many times the captioner was trained: in a test (its own line) or by the prebuild (named in its line)."""
    return sum(bool(TRAINED.search(line)) or ("tiny captioner" in line and bool(BUILT.search(line))) for line in lines)


def print_shares(title: str, seconds: dict[str, float], top: int = 12) -> None:
    """The modules by seconds, each with its share of their sum (under xdist the sum is worker time, not wall)."""
    total = sum(seconds.values())
    if not total:
        print(f"  {title}: no per-module durations in the log (run pytest with --durations=0 or --junit-xml)")
        return
    print(f"  {title}: {total:.0f} s over {len(seconds)} modules")
    for module, spent in sorted(seconds.items(), key=lambda item: -item[1])[:top]:
        print(f"    {spent:7.1f} s {100 * spent / total:5.1f}%  {module}")
