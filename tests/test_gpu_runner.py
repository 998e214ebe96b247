"""What a GPU run needs, refused early and in one line where it cannot work: no GPU at all (tox -e gpu)
and a runner whose torch cannot host a cell's releases (the wheelhouse)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from harness.cli import main
from harness.core.paths import REPO_ROOT
from harness.env.matrix import load_matrix


def test_wheelhouse_refuses_a_runner_whose_torch_cannot_host_the_cell(tmp_path, capsys):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("torch==2.11.0\nnumpy==2.5.2\n")
    old = next(c for c in load_matrix().cells.values() if not c.gpu.admits("2.11.0"))
    assert main(["wheelhouse", old.name, "--runner", str(freeze), "--dest", str(tmp_path / "wh")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cell {old.name} needs {old.gpu.describe()}" in err
    assert "the runner has torch 2.11.0" in err and not (tmp_path / "wh").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: tox -e gpu would really run")
def test_tox_gpu_without_a_gpu_refuses_at_once_in_one_line(tmp_path):
    tox = shutil.which("tox", path=os.path.dirname(sys.executable)) or shutil.which("tox")
    if tox is None:
        pytest.skip("tox is not installed in this environment (the test extra has it)")
    started = time.monotonic()
    result = subprocess.run(
        [tox, "-e", "gpu", "--workdir", str(tmp_path / "tox")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and time.monotonic() - started < 30
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "tox -e gpu needs a CUDA GPU" in lines[0], lines
    assert not (tmp_path / "tox").exists()  # nothing was created


def test_a_broken_matrix_is_one_line_from_every_tox_command(tmp_path):
    """A broken matrix.toml once made every tox command, `tox -l` included, print a 41-line traceback."""
    tox = shutil.which("tox", path=os.path.dirname(sys.executable)) or shutil.which("tox")
    if tox is None:
        pytest.skip("tox is not installed in this environment (the test extra has it)")
    broken = tmp_path / "matrix.toml"
    broken.write_text("[cells.a\n")
    for command in (["-l"], ["-e", "py", "--notest"]):
        result = subprocess.run(
            [tox, *command, "--workdir", str(tmp_path / "tox")],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "QVL_MATRIX": str(broken)},
        )
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1, lines
        assert "qvl-harness: matrix.toml: not valid TOML" in lines[0]
