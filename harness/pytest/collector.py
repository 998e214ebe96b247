"""pytest plugin: ships what a run records (harness.pytest.results, summary tables, known-failure outcomes)
on each test's report and, with ``--report-dir DIR``, writes ``DIR/results-<cell>.json`` for
``qvl-harness report build``.

Records travel as ``qvl.*`` user_properties of the test's reports, so pytest-xdist brings them from
the workers to the controller, which alone writes the file; the teardown report carries all of a
test's records, and it is the one read (and the one junit XML takes its properties from).
"""

from __future__ import annotations

import datetime
import functools
import re
from pathlib import Path

import pytest

from harness.env import stack
from harness.failures import registry
from harness.pytest import results, summary, workers

TABLES_SHIPPED = pytest.StashKey[int]()
# known-failure outcome -> its state in the compatibility matrix
STATES = {
    "xfailed": "reproduced",
    "xpassed": "unexpected",
    "failed": "unexpected",
    "error": "unexpected",
    "skipped": "not run",
}
CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("qvl-harness").addoption(
        "--report-dir",
        default=None,
        metavar="DIR",
        help="write the run's results to DIR/results-<cell>.json for `qvl-harness report build` (default: not written)",
    )


def pytest_configure(config: pytest.Config) -> None:
    report_dir = config.getoption("--report-dir")
    if report_dir is None or hasattr(config, "workerinput"):
        return
    cell = config.getoption("--cell", default=None) or "local"
    if not CELL_NAME.fullmatch(cell):
        raise pytest.UsageError(
            f"qvl-harness: --cell {cell!r}: a results file name needs letters, digits, '.', '_' or '-'"
        )
    config.pluginmanager.register(Collector(config, Path(report_dir), cell), "qvl-results-collector")


PLACEMENT = "qvl_placement"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # a worker tells the controller where it ran (xdist sends workeroutput after this hook)
    if hasattr(session.config, "workeroutput") and session.config.getoption("--report-dir") is not None:
        session.config.workeroutput[PLACEMENT] = workers.placement(workers.worker_id(session.config))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # tryfirst makes this the outermost wrapper: it sees the outcome after xfail handling.
    report = yield
    records = results.take_pending(item.config) + _new_tables(item.config)
    outcome = _known_failure_outcome(item, report)
    if outcome:
        records.append(("known_failure", outcome))
    if item.config.getoption("--report-dir") is not None:
        properties = [results.as_property(kind, {**data, "test": item.nodeid}) for kind, data in records]
        item.user_properties.extend(properties)  # later phases' reports are built from these
        report.user_properties.extend(properties)
    return report


def _new_tables(config: pytest.Config) -> list[tuple[str, dict]]:
    tables = summary.tables(config)
    shipped = config.stash.get(TABLES_SHIPPED, 0)
    config.stash[TABLES_SHIPPED] = len(tables)
    return [("table", {"title": t, "header": h, "rows": r}) for t, h, r in tables[shipped:]]


@functools.cache
def _registry() -> dict[str, registry.KnownFailure]:
    return registry.load_registry()


def _known_failure_outcome(item: pytest.Item, report: pytest.TestReport) -> dict | None:
    """The outcome of a ``known_failure(id)`` test, from the phase that decides it, with the release under test."""
    marker = item.get_closest_marker("known_failure")
    decides = (
        report.when == "call"
        or (report.when == "setup" and not report.passed)
        or (report.when == "teardown" and report.failed)
    )
    if marker is None or not decides:
        return None
    failure_id = marker.args[0]
    failure = _registry().get(failure_id)
    package, version, origin = _release_under_test(item, failure, marker)
    outcome = _outcome(report)
    state = STATES.get(outcome) or _passed_state(failure, version, marker)
    callspec = getattr(item, "callspec", None)
    return {
        "id": failure_id,
        "package": package,
        "version": version,
        "origin": origin,
        "param": callspec.id if callspec else "",
        "outcome": outcome,
        "state": state,
        "message": _message(report) if state == "unexpected" else "",
    }


def _release_under_test(item: pytest.Item, failure: registry.KnownFailure | None, marker) -> tuple:
    """(package, version, origin): a ``(package, version, origin)`` parameter of the test (what
    harness.pytest.params.release_params gives), else the marker's version, else the installed one."""
    if failure is None:
        return None, None, None
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        if isinstance(value, tuple) and len(value) == 3 and value[0] == failure.package:
            return value
    installed = stack.dist_version(failure.package)
    version = marker.kwargs.get("version") or installed
    return failure.package, version, "installed" if version == installed else "wheel"


def _worker(report: pytest.TestReport) -> str:
    node = getattr(report, "node", None)  # set by xdist on the controller
    return node.workerinput["workerid"] if node is not None else "main"


def _outcome(report: pytest.TestReport) -> str:
    if report.when != "call" and report.failed:
        return "error"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return "xpassed"
    return report.outcome


def _passed_state(failure: registry.KnownFailure | None, version: str | None, marker) -> str:
    """'fixed' where the release is outside the registry's affected range; 'passed' where the range
    does not decide (the release has the cause, but this stack does not meet the conditions under
    which it shows)."""
    if failure is None or version is None:
        return "passed"
    return "passed" if failure.affects(version) else "fixed"


def _message(report: pytest.TestReport) -> str:
    """The first line of a failure, or a skip's reason."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")[:300]
    if hasattr(report, "wasxfail") and report.skipped:
        return report.wasxfail[:300]
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return text.strip().splitlines()[0][:300] if text.strip() else report.outcome


class Collector:
    """Controller side: gathers the records shipped on teardown reports and writes the results file."""

    def __init__(self, config: pytest.Config, report_dir: Path, cell: str) -> None:
        self.config, self.report_dir, self.path = config, report_dir, None
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.results = results.empty(cell, {}, created, bool(config.option.runxfail), str(config.rootpath))
        self.tests: dict[str, dict] = {}

    def pytest_testnodedown(self, node, error) -> None:
        placement = getattr(node, "workeroutput", {}).get(PLACEMENT)
        if placement:
            self.results["workers"].append(placement)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record_outcome(report)
        if report.when == "teardown":
            for kind, data in results.from_properties(report.user_properties):
                results.add(self.results, kind, data)

    def _record_outcome(self, report: pytest.TestReport) -> None:
        """A test's outcome is its call's, unless setup did not pass or teardown failed (then those decide)."""
        entry = self.tests.setdefault(
            report.nodeid,
            {"test": report.nodeid, "outcome": "passed", "message": "", "seconds": 0.0, "worker": _worker(report)},
        )
        entry["seconds"] = round(entry["seconds"] + report.duration, 3)
        decides = (
            report.when == "call"
            or (report.when == "setup" and not report.passed)
            or (report.when == "teardown" and report.failed)
        )
        if decides:
            entry["outcome"] = _outcome(report)
            entry["message"] = _message(report) if not report.passed else ""

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not hasattr(self.config, "workerinput") and not self.results["workers"]:  # no xdist: this process ran them
            self.results["workers"].append(workers.placement(None))
        current = getattr(self.config, "stack", None) or stack.collect()
        self.results["stack"] = current.as_dict()
        self.results["tests"] = sorted(self.tests.values(), key=lambda t: t["test"])
        self.path = results.write(self.results, self.report_dir)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.path:
            terminalreporter.write_line(
                f"qvl-harness results: {self.path} (render: qvl-harness report build {self.path})"
            )
