"""--update-golden's summary lists the golden files the run wrote, as each write recorded it: serially and from
xdist workers, with the test file that recorded each kept in it (what `goldens status` tells to re-run)."""

from __future__ import annotations

import json

import pytest

from harness.data import goldens

pytest_plugins = ["pytester"]

SUITE = """
from pathlib import Path

import pytest

from harness.pytest import goldenwrites

ROOT = Path({root!r})


def recorded(request, model):
    captions, digests = {{"chest-pa": "c"}}, {{"chest-pa": "d"}}
    return goldenwrites.write_obtained(request.config, model, "cpu", {{}}, {{}}, captions, digests, root=ROOT)


@pytest.fixture(scope="session")
def golden_m(request):
    return recorded(request, "m")


@pytest.fixture(scope="session")
def golden_n(request):
    return recorded(request, "n")


def test_m(golden_m):
    pass


def test_n(golden_n):
    pass


@pytest.mark.parametrize("i", range(4))
def test_writes_nothing(i):
    pass
"""


@pytest.fixture
def suite(pytester, tmp_path):
    root = tmp_path / "goldens"
    pytester.makepyfile(test_toy_goldens=SUITE.format(root=str(root)))
    return root


def review_lines(result) -> list[str]:
    return [line for line in result.stdout.lines if line.startswith("review ")]


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_the_summary_lists_each_file_the_run_wrote(suite, pytester, workers):
    result = pytester.runpytest_subprocess(
        "-p", "harness.pytest.plugin", "--update-golden", "-p", "no:randomly", *workers
    )
    assert result.ret == 0, result.stdout.str()[-2000:]
    written = sorted(goldens.obtained_path(model, "cpu", suite) for model in ("m", "n"))
    assert sorted(review_lines(result)) == [f"review {p}, then: qvl-harness goldens accept {p}" for p in written]
    for path in written:
        assert json.loads(path.read_text())["environment"]["recorded_by"] == "test_toy_goldens.py"


def test_a_run_that_wrote_none_says_so(suite, pytester):
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "--update-golden", "-k", "writes_nothing")
    assert review_lines(result) == []
    result.stdout.fnmatch_lines(["no obtained golden was written (no test that records one ran)"])
