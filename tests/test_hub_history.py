"""The hub history (fixtures/hub/history.toml): its reading rule, the snapshots derived from it, the sweep of
every name a release maps against it, its commands, and two live nights replayed offline: the local hub serving
a "today" snapshot stands in for huggingface.co, and a repo that vanished between the nights is a new failure."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.data import hub, hub_history
from harness.failures import hub_sweep
from harness.failures.registry import load_registry
from harness.pytest import results

# One worker runs this module: the two live nights of `two_nights` are made once per process; spread over the
# workers, each worker made them again (a pytest session each, ~22 s on the H200).
pytestmark = pytest.mark.xdist_group("hub-nights")

DAY = datetime.date
ABSENT_72B = "unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit"
VANISHING = "unsloth/Qwen3-VL-8B-Instruct-unsloth-bnb-4bit"  # unslothai/unsloth#3461: missing while the docs named it
LIVE_TEST = "suites/test_404_missing_repo.py::test_live_hub_has_every_target_the_canary_maps"
TOY = """
[snapshots."s"]
date = 2024-06-01
description = "toy"

[[repo]]
id = "a/kept"
seen = [{ state = "present", date = 2024-01-10, source = "seen" }]

[[repo]]
id = "a/missing"
seen = [{ state = "absent", date = 2024-03-01, source = "an issue's 404" },
        { state = "absent", date = 2024-05-01, source = "another" }]

[[repo]]
id = "a/removed"
seen = [{ state = "present", date = 2024-01-01, source = "seen" },
        { state = "absent", date = 2024-04-01, source = "gone" }]

[[repo]]
id = "a/new"
seen = [{ state = "created", date = 2024-02-01, source = "first commit" }]
"""


def test_the_reading_rule_between_observations():
    history = hub_history.parse(TOY, "toy")
    state = lambda repo, day: history.state(repo, day).state  # noqa: E731
    on = lambda repo, *days: [state(repo, DAY(*d)) for d in days]  # noqa: E731
    assert on("a/kept", (2024, 1, 1), (2024, 1, 10), (2030, 1, 1)) == ["unknown", "present", "present"]
    assert on("A/Missing", (2023, 1, 1), (2024, 4, 1), (2024, 6, 1)) == ["absent", "absent", "unknown"]
    assert on("a/removed", (2024, 2, 1), (2024, 4, 1), (2024, 5, 1)) == ["unknown", "absent", "unknown"]
    assert [state("a/new", d) for d in (DAY(2024, 1, 31), DAY(2024, 2, 1))] == ["absent", "present"]
    assert state("never/listed", DAY(2024, 1, 1)) == "unknown"
    assert "an issue's 404" in history.state("a/missing", DAY(2024, 1, 1)).describe()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[[repo]]\nid = "a/b"\nseen = [{ state = "gone", date = 2024-01-01, source = "x" }]\n',
            "state 'gone' is not one of",
        ),
        (
            '[[repo]]\nid = "a/b"\nseen = [{ state = "absent", date = "2024-01-01", source = "x" }]\n',
            "date must be a TOML date",
        ),
        (
            '[[repo]]\nid = "a/b"\nseen = [{ state = "absent", date = 2024-01-01, source = " " }]\n',
            "needs its evidence",
        ),
        ('[[repo]]\nid = "ab"\nseen = []\n', "OWNER/NAME"),
        (
            '[[repo]]\nid = "a/b"\nseen = [{ state = "present", date = 2024-01-01, source = "x" },'
            ' { state = "created", date = 2024-02-01, source = "y" }]\n',
            "no 'present' before it",
        ),
    ],
)
def test_a_bad_history_is_one_line(text, message):
    with pytest.raises(HarnessError, match=message):
        hub_history.parse(text, "bad")


def test_the_local_hubs_snapshots_are_the_repos_present_on_their_date():
    """The migrated snapshots: the history's repos present on each date, kinds from quantization.toml."""
    december = hub.load_snapshot("2024-12")
    assert december.date == DAY(2024, 12, 4) and december.find(ABSENT_72B) is None
    assert {r.id for r in december.repos} == set(hub_history.load().present_on(DAY(2024, 12, 4)))
    kinds = {r.id: r.kind for r in december.repos}
    assert kinds["unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit"] == "unsloth-dynamic-7b"
    assert kinds["unsloth/Qwen2-VL-72B-Instruct-bnb-4bit"] == "plain-bnb-4bit"
    assert kinds["Qwen/Qwen2-VL-7B-Instruct"] == "16bit"
    created_later = "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit"  # created 2024-11-29
    assert hub.load_snapshot("2024-11").find(created_later) is None


