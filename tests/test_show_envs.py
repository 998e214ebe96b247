"""`.ci/show-envs`: a parallel tox run's result file printed env after env, as a sequential run prints it."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.core.paths import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "show-envs"


def step(run_id: str, command: list[str], output: str = "", err: str = "", shown: bool = True) -> dict:
    return {"run_id": run_id, "command": command, "output": output, "err": err, "show_on_standard": shown}


def show(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True)


def test_every_env_s_commands_and_output_in_order(tmp_path):
    result = tmp_path / "result.json"
    envs = {
        ".pkg": {"test": [step("build", ["python", "-m", "build"], "built")]},
        "py": {
            "setup": [step("install_package", ["uv", "pip", "install"], "hidden", shown=False)],
            "test": [step("commands[0]", ["pytest", "tests"], "548 passed in 500s", "a warning")],
        },
        "gpu": {},  # configured, not run
        "cell-x": {
            "test": [step("commands_pre[0]", ["uv", "pip", "install"]), step("commands[0]", ["pytest"], "ok\n")]
        },
    }
    result.write_text(json.dumps({"testenvs": envs}))
    shown = show(result)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "py: commands[0]> pytest tests",
        "548 passed in 500s",
        "a warning",
        "cell-x: commands_pre[0]> uv pip install",
        "cell-x: commands[0]> pytest",
        "ok",
    ]


def test_a_file_that_is_not_a_result_is_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    for path in (tmp_path / "bad.json", tmp_path / "absent.json"):
        shown = show(path)
        assert shown.returncode == 1 and len(shown.stderr.splitlines()) == 1
        assert shown.stderr.startswith(f"show-envs: {path}: not a tox result file")
