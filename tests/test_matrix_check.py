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
    return toy_index(
        tmp_path,
        monkeypatch,
        [
            ("unsloth", "1.0", ["torch>=1.0", 'xformers==0.1; extra == "cu121onlytorch100"']),
            ("unsloth_zoo", "1.0", []),
            ("torch", "1.0.0", []),
            ("bitsandbytes", "1.0", ["torch"]),
            ("transformers", "1.0", []),
            ("transformers", "2.0", ["qvlpeer>=1.1"]),
            ("qvlpeer", "1.0", []),
            ("qvlpeer", "1.1", []),
            ("xformers", "0.1", ["torch==1.0.0"]),
            ("xformers", "0.2", ["torch==1.0.0"]),
        ],
        MATRIX,
    )


def check(index, capsys, *cells):
    wheels, matrix = index
    status = main(["matrix", "--file", str(matrix), "--check", "--no-index", "--find-links", str(wheels), *cells])
    return status, capsys.readouterr().out.splitlines()


def test_a_cell_that_resolves_passes_every_check(index, capsys):
    status, lines = check(index, capsys, "good")
    assert status == 0, lines
    assert lines[-1] == "5/5 checks passed"
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


# --- each cell's pins against its own releases' Requires-Dist ----------------------------------------------

CELL = """
unsloth = "2025.2.15"
transformers = "4.48.3"
gpu = {{ torch = "==2.6.0", packages = ["xformers==0.0.29.post3"] }}
unsloth_zoo = "{zoo}"
trl = "{trl}"
extra = ["protobuf=={protobuf}"]
"""
RELEASE_MATRIX = '[defaults]\ntorch = "2.6.0"\nbitsandbytes = "0.45.0"\n' + "".join(
    f"\n[cells.{name}]" + CELL.format(**{"zoo": "2025.2.7", "trl": "0.15.2", "protobuf": "3.20.3", **pins}) + extra
    for name, pins, extra in [
        ("fits", {}, ""),
        ("zoo-too-old", {"zoo": "2025.2.6"}, ""),  # the cell
        ("trl-excluded", {"trl": "0.15.0"}, ""),
        ("overridden", {"protobuf": "5.29.0"}, 'overrides = { protobuf = "the runner keeps its own" }\n'),
        ("needless-override", {}, 'overrides = { protobuf = "the runner keeps its own" }\n'),
    ]
)
# unsloth 2025.2.15's own Requires-Dist lines (from its wheel's METADATA), and one with a marker this target lacks
UNSLOTH_2025_2_15 = [
    "unsloth_zoo>=2025.2.7",
    "torch>=2.4.0",
    "xformers>=0.0.27.post2",
    'triton>=3.0.0; platform_system == "Linux"',
    "transformers!=4.47.0,>=4.46.1",
    "trl!=0.15.0,!=0.9.0,!=0.9.1,!=0.9.2,!=0.9.3,>=0.7.9",
    "protobuf<4.0.0",
    'unsloth_zoo>=2025.2.6; extra == "colab-new"',
    'trl!=0.9.0,!=0.9.1,!=0.9.2,!=0.9.3,<0.15.0,>=0.7.9; extra == "colab-no-deps"',
    'xformers==0.0.29.post3; extra == "cu124onlytorch260"',
    'transformers<4.47; sys_platform == "win32"',
]


@pytest.fixture
def release_index(tmp_path, monkeypatch):
    return toy_index(
        tmp_path,
        monkeypatch,
        [
            ("unsloth", "2025.2.15", UNSLOTH_2025_2_15),
            ("unsloth_zoo", "2025.2.6", ["torch"]),
            ("unsloth_zoo", "2025.2.7", ["torch"]),
            ("torch", "2.6.0", []),
            ("bitsandbytes", "0.45.0", ["torch"]),
            ("transformers", "4.48.3", []),
            ("trl", "0.15.0", []),
            ("trl", "0.15.2", []),
            ("protobuf", "3.20.3", []),
            ("protobuf", "5.29.0", []),
            ("xformers", "0.0.29.post3", ["torch==2.6.0"]),
        ],
        RELEASE_MATRIX,
    )


def requirement_lines(index, capsys) -> dict[str, str]:
    _, lines = check(index, capsys)
    return {line.split()[0]: line for line in lines if " release requirements " in line}


def test_a_pin_its_own_releases_exclude_is_one_line_naming_the_requirement(release_index, capsys):
    lines = requirement_lines(release_index, capsys)
    failed = {cell for cell, line in lines.items() if " FAILED " in line}
    assert failed == {"zoo-too-old", "trl-excluded", "needless-override"}, lines
    assert lines["zoo-too-old"].endswith(
        "FAILED  unsloth-zoo 2025.2.6 (cpu, gpu) is outside unsloth_zoo>=2025.2.7, "
        "asked by unsloth 2025.2.15 (on purpose? say why in the cell's overrides = "
        '{ PACKAGE = "..." })'
    )
    assert (
        "trl 0.15.0 (cpu, gpu) is outside trl!=0.15.0,!=0.9.0,!=0.9.1,!=0.9.2,!=0.9.3,>=0.7.9, asked by unsloth "
        "2025.2.15" in lines["trl-excluded"]
    )
    assert "overrides protobuf: what the cell installs meets every requirement" in lines["needless-override"]


def test_only_what_the_cell_installs_is_compared_and_an_override_says_why(release_index, capsys):
    lines = requirement_lines(release_index, capsys)
    assert " ok  " in lines["fits"] and "not installed: triton (cpu, gpu), xformers (cpu)" in lines["fits"]
    assert (
        lines["overridden"]
        .split(" ok  ")[1]
        .startswith(
            "6 requirements met; override: protobuf 5.29.0 (cpu, gpu) is outside protobuf<4.0.0, asked by unsloth "
            "2025.2.15: the runner keeps its own;"
        )
    )


@pytest.mark.parametrize("overrides", ['overrides = { protobuf = "" }', 'overrides = "protobuf"'])
def test_an_override_without_its_reason_is_one_line(tmp_path, capsys, overrides):
    path = tmp_path / "matrix.toml"
    path.write_text(
        f'[cells.x]\nunsloth = "2024.12.11"\nunsloth_zoo = "2024.12.6"\ntransformers = "4.47.1"\n{overrides}\n'
    )
    assert main(["matrix", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'matrix.toml [cells.x]: overrides must be a table of package = "why' in err
