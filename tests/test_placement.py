"""The results file says where each test ran: its worker, and the GPU that worker was pinned to."""

from __future__ import annotations

import json

from harness.pytest import workers

pytest_plugins = ["pytester"]


def run_two_workers(pytester, monkeypatch, gpus: str):
    monkeypatch.setenv(workers.GPUS_VAR, gpus)  # as `-n auto` publishes it on a runner with these GPUs
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_pinned(n):
            assert os.environ["CUDA_VISIBLE_DEVICES"] in os.environ["QVL_GPUS"].split(",")
        """
    )
    done = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-n", "2", "--report-dir", "out")
    done.assert_outcomes(passed=4)
    return json.loads(next((pytester.path / "out").glob("results-*.json")).read_text())


def test_each_worker_is_recorded_with_the_gpu_it_was_pinned_to(pytester, monkeypatch):
    ran = run_two_workers(pytester, monkeypatch, gpus="3,5")
    pins = {w["worker"]: w["cuda_visible_devices"] for w in ran["workers"]}
    assert pins == {"gw0": "3", "gw1": "5"}
    assert {t["worker"] for t in ran["tests"]} <= {"gw0", "gw1"}


def test_a_run_without_workers_records_its_own_process(pytester):
    pytester.makepyfile("def test_one():\n    pass\n")
    pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "--report-dir", "out").assert_outcomes(passed=1)
    ran = json.loads(next((pytester.path / "out").glob("results-*.json")).read_text())
    assert [w["worker"] for w in ran["workers"]] == ["main"]
    assert [t["worker"] for t in ran["tests"]] == ["main"]
