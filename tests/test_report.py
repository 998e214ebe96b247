"""The run report end to end: a small suite records captions, findings and known-failure outcomes in
real pytest runs (serial and under xdist), the results files are rendered to HTML, and the HTML is
opened in a real headless Chromium (its DOM and a screenshot), reading only local files."""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import toyfailure
import toymatrix
from PIL import Image, ImageStat

from harness.cli import main
from harness.core.errors import HarnessError
from harness.data import xrays
from harness.failures import registry
from harness.pytest import results
from harness.report import html as report

# One worker runs this module: the two suite runs of `runs` are made once per process; spread over the
# workers, each worker made them again (a pytest session each, ~22 s on the H200).
pytestmark = pytest.mark.xdist_group("report-runs")

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (CI containers run as root), and nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]
WINDOW = (1280, 2000)

GOLDEN = {
    "chest-pa": "frontal chest radiograph showing the lungs heart and ribs",
    "tibia-ap": "radiograph of the lower leg showing a well-defined lesion of the distal tibia",
}
GARBAGE = "a shirt with geometric patterns <script>document.title='pwned'</script>"

SUITE = f"""
import os

import pytest

from harness.data import goldens
from harness.failures import registry
from harness.pytest import results, summary

# The second cell runs a release that stopped reproducing "404": its strict xfail turns XPASS.
STOPPED = os.environ.get("DEMO_STOPPED_REPRODUCING") == "1"
GOLDEN = {GOLDEN!r}
GARBAGE = {GARBAGE!r}


def releases(failure_id, package, versions):
    return [pytest.param((package, v, "wheel"), id=f"{{package}}-{{v}}",
                         marks=registry.expectation_marks(failure_id, v)) for v in versions]


@pytest.mark.parametrize("release", releases("404", "unsloth", ["2024.12.1", "2024.12.11"]))
def test_404(release):
    if release[1] == "2024.12.11" and not STOPPED:
        raise LookupError("Repository Not Found")


@pytest.mark.known_failure("dtype-grad")
@pytest.mark.parametrize("release", [("unsloth-zoo", "2026.10.7", "installed")], ids=["installed"])
def test_dtype_grad(release):
    pass


@pytest.mark.known_failure("garbage-output")
def test_garbage_output_needs_gpu():
    pytest.skip("needs a CUDA GPU")


@pytest.fixture
def finding_at_teardown(request):
    yield
    results.record_structure(request.config, "full-4bit", "recorded at teardown", ok=False)


@pytest.mark.parametrize("configuration", ["16bit", "full-4bit"])
def test_captions(configuration, request, finding_at_teardown):
    for fixture_id, golden in GOLDEN.items():
        obtained = golden if configuration == "16bit" else GARBAGE
        grade = goldens.grade(obtained, golden, must_not_mention=["shirt"])
        level, details = grade.level, grade.describe()
        results.record_caption(request.config, fixture_id, configuration, golden, obtained, level, details)
    results.record_structure(request.config, configuration, "vision tower linears in 4 bits: "
                             + ("0" if configuration == "16bit" else "12"), ok=configuration == "16bit")
    summary.add_table(request.config, f"captions: {{configuration}}", ["fixture", "caption"],
                      [[f, GARBAGE] for f in GOLDEN])
"""

# (cell, failure id) -> the matrix state the suite above must produce for the failures it tests
SUITE_STATES = {
    ("cell-a", "404"): "reproduced",
    ("cell-a", "dtype-grad"): "fixed",
    ("cell-b", "404"): "unexpected",
    ("cell-b", "dtype-grad"): "fixed",
}


def expected_states() -> dict[tuple[str, str], str]:
    """The matrix has a column per registry entry: those the suite does not test (or skips) are "not run"."""
    return {
        (cell, failure_id): SUITE_STATES.get((cell, failure_id), "not run")
        for cell in ("cell-a", "cell-b")
        for failure_id in registry.load_registry()
    }


