"""A venv made as the README's install makes it: the harness and its dependencies, no stack under test.

Built once per test session with uv from its cache (``--offline``: tox-uv filled it when it built this
env); where that cannot be done the tests that need it skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import one_line
from harness.core.paths import REPO_ROOT

_BUILT: dict[str, Path] = {}


def stackless_python(tmp_path_factory) -> Path:
    """The python of a venv with the harness installed (editable) and neither torch nor transformers."""
    if "python" not in _BUILT:
        uv = shutil.which("uv") or pytest.skip("uv is not on PATH: cannot make a venv without the stack")
        venv = tmp_path_factory.mktemp("stackless") / "venv"
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        for command in (
            [uv, "venv", "-q", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "-q", "--offline", "--python", str(venv / "bin" / "python"), "-e", str(REPO_ROOT)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode:
                pytest.skip(f"cannot make a venv without the stack from uv's cache: {one_line(done.stderr)}")
        _BUILT["python"] = venv / "bin" / "python"
    return _BUILT["python"]
