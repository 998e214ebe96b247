"""Long work shows progress, a line per step as CI logs want, and is quiet under -q."""

from __future__ import annotations

import io

import pytest

from harness.core.progress import Progress

pytest_plugins = ["pytester"]


def test_a_line_per_step_and_none_when_quiet(monkeypatch):
    out = io.StringIO()
    report = Progress(2, "fetching", stream=out)
    report.step("unsloth==2024.12.1", "0.2 MiB")
    report.step("unsloth-zoo==2024.12.6")
    assert out.getvalue().splitlines() == [
        "qvl-harness: fetching: 2 steps",
        "qvl-harness: [1/2] unsloth==2024.12.1: 0.2 MiB",
        "qvl-harness: [2/2] unsloth-zoo==2024.12.6",
    ]
    quiet = io.StringIO()
    Progress(1, "x", stream=quiet, quiet=True).step("y")
    monkeypatch.setenv("QVL_QUIET", "1")
    Progress(1, "x", stream=quiet).step("y")
    assert quiet.getvalue() == ""


@pytest.mark.slow(seconds=25)  # 23-31 s on the H200
@pytest.mark.parametrize("quiet", [False, True])
def test_training_the_captioner_inside_a_test_run_reports_past_the_capture(
    pytester, tmp_path, monkeypatch, quiet, tiny_checkpoint
):
    """Training the captioner (about 75 s on 2 cores the first time) once printed nothing while it ran."""
    models = tmp_path / "cache" / "models"  # a cache without captioners, its base the run's own
    models.mkdir(parents=True)
    (models / tiny_checkpoint.name).symlink_to(tiny_checkpoint)
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    pytester.makepyfile("""
        from harness.lab import captioner

        def test_build(chest_xray):  # one fixture: the lines are the point, not the captions
            captioner.build([chest_xray], recipe=captioner.Recipe(steps=50))
    """)
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", *(["-q"] if quiet else []))
    result.assert_outcomes(passed=1)
    lines = [line for line in result.stdout.lines if "training the tiny captioner" in line or "step 50/50" in line]
    assert (lines == []) if quiet else len(lines) >= 2, result.stdout.str()
