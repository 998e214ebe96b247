"""`qvl-harness bisect` against a local package index: real wheels, real uv overlays, real oracles.

The index holds releases 1.0 .. 1.9 of a throwaway package `qvltoy` (its module says which
release it is: ``qvltoy.N``), uploaded a day apart, plus a yanked release and, in some tests, a
release whose wheel is broken. Oracles import the *installed* qvltoy and judge its N, so a probe
that installed the wrong release gives the wrong answer.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from toywheels import write_wheel

from harness.bisection import candidates
from harness.cli import build_parser, main
from harness.core.errors import HarnessError
from harness.env import pypi
from harness.failures import registry

VERSIONS = [f"1.{n}" for n in range(10)]
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def oracle(condition: str) -> str:
    """A command exiting 0 (good) when ``condition`` holds for the installed qvltoy."""
    return f'python -c "import sys, qvltoy, qvlpeer; sys.exit(0 if ({condition}) else 1)"'


def release_json(versions: dict[str, datetime], yanked=()) -> dict:
    return {
        "releases": {
            v: [{"upload_time_iso_8601": t.isoformat().replace("+00:00", "Z"), "yanked": v in yanked}]
            for v, t in versions.items()
        }
    }


@pytest.fixture
def index(tmp_path, monkeypatch):
    """Wheels and PyPI-format release data for qvltoy and its companion qvlpeer; a fresh harness cache."""
    wheels, data = tmp_path / "wheels", tmp_path / "data"
    wheels.mkdir(), data.mkdir()
    toy = {v: T0 + timedelta(days=i) for i, v in enumerate(VERSIONS)}
    for i, version in enumerate(VERSIONS):
        write_wheel(wheels, "qvltoy", version, f"N = {i}\n")
    toy["2.0"] = T0 + timedelta(days=20)  # yanked: never a candidate
    write_wheel(wheels, "qvltoy", "2.0", "N = 20\n")
    toy["2.1rc1"] = T0 + timedelta(days=21)  # a pre-release: a candidate only with --pre
    (data / "qvltoy.json").write_text(json.dumps(release_json(toy, yanked={"2.0"})))
    # qvlpeer releases land between qvltoy's: 1.0 before everything, 1.1 at day 2.5, 1.2 at day 6.5.
    peer = {"1.0": T0 - timedelta(days=1), "1.1": T0 + timedelta(days=2.5), "1.2": T0 + timedelta(days=6.5)}
    for i, version in enumerate(peer):
        write_wheel(wheels, "qvlpeer", version, f"N = {i}\n")
    (data / "qvlpeer.json").write_text(json.dumps(release_json(peer)))
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return tmp_path


def bisect(index: Path, capsys, *args: str) -> tuple[int, str]:
    """`qvl-harness bisect ARGS` over the local index: exit status and everything it printed."""
    status = main(
        [
            "bisect",
            *args,
            "--release-data",
            str(index / "data"),
            "--find-links",
            str(index / "wheels"),
            "--no-index",
            "--offline",
            "--base-python",
            sys.executable,
        ]
    )
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def probes(out: str) -> list[int]:
    return [int(line.split("probes: ")[1].split()[0]) for line in out.splitlines() if line.startswith("probes: ")]


def installs(out: str) -> int:
    return int(out.split("environments: ")[1].split()[0])


def bound(n: int) -> int:
    return math.ceil(math.log2(n)) + 2


def test_finds_the_first_bad_release_within_the_probe_bound(index, capsys):
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.0",
        "--bad",
        "1.9",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("qvltoy.N < 4"),
    )
    assert status == 0, out
    assert "first bad: qvltoy==1.4" in out and "last good: qvltoy==1.3" in out
    assert probes(out) and probes(out)[0] <= bound(10)
    steps = [line.split()[0] for line in out.splitlines() if " probing " in line]
    assert [step.split("/")[0] for step in steps] == [f"[{n}" for n in range(1, len(steps) + 1)], out
    assert "--good 1.3 --bad 1.4" in out.split("to re-check this answer: ")[1].splitlines()[0]
    assert "evidence:" in out and "qvltoy==2.0" not in out  # the yanked release is never a candidate


def test_repeat_run_reuses_every_environment(index, capsys):
    args = ("qvltoy", "--good", "1.0", "--bad", "1.9", "--with", "qvlpeer==1.0", "--oracle-cmd", oracle("qvltoy.N < 7"))
    first_status, first = bisect(index, capsys, *args)
    again_status, again = bisect(index, capsys, *args)
    assert first_status == again_status == 0
    assert installs(first) == probes(first)[0] and installs(again) == 0
    assert "first bad: qvltoy==1.7" in again
    # --resume answers from the log: no oracle runs at all
    _, resumed = bisect(index, capsys, *args, "--resume")
    assert "oracle runs: 0 (+" in resumed and "first bad: qvltoy==1.7" in resumed
    answered = [line for line in resumed.splitlines() if " probing " in line]
    assert answered and all("; from the log)" in line for line in answered), resumed


def test_find_fix_finds_the_first_good_release_after_a_bad_one(index, capsys):
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--find-fix",
        "--bad",
        "1.2",
        "--good",
        "1.9",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("not 2 <= qvltoy.N < 6"),
    )
    assert status == 0, out
    assert "first fixed: qvltoy==1.6" in out and "last bad: qvltoy==1.5" in out
    assert "--find-fix --good 1.6 --bad 1.5" in out


def test_find_range_from_one_known_bad_release(index, capsys):
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--find-range",
        "--bad",
        "1.5",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("not 3 <= qvltoy.N < 7"),
    )
    assert status == 0, out
    assert "first bad: qvltoy==1.3" in out and "first fixed: qvltoy==1.7" in out
    back, forward = probes(out)
    assert back <= bound(6) and forward <= bound(5)


def test_find_range_reports_a_failure_that_was_never_fixed(index, capsys):
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--find-range",
        "--bad",
        "1.5",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("qvltoy.N < 3"),
    )
    assert status == 0, out
    assert "first bad: qvltoy==1.3" in out
    assert "not fixed yet: qvltoy==1.9, the newest candidate, is still bad" in out


def test_a_release_that_does_not_install_is_skipped(index, capsys):
    (index / "wheels" / "qvltoy-1.4-py3-none-any.whl").write_bytes(b"not a zip")
    args = ("qvltoy", "--good", "1.0", "--bad", "1.9", "--with", "qvlpeer==1.0", "--oracle-cmd", oracle("qvltoy.N < 7"))
    status, out = bisect(index, capsys, *args)
    assert status == 0, out
    assert (
        "probing qvltoy==1.4 (with qvlpeer==1.0) ... skip (not run: install failed" in out
        and "first bad: qvltoy==1.7" in out
    )
    # the failed install is remembered too: a repeat run installs nothing
    _, again = bisect(index, capsys, *args)
    assert installs(again) == 0 and "first bad: qvltoy==1.7" in again


def test_skips_next_to_the_transition_leave_it_undecided(index, capsys):
    (index / "wheels" / "qvltoy-1.5-py3-none-any.whl").write_bytes(b"not a zip")
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.0",
        "--bad",
        "1.9",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("qvltoy.N < 5"),
    )
    assert status == 1, out
    assert "undecided: the first bad is one of 1.5, 1.6" in out
    # one skip of a handful of probes: the warning comes with the answer it leaves open
    assert (
        out.split("undecided: the first bad is one of 1.5, 1.6")[1]
        .splitlines()[1]
        .startswith("WARNING: 1 candidate(s) could not be judged and leave the answer undecided")
    ), out


def test_exit_125_from_the_oracle_is_a_skip(index, capsys):
    cmd = 'python -c "import sys, qvltoy; sys.exit(125 if qvltoy.N == 4 else 0 if qvltoy.N < 4 else 1)"'
    status, out = bisect(index, capsys, "qvltoy", "--good", "1.0", "--bad", "1.9", "--oracle-cmd", cmd)
    assert status == 1 and "undecided: the first bad is one of 1.4, 1.5" in out


def test_a_flaky_endpoint_stops_the_search(index, capsys):
    flip = index / "flip"
    # good on the first run of every probe, bad on the second
    cmd = f"python -c \"import pathlib, sys; p = pathlib.Path(r'{flip}'); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); sys.exit(n % 2)\""  # noqa: E501 (a message kept whole, to be found by grep)
    status, out = bisect(index, capsys, "qvltoy", "--good", "1.0", "--bad", "1.9", "--oracle-cmd", cmd)
    assert status == 2
    assert "flaky oracle: qvltoy==1.0 was judged good then bad" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (("--good", "1.6", "--bad", "1.9"), "--good 1.6 is bad, not good"),
        (("--good", "1.0", "--bad", "1.2"), "--bad 1.2 is good, not bad"),
        (("--good", "1.9", "--bad", "1.1"), "use --find-fix"),
        (("--good", "1.0", "--bad", "2.0"), "qvltoy 2.0 was yanked from PyPI: it is no candidate"),
        (("--good", "1.0", "--bad", "banana"), "'banana' is not a valid version"),
        (("--find-range", "--good", "1.0", "--bad", "1.5"), "--find-range takes one known --bad"),
    ],
)
def test_wrong_endpoints_are_one_clear_error(index, capsys, args, message):
    status, out = bisect(
        index, capsys, "qvltoy", *args, "--with", "qvlpeer==1.0", "--oracle-cmd", oracle("qvltoy.N < 4")
    )
    assert status == 2
    error = [line for line in out.splitlines() if line.startswith("qvl-harness: error:")]
    assert len(error) == 1 and message in error[0], out


def test_pytest_oracle_judges_by_the_selected_tests(index, capsys, tmp_path):
    tests = tmp_path / "probe_tests"
    tests.mkdir()
    (tests / "test_toy.py").write_text(
        "import pytest, qvltoy\n"
        "from harness.core.errors import HarnessError\n"
        "def test_old_behaviour():\n"
        "    if qvltoy.N < 1:\n        raise HarnessError('qvltoy 1.0 predates the code this suite reads')\n"
        "    assert qvltoy.N < 4\n"
        "@pytest.mark.xfail(strict=True, reason='expectations must not hide the failure')\n"
        "def test_expected_failure():\n    assert qvltoy.N < 4\n"
    )
    # 1.0 (the implied oldest endpoint) fails only with a HarnessError: it cannot be judged, so it is skipped.
    # (Without the harness plugin, which the real suites load, pytest starts in a second.)
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--bad",
        "1.6",
        "--range-end",
        "1.6",
        "--with",
        "qvlpeer==1.0",
        "--oracle-pytest",
        f"{tests} -p no:harness.pytest.plugin",
    )
    assert status == 0, out
    assert (
        "probing qvltoy==1.0 (with qvlpeer==1.0) ... skip (exit 1" in out
        and "could not judge: harness.core.errors.HarnessError: qvltoy 1.0 predates" in out
    )
    assert "first bad: qvltoy==1.4" in out and "last good: qvltoy==1.3" in out
    # a selection that collects nothing judges no release: the endpoint cannot be judged
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.2",
        "--bad",
        "1.3",
        "--with",
        "qvlpeer==1.0",
        "--oracle-pytest",
        f"{tests} -p no:harness.pytest.plugin -k no_such_test",
    )
    assert status == 2 and "cannot judge endpoint qvltoy==1.2: pytest exit 5 (no tests collected)" in out


def test_unjudgeable_oldest_releases_are_skipped_not_taken_as_bad(index, capsys):
    cmd = 'python -c "import sys, qvltoy; n = qvltoy.N; sys.exit(125 if n < 2 else 1 if 3 <= n < 7 else 0)"'
    status, out = bisect(index, capsys, "qvltoy", "--find-range", "--bad", "1.5", "--oracle-cmd", cmd)
    assert status == 0, out
    assert "first bad: qvltoy==1.3" in out and "first fixed: qvltoy==1.7" in out
    # with nothing judgeable before the transition, it says so instead of guessing
    cmd = 'python -c "import sys, qvltoy; n = qvltoy.N; sys.exit(125 if n < 3 else 1)"'
    status, out = bisect(index, capsys, "qvltoy", "--bad", "1.5", "--range-end", "1.5", "--oracle-cmd", cmd)
    assert status == 1
    assert "undecided: the first bad is one of 1.0, 1.1, 1.2, 1.3" in out


def test_same_day_companions_and_bisect_by_date(index, capsys):
    # qvlpeer 1.2 (day 6.5) breaks it: by date, the first bad state is the one that brought qvlpeer 1.2
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "qvlpeer",
        "--by-date",
        "--good",
        "2025-01-01T12:00:00Z",
        "--bad",
        "2025-01-10",
        "--oracle-cmd",
        oracle("qvlpeer.N < 2"),
    )
    assert status == 0, out
    assert "first bad: @2025-01-07T12:00:00Z (qvlpeer==1.2)" in out
    assert "pins of the first bad: qvltoy==1.6 qvlpeer==1.2" in out
    # by version with same-day companions: qvltoy 1.6 (day 6, 00:00) is paired with qvlpeer 1.2 (day 6, 12:00)
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.0",
        "--bad",
        "1.9",
        "--with",
        "qvlpeer@same-day",
        "--oracle-cmd",
        oracle("qvlpeer.N < 2"),
    )
    assert status == 0 and "first bad: qvltoy==1.6" in out, out


def test_record_writes_the_range_into_the_registry(index, capsys, monkeypatch):
    registry_file = index / "known_failures.toml"
    registry_file.write_text(
        '# comment kept\n[[failure]]\nid = "toy"\npackage = "qvltoy"\naffected = ">=0"\nevidence = "pending"\n'
        'found_by = "pending"\nsymptom = "x"\ndescription = "d"\nseed = "s"\nsuite = "suites/x.py"\n\n'
        '[[failure]]\nid = "other"\npackage = "qvltoy"\naffected = ">=1.1"\nevidence = "kept"\n'
        'found_by = "kept"\nsymptom = "x"\ndescription = "d"\nseed = "s"\nsuite = "suites/y.py"\n'
    )
    monkeypatch.setattr(registry, "REGISTRY", registry_file)
    monkeypatch.setattr(registry, "PACKAGES", registry.PACKAGES | {"qvltoy"})
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--find-range",
        "--bad",
        "1.5",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("not 3 <= qvltoy.N < 7"),
        "--record",
        "toy",
    )
    assert status == 0, out
    entries = registry.load_registry(registry_file)
    assert str(entries["toy"].affected) == "<1.7,>=1.3"
    assert "first bad 1.3 (last good 1.2)" in entries["toy"].evidence and "first fixed 1.7" in entries["toy"].evidence
    found_by = shlex.split(entries["toy"].found_by)
    assert found_by[:6] == ["qvl-harness", "bisect", "qvltoy", "--find-range", "--bad", "1.5"]
    assert "--with qvlpeer==1.0" in entries["toy"].found_by and "--oracle-cmd" in found_by
    assert "--record" not in found_by and "--resume" not in found_by
    assert str(entries["other"].affected) == ">=1.1" and entries["other"].evidence == "kept"
    assert registry_file.read_text().startswith("# comment kept\n")
    # the registry table shows it
    assert main(["known"]) == 0
    assert "<1.7,>=1.3" in capsys.readouterr().out


def test_release_history_is_ordered_by_upload_time_without_yanked_or_prereleases():
    data = release_json(
        {
            "2.0": T0 + timedelta(days=1),
            "1.9.1": T0 + timedelta(days=3),
            "2.1rc1": T0 + timedelta(days=4),
            "2.1": T0 + timedelta(days=5),
            "1.0": T0,
        },
        yanked={"2.1"},
    )
    data["releases"]["3.0"] = []  # no files
    assert [r.version for r in pypi.releases_from_json("x", data)] == ["1.0", "2.0", "1.9.1"]
    assert [r.version for r in pypi.releases_from_json("x", data, pre=True)] == ["1.0", "2.0", "1.9.1", "2.1rc1"]
    releases = pypi.releases_from_json("x", data)
    assert pypi.newest_at(releases, T0 + timedelta(days=4)).version == "2.0"  # highest version, as uv picks


def test_companion_pins_from_a_matrix_cell_leave_out_the_probed_package(index, tmp_path, monkeypatch):
    from harness.bisection import candidates
    from harness.bisection import run as bisect_run

    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        '[cells.c]\nunsloth = "2025.1.5"\nunsloth_zoo = "2025.1.3"\n'
        'transformers = "4.48.0"\npeft = "0.14.0"\ntorch = "2.5.1"\n'
    )
    monkeypatch.setenv("QVL_MATRIX", str(matrix))
    args = build_parser().parse_args(
        ["bisect", "unsloth", "--cell", "c", "--with", "qvlpeer@same-day", "--oracle-cmd", "true"]
    )
    companions = bisect_run.companion_source(args, pypi.DirectoryIndex(index / "data"), None)
    point = candidates.Point("1.0", "unsloth==1.0", T0 + timedelta(days=3), ("unsloth==1.0",))
    # torch stays the base's; qvlpeer 1.1 came out on day 2.5
    assert companions(point) == ["unsloth-zoo==2025.1.3", "transformers==4.48.0", "peft==0.14.0", "qvlpeer==1.1"]


# --- faults: interruptions, crashing oracles, bands of releases that cannot be judged --------------------


def log_lines(index: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (index / "cache" / "bisect").glob("*.jsonl"))


def test_an_interrupted_bisect_prints_a_continuation_that_works_and_the_log_only_grows(index, capsys):
    """Ctrl-C after the implied oldest endpoint was skipped once printed a resume line naming that skipped
    release (which then aborted with exit 2), and a run without --resume overwrote the probe log."""
    me, once = os.getpid(), index / "interrupted-once"
    cmd = (
        "python -c \"import os, pathlib, signal, sys, qvltoy; n = qvltoy.N; p = pathlib.Path(r'" + str(once) + "'); "
        f"(n == 4 and not p.exists() and (p.touch() or os.kill({me}, signal.SIGINT))); "
        'sys.exit(125 if n == 0 else 0 if n < 6 else 1)"'
    )
    status, out = bisect(index, capsys, "qvltoy", "--with", "qvlpeer==1.0", "--oracle-cmd", cmd)
    assert status == 130, out
    line = out.split("continue with: ")[1].splitlines()[0]
    assert "--good 1.0 " not in line and " --bad 1." in line and "--resume" in line  # 1.0 was skipped, never judged
    logged = log_lines(index)
    argv = shlex.split(line)[2:]  # after "qvl-harness bisect"
    status, out = bisect(index, capsys, *argv)
    assert status == 0 and "first bad: qvltoy==1.6" in out and "(+" in out  # answered partly from the log
    assert log_lines(index) > logged
    before = log_lines(index)
    status, out = bisect(index, capsys, "qvltoy", "--with", "qvlpeer==1.0", "--oracle-cmd", cmd)
    assert status == 0 and log_lines(index) > before  # a run without --resume appends too


@pytest.mark.slow(seconds=45)  # its probes crash in real pytest processes (46-55 s on the H200)
def test_a_crashing_oracle_cannot_judge_and_says_why(index, capsys, tmp_path):
    """An oracle that crashed (an ImportError from a companion pin) once counted as bad: a run reported the
    wrong first fixed release with exit 0."""
    tests = tmp_path / "probe_tests"
    tests.mkdir()
    (tests / "test_toy.py").write_text(
        "import qvltoy\n"
        "def test_behaviour():\n"
        "    if qvltoy.N in (4, 5):\n        import companion_that_is_missing\n"
        "    assert qvltoy.N < 7\n"
    )
    status, out = bisect(
        index, capsys, "qvltoy", "--with", "qvlpeer==1.0", "--oracle-pytest", f"{tests} -p no:harness.pytest.plugin"
    )
    assert "first bad: qvltoy==1.7" in out and status == 0, out
    assert "could not judge: ModuleNotFoundError: No module named 'companion_that_is_missing'" in out
    # where most probes crash, the answer comes with a warning
    (tests / "test_toy.py").write_text(
        "import qvltoy\ndef test_behaviour():\n    if qvltoy.N != 9:\n        import nothing_here\n"
    )
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--with",
        "qvlpeer==1.0",
        "--find-fix",
        "--oracle-pytest",
        f"{tests} -p no:harness.pytest.plugin",
    )
    warning = out.split("undecided: the first fixed is one of")[1].splitlines()[1]
    assert warning.startswith("WARNING: ") and "could not be judged and leave the answer undecided" in warning, out


def test_a_band_of_unjudgeable_releases_is_crossed_not_walked():
    """A band of 29 releases that could not be judged was once walked one by one: 36 probes where the
    bound is 9."""
    from harness.bisection.engine import Bisection, ProbeLog
    from harness.bisection.oracle import Run

    points = [candidates.Point(f"1.{i}", f"toy==1.{i}", T0 + timedelta(days=i), (f"toy==1.{i}",)) for i in range(64)]
    band = range(20, 49)

    def probe(point, output):
        n = int(point.key.split(".")[1])
        return Run(
            0 if n in band else (0 if n < 52 else 1),
            "skip" if n in band else "good" if n < 52 else "bad",
            "",
            0.0,
            "install failed" if n in band else "",
        )

    class Quiet:
        def probing(self, *args):
            pass

        def judged(self, *args):
            pass

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bisection = Bisection(points, probe, ProbeLog(Path(tmp, "log.jsonl"), {}, False), Quiet())
        outcome = bisection.search(0, 63, "good", lo_implied=False, hi_implied=False)
    assert outcome.first_new.key == "1.52" and outcome.last_old.key == "1.51"
    assert len(outcome.probed) <= outcome.bound + 3, sorted(outcome.probed)


def test_points_judged_together_probe_side_by_side_and_a_skip_ends_its_repeats(tmp_path):
    """The triage's ends (two runs each) and split steps are wanted together: their probes overlap, at most
    side_by_side at once, and each point's verdict, log and output files are those of one after another."""
    import threading
    import time as clock

    from harness.bisection.engine import Bisection, ProbeLog
    from harness.bisection.oracle import Run

    points = [candidates.Point(k, f"toy=={k}", T0, (f"toy=={k}",)) for k in ("1.0", "1.1", "1.2")]
    verdicts = {"1.0": "good", "1.1": "skip", "1.2": "bad"}
    running, most, outputs, lock = [0], [0], [], threading.Lock()

    def probe(point, output):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            outputs.append(output.name)
        clock.sleep(0.3)
        with lock:
            running[0] -= 1
        return Run(0 if verdicts[point.key] != "bad" else 1, verdicts[point.key], "", 0.3, "")

    class Lines:
        def __init__(self):
            self.said = []

        def probing(self, step, point):
            self.said.append(f"{step} {point.key}")

        def judged(self, runs):
            self.said.append("/".join(r.verdict for r in runs))

    log = ProbeLog(tmp_path / "log.jsonl", {}, False)
    lines = Lines()
    bisection = Bisection(points, probe, log, lines, side_by_side=3)
    started = clock.monotonic()
    assert bisection.judge_together([(p, 2, f"[{p.key}]") for p in points]) == ["good", "skip", "bad"]
    assert most[0] == 3 and clock.monotonic() - started < 0.3 * 6 / 2, (most, clock.monotonic() - started)
    assert sorted(outputs) == [
        "1.0-1.log",
        "1.0-2.log",
        "1.1-1.log",
        "1.1-2.log",
        "1.2-1.log",
        "1.2-2.log",
    ]
    assert lines.said == ["[1.0] 1.0", "good/good", "[1.1] 1.1", "skip", "[1.2] 1.2", "bad/bad"]
    assert log.count == 5 and [len(bisection.runs[p.key]) for p in points] == [2, 1, 2]  # the skip's repeat dropped
    assert bisection.judge_together([(points[0], 2, "again")]) == ["good"] and log.count == 5  # judged: no probe


