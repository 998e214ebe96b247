"""The plugin acts only in a run that asks for the harness, and never breaks pytest: checked in a venv made as
the README says (the harness alone, no stack) and in this run's own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stackless import stackless_python

from harness.core.paths import REPO_ROOT

pytest_plugins = ["pytester"]

NEEDS_A_CELL = (
    "ERROR: qvl-harness: this run needs a matrix cell's stack (torch, transformers are not installed "
    "here): tox -e cell-canary (or tox exec -e cell-NAME -- pytest ...)"
)
# some interpreters start with objects frozen already (the H200's had 375): what counts is that nothing froze
# more once the session began
UNRELATED_CONFTEST = """
import gc


def pytest_configure(config):
    config.frozen_at_start = gc.get_freeze_count()
"""
UNRELATED_TEST = """
import gc
import os
import socket


def test_untouched(request):
    assert gc.get_freeze_count() == request.config.frozen_at_start  # the collector as the session found it
    assert os.environ.get("HF_HOME") == "/nowhere/my-hf-home"
    assert "HF_ENDPOINT" not in os.environ
    with socket.socket() as server:  # a socket guard would refuse this
        server.bind(("127.0.0.1", 0))
"""


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    return stackless_python(tmp_path_factory)


@pytest.fixture
def unrelated_project(tmp_path) -> Path:
    (tmp_path / "conftest.py").write_text(UNRELATED_CONFTEST)
    (tmp_path / "test_unrelated.py").write_text(UNRELATED_TEST)
    return tmp_path


def pytest_in(python: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QVL_ROOT", "HF_ENDPOINT")}
    return subprocess.run(
        [str(python), "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("where", ["bare venv", "this run's env"])
def test_an_unrelated_project_keeps_its_sockets_and_hf_home(where, request, unrelated_project):
    python = request.getfixturevalue("bare_python") if where == "bare venv" else Path(sys.executable)
    # QVL_CELL exported in the shell is not a request: only --cell, -p or a harness rootdir are
    done = pytest_in(python, unrelated_project, HF_HOME="/nowhere/my-hf-home", QVL_CELL="control")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout and "qvl-harness stack" not in done.stdout + done.stderr  # no header


def test_pytest_help_works_without_the_stack(bare_python, unrelated_project):
    for cwd in (unrelated_project, REPO_ROOT):
        done = pytest_in(bare_python, cwd, "--help")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "--cell=CELL" in done.stdout


@pytest.mark.parametrize("args", [("suites", "-q"), ("tests/test_matrix.py",)])
def test_the_harness_without_the_stack_says_in_one_line_how_to_run_a_cell(bare_python, args):
    done = pytest_in(bare_python, REPO_ROOT, *args)
    assert done.returncode != 0 and lines(done) == [NEEDS_A_CELL], done.stdout[-3000:] + done.stderr[-2000:]


def test_asking_for_the_plugin_by_name_elsewhere_needs_the_stack_too(bare_python, unrelated_project):
    done = pytest_in(bare_python, unrelated_project, "-p", "harness.pytest.plugin")
    assert done.returncode != 0 and lines(done) == [NEEDS_A_CELL]


def test_importing_the_plugin_imports_nothing_of_the_stack():
    # the entry point imports it in every pytest run of the venv, a cell env's included
    code = (
        "import sys, harness.pytest.plugin, harness.pytest.collector, harness.pytest.providers; "
        "print(sorted(m for m in ('torch', 'transformers', 'unsloth', 'bitsandbytes', 'peft') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_a_harness_run_takes_what_is_alive_out_of_the_collectors_generations(pytester):
    """harness.pytest.hooks freezes what is alive as each test starts: a full collection over it cost 0.37 s, and
    transformers 4.x runs one after every checkpoint it loads."""
    pytester.makepyfile("import gc\n\n\ndef test_frozen():\n    assert gc.get_freeze_count() > 10_000\n")
    pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-p", "no:cacheprovider").assert_outcomes(passed=1)
