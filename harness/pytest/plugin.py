"""The pytest plugin: options, markers, the stack header and properties, the hermetic guard."""

from __future__ import annotations

import contextlib
import os

import pytest

from harness.core import paths
from harness.core.errors import HarnessError
from harness.env import stack
from harness.pytest import hermetic, summary

# Run results for the HTML report (--report-dir); registered here so its option is known in time.
pytest_plugins = ["harness.pytest.collector"]

MARKERS = {
    "gpu": "needs a CUDA GPU; run with `tox -e gpu` (skipped on CPU with the reason; harness.pytest.require.gpu)",
    "slow": "takes more than a few seconds (model builds, training steps)",
    "known_failure(id, version, shows, expected)": "tests a failure of fixtures/known_failures.toml (set by harness.failures.registry.expectation_marks)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qvl-harness")
    group.addoption("--cell", default=os.environ.get("QVL_CELL"), help="matrix cell this run belongs to (default: $QVL_CELL)")
    group.addoption("--hub", choices=("local", "live"), default="local", help="hub for hub-backed tests: the local server (default) or huggingface.co")
    group.addoption("--require-gpu", action="store_true", help="fail at once unless a CUDA device is visible (the gpu env sets it)")
    group.addoption("--update-golden", action="store_true", help="write obtained captions next to the goldens for review")
    group.addoption("--models", choices=("tiny", "real"), default="tiny", help="tiny locally built models (default) or real checkpoints")


def _pin_worker_to_one_gpu() -> None:
    """Under xdist, give worker gwN its own GPU before anything initializes CUDA.

    The controller publishes the visible GPUs in QVL_GPUS (see pytest_xdist_auto_num_workers).
    """
    worker, gpus = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("QVL_GPUS")
    if worker and gpus:
        ids = gpus.split(",")
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[int(worker.removeprefix("gw")) % len(ids)]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` in a GPU run means one worker per visible GPU."""
    if not config.getoption("--require-gpu"):
        return None
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["QVL_GPUS"] = visible if visible else ",".join(str(i) for i in range(count))
    return max(count, 1)


STARTED = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    import time

    config.stash[STARTED] = time.time() - 1  # file times have a coarse resolution
    _pin_worker_to_one_gpu()
    _show_progress(config)
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    live = config.getoption("--hub") == "live"
    if not live:
        hermetic.isolate_environment()
    # pytest-socket reads these options in its own pytest_configure, which runs after this one.
    config.option.allow_unix_socket = True
    config.option.disable_socket = not live
    # Child processes (pytester runs, bisect oracles) find the same checkout's data.
    os.environ.setdefault("QVL_ROOT", str(paths.REPO_ROOT))
    config.pluginmanager.import_plugin("harness.pytest.providers")
    config.stack = stack.collect()
    if not config.stack.gpus:
        import warnings

        from harness.lab.compat import allow_cpu_bitsandbytes

        with warnings.catch_warnings():  # the libraries' own deprecation notices at import
            warnings.simplefilter("ignore", DeprecationWarning)
            allow_cpu_bitsandbytes()  # old transformers refuse the CPU bitsandbytes backend every load
    if config.getoption("--require-gpu") and not config.stack.gpus:
        raise pytest.UsageError(
            "qvl-harness: --require-gpu: no CUDA device is visible (torch "
            f"{config.stack.packages.get('torch') or 'missing'}, cuda {config.stack.cuda or 'none'}); "
            "run the gpu env on a GPU runner"
        )


def _show_progress(config: pytest.Config) -> None:
    """Long work inside a run (training the captioner, building stand-ins) reports through the terminal,
    past pytest's output capture; quiet under -q and on xdist workers (their terminal is not shown)."""
    from harness.core import progress

    if config.option.verbose < 0 or hasattr(config, "workerinput"):
        progress.set_sink(None)
        return

    def write(text: str) -> None:
        capture = config.pluginmanager.get_plugin("capturemanager")
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            terminal.write_line(text)

    progress.set_sink(write)


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
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none visible); run `tox -e gpu` on a GPU runner"))


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
    if (marker is not None and report.when == "call" and not report.skipped and "expected" in marker.kwargs
            and not item.config.option.runxfail):
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

    verdict, why = registry.judge(registry.known_failure(marker.args[0]), marker, report.passed, _failure_text(call.excinfo))
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
    if config.getoption("--update-golden") and not hasattr(config, "workerinput"):
        from harness.data.goldens import GOLDENS_DIR

        written = [p for p in sorted(GOLDENS_DIR.glob("*/*.obtained.json")) if p.stat().st_mtime >= config.stash[STARTED]]
        terminalreporter.write_sep("-", "golden captions to review")
        for path in written:
            terminalreporter.write_line(f"review {path}, then: qvl-harness goldens accept {path}")
        if not written:
            terminalreporter.write_line("no obtained golden was written (no test of suites/test_garbage_output.py ran)")