@pytest.mark.slow
def test_sigint_stops_a_bisect_started_in_the_background(index):
    """Started with `nohup ... &`, a process inherits SIGINT ignored: there was no clean stop and no resume line."""
    import signal
    import subprocess
    import sys
    import time as clock

    args = [
        sys.executable,
        "-m",
        "harness.cli",
        "bisect",
        "qvltoy",
        "--release-data",
        str(index / "data"),
        "--find-links",
        str(index / "wheels"),
        "--no-index",
        "--offline",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        "sleep 2; true",
    ]
    env = {**os.environ, "QVL_CACHE": str(index / "cache"), "UV_CACHE_DIR": str(index / "uv-cache")}
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = clock.monotonic() + 120
    while clock.monotonic() < deadline and not (index / "cache" / "bisect").is_dir():
        clock.sleep(0.2)
    clock.sleep(3)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    assert "continue with: qvl-harness bisect qvltoy" in out


def test_an_install_error_keeps_its_cause():
    from harness.core.errors import one_line

    stderr = (
        "  × No solution found when resolving dependencies:\n"
        + "  ╰─▶ "
        + "x " * 300
        + "\n      because qvltoy==9 needs torch<1"
    )
    line = one_line(stderr)
    assert (
        line.startswith("No solution found") and line.endswith("because qvltoy==9 needs torch<1") and len(line) <= 300
    )


