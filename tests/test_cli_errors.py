"""Bad input to `qvl-harness`, as a user types it: one line on stderr, exit 2, never a traceback; a closed
stdout (`| head`) ends it quietly; a command that needs a cell's stack says which env and how to make it."""

from __future__ import annotations

import datetime
import importlib
import os
import subprocess
import sys

import pytest
from stackless import stackless_python

from harness.core import cellenv
from harness.core.paths import REPO_ROOT
from harness.pytest import results

RUNNER_FREEZE = REPO_ROOT / "fixtures" / "runners" / "h100-cuda130-py312.txt"


def qvl(*args: str, python=sys.executable, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    # stdout block-buffered, as a user's is (tox sets PYTHONUNBUFFERED): what is left at exit is flushed then
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [str(python), "-m", "harness.cli", *map(str, args)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env=env,
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, (done.returncode, done.stderr)
    assert lines[0].startswith("qvl-harness"), lines[0]
    return lines[0]


@pytest.fixture
def results_file(tmp_path):
    """An empty but real results file (the writer pytest --report-dir uses)."""
    document = results.empty("local", {}, datetime.datetime.now(datetime.timezone.utc).isoformat(), False)
    return results.write(document, tmp_path / "run")


def test_missing_runner_freeze_is_named(tmp_path):
    line = one_error_line(qvl("wheelhouse", "canary", "--runner", tmp_path / "nope.txt"))
    missing = tmp_path / "nope.txt"
    assert line == f"qvl-harness: error: cannot read the runner's freeze {missing}: No such file or directory"
    line = one_error_line(qvl("wheelhouse", "canary", "--runner", tmp_path))
    assert line.endswith(f"{tmp_path}: Is a directory")


def test_wheelhouse_refuses_a_dest_it_would_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    line = one_error_line(qvl("wheelhouse", "canary", "--runner", RUNNER_FREEZE, "--dest", tmp_path))
    assert f"--dest {tmp_path}: not a wheelhouse (it holds notes.txt)" in line
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "where, why",
    [
        ("file", "a file is there, not a folder"),
        ("file/sub", "cannot make this folder: Not a directory"),
        ("/proc/nope", "cannot make this folder: No such file or directory"),
    ],
)
def test_preview_folder_that_cannot_be(tmp_path, where, why):
    (tmp_path / "file").write_text("")
    out_dir = tmp_path / where
    line = one_error_line(qvl("fixtures", "show", "chest-pa", "--out-dir", out_dir))
    assert line == f"qvl-harness: error: --out-dir {out_dir}: {why}"


def test_a_file_the_system_refuses_is_one_line_naming_its_flag(results_file, tmp_path):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "summary.md"
    line = one_error_line(qvl("report", "diff", results_file, results_file, "--markdown", target))
    assert line == f"qvl-harness: error: --markdown {target}: cannot write it: Not a directory"


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["hub", "serve"],
            "qvl-harness hub serve: error: the following arguments are required: --snapshot "
            "(see qvl-harness hub serve --help)",
        ),
        (
            ["hub", "serve", "--snapshot", "2024-12", "--port", "99999"],
            "qvl-harness hub serve: error: argument --port: 99999 is not a port (0-65535; 0 picks a free one) "
            "(see qvl-harness hub serve --help)",
        ),
        (
            ["hub", "serve", "--snapshot", "2024-12", "--base", "/nonexistent"],
            "qvl-harness: error: --base /nonexistent: not a checkpoint folder (no config.json in it)",
        ),
    ],
)
def test_bad_values(args, expected):
    assert one_error_line(qvl(*args)) == expected


@pytest.mark.parametrize("args", [["matrix"], ["known", "--json"], ["stack"]])
def test_closed_stdout_ends_quietly_like_a_unix_tool(args):
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that has already gone
    try:
        done = qvl(*args, stdout=writer)
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_stack_module_missing_mid_command_names_the_cell_env():
    with pytest.raises(ModuleNotFoundError) as missing:
        importlib.import_module("transformers.no_such_module_here")
    line = cellenv.missing_stack(missing.value, ["hub", "serve", "--snapshot", "2024-12"])
    assert line.startswith("transformers is not installed in ")
    assert (
        "tox -e cell-canary --notest, then tox exec -e cell-canary -- qvl-harness hub serve --snapshot 2024-12" in line
    )
    with pytest.raises(ModuleNotFoundError) as other:
        importlib.import_module("no_such_package_here")
    assert cellenv.missing_stack(other.value, []) is None  # not the stack: a bug, left to its traceback


def test_hub_serve_without_the_stack_says_where_to_run_it(tmp_path_factory):
    python = stackless_python(tmp_path_factory)
    line = one_error_line(qvl("hub", "serve", "--snapshot", "2024-12", python=python))
    assert line.startswith(
        "qvl-harness: error: hub serve needs the stack under test (torch, transformers not installed"
    )
    assert line.endswith(
        "run it in a cell env: tox -e cell-canary --notest, then tox exec -e cell-canary -- "
        "qvl-harness hub serve --snapshot 2024-12 (any cell of `qvl-harness matrix`)"
    )
