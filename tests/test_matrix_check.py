"""`qvl-harness matrix --check` against a local wheel folder: real uv resolution, no network, nothing installed."""

from __future__ import annotations

import pytest
from toywheels import toy_index

from harness.cli import main

MATRIX = """
[defaults]
torch = "1.0"
bitsandbytes = "1.0"

[cells.good]
role = "canary"
unsloth = "1.0"
unsloth_zoo = "1.0"
transformers = "1.0"
gpu = { torch = "==1.0.0", packages = ["xformers==0.1"] }

[cells.clash]
unsloth = "1.0"
unsloth_zoo = "1.0"
transformers = "2.0"
extra = ["qvlpeer==1.0"]
gpu = { torch = "==1.0.0", packages = ["xformers==0.1"] }

[cells.ghost]
unsloth = "1999.1.1"
unsloth_zoo = "1.0"
transformers = "1.0"
gpu = { torch = "==1.0.0", packages = ["xformers==0.1"] }

[cells.wrong-gpu]
unsloth = "1.0"
unsloth_zoo = "1.0"
transformers = "1.0"
gpu = { torch = "==1.0.0", packages = ["xformers==0.2"] }
"""


@pytest.fixture
def index(tmp_path, monkeypatch):
    """Wheels for the toy stack: transformers 2.0 needs qvlpeer>=1.1; unsloth 1.0 ships a torch 1.0.0 extra."""
    return toy_index(tmp_path, monkeypatch, [
        ("unsloth", "1.0", ['torch>=1.0', 'xformers==0.1; extra == "cu121onlytorch100"']), ("unsloth_zoo", "1.0", []),
        ("torch", "1.0.0", []), ("bitsandbytes", "1.0", ["torch"]), ("transformers", "1.0", []),
        ("transformers", "2.0", ["qvlpeer>=1.1"]), ("qvlpeer", "1.0", []), ("qvlpeer", "1.1", []),
        ("xformers", "0.1", ["torch==1.0.0"]), ("xformers", "0.2", ["torch==1.0.0"])], MATRIX)


def check(index, capsys, *cells):
    wheels, matrix = index
    status = main(["matrix", "--file", str(matrix), "--check", "--no-index", "--find-links", str(wheels), *cells])
    return status, capsys.readouterr().out.splitlines()


def test_a_cell_that_resolves_passes_every_check(index, capsys):
    status, lines = check(index, capsys, "good")
    assert status == 0, lines
    assert lines[-1] == "4/4 checks passed"
    assert any("gpu needs vs release" in line and "cu121onlytorch100 (torch 1.0.0)" in line for line in lines)


def test_each_broken_cell_is_one_line_naming_the_conflict(index, capsys):
    status, lines = check(index, capsys)
    assert status == 1
    failed = [line for line in lines if " FAILED " in line]
    assert {line.split()[0] for line in failed} == {"clash", "ghost", "wrong-gpu"}
    clash = [line for line in failed if line.startswith("clash")]
    assert clash and all("depends on qvlpeer>=1.1 and you require transformers==2.0" in line for line in clash)
    assert any(line.startswith("ghost") and "releases exist" in line and "unsloth==1999.1.1" in line for line in failed)
    assert any(line.startswith("wrong-gpu") and "matches none of unsloth 1.0's GPU extras" in line for line in failed)
    assert lines[-1].endswith("FAILED: clash, ghost, wrong-gpu")