def test_steps_between_two_stacks_merge_uploads_and_keep_co_releases_together():
    def history(package: str, uploads: dict[str, float]) -> list[pypi.Release]:
        return [pypi.Release(package, v, T0 + timedelta(hours=h)) for v, h in uploads.items()]

    histories = {
        "unsloth": history("unsloth", {"1.0": 0, "1.1": 10, "1.2": 30, "1.3": 50}),
        "unsloth-zoo": history("unsloth-zoo", {"1.0": 0, "1.1": 10.5, "1.2": 40}),
        "peft": history("peft", {"1.0": 0, "2.0": 20}),
    }
    before = {"unsloth": "1.0", "unsloth-zoo": "1.0", "peft": "1.0"}
    after = {"unsloth": "1.2", "unsloth-zoo": "1.2", "peft": "1.0"}
    points = candidates.between_stacks(before, after, histories, timedelta(hours=1))
    assert [p.key for p in points] == [
        "previous",
        "unsloth==1.1 + unsloth-zoo==1.1",
        "unsloth==1.2",
        "unsloth-zoo==1.2",
    ]
    assert points[0].pins == ("unsloth==1.0", "unsloth-zoo==1.0")  # peft did not move: the base has it
    assert points[2].pins == ("unsloth==1.2", "unsloth-zoo==1.1") and points[-1].pins == (
        "unsloth==1.2",
        "unsloth-zoo==1.2",
    )
    with pytest.raises(HarnessError, match="unsloth went back from 1.2 to 1.0: a downgrade is not bisected"):
        candidates.between_stacks(after, before, histories, timedelta(hours=1))