def run_suite(where: Path, cell: str, *args: str, stopped: bool = False) -> subprocess.CompletedProcess:
    (where / "test_suite.py").write_text(SUITE)
    # the cell: a matrix of its own, pinning transformers as installed here (the plugin checks the cell's pins)
    matrix = toymatrix.write(where, cell)
    env = {**os.environ, "DEMO_STOPPED_REPRODUCING": "1" if stopped else "0", "QVL_MATRIX": str(matrix)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "harness.pytest.collector",
            "--report-dir",
            "out",
            f"--cell={cell}",
            *args,
            "test_suite.py",
        ],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Results files of two real runs of SUITE: cell-a as registered; cell-b, where 404 stopped
    reproducing, under xdist (its records must travel from the workers to the controller)."""
    paths = {}
    for cell, stopped, args in (("cell-a", False, ()), ("cell-b", True, ("-n", "2"))):
        where = tmp_path_factory.mktemp(cell)
        done = run_suite(where, cell, *args, stopped=stopped)
        assert done.returncode == (1 if stopped else 0), done.stdout + done.stderr
        assert ("bringing up nodes" in done.stdout) == bool(args)
        assert f"qvl-harness results: out/results-{cell}.json" in done.stdout
        paths[cell] = where / "out" / f"results-{cell}.json"
    return paths


def comparable(data: dict) -> dict:
    return {
        k: sorted(json.dumps(x, sort_keys=True) for x in data[k])
        for k in ("captions", "structure", "known_failures", "tables")
    }


def test_results_file_holds_records_outcomes_and_stack(runs):
    data = results.read(runs["cell-a"])
    assert data["cell"] == "cell-a" and data["stack"]["packages"]["torch"]
    assert len(data["captions"]) == 4
    worst = next(c for c in data["captions"] if c["configuration"] == "full-4bit" and c["fixture"] == "chest-pa")
    assert (
        worst["obtained"] == GARBAGE
        and worst["grade"] == "mismatch"
        and worst["details"].startswith("mismatch, token 0.")
    )
    assert worst["test"] == "test_suite.py::test_captions[full-4bit]"
    assert sorted((s["finding"], s["ok"]) for s in data["structure"]) == [
        ("recorded at teardown", False),
        ("recorded at teardown", False),
        ("vision tower linears in 4 bits: 0", True),
        ("vision tower linears in 4 bits: 12", False),
    ]
    outcomes = {
        (k["id"], k["param"]): (k["outcome"], k["state"], k["package"], k["version"], k["origin"])
        for k in data["known_failures"]
    }
    assert outcomes == {
        ("404", "unsloth-2024.12.1"): ("passed", "fixed", "unsloth", "2024.12.1", "wheel"),
        ("404", "unsloth-2024.12.11"): ("xfailed", "reproduced", "unsloth", "2024.12.11", "wheel"),
        ("dtype-grad", "installed"): ("passed", "fixed", "unsloth-zoo", "2026.10.7", "installed"),
        ("garbage-output", ""): ("skipped", "not run", "unsloth", data["stack"]["packages"]["unsloth"], "installed"),
    }
    assert [t["title"] for t in data["tables"]] == ["captions: 16bit", "captions: full-4bit"]


def test_xpass_strict_is_recorded_as_unexpected(runs):
    stopped = [k for k in results.read(runs["cell-b"])["known_failures"] if k["param"] == "unsloth-2024.12.11"]
    assert [(k["outcome"], k["state"]) for k in stopped] == [("xpassed", "unexpected")]
    assert stopped[0]["message"].startswith("[XPASS(strict)]")


def test_records_survive_xdist_workers(runs):
    """cell-b ran under xdist: every record reached the controller; only the stopped 404 outcome differs."""
    a, b = (comparable(results.read(runs[cell])) for cell in ("cell-a", "cell-b"))
    assert {k: v for k, v in a.items() if k != "known_failures"} == {
        k: v for k, v in b.items() if k != "known_failures"
    }
    assert len(a["known_failures"]) == len(b["known_failures"]) == 4
    only_a, only_b = (
        set(a["known_failures"]) - set(b["known_failures"]),
        set(b["known_failures"]) - set(a["known_failures"]),
    )
    assert (
        [json.loads(k)["param"] for k in only_a] == [json.loads(k)["param"] for k in only_b] == ["unsloth-2024.12.11"]
    )


def test_the_stack_table_says_where_each_worker_ran(runs, tmp_path):
    """cell-b ran on two xdist workers: the page's stack table names each with its GPU pin and its tests."""
    tested = len(results.read(runs["cell-b"])["tests"])
    page = report.render([runs["cell-a"], runs["cell-b"]], tmp_path / "report.html").read_text()
    row = next(line for line in page.splitlines() if line.startswith("<tr><th>workers</th>"))
    cells = row.split("<td>")[1:]
    assert cells[0].startswith("main: CUDA_VISIBLE_DEVICES=")  # cell-a ran without xdist
    assert "gw0: CUDA_VISIBLE_DEVICES=" in cells[1] and "gw1: CUDA_VISIBLE_DEVICES=" in cells[1]
    assert sum(int(n) for n in re.findall(r"\((\d+) tests\)", cells[1])) == tested


