"""tox plugin: environments come from matrix.toml, so there is one list of stacks to keep.

`py` runs the harness's own tests on the control cell's stack (pinned, so an upstream release cannot
turn the harness's own CI red; the canary's suites catch that), `cell-NAME` the suites on cell NAME's
(all labelled `cpu`: `tox -m cpu` runs them), `gpu` both on $QVL_CELL's (default canary). The cpu envs
install the cell's companions
with uv and then unsloth/unsloth-zoo with --no-deps, so the code under test never drags another
torch in. The gpu env uses pip in a venv that sees the runner's packages: pip keeps a runner torch
that fits the cell's `gpu` declaration (uv would install its own copy) and installs the cell's
era torch where it does not. Without a GPU, `tox -e gpu` refuses before creating anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tox.config.loader.memory import MemoryLoader
from tox.config.types import Command
from tox.plugin import impl
from tox.report import HandledError
from tox.session.cmd.run.parallel import OFF_VALUE as OFF

sys.path.insert(0, str(Path(__file__).parent))
from harness.core import auto_updates  # noqa: E402
from harness.core.errors import HarnessError  # noqa: E402
from harness.env.matrix import load_matrix  # noqa: E402
from harness.env.resolve import LOCAL_WHEELS  # noqa: E402
from harness.failures.registry import check_matrix, load_registry  # noqa: E402
from harness.pytest.workers import GPU_PYTEST, thread_env  # noqa: E402

RUN_COMMANDS = {None, "r", "run", "p", "run-parallel", "legacy", "le"}


def _matrix():
    """The matrix, checked against the known-failure registry, or tox's own one-line error for a broken one."""
    try:
        return check_matrix(load_matrix(), load_registry())
    except HarnessError as exc:
        raise HandledError(f"qvl-harness: {exc}") from None


@impl
def tox_extend_envs():
    return [cell.tox_env for cell in _matrix().cells.values()]


@impl
def tox_add_core_config(core_conf, state):
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    if LOCAL_WHEELS.is_dir():
        os.environ.setdefault("UV_FIND_LINKS", str(LOCAL_WHEELS))


def visible_gpus() -> list[str]:
    """GPUs the NVIDIA driver lists, asked without importing torch (which a bare runner lacks)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in listed.splitlines() if line.startswith("GPU ")]


def _refuse_gpu_env_without_gpu(state) -> None:
    options = state.conf.options
    selected = {name for name in (options.env if options.env else [])} if hasattr(options, "env") else set()
    if getattr(options, "command", None) in RUN_COMMANDS and "gpu" in selected and not visible_gpus():
        raise HandledError(
            "qvl-harness: tox -e gpu needs a CUDA GPU and nvidia-smi lists none here; "
            "on a machine without one run the cpu envs: tox -m cpu"
        )


@impl
def tox_add_env_config(env_conf, state):
    name = env_conf.name
    if name == "py":
        cell_name = "control"
    elif name.startswith("cell-"):
        cell_name = name[len("cell-") :]
    elif name == "gpu":
        _refuse_gpu_env_without_gpu(state)
        cell_name = os.environ.get("QVL_CELL", "canary")
    else:
        return _no_self_updates(env_conf)
    matrix = _matrix()
    try:
        cell = matrix.cell(cell_name)
    except HarnessError as exc:
        raise HandledError(f"qvl-harness: {exc}") from None
    gpu = name == "gpu"
    install_code = ["python", "-m", "pip", "install", "--no-deps"] if gpu else ["uv", "pip", "install", "--no-deps"]
    env_conf.loaders.insert(
        0,
        MemoryLoader(
            deps="\n".join([*cell.gpu_requirements(), GPU_PYTEST] if gpu else cell.companions()),
            labels=[] if gpu else ["cpu"],
            commands_pre=[
                Command([*install_code, *cell.code_under_test()]),
                # release code the cross-release suites read (network here, never inside the tests)
                Command(["qvl-harness", "releases", "fetch"]),
            ],
            # py runs the harness's own tests, each cell env the regression suites, gpu both
            # (this table replaces tox.ini's [testenv] set_env: what those envs need is repeated here; py
            # imports the control release on CPU to check the isolated mapper against it)
            set_env={
                "QVL_CELL": cell.name,
                "PYTHONUNBUFFERED": "1",
                **({} if gpu else _threads_beside_each_other(state)),
                **(
                    {"QVL_TESTPATHS": "tests", "UNSLOTH_ALLOW_CPU": "1"}
                    if name == "py"
                    else {"QVL_TESTPATHS": "suites"}
                    if name.startswith("cell-")
                    else {}
                ),
            },
        ),
    )
    _no_self_updates(env_conf)


def _threads_beside_each_other(state) -> dict[str, str]:
    """torch's threads per env when `-p` runs several side by side: the cores shared out, not each env's
    default of one thread per core. Two cells beside each other on 2 cores took 136 s with 2 threads each
    (their spinning threads burnt 237 CPU-seconds) and 80 s with 1 (129); one after the other, 122 s."""
    side_by_side = getattr(state.conf.options, "parallel", OFF)
    if side_by_side == OFF or not isinstance(side_by_side, (int, type(None))):
        return {}
    return thread_env(side_by_side or os.cpu_count() or 1)  # None: all at once, one thread each


def _no_self_updates(env_conf) -> None:
    """Every env's commands run with the releases' self-updates off; after the loaders above are in place,
    since reading set_env fixes its value."""
    env_conf["set_env"].update(auto_updates.disable({}))