def test_an_overlay_shadows_what_pythonpath_holds(index, capsys, monkeypatch):
    """On an air-gapped runner the wheelhouse install is on PYTHONPATH; each probe must still see its own pins."""
    import zipfile

    site = index / "site"
    with zipfile.ZipFile(index / "wheels" / "qvltoy-1.9-py3-none-any.whl") as wheel:
        wheel.extractall(site)
    with zipfile.ZipFile(index / "wheels" / "qvlpeer-1.2-py3-none-any.whl") as wheel:
        wheel.extractall(site)
    monkeypatch.setenv("PYTHONPATH", str(site))
    status, out = bisect(
        index, capsys, "qvltoy", "--good", "1.0", "--bad", "1.9", "--oracle-cmd", oracle("qvltoy.N < 5")
    )
    assert status == 0 and "first bad: qvltoy==1.5" in out, out


# --- what is checked before the first probe --------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--good", "1.0", "--bad", "3.5"),
            "--bad 3.5: qvltoy has no release 3.5 on the index (its releases: 1.0 .. 2.1rc1)",
        ),
        (
            ("--good", "1.0", "--bad", "2.1rc1"),
            "--bad 2.1rc1: qvltoy 2.1rc1 is a pre-release; add --pre to bisect over",
        ),
        (
            ("--good", "1.0", "--bad", "1.9", "--exclude-newer", "2025-01-05"),
            "--bad 1.9: qvltoy 1.9 was uploaded 2025-01-10 00:00 UTC, after --exclude-newer 2025-01-05 00:00",
        ),
        (
            ("--good", "1.4", "--bad", "1.4"),
            "--good and --bad both name 1.4: a bisect needs a good and a bad release that differ",
        ),
        (
            ("--good", "1.0", "--bad", "1.9", "--record", "nosuch-id"),
            "--record nosuch-id: no such known failure in known_failures.toml",
        ),
    ],
)
def test_inputs_are_refused_before_any_probe(index, capsys, args, message):
    status, out = bisect(index, capsys, "qvltoy", *args, "--oracle-cmd", oracle("qvltoy.N < 4"))
    assert status == 2 and out.startswith("qvl-harness: error: ") and message in out and out.count("\n") == 1, out
    assert not (index / "cache" / "bisect").exists()  # no probe log: nothing was probed


