import json

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.matrix import load_matrix, parse_matrix

VALID = """
[defaults]
torch = "2.13.0"
runtime = ["accelerate"]

[cells.a]
purpose = "canary"
unsloth = "2026.10.1"
unsloth_zoo = "2026.10.7"
transformers = "5.17.0"

[cells.b]
purpose = "reproduces"
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
    # a GPU runner keeps its own torch
    assert not any(r.startswith("torch") for r in a.companions(torch=""))
    assert not any(r.startswith("unsloth") for r in a.companions())


@pytest.mark.parametrize(
    "text, message",
    [
        ("[cells.a\n", "not valid TOML"),
        ("[cells]\n", "no cells"),
        ('[cells.a]\npurpose = "canary"\nunsloth = "1"\n', "missing required pin"),
        ('[cells.a]\npurpose = "x"\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\n', "purpose must be one of"),
        ('[cells.a]\npurpose = "canary"\nunsloth="not a version"\nunsloth_zoo="1"\ntransformers="1"\n', "not a valid version"),
        ('[cells.a]\npurpose = "canary"\nunsloth=2024\nunsloth_zoo="1"\ntransformers="1"\n', "must be a version string"),
        ('[cells.a]\npurpose = "reproduces"\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\n', "needs failures"),
        ('[cells.a]\npurpose = "canary"\nunsloth="1"\nunsloth_zoo="1"\ntransformers="1"\ntypo="1"\n', "unknown key"),
        ("[extra]\n", "unknown top-level"),
    ],
)
def test_malformed_matrix_is_one_clear_error(text, message):
    with pytest.raises(HarnessError, match=message) as info:
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
    assert [c for c in matrix.cells.values() if c.purpose == "canary"]


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
