"""tox plugin: environments come from matrix.toml, so there is one list of stacks to keep.

`py` runs on the canary cell's stack, `cell-NAME` on cell NAME's, `gpu` on $QVL_CELL's (default
canary) with the runner's own torch. Each installs the cell's companions normally and then
unsloth/unsloth-zoo with --no-deps, so the code under test never drags another torch in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tox.config.loader.memory import MemoryLoader
from tox.config.types import Command
from tox.plugin import impl

sys.path.insert(0, str(Path(__file__).parent))
from harness.matrix import load_matrix  # noqa: E402

LOCAL_WHEELS = Path("/opt/wheels")  # this workplace's CPU torch wheel, which uv cannot see otherwise


@impl
def tox_extend_envs():
    return [cell.tox_env for cell in load_matrix().cells.values()]


@impl
def tox_add_core_config(core_conf, state):
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    if LOCAL_WHEELS.is_dir():
        os.environ.setdefault("UV_FIND_LINKS", str(LOCAL_WHEELS))


@impl
def tox_add_env_config(env_conf, state):
    name = env_conf.name
    if name == "py":
        cell_name = "canary"
    elif name.startswith("cell-"):
        cell_name = name[len("cell-"):]
    elif name == "gpu":
        cell_name = os.environ.get("QVL_CELL", "canary")
    else:
        return
    cell = load_matrix().cell(cell_name)
    # A GPU runner keeps its own CUDA torch (system site packages); elsewhere the cell's torch.
    deps = cell.companions(torch="" if name == "gpu" else None)
    env_conf.loaders.insert(
        0,
        MemoryLoader(
            deps="\n".join(deps),
            commands_pre=[
                # uv installs into $VIRTUAL_ENV, which tox sets to this env
                Command(["uv", "pip", "install", "--no-deps", *cell.code_under_test()]),
                # release code the cross-release suites read (network here, never inside the tests)
                Command(["qvl-harness", "releases", "fetch"]),
            ],
            # cell envs run the regression suites; the harness's own tests run in py
            set_env={"QVL_CELL": cell.name, **({} if name == "py" else {"QVL_TESTPATHS": "suites"})},
        ),
    )