def test_an_oracle_that_cannot_collect_is_refused_before_any_probe(index, capsys, tmp_path):
    """A missing oracle file was found only after a probe environment was built, as "pytest exit 4 (pytest usage
    error)", never named."""
    status, out = bisect(index, capsys, "qvltoy", "--good", "1.0", "--bad", "1.9", "--oracle-pytest", "suites/nope.py")
    assert status == 2 and "--oracle-pytest: suites/nope.py does not exist (the selection runs from the checkout" in out
    tests = tmp_path / "probe_tests"
    tests.mkdir()
    (tests / "test_toy.py").write_text("def test_behaviour():\n    import qvltoy\n    assert qvltoy.N < 4\n")
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.0",
        "--bad",
        "1.9",
        "--oracle-pytest",
        f"{tests} -p no:harness.pytest.plugin -k no_such_test",
    )
    assert (
        status == 2 and "does not collect in the base python" in out and out.rstrip().endswith(": it selects no test")
    )
    assert out.count("\n") == 1 and not (index / "cache" / "bisect").exists(), out


def test_a_named_endpoint_that_cannot_install_says_a_range_bound_crosses_it(index, capsys):
    (index / "wheels" / "qvltoy-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--good",
        "1.0",
        "--bad",
        "1.9",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("qvltoy.N < 4"),
    )
    [error] = [line for line in out.splitlines() if line.startswith("qvl-harness: error:")]
    assert status == 2 and error.startswith("qvl-harness: error: cannot judge endpoint qvltoy==1.0: install failed"), (
        out
    )
    assert error.endswith(
        "or name it --range-start 1.0 instead of --good 1.0 to let the search cross releases that cannot be judged"
    )
    # as the line says: the range bound is crossed, the answer found
    status, out = bisect(
        index,
        capsys,
        "qvltoy",
        "--range-start",
        "1.0",
        "--bad",
        "1.9",
        "--with",
        "qvlpeer==1.0",
        "--oracle-cmd",
        oracle("qvltoy.N < 4"),
    )
    assert status == 0 and "first bad: qvltoy==1.4" in out, out


