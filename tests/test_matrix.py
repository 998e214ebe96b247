import json
import re

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.env.matrix import load_matrix, parse_matrix

VALID = """
[defaults]
torch = "2.13.0"
runtime = ["accelerate"]

[cells.a]
role = "canary"
unsloth = "2026.10.1"
unsloth_zoo = "2026.10.7"
transformers = "5.17.0"

[cells.b]
failures = ["dtype-grad"]
unsloth = "2025.1.5"
unsloth_zoo = "2025.1.3"
transformers = "4.48.0"
torch = "2.5.1"
"""


def test_cells_carry_pins_defaults_and_install_split():
    matrix = parse_matrix(VALID)
    a, b = matrix.cell("a"), matrix.cell("b")
    assert a.pins["torch"] == "2.13.0" and b.pins["torch"] == "2.5.1"
    assert a.code_under_test() == ["unsloth==2026.10.1", "unsloth-zoo==2026.10.7"]
    assert "torch==2.13.0" in a.companions() and "accelerate" in a.companions()
    assert not any(r.startswith("torch") for r in a.companions(torch=""))
    assert not any(r.startswith("unsloth") for r in a.companions())


def test_gpu_needs_replace_the_cpu_torch_pin():
    cell = parse_matrix(VALID + 'gpu = { torch = "==2.5.1", packages = ["xformers==0.0.29.post1"] }\n').cell("b")
    assert "torch==2.5.1" in cell.gpu_requirements() and "xformers==0.0.29.post1" in cell.gpu_requirements()
    assert "torch==2.5.1" not in cell.companions(torch="")
    assert cell.gpu.admits("2.5.1+cu124") and not cell.gpu.admits("2.11.0")
    # a cell without a gpu declaration takes the runner's torch, whatever it is
    assert parse_matrix(VALID).cell("a").gpu.admits("2.11.0")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[cells.a\n", "not valid TOML"),
        ("[cells]\n", "no cells"),
        ('[cells.a]\nunsloth = "1"\n', "missing ['transformers', 'unsloth_zoo']"),
        ('[cells.a]\nrole = "x"\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\n', "role must be one of"),
        ('[cells.a]\nunsloth="not a version"\nunsloth_zoo="1"\ntransformers="1"\n', "not a valid version"),
        ('[cells.a]\nunsloth=2024\nunsloth_zoo="1"\ntransformers="1"\n', "must be a version string"),
        ('[cells.a]\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\ntypo="1"\n', "unknown key"),
        ("[extra]\n", "unknown top-level"),
        (
            '[cells.a]\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\ngpu = { torch = "2.5" }\n',
            "gpu.torch '2.5' is not a version specifier",
        ),
        (
            '[cells.a]\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\ngpu = { xformers = "1" }\n',
            "gpu must be a table like",
        ),
    ],
)
def test_malformed_matrix_is_one_clear_error(text, message):
    with pytest.raises(HarnessError, match=re.escape(message)) as info:
        parse_matrix(text)
    assert "\n" not in str(info.value)


def test_unknown_cell_names_the_known_ones():
    with pytest.raises(HarnessError, match="unknown matrix cell 'nope'.*known cells: a, b"):
        parse_matrix(VALID).cell("nope")


def test_checked_in_matrix_has_the_cells_the_issues_need():
    matrix = load_matrix()
    pins = {(c.pins["unsloth"], c.pins["unsloth_zoo"]) for c in matrix.cells.values()}
    assert any(u == "2024.11.11" for u, _ in pins)
    assert ("2024.12.11", "2024.12.6") in pins
    assert [c for c in matrix.cells.values() if c.role == "canary"]


def test_cli_matrix_json_is_a_ci_matrix(capsys):
    assert main(["matrix", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["cell"] for c in data["include"]} == set(load_matrix().cells)
    assert all(c["tox_env"] == f"cell-{c['cell']}" for c in data["include"])


def test_cli_bad_matrix_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "m.toml"
    bad.write_text("[cells.a\n")
    assert main(["matrix", "--file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qvl-harness: error: m.toml: not valid TOML") and err.count("\n") == 1


def test_tox_envs_come_from_the_matrix():
    toxfile = pytest.importorskip("toxfile", reason="toxfile.py needs tox installed")
    assert set(toxfile.tox_extend_envs()) == {c.tox_env for c in load_matrix().cells.values()}


@pytest.mark.parametrize(
    "cell, message",
    [
        ('failures = ["no-such-failure"]\n', "failures: unknown id(s) ['no-such-failure']"),
        ('role = "control"\nfailures = ["404"]\n', "role control, but unsloth 2024.12.11 is inside 404's range"),
    ],
)
def test_cells_are_checked_against_the_registry(cell, message, tmp_path, capsys):
    path = tmp_path / "matrix.toml"
    path.write_text(f'[cells.x]\n{cell}unsloth = "2024.12.11"\nunsloth_zoo = "2024.12.6"\ntransformers = "4.47.1"\n')
    assert main(["matrix", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matrix.toml [cells.x]" in err and message in err


def test_failure_states_come_from_the_registry():
    from harness.failures.registry import load_registry

    states = {c.name: c.failure_states(load_registry()) for c in load_matrix().cells.values()}
    assert states["u2024-11-11"]["garbage-output"] == "reproduces"
    assert states["u2024-12-02"] == {
        "garbage-output": "fixed",
        "vision-4bit-at-load": "reproduces",
        "404": "reproduces",
    }
    assert states["u2024-12-11"]["dtype-grad"] == "before"  # the seed's workaround pin
    assert states["u2025-01-06"]["404"] == "fixed"
