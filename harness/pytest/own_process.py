"""Tests marked ``own_process`` run in a child interpreter of their own, and report as if run here.

Importing unsloth patches transformers for the whole process. In an xdist worker that would change what
every later test of the worker runs, so the FastVisionModel tests used to be one xdist group: one worker,
one after another, more than 400 s of a GPU run's wall. In a child each is its own process, the workers never
import unsloth, and those tests spread over the workers. The child runs the one test with the run's harness
options and writes its reports through pytest's report serialization (as pytest-xdist does); here they are
logged as this process's own, so verdicts, results records and golden writes reach the controller unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _pytest.skipping import evaluate_skip_marks

from harness.pytest import activation

MARKER = "own_process"
REPORTS_VAR = "QVL_OWN_PROCESS_REPORTS"  # in the child: the file its reports go to
# The harness options a child runs with, as this run has them (flags) or their values.
FLAGS = ("--require-gpu", "--update-golden", "--runxfail")
VALUED = ("--cell", "--hub", "--models")


def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(REPORTS_VAR)
    if path:
        config.pluginmanager.register(ReportWriter(config, Path(path)), "qvl-own-process-reports")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, the longest tests first (LONGEST_FIRST), so that no worker starts one near the end. In
    collection order (suites after tests) xdist handed these tests out last, so they were the run's last 170 s,
    and a 135 s slow test that came up at 180 s ended the run at 316 s. The scheduler takes work in the order
    collected (a group where its first test is), the same on every worker, each worker holding up to three."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: -expected_seconds(item))


# What a test is expected to take on a GPU runner, for the order only: a wrong guess costs time, never a result.
OWN_PROCESS_SECONDS = 100  # 35-120 s each on the H200 (an unsloth import, a load, a LoRA step's compilation)
SLOW_SECONDS = 10  # a slow test that names no seconds


def expected_seconds(item: pytest.Item) -> float:
    """``slow(seconds=N)`` where a test says, else what its markers make likely."""
    slow = item.get_closest_marker("slow")
    if slow is not None and "seconds" in slow.kwargs:
        return slow.kwargs["seconds"]
    if item.get_closest_marker(MARKER) is not None:
        return OWN_PROCESS_SECONDS
    return SLOW_SECONDS if slow is not None else 0


class ReportWriter:
    """The child's side: every report of its test, one JSON line each."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config, self.path = config, path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        with self.path.open("a") as out:
            out.write(json.dumps(data) + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> bool | None:
    if item.get_closest_marker(MARKER) is None or os.environ.get(REPORTS_VAR):
        return None
    if evaluate_skip_marks(item) is not None:  # it skips here as anywhere: no child for that
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = run_in_child(item)
    # what runtestprotocol's teardown does here: the fixtures of earlier tests that ``nextitem`` does not need
    # go now (kept, the next test's setup finds a stack that is not its own)
    item.session._setupstate.teardown_exact(nextitem)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def child_command(item: pytest.Item, basetemp: Path, report_dir: Path | None) -> list[str]:
    config = item.config
    args = [sys.executable, "-m", "pytest", item.nodeid, "-q", "-p", "no:cacheprovider", "-p", activation.PLUGIN]
    args += ["--basetemp", str(basetemp)]
    if config.inipath:
        args += ["-c", str(config.inipath)]
    args += ["--rootdir", str(config.rootpath)]
    args += [flag for flag in FLAGS if config.getoption(flag, default=False)]
    for option in VALUED:
        value = config.getoption(option, default=None)
        if value is not None:
            args += [option, str(value)]
    if report_dir is not None:  # its records ride on the reports' user_properties, as they do from a worker
        args += ["--report-dir", str(report_dir)]
    return args


def run_in_child(item: pytest.Item) -> list[pytest.TestReport]:
    with tempfile.TemporaryDirectory(prefix="qvl-own-process-") as scratch:
        scratch = Path(scratch)
        reports_file = scratch / "reports.jsonl"
        records = scratch / "results" if item.config.getoption("--report-dir", default=None) else None
        done = subprocess.run(
            child_command(item, scratch / "tmp", records),
            cwd=item.config.rootpath,
            env={**os.environ, REPORTS_VAR: str(reports_file)},
            capture_output=True,
            text=True,
        )
        lines = reports_file.read_text().splitlines() if reports_file.exists() else []
    reports = [item.config.hook.pytest_report_from_serializable(config=item.config, data=json.loads(x)) for x in lines]
    reports = [r for r in reports if isinstance(r, pytest.TestReport) and r.nodeid == item.nodeid]
    ran = {r.when for r in reports}
    missing = next((phase for phase in ("setup", "call", "teardown") if phase not in ran), None)
    if missing and not (missing == "call" and any(r.when == "setup" and not r.passed for r in reports)):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        message = (
            f"qvl-harness: the child interpreter that runs this test (own_process) exited {done.returncode} "
            f"without reporting its {missing}; its last lines:\n{tail}"
        )
        reports.append(pytest.TestReport(item.nodeid, item.location, {}, "failed", message, missing))
    return reports
