"""What a run records for the reports: every test's outcome, captions against goldens, structural findings.

A record is kept in ``config.stash`` until the test that made it reports; harness.pytest.collector
then ships it on that test's report (``user_properties`` with a ``qvl.`` prefix, which pytest-xdist
carries from worker to controller and junit XML keeps), and the controller writes every shipped
record to ``<report-dir>/results-<cell>.json`` at the end of the session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core import atomic, schema
from harness.core.errors import HarnessError
from harness.data.goldens import LEVELS

FORMAT = 3  # 3: where each worker ran
PREFIX = "qvl."
# record kind -> its list in the results file
SECTIONS = {"caption": "captions", "structure": "structure", "known_failure": "known_failures", "table": "tables"}
PENDING = pytest.StashKey[list]()


def record_caption(
    config: pytest.Config,
    fixture_id: str,
    configuration: str,
    golden: str,
    obtained: str,
    grade: str,
    details: str = "",
) -> None:
    """One caption of ``fixture_id`` in ``configuration`` against its golden; ``grade`` is a level of
    harness.data.goldens (``Grade.level``), ``details`` its explanation (``Grade.describe()``)."""
    if grade not in LEVELS:
        raise HarnessError(f"caption grade {grade!r} is not one of {', '.join(LEVELS)}")
    _add(
        config,
        "caption",
        {
            "fixture": fixture_id,
            "configuration": configuration,
            "golden": golden,
            "obtained": obtained,
            "grade": grade,
            "details": details,
        },
    )


def record_structure(config: pytest.Config, configuration: str, finding: str, ok: bool) -> None:
    """A structural finding about a loaded configuration (e.g. which linears are 4-bit) and whether it is acceptable."""
    _add(config, "structure", {"configuration": configuration, "finding": finding, "ok": bool(ok)})


def _add(config: pytest.Config, kind: str, data: dict) -> None:
    config.stash.setdefault(PENDING, []).append((kind, data))


def take_pending(config: pytest.Config) -> list[tuple[str, dict]]:
    """The records made since the last call (the plugin attaches them to the test reporting now)."""
    pending = config.stash.get(PENDING, [])
    taken = pending.copy()
    pending.clear()
    return taken


def as_property(kind: str, data: dict) -> tuple[str, str]:
    return PREFIX + kind, json.dumps(data, sort_keys=True)


def from_properties(properties) -> list[tuple[str, dict]]:
    """The records among a report's ``user_properties`` (other properties are ignored)."""
    records = []
    for name, value in properties:
        if isinstance(name, str) and name.startswith(PREFIX) and name[len(PREFIX) :] in SECTIONS:
            records.append((name[len(PREFIX) :], json.loads(value)))
    return records


def empty(cell: str, stack: dict, created: str, runxfail: bool, rootdir: str = "") -> dict:
    """A results document: ``tests`` holds each test's final outcome (passed, failed, error, skipped,
    xfailed, xpassed) with its message and the worker that ran it, test ids relative to ``rootdir``;
    ``workers``: where each worker ran (harness.pytest.workers.placement); ``triage`` is filled later
    by `qvl-harness triage`."""
    return {
        "format": FORMAT,
        "cell": cell,
        "created": created,
        "stack": stack,
        "runxfail": runxfail,
        "rootdir": rootdir,
        "tests": [],
        "workers": [],
        "triage": {},
        **{section: [] for section in SECTIONS.values()},
    }


def add(results: dict, kind: str, data: dict) -> None:
    results[SECTIONS[kind]].append(data)


def write(results: dict, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / f"results-{results['cell']}.json"
    atomic.write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def read(path: Path) -> dict:
    return schema.load_json(
        path,
        "results",
        {"format", "cell", "created", "stack", "runxfail", "rootdir", "tests", "workers", "triage"}
        | set(SECTIONS.values()),
        FORMAT,
        hint="written by pytest --report-dir of this harness version",
    )
