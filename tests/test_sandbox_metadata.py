"""A release's own name mapping runs where transformers is not installed (the harness's venv): the
loader's `from transformers import __version__` gets the lowest version the release's Requires-Dist admits."""

from __future__ import annotations

import json
import subprocess

import pytest
from stackless import stackless_python

from harness.core.paths import REPO_ROOT

# get_model_name(name, load_in_4bit=True) of each release, as the control cell's env (transformers installed) answers
EXPECTED = {
    "2024.12.2": {
        "unsloth/Qwen2-VL-7B-Instruct": "unsloth/qwen2-vl-7b-instruct-unsloth-bnb-4bit",
        "unsloth/Qwen2-VL-72B-Instruct": "unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit",
    },
    "2026.10.1": {
        "unsloth/Qwen2-VL-7B-Instruct": "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit",
        "unsloth/Qwen2-VL-72B-Instruct": "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit",
    },
}
MAP = """
import importlib.util, json, sys
from harness.releases import code
from harness.releases.mapper import ReleaseMapper
assert importlib.util.find_spec("transformers") is None
mapper = ReleaseMapper(code.from_wheel("unsloth", sys.argv[1]))
runs = {name: mapper.resolve(name, load_in_4bit=True) for name in sys.argv[2:]}
print(json.dumps({"transformers": mapper.transformers_version, "setup_errors": mapper.setup_errors,
                  "resolved": {n: r.resolved or r.error for n, r in runs.items()}}))
"""


@pytest.mark.parametrize("version, floor", [("2024.12.2", "4.46.1"), ("2026.10.1", "4.52.4")])
def test_mapper_runs_without_transformers(tmp_path_factory, version, floor):
    python = stackless_python(tmp_path_factory)
    done = subprocess.run(
        [str(python), "-c", MAP, version, *EXPECTED[version]],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"transformers": floor, "setup_errors": [], "resolved": EXPECTED[version]}
