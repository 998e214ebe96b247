"""The plugin's hooks for a run that asked for the harness (harness.pytest.activation): registered by
harness.pytest.plugin's pytest_configure only there, so another project's run never sees them."""

from __future__ import annotations

import gc

import pytest

from harness.core.errors import HarnessError
from harness.env import stack
from harness.pytest import hermetic, summary


def pytest_unconfigure(config: pytest.Config) -> None:
    from harness.core import progress

    progress.set_sink(None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [config.stack.header_line()]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """What is alive as a test starts (torch, transformers, the suites' modules, fixtures of wider scope: millions
    of objects) leaves the cyclic garbage collector's generations, after one collection of what the tests before
    left. transformers 4.x runs gc.collect() after every checkpoint it loads, and over that heap each took 0.37 s,
    28 s of a 4.x cell's 85. What the test makes is collected as ever."""
    gc.collect()
    gc.freeze()


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
    marker = item.get_closest_marker("known_failure")
    # --runxfail (what a bisect oracle runs with) reports raw outcomes: no expectation may hide a failure.
    judged = (
        marker is not None and call.when == "call" and "expected" in marker.kwargs and not item.config.option.runxfail
    )
    verdict = _verdict(marker, call) if judged and not _skips(call) else None
    if verdict and verdict[0] == "reproduced":
        # an xfail shows its reason, never its traceback: pytest's rendering of it (the source of every frame)
        # took 0.1 s per reproduced failure, 60 of them in a cell
        item.repr_failure = lambda excinfo: excinfo.exconly()
    try:
        outcome = yield
    finally:
        item.__dict__.pop("repr_failure", None)
    report = outcome.get_result()
    # Bad input gets one clear line, not a traceback wall.
    if call.excinfo is not None and call.excinfo.errisinstance(HarnessError):
        report.longrepr = f"qvl-harness: {call.excinfo.value}"
    if verdict and not report.skipped:
        _apply(verdict, report)


def _failure_text(excinfo) -> str:
    """An exception, its notes and the exceptions it was raised from: what a registry pattern is matched against."""
    parts, exc = [], excinfo.value if excinfo else None
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        parts.extend(getattr(exc, "__notes__", []))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _skips(call: pytest.CallInfo) -> bool:
    return call.excinfo is not None and call.excinfo.errisinstance((pytest.skip.Exception, pytest.xfail.Exception))


def _verdict(marker, call: pytest.CallInfo) -> tuple[str, str]:
    """The registry's expectation applied to this call (harness.failures.registry.judge): "reproduced" (a failure
    with the registry's pattern), "unexpected pass", "wrong failure" or another verdict, and why."""
    from harness.failures import registry

    return registry.judge(
        registry.known_failure(marker.args[0]), marker, call.excinfo is None, _failure_text(call.excinfo)
    )


def _apply(verdict: tuple[str, str], report: pytest.TestReport) -> None:
    """A reproduced failure reports as xfailed; a pass where the failure was expected fails as XPASS(strict); any
    other failure stays a failure, with a line saying what was expected."""
    name, why = verdict
    if name == "reproduced":
        report.outcome, report.wasxfail = "skipped", why
    elif name == "unexpected pass":
        report.outcome, report.longrepr = "failed", f"[XPASS(strict)] {why}"
    elif name == "wrong failure":
        if isinstance(report.longrepr, str):
            report.longrepr = f"{report.longrepr}\n{why}"
        else:
            report.longrepr.addsection("qvl-harness known failure", why)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    for title, header, rows in summary.tables(config):
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(summary.render("", header, rows).lstrip("\n"))