def test_evidence_leaves_known_noise_out_and_names_the_whole_output(index, capsys):
    noisy = (
        "import sys, qvltoy; "
        "print('Failed to load CPU gemm_4bit_forward from kernels-community: No module named kernels'); "
        "print('W1201 13:00:04.723000 15580 torch/utils/_pytree.py:630] <enum X> is an Enum subclass and is now "
        "natively supported by torch.compile as an opaque value type.'); "
        "print('the probe says', qvltoy.N); sys.exit(0 if qvltoy.N < 4 else 1)"
    )
    status, out = bisect(
        index, capsys, "qvltoy", "--good", "1.0", "--bad", "1.9", "--oracle-cmd", f'python -c "{noisy}"'
    )
    assert status == 0 and "first bad: qvltoy==1.4" in out, out
    evidence = out.split("evidence:")[1].split("probes:")[0]
    assert "| the probe says 4" in evidence and "gemm_4bit" not in evidence and "_pytree" not in evidence
    whole = [line.split("whole output: ")[1] for line in evidence.splitlines() if "whole output: " in line]
    assert len(whole) == 2 and "gemm_4bit_forward" in Path(whole[1]).read_text()
    assert "the probe says 4" in Path(whole[1]).read_text()


def test_known_noise_is_recognised_by_one_list():
    from harness.core import noise

    seen = [  # from a cell run's stderr (cell canary, CPU)
        "Failed to load /e/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
        "Could not load this library: /e/lib/python3.11/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so",
        "W1201 13:00:04.723000 15580 .tox/cell-canary/lib/python3.11/site-packages/torch/utils/_pytree.py:630] <enum "
        "'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as an opaque value type.",  # noqa: E501 (a message kept whole, to be found by grep)
        "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure",
    ]
    kept = ["E   AssertionError: caption differs", "Failed to load the model: OSError"]
    assert noise.without_noise("\n".join(seen + kept)) == "\n".join(kept)


def test_probes_the_harness_starts_run_outside_the_matrix(tmp_path):
    """A probe is no run of a matrix cell: pytest oracles get --cell none, command oracles QVL_CELL=none."""
    from harness.bisection.oracle import GOOD, Oracle

    (tmp_path / "test_cell.py").write_text(
        "def test_cell(request):\n    assert request.config.getoption('--cell') == 'none'\n"
    )
    run = Oracle(pytest_selection=str(tmp_path / "test_cell.py"), rootdir=tmp_path).run(Path(sys.executable), "probe")
    assert run.verdict == GOOD, run.tail
    assert Oracle(command='test "$QVL_CELL" = none').run(Path(sys.executable), "probe").verdict == GOOD
