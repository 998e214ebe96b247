"""UNSLOTH_DISABLE_AUTO_UPDATES=1 reaches every process that imports or runs a release: the tox envs, the
air-gapped gpu script, overlays and their import check, bisect probes and triage re-runs, pytest in every
hub mode. Each test starts from an environment without it, so only the harness can have set it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from toywheels import write_wheel

from harness.cli import main
from harness.core.auto_updates import NAME, VALUE
from harness.core.paths import REPO_ROOT
from harness.env.overlay import Base, Overlays, python_env

pytest_plugins = ["pytester"]
# Appends what the process sees of the variable, as unsloth 2025.3.15's __init__ reads it, to $QVL_SEEN.
RECORD = f"import os\nopen(os.environ['QVL_SEEN'], 'a').write(os.environ.get('{NAME}', 'unset') + '\\n')\n"
NO_TOX = "tox is not installed here: the tox envs are checked where tox runs"


@pytest.fixture
def seen(tmp_path, monkeypatch):
    """A clean start (the variable unset) and the file every recording process appends what it saw to."""
    monkeypatch.delenv(NAME, raising=False)
    log = tmp_path / "seen.txt"
    monkeypatch.setenv("QVL_SEEN", str(log))
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return lambda: log.read_text().split() if log.exists() else []


@pytest.fixture
def toy_releases(tmp_path):
    """Releases 1.0 (good) and 1.1 (bad) of qvltoy, a day apart, with PyPI-format release data."""
    wheels, data = tmp_path / "wheels", tmp_path / "data"
    wheels.mkdir(), data.mkdir()
    day = datetime(2025, 3, 1, tzinfo=timezone.utc)
    releases = {}
    for n, version in enumerate(["1.0", "1.1"]):
        write_wheel(wheels, "qvltoy", version, RECORD + f"N = {n}\n")  # a release whose import records it
        releases[version] = [{"upload_time_iso_8601": (day + timedelta(days=n)).isoformat(), "yanked": False}]
    (data / "qvltoy.json").write_text(json.dumps({"releases": releases}))
    return wheels, data


@pytest.mark.skipif(shutil.which("tox") is None, reason=NO_TOX)
def test_every_tox_env_sets_it(monkeypatch):
    monkeypatch.delenv(NAME, raising=False)
    shown = subprocess.run(
        ["tox", "config", "-e", "ALL", "-k", "set_env"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    envs = dict(re.findall(r"^\[testenv:([^\]]+)\]\nset_env =\n((?:  .*\n)*)", shown.stdout, re.M))
    assert {"py", "check", "gpu", "cell-canary", "cell-u2025-03-15"} <= set(envs), shown.stdout
    assert {env for env, lines in envs.items() if f"  {NAME}={VALUE}\n" not in lines} == set()


def test_the_air_gapped_gpu_script_exports_it_to_every_command(tmp_path, seen):
    """.ci/gpu-offline with a python3 on PATH that records each `python3 -m ...` (pip, the release fetch,
    pytest) instead of running it, and runs every other call (the script's own -c) with the real python."""
    shims, wheelhouse = tmp_path / "bin", tmp_path / "wh"
    shims.mkdir(), wheelhouse.mkdir()
    (wheelhouse / "cell.txt").write_text("canary")
    shim = shims / "python3"
    shim.write_text(
        f'#!/bin/sh\nif [ "$1" = -m ]; then echo "$2=${{{NAME}:-unset}}" >> "$QVL_SEEN"; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    shim.chmod(0o755)
    done = subprocess.run(
        [str(REPO_ROOT / ".ci" / "gpu-offline"), str(wheelhouse), "tests"],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    modules = dict(line.split("=") for line in seen())
    assert {"pip", "harness.cli", "pytest"} <= set(modules) and set(modules.values()) == {VALUE}, modules


def test_an_overlay_imports_and_runs_its_release_with_it(toy_releases, seen):
    wheels, _ = toy_releases
    overlay = Overlays(Base.of(sys.executable), find_links=[str(wheels)], no_index=True, import_check=["qvltoy"]).get(
        ["qvltoy==1.0"]
    )
    assert overlay.error is None, overlay.error
    assert seen() == [VALUE]  # the overlay's import check
    ran = subprocess.run(
        [str(overlay.python), "-c", f"import os; print(os.environ.get('{NAME}', 'unset'))"],
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.split() == [VALUE]


def test_bisect_probes_run_with_it(toy_releases, seen, capsys):
    wheels, data = toy_releases
    status = main(
        [
            "bisect",
            "qvltoy",
            "--good",
            "1.0",
            "--bad",
            "1.1",
            "--release-data",
            str(data),
            "--find-links",
            str(wheels),
            "--no-index",
            "--offline",
            "--base-python",
            sys.executable,
            "--oracle-cmd",
            'python -c "import sys, qvltoy; sys.exit(qvltoy.N)"',
        ]
    )
    assert status == 0, capsys.readouterr()
    assert seen() and set(seen()) == {VALUE}  # each probe's import of its release


def test_triage_reruns_inherit_it(pytester, seen):
    """The re-run's conftest records what the triage process handed it (before the plugin's own setting)."""
    pytester.makeconftest(RECORD)
    pytester.makepyfile(test_toy="import os\n\ndef test_new():\n    assert os.environ['TOY_NIGHT'] == '1'\n")
    nights = {}
    for night in ("1", "2"):
        nights[night] = pytester.path / f"night-{night}"
        os.environ["TOY_NIGHT"] = night
        try:
            pytester.runpytest_subprocess(
                "-p", "harness.pytest.plugin", "--report-dir", str(nights[night]), "--cell", "none"
            )
        finally:
            del os.environ["TOY_NIGHT"]
    os.environ["TOY_NIGHT"] = "2"
    try:
        main(
            ["triage", "--previous", str(nights["1"]), "--current", str(nights["2"]), "--reruns", "1", "--cell", "none"]
        )
    finally:
        del os.environ["TOY_NIGHT"]
    assert seen()[:2] == ["unset", "unset"]  # the two nights, started without it
    assert seen()[2:] == [VALUE]  # the re-run


@pytest.mark.parametrize("hub", ["local", "live"])
def test_pytest_runs_with_it_in_every_hub_mode(pytester, seen, hub):
    pytester.makepyfile(f"import os\n\ndef test_it():\n    assert os.environ.get('{NAME}') == '{VALUE}'\n")
    ran = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "--hub", hub, "--cell", "none")
    ran.assert_outcomes(passed=1)
