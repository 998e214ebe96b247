"""Run-to-run comparison and the triage's flake check on a small real suite run twice by real pytest.

Night 1 and night 2 run the same environment (nothing to bisect), so every new failure that stays
red must be reported as "no release to blame"; the flaky test fails once, then passes when re-run.
The culprit search over real releases is tests/test_nightly.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import toymatrix

from harness.cli import main
from harness.core.errors import HarnessError
from harness.nightly import diff
from harness.pytest import results
from harness.report import markdown

# One worker runs this module: the two nights of `nights` and their triage are made once per process; spread over the
# workers, each worker made them again (a pytest session each, ~22 s on the H200).
pytestmark = pytest.mark.xdist_group("triage-nights")

SUITE = """
import os
from pathlib import Path

NIGHT = os.environ["TOY_NIGHT"]


def test_steady():
    pass


def test_flaky(tmp_path_factory):
    # night 2 only: fails the first time it runs, passes afterwards (a counter beside the suite)
    counter = Path(__file__).with_name(f"flaky-runs-{NIGHT}")
    runs = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(runs + 1))
    assert NIGHT == "1" or runs > 0, "first run of the night fails"


def test_broken(request):
    # which --cell each run of it said (the triage's re-runs are runs outside the matrix)
    with Path(__file__).with_name("cells-seen").open("a") as seen:
        seen.write(request.config.getoption('--cell') + chr(10))
    assert NIGHT == "1", "broke on night 2 for good"


def test_fixme():
    assert NIGHT == "2", "fixed on night 2"


def test_always():
    raise LookupError("still broken: 404 from the hub")


if NIGHT == "1":
    def test_old():
        pass
else:
    def test_new():
        assert False, "new and failing"

    def test_added():
        pass
"""


def run_night(where: Path, night: str) -> Path:
    # cell toy: a matrix of its own, pinning transformers as installed here (the plugin checks the cell's pins)
    matrix = toymatrix.write(where, "toy")
    env = {**os.environ, "TOY_NIGHT": night, "QVL_MATRIX": str(matrix)}
    out = where / f"night-{night}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "harness.pytest.plugin",
            "--report-dir",
            str(out),
            "--cell",
            "toy",
            "test_toy.py",
        ],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    where = tmp_path_factory.mktemp("toy")
    (where / "test_toy.py").write_text(SUITE)
    return run_night(where, "1"), run_night(where, "2")


def test_every_test_outcome_is_recorded_with_its_message(nights):
    second = results.read(nights[1] / "results-toy.json")
    by_test = {t["test"]: t for t in second["tests"]}
    assert by_test["test_toy.py::test_broken"]["outcome"] == "failed"
    assert by_test["test_toy.py::test_broken"]["message"].startswith("AssertionError: broke on night 2 for good")
    assert by_test["test_toy.py::test_always"]["message"] == "LookupError: still broken: 404 from the hub"
    assert by_test["test_toy.py::test_steady"] == {
        **by_test["test_toy.py::test_steady"],
        "outcome": "passed",
        "message": "",
    }
    assert second["rootdir"] == str(nights[1].parent) and second["runxfail"] is False


def test_comparison_classifies_every_test(nights):
    comparison = diff.compare(diff.load_runs(nights[0]), diff.load_runs(nights[1]))
    kinds = {c.test.split("::")[1]: c.kind for c in comparison.changes}
    assert kinds == {
        "test_flaky": "new failure",
        "test_broken": "new failure",
        "test_new": "new failure",
        "test_fixme": "fixed",
        "test_always": "still failing",
        "test_added": "new test",
        "test_old": "removed test",
    }
    assert comparison.stack_changes == {"toy": []}
    assert [c.kind for c in comparison.changes][:3] == ["new failure"] * 3  # the report leads with them


@pytest.fixture(scope="module")
def triaged(nights, tmp_path_factory):
    current = tmp_path_factory.mktemp("current")
    for file in nights[1].iterdir():
        (current / file.name).write_text(file.read_text())
    os.environ["TOY_NIGHT"] = "2"  # the re-runs run in night 2's environment
    try:
        status = main(
            ["triage", "--previous", str(nights[0]), "--current", str(current), "--reruns", "2", "--cell", "toy"]
        )
    finally:
        del os.environ["TOY_NIGHT"]
    assert status == 0
    return current


def test_triage_reruns_new_failures_and_finds_the_flaky_one(nights, triaged):
    record = results.read(triaged / "results-toy.json")["triage"]
    assert record["reruns"] == {
        "test_toy.py::test_broken": ["failed", "failed"],
        "test_toy.py::test_new": ["failed", "failed"],
        "test_toy.py::test_flaky": ["passed", "passed"],
    }
    answers = {c["tests"][0]: (c["status"], c["note"]) for c in record["culprits"]}
    assert answers["test_toy.py::test_new"] == ("new test", "no previous run of this test to compare with")
    status, note = answers["test_toy.py::test_broken"]
    assert status == "no release to blame" and "the checkout, the data or the runner did" in note
    assert "test_toy.py::test_flaky" not in answers  # flaky: nothing to bisect
    # the nights ran as cell toy; the harness's own re-runs said they run on a stack outside the matrix
    assert (nights[0].parent / "cells-seen").read_text().split() == ["toy", "toy", "none", "none"]


def test_markdown_summary_after_triage(nights, triaged, capsys):
    assert main(["report", "diff", str(nights[0]), str(triaged), "--markdown", str(triaged / "summary.md")]) == 1
    text = capsys.readouterr().out
    assert text == (triaged / "summary.md").read_text()
    assert text.startswith("## qvl-harness: 2 new failures, 1 flaky, 1 fixed, 1 still failing")
    new = text.split("### New failures")[1].split("###")[0]
    assert "`test_toy.py::test_broken` | AssertionError: broke on night 2 for good" in new
    assert "no release to blame" in new and "test_flaky" not in new
    assert "| toy | `test_toy.py::test_flaky` | re-runs: passed, passed |" in text
    assert "None: every cell ran the same stack as before." in text and "New tests: 1; removed tests: 1." in text


def test_diff_json_and_a_quiet_night(nights, capsys):
    assert main(["report", "diff", str(nights[0]), str(nights[0]), "--json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert [(c["test"], c["kind"]) for c in changes] == [
        ("test_toy.py::test_always", "still failing"),
        ("test_toy.py::test_fixme", "still failing"),
    ]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nothing-here", "no such results file or folder"),
        (lambda d: d, "no results-*.json in this folder"),
        (lambda d: (d / "results-x.json").write_text("{}") and d / "results-x.json", "expected format 3"),
    ],
)
def test_bad_input_is_one_line(tmp_path, make, message, capsys):
    path = make(tmp_path)
    assert main(["report", "diff", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_triage_refuses_a_cell_it_has_no_results_for(nights, capsys):
    assert main(["triage", "--previous", str(nights[0]), "--current", str(nights[1]), "--cell", "other"]) == 2
    assert "has no results of cell 'other' (it has toy)" in capsys.readouterr().err


def test_markdown_escapes_table_cells():
    assert markdown.cell("a | b\nc") == "a \\| b c"
    with pytest.raises(HarnessError):
        diff.load_runs(Path("/nonexistent"))


def test_reruns_that_crash_judge_nothing_and_every_report_says_so(nights, tmp_path, capsys):
    """Run outside night 2's environment (here: without TOY_NIGHT, so the suite does not import), the re-runs
    crashed, and the triage once exited 0 with "no release to blame: ... the checkout, the data or the runner
    did" in the results file, which `report diff` showed."""
    current = tmp_path / "current"
    current.mkdir()
    for file in nights[1].iterdir():
        (current / file.name).write_text(file.read_text())
    assert "TOY_NIGHT" not in os.environ
    status = main(["triage", "--previous", str(nights[0]), "--current", str(current), "--reruns", "2", "--cell", "toy"])
    out = capsys.readouterr().out
    assert status == 1, out
    record = results.read(current / "results-toy.json")["triage"]
    answers = {c["tests"][0]: (c["status"], c["note"]) for c in record["culprits"]}
    status_, note = answers["test_toy.py::test_broken"]
    assert status_ == "could not judge" and note.startswith("2 of 2 re-runs have no result for it (pytest exit "), note
    assert "test_toy.py" in note and note.endswith("run the triage in cell toy's environment")
    assert "no release to blame" not in json.dumps(record)
    assert "  could not judge test_toy.py::test_broken: 2 of 2 re-runs" in out
    assert main(["report", "diff", str(nights[0]), str(current)]) == 1
    summary = capsys.readouterr().out.split("### New failures")[1].split("###")[0]
    assert "could not judge: 2 of 2 re-runs have no result for it" in summary and "no release to blame" not in summary
    report = tmp_path / "report.html"
    main(["report", "build", str(current / "results-toy.json"), "--previous", str(nights[0]), "--out", str(report)])
    html = report.read_text()
    assert '<div class="culprit unjudged">could not judge: 2 of 2 re-runs have no result for it' in html
    assert "no release to blame" not in html


