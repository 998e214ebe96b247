"""`-n auto` on a GPU runner: a few workers per GPU, each pinned to one GPU, none oversubscribing the cores;
and --dist loadgroup keeps a group on one worker."""

from __future__ import annotations

import os
import types

import pytest

from harness.pytest import plugin, workers

pytest_plugins = ["pytester"]


def fake_config(require_gpu: bool):
    return types.SimpleNamespace(getoption=lambda name: require_gpu if name == "--require-gpu" else None)


@pytest.fixture
def faked_devices(monkeypatch):
    """torch reports `count` CUDA devices on a 16-core machine; the environment is restored afterwards."""
    import torch

    def fake(count: int, cores: int = 16) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        for name in (workers.GPUS_VAR, workers.THREADS_VAR):
            monkeypatch.delenv(name, raising=False)

    return fake


@pytest.mark.parametrize(("gpus", "expected_workers", "threads"), [(1, 12, 1), (2, 16, 1), (8, 16, 1)])
def test_auto_starts_a_few_workers_per_gpu_within_the_cores(faked_devices, gpus, expected_workers, threads):
    faked_devices(gpus)
    assert plugin.pytest_xdist_auto_num_workers(fake_config(require_gpu=True)) == expected_workers
    assert os.environ[workers.GPUS_VAR] == ",".join(str(i) for i in range(gpus))
    assert os.environ[workers.THREADS_VAR] == str(threads)


def test_a_cpu_run_leaves_the_count_to_xdist(faked_devices):
    faked_devices(2)
    assert plugin.pytest_xdist_auto_num_workers(fake_config(require_gpu=False)) is None
    assert workers.GPUS_VAR not in os.environ


def test_the_hook_answers_before_xdists_own():
    assert plugin.pytest_xdist_auto_num_workers.pytest_impl["tryfirst"] is True


def test_each_worker_holds_one_gpu_in_turn_and_its_share_of_the_threads():
    environ = {workers.GPUS_VAR: "3,5", workers.THREADS_VAR: "2"}
    held = {}
    for worker in ("gw0", "gw1", "gw2", "gw3"):
        env = dict(environ)
        workers.settle_worker(worker, env)
        held[worker] = (env["CUDA_VISIBLE_DEVICES"], env["OMP_NUM_THREADS"])
    assert held == {"gw0": ("3", "2"), "gw1": ("5", "2"), "gw2": ("3", "2"), "gw3": ("5", "2")}


def test_the_controller_is_not_pinned():
    env = {workers.GPUS_VAR: "0,1", workers.THREADS_VAR: "8", "PYTEST_XDIST_WORKER": "gw3"}  # inherited from a worker
    workers.settle_worker(None, env)
    assert "CUDA_VISIBLE_DEVICES" not in env and "OMP_NUM_THREADS" not in env


def test_xdist_asks_the_hook_and_gets_the_plan(faked_devices, pytestconfig):
    """The call xdist makes for `-n auto` (a firstresult hook): the harness's answer comes before xdist's own."""
    assert pytestconfig.pluginmanager.hasplugin("xdist")
    faked_devices(1)
    assert pytestconfig.hook.pytest_xdist_auto_num_workers(config=fake_config(require_gpu=True)) == 12


GROUPED = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("costly-module-fixture")


@pytest.mark.parametrize("i", range(4))
def test_in_the_group(i):
    print("worker", os.environ["PYTEST_XDIST_WORKER"])
"""


@pytest.mark.parametrize(
    ("pytest_version", "xdist_version", "refused"),
    [("9.1.1", "3.8.0", False), ("9.2.0", "3.8.0", True), ("9.2.0", "3.9.0", False), ("8.4.2", "3.5.0", False)],
)
def test_loadgroup_is_refused_where_its_groups_would_be_dropped(pytest_version, xdist_version, refused):
    problem = workers.loadgroup_problem(pytest_version, xdist_version)
    assert (problem is not None) == refused
    assert problem is None or "pytest-dev/pytest-xdist#1386" in problem and workers.GPU_PYTEST in problem


def test_loadgroup_keeps_a_group_on_one_worker_or_refuses_in_one_line(pytester):
    """The GPU run's --dist loadgroup keeps a module's costly fixtures in one worker (tests/test_nightly.py's
    triage). Where this pytest and pytest-xdist would spread the group without a word, the run refuses."""
    import xdist

    pytester.makepyfile(test_grouped=GROUPED)
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "-p", "harness.pytest.plugin"
    )
    problem = workers.loadgroup_problem(pytest.__version__, xdist.__version__)
    if problem:
        assert result.ret == pytest.ExitCode.USAGE_ERROR and problem in result.stderr.str(), result.stderr.str()
        return
    ran_on = {line.split()[0] for line in result.stdout.lines if "PASSED" in line and line.startswith("[gw")}
    assert result.ret == 0 and len(ran_on) == 1, "\n".join(result.stdout.lines[-20:])