def test_the_sweep_of_2024_12_2_lists_every_mapped_target_with_its_state_that_day():
    release = next(r for r in hub_sweep.covered_releases() if r.unsloth.label == "unsloth==2024.12.2")
    found = hub_sweep.sweep(release)
    assert found.day == DAY(2024, 12, 4)  # the wheel's upload day
    targets = found.targets()
    assert {row.state for key, row in targets.items() if key != ABSENT_72B.lower()} == {"present", "unknown"}
    missing = targets[ABSENT_72B.lower()]
    assert missing.state == "absent" and missing.claimed_by == "404" and "#1361" in missing.evidence
    names = {r.name.lower() for r in found.missing()}
    assert names == {
        "unsloth/qwen2-vl-72b-instruct",
        "qwen/qwen2-vl-72b-instruct",
        "unsloth/qwen2-vl-72b-instruct-bnb-4bit",
    }
    assert all(r.four_bit for r in found.missing())
    failures = load_registry()
    assert found.expected(failures) == found.missing() and not found.new(failures)
    assert str(failures["404"].affected) in (">=2024.12.2,<2025.1.6", "<2025.1.6,>=2024.12.2")  # the range is unchanged


def test_an_absent_target_no_entry_claims_is_a_new_finding():
    history = hub_history.parse(
        hub_history.load()
        .dumps()
        .replace(
            'id = "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit"\nseen = [\n    { state = "created"',
            'id = "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit"\nseen = [\n'
            '    { state = "absent", date = 2024-12-05, source = "a test"},\n    { state = "created"',
        )
        .replace("date = 2024-11-29", "date = 2024-12-20")
    )
    release = next(r for r in hub_sweep.covered_releases() if r.unsloth.label == "unsloth==2024.12.2")
    new = hub_sweep.sweep(release, history).new(load_registry())
    assert {r.target.lower() for r in new} == {"unsloth/qwen2-vl-7b-instruct-unsloth-bnb-4bit"}


