"""The plugin's hooks for a run that asked for the harness (harness.pytest.activation): registered by
harness.pytest.plugin's pytest_configure only there, so another project's run never sees them."""

from __future__ import annotations

import pytest

from harness.core.errors import HarnessError
from harness.env import stack
from harness.pytest import hermetic, summary


def pytest_unconfigure(config: pytest.Config) -> None:
    from harness.core import progress

    progress.set_sink(None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [config.stack.header_line()]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    live = config.getoption("--hub") == "live"
    properties = [(f"stack.{k}", str(v)) for k, v in config.stack.rows()]
    has_gpu = bool(config.stack.gpus)
    for item in items:
        item.user_properties.extend(properties)
        if not live:
            item.add_marker(pytest.mark.allow_hosts(hermetic.LOOPBACK_HOSTS))
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(
                pytest.mark.skip(reason="needs a CUDA GPU (none visible); run `tox -e gpu` on a GPU runner")
            )


@pytest.fixture(scope="session")
def harness_stack(pytestconfig: pytest.Config) -> stack.Stack:
    """The versions importable in this run (also in the header and on every junit test case)."""
    return pytestconfig.stack


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    # Bad input gets one clear line, not a traceback wall.
    if call.excinfo is not None and call.excinfo.errisinstance(HarnessError):
        report.longrepr = f"qvl-harness: {call.excinfo.value}"
    marker = item.get_closest_marker("known_failure")
    # --runxfail (what a bisect oracle runs with) reports raw outcomes: no expectation may hide a failure.
    if (
        marker is not None
        and report.when == "call"
        and not report.skipped
        and "expected" in marker.kwargs
        and not item.config.option.runxfail
    ):
        _judge_known_failure(marker, call, report)


def _failure_text(excinfo) -> str:
    """An exception, its notes and the exceptions it was raised from: what a registry pattern is matched against."""
    parts, exc = [], excinfo.value if excinfo else None
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        parts.extend(getattr(exc, "__notes__", []))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _judge_known_failure(marker, call: pytest.CallInfo, report: pytest.TestReport) -> None:
    """Apply the registry's expectation (harness.failures.registry.judge): a failure with the registry's pattern
    reports as xfailed; a pass where the failure was expected fails as XPASS(strict); any other
    failure stays a failure, with a line saying what was expected."""
    from harness.failures import registry

    verdict, why = registry.judge(
        registry.known_failure(marker.args[0]), marker, report.passed, _failure_text(call.excinfo)
    )
    if verdict == "reproduced":
        report.outcome, report.wasxfail = "skipped", why
    elif verdict == "unexpected pass":
        report.outcome, report.longrepr = "failed", f"[XPASS(strict)] {why}"
    elif verdict == "wrong failure":
        if isinstance(report.longrepr, str):
            report.longrepr = f"{report.longrepr}\n{why}"
        else:
            report.longrepr.addsection("qvl-harness known failure", why)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    for title, header, rows in summary.tables(config):
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(summary.render("", header, rows).lstrip("\n"))
