"""``own_process`` tests run in a child interpreter and report as if run in the process that collected them:
what the child imports stays out of that process, and outcomes, messages, expected failures and results
records come back through an xdist worker; a child that dies says so in one failure."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import os
import sys

import pytest

from harness.pytest import results


@pytest.mark.own_process
def test_imports_what_patches_the_process(request):
    import toy_patches_the_process  # noqa: F401
    assert os.environ.get("QVL_OWN_PROCESS_REPORTS")
    results.record_structure(request.config, "toy", "recorded in the child", True)


def test_the_collecting_process_never_imported_it():
    assert "toy_patches_the_process" not in sys.modules


@pytest.mark.own_process
def test_fails_with_its_own_message():
    assert 1 == 2, "the child's own message"


@pytest.mark.own_process
@pytest.mark.xfail(raises=RuntimeError, strict=True, reason="a known failure")
def test_fails_as_expected():
    raise RuntimeError("only Tensors of floating point dtype can require gradients")


@pytest.mark.own_process
@pytest.mark.skip(reason="skipped before any child")
def test_skipped():
    pass


@pytest.mark.own_process
def test_dies():
    os._exit(3)
"""


# after the children, a test of another module: the earlier module's fixtures must be gone by its setup
NEXT = """
import pytest


@pytest.fixture(scope="module")
def costly():
    return 1


def test_next_module(costly):
    assert costly == 1


@pytest.mark.slow
def test_slow():
    pass


@pytest.mark.slow(seconds=300)
def test_longest():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_toy_children=SUITE, toy_patches_the_process="PATCHED = True\n", test_toy_next=NEXT)
    return pytester


@pytest.mark.slow(seconds=40)  # a pytest run with a worker and five children (42-49 s on the H200)
def test_children_report_as_the_parent(suite, tmp_path):
    # one xdist worker, as in a GPU run: it runs the file in order, so the check follows the child's import,
    # and its reports reach the controller as a worker's do
    result = suite.runpytest_subprocess(
        "-p", "harness.pytest.plugin", "-p", "no:randomly", "--report-dir", str(tmp_path), "-n", "1", "-v"
    )
    result.assert_outcomes(passed=5, failed=2, xfailed=1, skipped=1)
    # the worker takes the longest first, whatever their place: a slow test that says it is longer than these
    # children, the children (a GPU run's longest tests), other slow tests, the rest
    ran = [line.split("::")[-1].split()[0] for line in result.stdout.lines if line.startswith("[gw0]") and "::" in line]
    assert ran[0] == "test_longest", ran
    assert ran[6:] == ["test_slow", "test_the_collecting_process_never_imported_it", "test_next_module"], ran
    result.stdout.fnmatch_lines(["*the child's own message*"])
    result.stdout.fnmatch_lines(["*own_process) exited 3 without reporting its call*"])
    written = json.loads(next(tmp_path.glob("results-*.json")).read_text())
    assert any(s.get("finding") == "recorded in the child" for s in written["structure"]), written["structure"]
    outcomes = {t["test"].split("::")[1]: t["outcome"] for t in written["tests"]}
    assert outcomes["test_fails_as_expected"] == "xfailed" and outcomes["test_dies"] == "failed"