def test_hub_unknown_lists_the_repos_to_look_up_most_mapped_first(capsys):
    assert main(["hub", "unknown", "--release", "2024.12.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("mapped repos have no record in history.toml (releases naming it, names mapping to it):")
    counts = [(int(line.split()[0]), int(line.split()[1])) for line in lines[1:]]
    assert counts == sorted(counts, reverse=True) and len(counts) > 100
    listed = {line.split()[2].lower() for line in lines[1:]}
    assert ABSENT_72B.lower() not in listed and "unsloth/llama-3.2-90b-vision-instruct-unsloth-bnb-4bit" in listed


def test_hub_history_shows_a_record_and_bad_input_is_one_line(capsys):
    assert main(["hub", "history", ABSENT_72B.lower()]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ABSENT_72B + "\n") and "absent   2024-12-05  unslothai/unsloth#1361" in out
    assert main(["hub", "history"]) == 2
    assert capsys.readouterr().err.strip() == (
        "qvl-harness: error: hub history: name a REPO to show, or --merge FILE to fold in, not both"
    )


def test_merge_keeps_what_changes_an_answer(tmp_path):
    history_file = tmp_path / "history.toml"
    history_file.write_text(hub_history.load().dumps())
    night = tmp_path / "night.json"
    observed = lambda repo, state: (repo, hub_history.Observation(state, DAY(2026, 11, 30), "a night"))  # noqa: E731
    hub_history.write_observations(
        night,
        [
            observed("unsloth/Qwen2-VL-7B-Instruct-bnb-4bit", "present"),  # already so
            observed(VANISHING, "absent"),
            observed("unsloth/brand-new", "present"),
        ],
    )
    assert hub_history.merge_file(night, history_file) == 2
    merged = hub_history.load(history_file)
    assert merged.state(VANISHING, DAY(2026, 11, 30)).state == "absent"
    assert merged.state("unsloth/brand-new", DAY(2027, 1, 1)).state == "present"
    hub_history.write_observations(night, [observed(VANISHING, "present")])
    with pytest.raises(HarnessError, match=f"{VANISHING}: observed present on 2026-11-30, but the history has absent"):
        hub_history.merge_file(night, history_file)
    night.write_text("{not json")
    with pytest.raises(HarnessError, match="not an observations file"):
        hub_history.merge_file(night, history_file)


def test_night_after_night_of_one_repo_missing_keeps_the_first_and_the_last(tmp_path):
    history_file = tmp_path / "history.toml"
    history_file.write_text(hub_history.load().dumps())
    cited = hub_history.load().record(VANISHING)[1]  # #3461's absent of 2025-10-15
    night = tmp_path / "night.json"
    for day in (1, 2, 3):
        seen = hub_history.Observation("absent", DAY(2026, 12, day), f"huggingface.co {hub_history.LIVE}")
        hub_history.write_observations(night, [(VANISHING, seen)])
        assert hub_history.merge_file(night, history_file) == 1
    kept = hub_history.load(history_file).record(VANISHING)[1]
    assert [o.date for o in kept] == [o.date for o in cited] + [DAY(2026, 12, 3)]
    assert hub_history.load(history_file).state(VANISHING, DAY(2026, 12, 2)).state == "absent"


# --- the sweep's table in the run's summary and the HTML report ---------------------------------------------------


def test_the_summary_and_the_report_show_each_releases_counts_and_absent_rows(tmp_path):
    done = suite_run(
        [
            "suites/test_404_missing_repo.py::test_every_mapped_target_existed_when_the_release_shipped[unsloth==2024.12.2]"
        ],
        tmp_path,
        os.environ,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    title = "hub sweep: unsloth==2024.12.2 against the hub history on 2024-12-04"
    printed = done.stdout.split(title)[1].splitlines()
    assert printed[1].split()[:6] == ["release", "hub", "on", "present", "absent", "unknown"]
    release = next(r for r in hub_sweep.covered_releases() if r.unsloth.label == "unsloth==2024.12.2")
    found = hub_sweep.sweep(release)
    counts, missing = found.counts(), len(found.missing())
    assert printed[3].split() == [
        "unsloth==2024.12.2",
        "2024-12-04",
        *map(str, (counts["present"], 1, counts["unknown"])),
    ]
    absent_rows = [line.split() for line in printed[4 : 5 + missing]]
    assert [row[-2:] for row in absent_rows[:missing]] == [[ABSENT_72B.lower(), "404"]] * missing, printed[4:]
    assert ABSENT_72B.lower() not in absent_rows[missing]  # one row per absent mapping, no more
    assert main(["report", "build", str(tmp_path / "results-none.json"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    shown = page.split(title)[1].split("</table>")[0]
    cells = [c.split("<")[0] for c in shown.split("<td>")[1:]]
    assert cells[:5] == ["unsloth==2024.12.2", "2024-12-04", str(counts["present"]), "1", str(counts["unknown"])]
    assert cells.count("404") == missing and sum(c.endswith(f"-&gt; {ABSENT_72B.lower()}") for c in cells) == missing


# --- two live nights, replayed offline --------------------------------------------------------------------------


def suite_run(selection: list[str], report_dir, env) -> subprocess.CompletedProcess:
    """A pytest run of the suites outside any cell, with its results under ``report_dir``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *selection,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--cell",
            "none",
            "--report-dir",
            str(report_dir),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def live_night(server, report_dir) -> subprocess.CompletedProcess:
    """`pytest --hub live` of the live sweep, with HF_ENDPOINT at ``server`` standing in for huggingface.co."""
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(report_dir / "hf-home")}
    return suite_run([LIVE_TEST, "--hub", "live"], report_dir, env)


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory, hub_for):
    today = [repo for repo, _, _ in hub_sweep.mapped_repos([hub_sweep.canary_release()]).values()]
    folders = {}
    night_2 = [r for r in today if r.lower() != VANISHING.lower()]
    for name, repos, status in (("night-1", today, 0), ("night-2", night_2, 1)):
        snapshot = hub.Snapshot(
            name, f"the hub of today, {name}", datetime.date.today(), tuple(hub.HubRepo(r) for r in repos)
        )
        folders[name] = tmp_path_factory.mktemp(name)
        done = live_night(hub_for(snapshot), folders[name])
        assert done.returncode == status, done.stdout[-3000:] + done.stderr[-2000:]
    return folders


def test_a_repo_gone_overnight_is_a_new_failure_with_its_release(two_nights, capsys):
    first, second = two_nights["night-1"], two_nights["night-2"]
    assert [t["outcome"] for t in results.read(first / "results-none.json")["tests"]] == ["passed"]
    assert main(["report", "diff", str(first), str(second)]) == 1
    text = capsys.readouterr().out
    new = text.split("### New failures")[1].split("###")[0]
    assert "test_live_hub_has_every_target_the_canary_maps" in new and "new finding: unsloth==2026.10.7" in new
    assert VANISHING in new


def test_the_nights_observations_fold_into_the_history(two_nights, tmp_path):
    observations = {
        repo.lower(): seen
        for repo, seen in hub_history.read_observations(two_nights["night-2"] / "hub-observations-none.json")
    }
    assert observations[VANISHING.lower()].state == "absent"
    assert observations["unsloth/qwen3-vl-8b-instruct"].state == "present"
    history_file = tmp_path / "history.toml"
    history_file.write_text(hub_history.load().dumps())
    hub_history.merge_file(two_nights["night-2"] / "hub-observations-none.json", history_file)
    answer = hub_history.load(history_file).state(VANISHING, datetime.date.today())
    assert answer.state == "absent" and "pytest --hub live" in answer.describe()
    assert json.loads((two_nights["night-2"] / "hub-observations-none.json").read_text())["observations"]


@pytest.mark.parametrize("workflow", ["nightly-cpu.yml", "nightly-gpu.yml"])
def test_both_nightlies_run_the_live_sweep_and_fold_its_observations(workflow):
    text = (REPO_ROOT / ".github" / "workflows" / workflow).read_text()
    assert "-- pytest suites/test_404_missing_repo.py -k live_hub --hub live --report-dir reports/hub-live" in text
    assert "qvl-harness report diff last-night/hub-live reports/hub-live" in text
    assert 'qvl-harness hub history --merge "$f"' in text and "cp -r reports/hub-live tonight/" in text
