"""One bisect session, set up the same way for a release search, a commit search and the nightly's triage:
its probe (overlay install, then the oracle), its probe log (named by what was asked), its reporter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.bisection.candidates import Point
from harness.bisection.engine import Bisection, ProbeLog
from harness.bisection.oracle import SKIP, Oracle, Run
from harness.bisection.output import Reporter
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.env.overlay import Overlays
from harness.releases import code as release_code


def no_companions(point: Point) -> list[str]:
    return []


def prober(oracle: Oracle, overlays: Overlays, companions=no_companions):
    """Install a point (and its companions) into an overlay, fetch the release wheels the suites read,
    run the oracle."""

    def probe(point: Point, output: Path) -> Run:
        requirements = [*point.pins, *companions(point)]
        try:
            overlay = overlays.get(requirements)
            if not overlay.error:
                release_code.fetch(
                    [r for r in requirements if release_code.is_code_under_test(r)],
                    quiet=True,
                    **overlays.fetch_options,
                )
        except HarnessError as exc:
            return Run(None, SKIP, "", 0.0, str(exc))
        if overlay.error:
            return Run(None, SKIP, "", 0.0, overlay.error)
        return oracle.run(overlay.python, point.label, output)

    return probe


def open_bisection(
    name: str,
    config: dict,
    points: list[Point],
    probe,
    *,
    resume: bool,
    companions=no_companions,
    out=print,
    side_by_side: int = 1,
) -> Bisection:
    """A bisection of ``points`` whose probes go to the log ``<name>-<digest of config>.jsonl`` (``resume``: its
    earlier runs answer), told by a reporter that shows each probe's companions; ``side_by_side``: how many
    probes run at once where several are wanted together."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    log = ProbeLog(cache_dir("bisect") / f"{name}-{digest}.jsonl", config, resume)
    return Bisection(points, probe, log, Reporter(companions, out=out), side_by_side)
