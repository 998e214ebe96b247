"""The golden files a ``--update-golden`` run writes, recorded where each is written and listed at its end.

A test's fixture writes through ``write_obtained``, which notes the path in the process that wrote it (an xdist
worker, or the one process); the test's next report carries it as a user property, which pytest-xdist brings to
the controller, and the controller's terminal summary gives each file with the command that accepts it (the
caption records of harness.pytest.collector travel the same way).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.data import goldens
from harness.lab import captioner

PROPERTY = "qvl.golden_written"
RUNNING = pytest.StashKey[pytest.Item]()  # the test whose phase runs now (a session fixture's writer)
PENDING = pytest.StashKey[list]()  # written here since the last report


def write_obtained(
    config: pytest.Config,
    model: str,
    device_class: str,
    configuration: dict,
    environment: dict,
    captions: dict[str, str],
    digests: dict[str, str],
    root: Path = goldens.GOLDENS_DIR,
) -> Path:
    """goldens.write_obtained, with the test file that recorded it kept in the file (what `goldens status`
    tells to re-run) and the write recorded for the run's summary."""
    item = config.stash.get(RUNNING, None)
    test_file = item.path.relative_to(config.rootpath) if item and item.path.is_relative_to(config.rootpath) else None
    recorded_by = {"recorded_by": test_file.as_posix()} if test_file else {}
    environment = {**environment, **recorded_by}
    path = goldens.write_obtained(model, device_class, configuration, environment, captions, digests, root)
    config.stash.setdefault(PENDING, []).append(str(path))
    return path


def golden_of(config: pytest.Config, stack, of: captioner.Base, checkpoint: Path, fixtures) -> goldens.Golden:
    """The golden of captioner ``of`` that this device compares against (goldens.select); with --update-golden,
    the 16-bit captions of this run, written as the obtained file for review, which the run then compares against.
    ``stack``: the harness_stack fixture's value."""
    configuration = captioner.golden_configuration(of=of)
    if not config.getoption("--update-golden"):
        return goldens.select(of.name, stack.device_class, stack.arch, configuration)
    path = write_obtained(
        config,
        of.name,
        stack.device_class,
        configuration,
        {**stack.packages, "python": stack.python, "arch": stack.arch},
        captioner.sixteen_bit_captions(checkpoint, fixtures, of),
        {f.id: captioner.fixture_digest(f) for f in fixtures},
    )
    return goldens.read(path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    item.config.stash[RUNNING] = item
    try:
        return (yield)
    finally:
        del item.config.stash[RUNNING]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    pending = item.config.stash.get(PENDING, [])
    properties = [(PROPERTY, path) for path in pending]
    pending.clear()
    item.user_properties.extend(properties)  # later phases' reports are built from these
    report.user_properties.extend(properties)
    return report


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--update-golden") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(Written(), "qvl-golden-writes")


class Written:
    """Controller side: the files the run's reports say were written, listed at the end."""

    def __init__(self) -> None:
        self.paths: dict[str, None] = {}  # in order, once each

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":  # it carries every phase's properties
            self.paths.update((value, None) for name, value in report.user_properties if name == PROPERTY)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_sep("-", "golden captions to review")
        for path in self.paths:
            terminalreporter.write_line(f"review {path}, then: qvl-harness goldens accept {path}")
        if not self.paths:
            terminalreporter.write_line("no obtained golden was written (no test that records one ran)")
