"""`qvl-harness matrix --resolve-canary` against a local wheel folder: real uv resolution, nothing installed."""

from __future__ import annotations

import pytest
from toywheels import toy_index

from harness.cli import main
from harness.env.matrix import load_matrix

MATRIX = """# the header comment stays
[defaults]
torch = "1.0.0"
bitsandbytes = "1.0"

[cells.canary]
role = "canary"
unsloth = "1.0"
unsloth_zoo = "1.0"  # a comment that stays
transformers = "1.0"
peft = "1.0"
trl = "1.0"

[cells.control]
role = "control"
unsloth = "1.0"
unsloth_zoo = "1.0"
transformers = "1.0"
"""


@pytest.fixture
def index(tmp_path, monkeypatch):
    """unsloth 1.2 needs a qvlpeer that was never released, so 1.1 is the newest that installs;
    bitsandbytes 1.1 is out, trl 1.1 needs transformers>=2 (which exists)."""
    return toy_index(
        tmp_path,
        monkeypatch,
        [
            ("unsloth", "1.0", ["unsloth_zoo>=1.0"]),
            ("unsloth", "1.1", ["unsloth_zoo>=1.1", "torch>=1.0"]),
            ("unsloth", "1.2", ["qvlpeer>=9"]),
            ("unsloth_zoo", "1.0", []),
            ("unsloth_zoo", "1.1", []),
            ("transformers", "1.0", []),
            ("transformers", "2.0", []),
            ("peft", "1.0", []),
            ("trl", "1.0", []),
            ("trl", "1.1", ["transformers>=2"]),
            ("bitsandbytes", "1.0", []),
            ("bitsandbytes", "1.1", ["torch"]),
            ("torch", "1.0.0", []),
            ("qvlpeer", "1.0", []),
        ],
        MATRIX,
    )


def resolve_canary(index, capsys, *extra) -> tuple[int, str]:
    wheels, matrix = index
    status = main(
        ["matrix", "--file", str(matrix), "--resolve-canary", "--no-index", "--find-links", str(wheels), *extra]
    )
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_prints_the_newest_stack_that_installs_and_what_moved(index, capsys):
    status, out = resolve_canary(index, capsys)
    assert status == 0
    assert "  unsloth        1.1          (recorded: 1.0)" in out  # not 1.2: it does not install
    assert "  peft           1.0          (as recorded)" in out
    assert (
        "5 change(s) since the recorded canary: unsloth 1.0 -> 1.1, unsloth-zoo 1.0 -> 1.1, transformers 1.0 -> 2.0, "
        "bitsandbytes 1.0 -> 1.1, trl 1.0 -> 1.1 (--write puts them into matrix.toml)"
    ) in out
    assert load_matrix(index[1]).cell("canary").pins["unsloth"] == "1.0"  # nothing written


def test_write_updates_only_the_canary_and_keeps_the_file(index, capsys):
    status, out = resolve_canary(index, capsys, "--write")
    assert status == 0 and "wrote 5 new pin(s) into [cells.canary]" in out
    matrix = load_matrix(index[1])
    assert matrix.cell("canary").stack == {
        "unsloth": "1.1",
        "unsloth-zoo": "1.1",
        "transformers": "2.0",
        "peft": "1.0",
        "bitsandbytes": "1.1",
        "trl": "1.1",
        "torch": "1.0.0",
    }
    assert matrix.cell("control").stack["unsloth"] == "1.0"  # the control leg stays pinned
    text = index[1].read_text()
    assert text.startswith("# the header comment stays") and 'unsloth_zoo = "1.1"  # a comment that stays' in text
    # a pin the canary took from [defaults] gets its own line after the canary's pins; unmoved pins are not written
    assert 'trl = "1.1"\nbitsandbytes = "1.1"\n\n[cells.control]' in text and text.count('peft = "1.0"') == 1
    status, out = resolve_canary(index, capsys)
    assert status == 0 and "unchanged since the recorded canary" in out


def test_an_upstream_that_does_not_resolve_is_one_line(index, capsys):
    wheels, matrix = index
    matrix.write_text(MATRIX.replace('torch = "1.0.0"', 'torch = "3.0.0"'))
    status, out = resolve_canary(index, capsys)
    assert status == 2 and out.count("\n") == 1
    assert "the upstream stack does not resolve with torch==3.0.0" in out


def test_write_without_resolve_is_refused(index, capsys):
    assert main(["matrix", "--file", str(index[1]), "--write"]) == 2
    assert "--write goes with --resolve-canary" in capsys.readouterr().err