def test_the_steps_between_the_ends_are_probed_beside_them_where_they_all_fit(tmp_path, monkeypatch):
    """With the cores for the ends' four runs and every step between, the triage probes them in one round and
    the search answers from those verdicts (one probe's time instead of one per halving); with fewer, none."""
    from datetime import datetime, timezone

    from harness.bisection.candidates import Point
    from harness.bisection.engine import Bisection, ProbeLog
    from harness.bisection.oracle import BAD, GOOD, Run
    from harness.nightly import triage

    verdicts = {"1.0": GOOD, "1.1": GOOD, "1.2": BAD, "1.3": BAD, "1.4": BAD}
    uploaded = datetime(2025, 1, 1, tzinfo=timezone.utc)
    points = [Point(k, f"toy=={k}", uploaded, (f"toy=={k}",)) for k in verdicts]
    probed = []

    class Quiet:
        def probing(self, step, point):
            pass

        def judged(self, runs):
            pass

    def probe(point, output):
        probed.append(point.key)
        return Run(int(verdicts[point.key] == BAD), verdicts[point.key], "", 0.0, "")

    monkeypatch.setattr(triage, "SIDE_BY_SIDE", 4 + 3)
    bisection = Bisection(points, probe, ProbeLog(tmp_path / "log.jsonl", {}, False), Quiet(), side_by_side=7)
    ends = [(points[0], 2, "[previous stack]"), (points[-1], 2, "[this stack]")]
    assert bisection.judge_together(ends + triage._ahead(points))[:2] == [GOOD, BAD]
    assert sorted(probed) == ["1.0", "1.0", "1.1", "1.2", "1.3", "1.4", "1.4"]
    outcome = bisection.search(0, len(points) - 1, GOOD, lo_implied=False, hi_implied=False)
    assert (outcome.last_old.key, outcome.first_new.key) == ("1.1", "1.2") and len(probed) == 7  # nothing more
    monkeypatch.setattr(triage, "SIDE_BY_SIDE", 4 + 2)
    assert triage._ahead(points) == []
