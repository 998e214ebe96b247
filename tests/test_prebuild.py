"""The models a run needs are built once, by the controller's children beside the workers; a run that needs
none starts nothing, and a run that did not ask for the harness is left alone."""

from __future__ import annotations

import collections
import os

import pytest

from harness.core.paths import REPO_ROOT
from harness.data import hub
from harness.lab import tinymodel
from harness.pytest import prebuild, workers

pytest_plugins = ["pytester"]

HUB_TESTS = """
import pytest


@pytest.mark.parametrize("snapshot", ["2024-12", "2025-02", "2024-12", "2025-02"])
def test_served(snapshot, hub_for):
    assert hub_for(snapshot).url
"""
BUILT_LINE = "qvl-harness: built once beside the workers"


def wanted_ids(*args: str) -> list[str]:
    files = prebuild.test_files(list(args), REPO_ROOT, ["test_*.py"])
    return [b.id for b in prebuild.wanted(files)]


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["tests/test_cli_errors.py"], []),
        (
            ["tests/test_progress.py", "tests/test_goldens.py"],
            ["tiny"],
        ),  # a custom recipe on the tiny base; goldens only
        (["tests/test_prebuild.py"], ["tiny"]),  # the fixtures its pytester files use are only strings here
        (["tests/test_families.py::test_tiny_model_takes_an_image_through_its_processor"], ["families"]),
        (["suites"], ["tiny", "tiny-standins", "captioner", "captioner-standins", "families", "family-captioners"]),
        (["tests/test_captioner_discriminates.py"], ["tiny", "captioner", "families", "family-captioners"]),
    ],
)
def test_the_builds_are_read_from_the_test_files_named(args, ids):
    assert wanted_ids(*args) == ids


def test_stand_ins_are_one_per_quantization_whatever_the_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path))
    todo = prebuild.to_build([b for b in prebuild.BUILDS if b.id in ("tiny", "tiny-standins")])
    (base,) = tinymodel.missing(tinymodel.build)
    assert not base.exists()  # planning built nothing
    served = {
        (name, r.kind) for name in hub.snapshot_names() for r in hub.load_snapshot(name).repos if r.kind != "16bit"
    }
    kinds = sorted({kind for _, kind in served})
    assert len(served) > len(kinds)  # snapshots share quantizations
    assert {b.id: [t.name.rsplit("-", 1)[0] for t in targets] for b, targets in todo.items()} == {
        "tiny": [base.name.rsplit("-", 1)[0]],
        "tiny-standins": [f"{base.name}-{kind}" for kind in kinds],
    }


def test_a_run_that_did_not_ask_for_the_harness_builds_nothing(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    pytester.makepyfile(test_unrelated="def test_x():\n    tiny_checkpoint = 1\n    assert tiny_checkpoint\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert not (tmp_path / "cache" / "models").exists(), result.stdout.str()


FREE_TEST = """
import os


def started_at() -> float:
    # this worker's process: its start in clock ticks after boot (/proc/self/stat field 22), boot in epoch seconds
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    boot = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def test_needs_no_model():
    with open(os.environ["QVL_TEST_WORKER_STARTED"], "w") as out:
        out.write(str(started_at()))
    assert os.nice(0) == int(os.environ["QVL_TEST_NICENESS"])
"""


def test_workers_with_nothing_built_beside_them_keep_the_controllers_niceness(pytester, monkeypatch):
    monkeypatch.setenv("QVL_TEST_WORKER_STARTED", str(pytester.path / "started"))
    monkeypatch.setenv("QVL_TEST_NICENESS", str(os.nice(0)))
    pytester.makepyfile(test_free=FREE_TEST)
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=1)


@pytest.mark.slow(seconds=30)  # 28-37 s on the H200
def test_two_workers_find_every_model_built_once_beside_them(pytester, tmp_path, monkeypatch):
    """The tiny Qwen2-VL and its stand-ins for two hub snapshots: each built once, by the controller's child (not a
    gw worker), reported in one line; the workers started while they were still being built, and run below the
    builds' children (workers.WORKER_NICENESS), so on a busy machine their tests may well run after. (The
    captioner's build goes the same way: every suite run's line shows it; training it here cost 40-55 s.)"""
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("QVL_TEST_WORKER_STARTED", str(tmp_path / "started"))
    monkeypatch.setenv("QVL_TEST_NICENESS", str(min(19, os.nice(0) + workers.WORKER_NICENESS)))
    pytester.makepyfile(test_hub=HUB_TESTS, test_free=FREE_TEST)
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-p", "no:randomly", "-n", "2")
    result.assert_outcomes(passed=5)
    last_built = max(p.stat().st_mtime for p in (tmp_path / "cache" / "models").glob("*/.complete"))
    assert float((tmp_path / "started").read_text()) < last_built
    built = [
        line.split("\t") for line in (tmp_path / "cache" / "models" / tinymodel.BUILD_LOG).read_text().splitlines()
    ]
    names = collections.Counter(name for name, _ in built)
    assert set(names.values()) == {1} and len(names) == 1 + len(hub.load_quantizations()), names
    assert {who for _, who in built if who.startswith("gw")} == set(), built
    assert sum(BUILT_LINE in line for line in result.outlines + result.errlines) == 1, result.stdout.str()
