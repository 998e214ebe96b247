"""How a GPU run spreads over xdist workers: how many, which GPU each holds, how many CPU threads each uses.

Measured on one H200 with 16 cores. Suites alone, when the FastVisionModel tests were one worker's: 16 workers
took 214 s of pytest and 32 CPU-minutes, 4 workers with 4 threads each 189 s and 6.5 CPU-minutes. With those
tests in child interpreters (harness.pytest.own_process) and the builds beside the workers, `tests suites` is
2,300 worker-seconds of tests: 8 workers with 2 threads each carried 278-308 s apiece, pytest 346 s, and the
cores were 55-65% busy throughout (most of a test's time is one process importing, or waiting on a child).
12 workers with one thread each fill the cores; 16 burnt five times the CPU for the same wall.
"""

from __future__ import annotations

import os
import sys

WORKERS_PER_GPU = 12
GPUS_VAR = "QVL_GPUS"  # the controller's visible GPUs, one per worker in turn
THREADS_VAR = "QVL_THREADS_PER_WORKER"
# torch's CPU thread pools read these at start. Not inductor's compile pool (TORCHINDUCTOR_COMPILE_THREADS): at 1
# per worker the LoRA steps' children compiled one kernel after another, 131-155 s each instead of 115-123 s.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
GPU_RUN_VAR = "QVL_GPU_RUN"  # set by a --require-gpu run: runs it starts are on the runner's torch too
BUILDS_BESIDE = "qvl_builds_beside"  # in a worker's workerinput: the controller's children are building
# Below the controller's build children, which every test that needs a model waits on. At the same priority the
# 12 workers' LoRA compilations starved the captioner's training (its chain 142 s instead of 53 s on one H200),
# and two suites sat in setup for it, 125 s each. What the workers run (their children too) shares one niceness.
WORKER_NICENESS = 10


# pytest 9.2's structured node ids make pytest-xdist 3.8 drop --dist loadgroup's groups without a word: it still
# writes the group into the old ``_nodeid`` field (pytest-dev/pytest-xdist#1386, fix open in #1388)
GROUPS_DROPPED = ("9.2.0.dev0", "3.8.0")  # from this pytest, up to this pytest-xdist
GPU_PYTEST = "pytest<9.2"  # what the gpu env installs (toxfile.py) where the runner's pytest drops them


def loadgroup_problem(pytest_version: str, xdist_version: str) -> str | None:
    """Why a --dist loadgroup run of these versions would not keep its groups, or None."""
    from packaging.version import Version

    dropped_from, dropped_up_to = (Version(v) for v in GROUPS_DROPPED)
    if Version(pytest_version) >= dropped_from and Version(xdist_version) <= dropped_up_to:
        return (
            f"qvl-harness: --dist loadgroup: pytest {pytest_version} with pytest-xdist {xdist_version} drops "
            "xdist_group without a word (pytest-dev/pytest-xdist#1386), and a group keeps a module's costly "
            f"fixtures in one worker: install '{GPU_PYTEST}' (the gpu env does)"
        )
    return None


def plan(gpus: list[str], cores: int) -> tuple[int, int]:
    """(workers, torch threads per worker) for these GPUs on this many cores."""
    workers = max(1, min(cores, WORKERS_PER_GPU * max(len(gpus), 1)))
    return workers, max(1, cores // workers)


def auto_num_workers(device_count: int, environ=os.environ) -> int:
    """`-n auto` in a GPU run: publish the GPUs and threads for the workers, return how many to start."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(device_count)]
    workers, threads = plan(gpus, os.cpu_count() or 1)
    environ[GPUS_VAR] = ",".join(gpus)
    environ[THREADS_VAR] = str(threads)
    return workers


def thread_env(side_by_side: int, cores: int | None = None) -> dict[str, str]:
    """torch's (OpenMP's, MKL's) thread count for one of ``side_by_side`` processes that share the cores."""
    threads = str(max(1, (cores or os.cpu_count() or 1) // max(side_by_side, 1)))
    return dict.fromkeys(THREAD_VARS, threads)


def worker_id(config) -> str | None:
    """This process's xdist worker id (gwN), None on the controller or without xdist. Asked of the
    config, not of PYTEST_XDIST_WORKER: a pytest run started inside a worker inherits that variable."""
    return config.workerinput["workerid"] if hasattr(config, "workerinput") else None


def settle_worker(worker: str | None, environ=os.environ) -> None:
    """In worker gwN, before anything initializes CUDA or torch's thread pool: its own GPU, its own threads."""
    gpus = environ.get(GPUS_VAR)
    if not worker:
        return
    if gpus:
        ids = gpus.split(",")
        environ["CUDA_VISIBLE_DEVICES"] = ids[int(worker.removeprefix("gw")) % len(ids)]
    threads = environ.get(THREADS_VAR)
    if threads:
        environ.update(dict.fromkeys(THREAD_VARS, threads))
        if "torch" in sys.modules:  # imported before the plugin configured: set the pool directly
            sys.modules["torch"].set_num_threads(int(threads))


def give_way_to_builds(workerinput: dict) -> None:
    """In a worker started beside the controller's builds: run below them (WORKER_NICENESS says why)."""
    if workerinput.get(BUILDS_BESIDE):
        os.nice(WORKER_NICENESS)


def placement(worker: str | None, environ=os.environ) -> dict:
    """Where this process ran its tests: worker id, the GPU it was pinned to and the one CUDA gave it.
    CUDA is asked only where the tests initialized it (a CPU run stays a CPU run)."""
    torch = sys.modules.get("torch")
    found = {
        "worker": worker or "main",
        "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads() if torch else None,
        "gpu": None,
        "gpu_uuid": None,
    }
    if torch is not None and torch.cuda.is_initialized():
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        found["gpu"], found["gpu_uuid"] = properties.name, str(getattr(properties, "uuid", "")) or None
    return found
