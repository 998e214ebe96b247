"""Two nightlies replayed on this machine, then the nightly's triage: real releases, real installs, real suite.

Night 1 runs the 404 suite's installed-release tests on the stack of cell u2024-12-01 (unsloth
2024.12.1 + unsloth-zoo 2024.11.8): green. Night 2 runs them after upstream moved on to unsloth
2025.1.5 + unsloth-zoo 2025.1.3: the 72B names now fail to load. Both nights run with --runxfail,
which stands for the registry before anyone knew about the 404 (otherwise night 2 would read as the
known failure reproducing, not as news). Each night is an overlay environment of the real wheels
over this one; the triage re-runs the new failures, then bisects the releases uploaded between the
two stacks (those of the matrix's cells, whose wheels `qvl-harness releases fetch` put in the
release cache before the tests) with the failing test as oracle, and must name unsloth 2024.12.2,
the release whose mapper sends the 72B names to the missing repo. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.paths import REPO_ROOT, cache_dir
from harness.env.matrix import load_matrix
from harness.env.overlay import Base, Overlays, python_env
from harness.pytest import results

# One worker replays the nights and triages once: the module's fixtures are per process, and three
# workers each ran the triage (220-270 s apiece on the H200 run of tests suites). Slow: 150 s on the H200,
# so a worker takes it among the first.
pytestmark = [pytest.mark.xdist_group("nightly"), pytest.mark.slow]

SELECTION = [
    f"suites/test_404_missing_repo.py::test_the_installed_release_loads_the_72b_name[{name}]"
    for name in ("unsloth/Qwen2-VL-72B-Instruct", "Qwen/Qwen2-VL-72B-Instruct")
]
NIGHT_1 = ["unsloth==2024.12.1", "unsloth-zoo==2024.11.8"]
NIGHT_2 = ["unsloth==2025.1.5", "unsloth-zoo==2025.1.3"]
# Upload times of these releases on PyPI (the JSON API's earliest file of each).
UPLOADED = {
    "unsloth": {
        "2024.11.11": "2024-11-26T11:44:12Z",
        "2024.12.1": "2024-12-04T01:32:29Z",
        "2024.12.2": "2024-12-04T13:49:53Z",
        "2024.12.11": "2024-12-26T12:07:06Z",
        "2025.1.5": "2025-01-09T00:50:01Z",
        "2025.1.6": "2025-01-20T09:28:55Z",
    },
    "unsloth-zoo": {
        "2024.11.8": "2024-11-26T11:29:22Z",
        "2024.12.1": "2024-12-04T13:50:54Z",
        "2024.12.6": "2024-12-26T12:04:29Z",
        "2025.1.3": "2025-01-10T12:34:31Z",
    },
}


def matrix_releases() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for requirement in load_matrix().release_requirements():
        package, version = requirement.split("==")
        found.setdefault(package, set()).add(version)
    return found


@pytest.fixture(scope="module")
def release_data(tmp_path_factory) -> Path:
    """PyPI-format release data: the releases of the matrix's cells, with their real upload times."""
    folder = tmp_path_factory.mktemp("pypi")
    available = matrix_releases()
    for package, times in UPLOADED.items():
        releases = {
            v: [{"upload_time_iso_8601": t, "yanked": False}] for v, t in times.items() if v in available[package]
        }
        (folder / f"{package}.json").write_text(json.dumps({"releases": releases}))
    return folder


def night(overlay_python: Path, out: Path) -> subprocess.CompletedProcess:
    # an overlay's stack is no matrix cell's: --cell none (the plugin checks a named cell's pins)
    return subprocess.run(
        [
            str(overlay_python),
            "-m",
            "pytest",
            *SELECTION,
            "-q",
            "-p",
            "no:cacheprovider",
            "--runxfail",
            "--report-dir",
            str(out),
            "--cell",
            "none",
        ],
        cwd=REPO_ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module", autouse=True)
def runner_site_on_pythonpath():
    """As on an air-gapped GPU runner, whose wheelhouse install (the canary's unsloth) is on PYTHONPATH:
    each night's overlay must still run its own pins."""
    import site

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([*site.getsitepackages(), os.environ.get("PYTHONPATH", "")]))
        yield


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """The two nights' results folders and the python of night 2's environment."""
    wheels = str(cache_dir("wheels"))
    overlays = Overlays(Base.of(sys.executable), find_links=[wheels], no_index=True)
    folders, pythons = {}, {}
    for name, pins in (("night-1", NIGHT_1), ("night-2", NIGHT_2)):
        overlay = overlays.get(pins)
        assert overlay.error is None, overlay.error
        folders[name], pythons[name] = tmp_path_factory.mktemp(name), overlay.python
    with ThreadPoolExecutor(2) as pool:  # two runs of their own: side by side, as two nightlies' runners are
        done = dict(zip(folders, pool.map(lambda name: night(pythons[name], folders[name]), folders), strict=True))
    for name, status in (("night-1", 0), ("night-2", 1)):
        assert done[name].returncode == status, done[name].stdout[-3000:] + done[name].stderr[-2000:]
    return folders, pythons["night-2"]


@pytest.fixture(scope="module")
def fresh_logs(tmp_path_factory) -> dict[str, str]:
    """An environment whose harness cache has the wheels, models and environments but no probe logs,
    so every verdict of the triage below is probed, none answered by an earlier run."""
    root, cache = cache_dir("wheels").parent, tmp_path_factory.mktemp("cache")
    for entry in root.iterdir():
        if entry.name != "bisect":
            (cache / entry.name).symlink_to(entry)
    return {**python_env(), "QVL_CACHE": str(cache)}