def test_record_caption_refuses_an_unknown_grade():
    config = argparse.Namespace(stash=pytest.Stash())
    with pytest.raises(HarnessError, match="grade 'great' is not one of exact, token"):
        results.record_caption(config, "chest-pa", "16bit", "a", "b", "great")


def test_word_diff_marks_only_changed_words():
    golden, obtained = report.word_diff("frontal chest radiograph", "Frontal shirt <b>x</b> radiograph")
    assert golden == "frontal <del>chest</del> radiograph"
    assert obtained == "Frontal <ins>shirt &lt;b&gt;x&lt;/b&gt;</ins> radiograph"
    assert report.word_diff("same words", "same  words") == ("same words", "same words")


def test_render_refuses_bad_input(runs, tmp_path):
    with pytest.raises(HarnessError, match="both results of cell 'cell-a'"):
        report.render([runs["cell-a"], runs["cell-a"]], tmp_path / "r.html")
    broken = tmp_path / "results-x.json"
    broken.write_text('{"cell": "x"}')
    with pytest.raises(HarnessError, match="expected format 3 with exactly the keys"):
        report.render([broken], tmp_path / "r.html")


def test_cli_builds_the_report(runs, tmp_path, capsys):
    out = tmp_path / "nested" / "report.html"
    assert main(["report", "build", str(runs["cell-a"]), str(runs["cell-b"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")


# --- in Chromium ----------------------------------------------------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None = None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], []

    def iter(self, tag: str | None = None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def find_all(self, tag: str, **attrs) -> list[Node]:
        return [n for n in self.iter(tag) if all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def all_text(self) -> str:
        return "".join(self.text) + "".join(c.all_text() for c in self.children)


class DomBuilder(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.text.append(data)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def rendered(request, tmp_path_factory) -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) to test the report in a browser"  # noqa: E501 (a message kept whole, to be found by grep)
        )
    runs = request.getfixturevalue("runs")  # only once a browser is there to look at them
    return report.render([runs["cell-a"], runs["cell-b"]], tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture(scope="module")
def dom(rendered, tmp_path_factory) -> Node:
    done = chromium("--dump-dom", rendered.as_uri(), profile=tmp_path_factory.mktemp("profile"))
    builder = DomBuilder()
    builder.feed(done.stdout)
    return builder.root


def test_chromium_dom_has_a_data_uri_thumbnail_per_fixture(dom):
    assert not any(n.attrs.get("src", "").startswith(("http", "file")) for n in dom.iter())
    for item in xrays.load_manifest():
        [card] = dom.find_all("article", data_fixture=item.id)
        [img] = card.find_all("img")
        prefix = "data:image/png;base64,"
        assert img.attrs["src"].startswith(prefix)
        thumbnail = Image.open(io.BytesIO(base64.b64decode(img.attrs["src"][len(prefix) :])))
        assert max(thumbnail.size) == report.THUMBNAIL_SIDE
        assert thumbnail.size == (int(img.attrs["width"]), int(img.attrs["height"]))
        # a crop may be one organ of nearly one grey in its film's window (tests/test_xrays.py holds the same bound)
        flat = 5 if item.crop else 20
        assert ImageStat.Stat(thumbnail.convert("L")).stddev[0] > flat, f"{item.id}: thumbnail is flat"


def test_chromium_dom_highlights_caption_differences(dom):
    for fixture_id in GOLDEN:
        [card] = dom.find_all("article", data_fixture=fixture_id)
        rows = card.find_all("tr", data_configuration="full-4bit")
        assert [r.attrs["data-cell"] for r in rows] == ["cell-a", "cell-b"]
        for row in rows:
            assert row.attrs["data-grade"] == "mismatch"
            inserted = " ".join(n.all_text() for n in row.iter("ins"))
            assert "shirt with geometric patterns" in inserted and "<script>" in inserted
            assert GOLDEN[fixture_id].split()[-1] in " ".join(n.all_text() for n in row.iter("del"))
        for row in card.find_all("tr", data_configuration="16bit"):
            assert row.attrs["data-grade"] == "exact"
            assert not list(row.iter("ins")) and not list(row.iter("del"))
            assert GOLDEN[fixture_id] in row.all_text()


def test_chromium_dom_escapes_recorded_text(dom):
    assert not list(dom.iter("script"))
    [title] = dom.find_all("title")
    assert title.all_text() == "qvl-harness report"


def matrix_states(matrix: Node) -> dict[tuple[str, str], str]:
    return {
        (td.attrs["data-cell"], td.attrs["data-failure"]): td.attrs["data-state"]
        for td in matrix.find_all("td")
        if "data-state" in td.attrs
    }


def test_a_new_registry_entry_is_one_more_column_not_run(runs, tmp_path, monkeypatch):
    """A fifth failure in the registry (tests/toyfailure.py) needs nothing of this file: the runs did not test
    it, so each cell shows it "not run" beside what the suite produced."""
    monkeypatch.setattr(registry, "REGISTRY", toyfailure.write_registry(tmp_path, "suites/test_toy_failure.py"))
    builder = DomBuilder()
    builder.feed(report.render([runs["cell-a"], runs["cell-b"]], tmp_path / "report.html").read_text())
    [matrix] = builder.root.find_all("section", id="matrix")
    states = matrix_states(matrix)
    assert states == expected_states()
    assert states[("cell-a", toyfailure.ID)] == states[("cell-b", toyfailure.ID)] == "not run"


def test_chromium_dom_matrix_states(dom):
    [matrix] = dom.find_all("section", id="matrix")
    assert matrix_states(matrix) == expected_states()
    [unexpected] = matrix.find_all("td", data_cell="cell-b", data_failure="404")
    assert "unexpected" in unexpected.attrs["class"] and unexpected.all_text().split() == ["✖", "unexpected", "1"]
    [link] = unexpected.find_all("a")
    [details] = matrix.find_all("details", data_cell="cell-b", data_failure="404")
    assert link.attrs["href"] == "#" + details.attrs["id"] and "XPASS(strict)" in details.all_text()
    assert "open" not in details.attrs  # folded
    [stacks] = dom.find_all("section", id="stacks")
    assert importlib.metadata.version("torch") in stacks.all_text()


def test_chromium_screenshot_renders_the_report(rendered, tmp_path):
    png = tmp_path / "report.png"
    chromium(
        f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", rendered.as_uri(), profile=tmp_path / "profile"
    )
    shot = Image.open(png).convert("RGB")
    assert shot.size == WINDOW
    assert ImageStat.Stat(shot.convert("L")).stddev[0] > 10, "screenshot is blank"
    colours = shot.getcolors(maxcolors=WINDOW[0] * WINDOW[1])
    area = {colour: count for count, colour in colours}
    # The matrix's state backgrounds (CSS applied): unexpected, reproduced, fixed, not run.
    for css_colour in ((0xFF, 0xCE, 0xCB), (0xFF, 0xF1, 0xB8), (0xC8, 0xF0, 0xD2), (0xEA, 0xEE, 0xF2)):
        assert area.get(css_colour, 0) > 1000, f"matrix colour #{bytes(css_colour).hex()} not rendered"
    # The X-ray thumbnails: a block of many grey levels near the page's left edge.
    greys = {c for c in shot.crop((20, 0, 260, WINDOW[1])).getdata() if c[0] == c[1] == c[2]}
    assert len(greys) > 100, "no X-ray thumbnail rendered"


# --- the compact matrix at 7 and at 30 cells --------------------------------------------------------

STATE_COLOURS = {
    "unexpected": (0xFF, 0xCE, 0xCB),
    "reproduced": (0xFF, 0xF1, 0xB8),
    "fixed": (0xC8, 0xF0, 0xD2),
    "passed": (0xDD, 0xF4, 0xFF),
    "not run": (0xEA, 0xEE, 0xF2),
}


def synthetic_run(cell: str, states: dict[str, str], unexpected: int = 0) -> dict:
    """A results document of ``cell`` with one known-failure record per failure in ``states``, plus
    ``unexpected`` failing tests of the first failure (an incomplete wheelhouse fails them all)."""
    run = results.empty(
        cell,
        {"packages": {"unsloth": "2026.10.1", "unsloth-zoo": "2026.10.7", "transformers": "5.17.0"}},
        "2026-11-23T02:17:00+00:00",
        False,
    )
    for failure, state in states.items():
        if state != "not run":
            run["known_failures"].append(
                {
                    "id": failure,
                    "package": "unsloth",
                    "version": "2026.10.1",
                    "origin": "installed",
                    "param": "",
                    "outcome": "passed",
                    "state": state,
                    "message": "",
                    "test": f"t::{failure}",
                }
            )
    first = next(iter(states))
    run["known_failures"] += [
        {
            "id": first,
            "package": "unsloth",
            "version": "2026.10.1",
            "origin": "installed",
            "param": str(i),
            "outcome": "error",
            "state": "unexpected",
            "test": f"suites/test_x.py::test_{i}",
            "message": "HarnessError: unsloth==2026.10.1 is not in the release cache",
        }
        for i in range(unexpected)
    ]
    return run


def matrix_bands(png: Path) -> tuple[list[tuple[int, int]], int]:
    """(top, height) of each horizontal band of the screenshot holding state colours (a table row, or the
    legend), and the rightmost column holding one."""
    shot = Image.open(png).convert("RGB")
    colours = set(STATE_COLOURS.values())
    width, height = shot.size
    pixels = shot.load()
    rows = [sum(pixels[x, y] in colours for x in range(0, width, 2)) >= 10 for y in range(height)]
    right = max(x for x in range(width) for y in range(0, height, 4) if pixels[x, y] in colours)
    bands, start = [], None
    for y, coloured in enumerate([*rows, False]):
        if coloured and start is None:
            start = y
        elif not coloured and start is not None:
            bands.append((start, y - start))
            start = None
    return bands, right


@pytest.mark.parametrize("cells", [7, 30])
def test_chromium_matrix_stays_a_grid_of_short_verdicts(cells, tmp_path):
    """Every cell is one row of one-line verdicts however many tests failed in it (cell 2 has 84),
    the details stay folded, and the grid is readable at a glance at 7 cells and at 30."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)")
    failures = list(registry.load_registry())
    cycle = ["reproduced", "fixed", "passed", "not run"]
    paths = []
    for i in range(cells):
        states = {f: cycle[(i + j) % len(cycle)] for j, f in enumerate(failures)}
        path = tmp_path / f"results-cell-{i:02d}.json"
        path.write_text(json.dumps(synthetic_run(f"cell-{i:02d}", states, unexpected=84 if i == 2 else 0)))
        paths.append(path)
    html_file = report.render(paths, tmp_path / "report.html")
    png = tmp_path / f"matrix-{cells}.png"
    window = (1280, 400 + 40 * cells)
    chromium(
        f"--screenshot={png}",
        f"--window-size={window[0]},{window[1]}",
        html_file.as_uri(),
        profile=tmp_path / "profile",
    )
    bands, right = matrix_bands(png)
    assert len(bands) == cells + 1, bands  # one band per cell row, one for the legend
    assert right < window[0] - 20, f"the matrix is wider than the window (reaches x={right})"
    heights = [h for _, h in bands[:-1]]
    assert max(heights) <= 40 and max(heights) - min(heights) <= 2, (
        heights
    )  # cell-02's 84 failures did not grow its row
    assert bands[-2][0] + bands[-2][1] - bands[0][0] <= 42 * cells  # the whole grid within ~40px per cell


# --- recorded text stays text ------------------------------------------------------------------------------------

PAYLOAD = "<script>alert(1)</script>"


def test_recorded_captions_and_errors_reach_the_page_as_text(tmp_path):
    """The template escapes every value: a caption's grade details, a finding and an unexpected test's error
    message carrying markup show as the characters recorded, and the page holds no element they spelled."""
    run = synthetic_run("cell-x", {"404": "reproduced"}, unexpected=1)
    run["known_failures"][-1]["message"] = f"RuntimeError: {PAYLOAD}"
    caption = {"fixture": "chest-pa", "configuration": "16bit", "golden": "a chest", "obtained": "a chest"}
    run["captions"].append({**caption, "grade": "exact", "details": f"exact {PAYLOAD}", "test": "t::c"})
    run["structure"].append({"configuration": "16bit", "finding": PAYLOAD, "ok": False, "test": "t::s"})
    path = tmp_path / "results-cell-x.json"
    path.write_text(json.dumps(run))
    page = report.render([path], tmp_path / "report.html").read_text()
    assert "<script" not in page
    builder = DomBuilder()
    builder.feed(page)
    assert not list(builder.root.iter("script"))
    [details] = builder.root.find_all("details", data_cell="cell-x", data_failure="404")
    assert f"RuntimeError: {PAYLOAD}" in details.all_text()
    [row] = builder.root.find_all("tr", data_configuration="16bit")
    assert f"exact {PAYLOAD}" in row.all_text()
    [finding] = builder.root.find_all("tr", data_cell="cell-x", data_ok="false")
    assert PAYLOAD in finding.all_text()
