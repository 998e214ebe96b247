"""The pytest plugin: options, and in a run that asked for the harness (harness.pytest.activation) the
checks before collection, the hermetic guard, markers and harness.pytest.hooks.

It is a pytest11 entry point, loaded in every pytest run of a venv with the harness installed, so
importing it imports nothing of the stack and a run that did not ask for the harness is left as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import pytest

from harness.core import auto_updates, paths
from harness.env import stack
from harness.pytest import activation, cellcheck, hermetic, workers

# Run results for the HTML report (--report-dir); registered here so its option is known in time.
pytest_plugins = ["harness.pytest.collector"]

MARKERS = {
    "gpu": "needs a CUDA GPU; run with `tox -e gpu` (skipped on CPU with the reason; harness.pytest.require.gpu)",
    "slow(seconds=None)": "takes more than a few seconds (model builds, training steps); seconds: about how long on a GPU runner, where a test is far longer than most (xdist workers take the longest first: harness.pytest.own_process)",  # noqa: E501
    "own_process": "runs in a child interpreter of its own, its reports logged here (harness.pytest.own_process): it imports unsloth, which patches transformers for the whole process",  # noqa: E501
    "known_failure(id, version, shows, expected)": "tests a failure of fixtures/known_failures.toml (set by harness.failures.registry.expectation_marks)",  # noqa: E501 (a message kept whole, to be found by grep)
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qvl-harness")
    group.addoption(
        "--cell",
        help="matrix cell this run belongs to (default: $QVL_CELL), checked against the installed "
        f"stack; {cellcheck.OUTSIDE_MATRIX!r}: a stack outside the matrix",
    )
    group.addoption(
        "--hub",
        choices=("local", "live"),
        default="local",
        help="hub for hub-backed tests: the local server (default) or huggingface.co",
    )
    group.addoption(
        "--require-gpu", action="store_true", help="fail at once unless a CUDA device is visible (the gpu env sets it)"
    )
    group.addoption(
        "--update-golden", action="store_true", help="write obtained captions next to the goldens for review"
    )
    group.addoption(
        "--models",
        choices=("tiny", "real"),
        default="tiny",
        help="tiny locally built models (default) or real checkpoints",
    )


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own answer (one worker per core)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` in a GPU run: a few workers per visible GPU (harness.pytest.workers says why)."""
    if not config.getoption("--require-gpu"):
        return None
    import torch

    return workers.auto_num_workers(torch.cuda.device_count())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    asked, named_by = activation.asked_for(config), "--cell" if config.option.cell is not None else "QVL_CELL"
    config.option.cell = config.option.cell or os.environ.get("QVL_CELL") or None
    if not asked or config.option.help:
        return
    cellcheck.require_stack()
    if config.getoption("dist", default="no") == "loadgroup" and config.pluginmanager.hasplugin("xdist"):
        import xdist

        problem = workers.loadgroup_problem(pytest.__version__, xdist.__version__)
        if problem:
            raise pytest.UsageError(problem)
    if config.getoption("--require-gpu"):
        os.environ[workers.GPU_RUN_VAR] = "1"
    cellcheck.check_cell(config.option.cell, named_by, gpu_run=bool(os.environ.get(workers.GPU_RUN_VAR)))
    workers.settle_worker(workers.worker_id(config))
    workers.give_way_to_builds(getattr(config, "workerinput", {}))
    auto_updates.disable()  # every hub mode: importing a release must not pip-install a newer zoo
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
    config.pluginmanager.import_plugin("harness.pytest.hooks")
    config.pluginmanager.import_plugin("harness.pytest.goldenwrites")  # --update-golden's files, where written
    config.pluginmanager.import_plugin("harness.pytest.prebuild")  # the models the run needs, beside its workers
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.import_plugin("harness.pytest.scheduling")  # which worker runs what next
    config.pluginmanager.import_plugin("harness.pytest.own_process")  # the tests that import unsloth
    run_cell = None if config.option.cell == cellcheck.OUTSIDE_MATRIX else config.option.cell
    config.stack = dataclasses.replace(stack.collect(), cell=run_cell)
    if not config.stack.gpus:
        from harness.lab.compat import allow_cpu_bitsandbytes

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