def triage_command(python: Path, previous: Path, current: Path, release_data: Path) -> list[str]:
    """`qvl-harness triage` of ``current`` against ``previous`` as the nightly runs it, offline on the release cache."""
    return [
        str(python),
        "-m",
        "harness.cli",
        "triage",
        "--previous",
        str(previous),
        "--current",
        str(current),
        "--cell",
        "none",
        "--reruns",
        "2",
        "--release-data",
        str(release_data),
        "--find-links",
        str(cache_dir("wheels")),
        "--no-index",
        "--offline",
    ]


@pytest.fixture(scope="module")
def triaged(nights, release_data, fresh_logs):
    """`qvl-harness triage` of night 2 against night 1, run in night 2's environment as the nightly does."""
    (first, second), python = (nights[0]["night-1"], nights[0]["night-2"]), nights[1]
    done = subprocess.run(
        triage_command(python, first, second, release_data),
        cwd=REPO_ROOT,
        env=fresh_logs,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return first, second, done.stdout


def test_night_2_records_the_new_failures_with_their_message(nights):
    first = results.read(nights[0]["night-1"] / "results-none.json")
    second = results.read(nights[0]["night-2"] / "results-none.json")
    assert {t["outcome"] for t in first["tests"]} == {"passed"} and len(first["tests"]) == 2
    assert {t["outcome"] for t in second["tests"]} == {"failed"} and len(second["tests"]) == 2
    assert all("qwen2-vl-72b-instruct-unsloth-bnb-4bit" in t["message"] for t in second["tests"])
    assert first["stack"]["packages"]["unsloth"] == "2024.12.1" and second["stack"]["packages"]["unsloth"] == "2025.1.5"


def test_triage_rechecks_then_names_the_first_bad_release(triaged):
    _, second, out = triaged
    record = results.read(second / "results-none.json")["triage"]
    assert (
        all(outcomes == ["failed", "failed"] for outcomes in record["reruns"].values()) and len(record["reruns"]) == 2
    )
    [culprit] = record["culprits"]
    assert culprit["status"] == "found" and culprit["from_log"] == 0, out  # every verdict probed here
    assert culprit["first_bad"] == "unsloth==2024.12.2"
    assert culprit["step"] == "unsloth==2024.12.2 + unsloth-zoo==2024.12.1"  # uploaded a minute apart: one step
    assert culprit["last_good"].startswith("the previous stack (unsloth==2024.12.1 unsloth-zoo==2024.11.8")
    # unsloth 2024.12.2 imports what only zoo 2024.12.1 has; zoo 2024.12.1 alone over the last good stack is good
    assert (
        "unsloth-zoo==2024.12.1 alone: good" in culprit["evidence"]
        and "unsloth==2024.12.2 alone: skip" in culprit["evidence"]
    )
    assert sorted(culprit["tests"]) == sorted(record["reruns"])  # one bisect explains both
    assert "first bad: unsloth==2024.12.2 for" in out


def test_the_markdown_summary_leads_with_the_new_failure_and_its_culprit(triaged, capsys):
    first, second, _ = triaged
    assert main(["report", "diff", str(first), str(second)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("## qvl-harness: 2 new failures, 0 flaky, 0 fixed, 0 still failing")
    new_section = text.split("### New failures")[1].split("###")[0]
    assert new_section.count("first bad: unsloth==2024.12.2") == 2
    assert (
        "| none | unsloth | 2024.12.1 | 2025.1.5 |" in text and "| none | unsloth-zoo | 2024.11.8 | 2025.1.3 |" in text
    )


class Texts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.culprits, self.sections = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.stack.append(attrs.get("class", ""))
        if tag == "section":
            self.sections.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "culprit":
            self.culprits.append(data)


def test_the_html_report_leads_with_what_changed(triaged, tmp_path):
    first, second, _ = triaged
    out = tmp_path / "report.html"
    assert (
        main(["report", "build", str(second / "results-none.json"), "--previous", str(first), "--out", str(out)]) == 0
    )
    parser = Texts()
    parser.feed(out.read_text())
    assert parser.sections[0] == "changes"  # before the matrix and everything else
    assert len(parser.culprits) == 2 and all(c.startswith("first bad: unsloth==2024.12.2") for c in parser.culprits)


def test_a_triage_out_of_time_says_so_and_the_next_run_continues(nights, release_data, triaged, fresh_logs, tmp_path):
    """--budget 0 stops before anything runs; the same triage with time answers from the probe log of
    the triage before it (its environments are cached too)."""
    second = tmp_path / "night-2"
    shutil.copytree(nights[0]["night-2"], second)
    common = triage_command(nights[1], nights[0]["night-1"], second, release_data)
    stopped = subprocess.run(
        [*common, "--budget", "0"], cwd=REPO_ROOT, env=fresh_logs, capture_output=True, text=True, timeout=600
    )
    assert stopped.returncode == 0, stopped.stderr
    record = results.read(second / "results-none.json")["triage"]
    assert {c["status"] for c in record["culprits"]} == {"out of budget"} and not record["reruns"]
    assert "run the same triage again" in record["culprits"][0]["note"]
    again = subprocess.run(common, cwd=REPO_ROOT, env=fresh_logs, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr
    [culprit] = results.read(second / "results-none.json")["triage"]["culprits"]
    assert (
        culprit["first_bad"] == "unsloth==2024.12.2" and culprit["from_log"] == culprit["probes"] > 0
    )  # no probe again
    assert "re-run 2/2" in again.stdout and "the same culprit" in again.stdout
