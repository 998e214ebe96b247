"""The cell a run names is checked before collection: an unknown cell or another cell's pins is one line."""

from __future__ import annotations

import os

import pytest

from harness.env.matrix import load_matrix
from harness.env.stack import dist_version
from harness.pytest import cellcheck, workers

pytest_plugins = ["pytester"]

MATRIX = load_matrix()
KNOWN = ", ".join(MATRIX.cells)
# a cell whose transformers is not this environment's (the control env's is 5.x, the old cells' 4.4x)
OTHER = next(c for c in MATRIX.cells.values() if c.pins["transformers"] != dist_version("transformers"))


def run(pytester: pytest.Pytester, *args: str) -> tuple[int, list[str]]:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", *args)
    return result.ret, [line for line in result.outlines + result.errlines if line.strip()]


def test_an_unknown_cell_gets_one_line_with_the_known_cells(pytester):
    assert run(pytester, "--cell", "nope") == (
        4,
        [
            f"ERROR: qvl-harness: --cell 'nope' is not a cell of matrix.toml; known cells: {KNOWN} "
            "(or --cell none for a stack outside the matrix)"
        ],
    )


def test_an_unknown_qvl_cell_is_named_as_such(pytester, monkeypatch):
    monkeypatch.setenv("QVL_CELL", "nope")
    code, out = run(pytester)
    assert code == 4 and out == [
        f"ERROR: qvl-harness: QVL_CELL 'nope' is not a cell of matrix.toml; "
        f"known cells: {KNOWN} (or --cell none for a stack outside the matrix)"
    ]


def test_another_cells_pins_get_one_line_naming_each_with_both_versions(pytester, monkeypatch):
    monkeypatch.setenv("QVL_CELL", OTHER.name)
    code, out = run(pytester)
    assert code == 4 and len(out) == 1, out
    assert out[0].startswith(f"ERROR: qvl-harness: this environment does not have cell {OTHER.name}'s stack: ")
    assert f"transformers {OTHER.pins['transformers']} (installed: {dist_version('transformers')})" in out[0]
    own_env = (
        f"QVL_CELL={OTHER.name} tox -e gpu" if os.environ.get(workers.GPU_RUN_VAR) else f"tox -e cell-{OTHER.name}"
    )
    assert out[0].endswith(f"run the cell in its own env ({own_env}) or say --cell none")


def test_cell_none_states_a_stack_outside_the_matrix(pytester, monkeypatch):
    monkeypatch.setenv("QVL_CELL", OTHER.name)  # inherited, as a bisect probe inherits its base env's cell
    pytester.makepyfile("def test_no_cell(harness_stack): assert harness_stack.cell is None")
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "--cell", "none")
    assert result.ret == 0, result.outlines[-20:] + result.errlines[-5:]
    assert " cell=" not in next(line for line in result.outlines if line.startswith("qvl-harness stack:"))


@pytest.mark.skipif(not os.environ.get("QVL_CELL"), reason="this run names no cell (tox sets QVL_CELL)")
def test_this_environment_passes_its_own_cells_check():
    # on a GPU runner (the gpu env's --require-gpu run and the runs it starts) torch is the runner's
    cellcheck.check_cell(os.environ["QVL_CELL"], "QVL_CELL", gpu_run=bool(os.environ.get(workers.GPU_RUN_VAR)))


def test_on_a_gpu_runner_torch_is_held_to_the_cells_gpu_range_only():
    torch = dist_version("torch")
    fits = next(c for c in MATRIX.cells.values() if c.gpu.admits(torch))
    refuses = next(c for c in MATRIX.cells.values() if not c.gpu.admits(torch))
    assert "torch" not in {package for package, *_ in cellcheck.mismatches(fits, gpu_run=True)}
    assert ("torch", f"{refuses.gpu.torch} on a GPU runner", torch) in set(cellcheck.mismatches(refuses, gpu_run=True))


@pytest.mark.parametrize(
    "package, pinned, installed, same",
    [
        ("torch", "2.13.0", "2.13.0+cpu", True),  # a build label
        ("unsloth", "2025.1.5+ga72a9d9", "2025.1.5+ga72a9d9", True),  # a commit, as the stack shows it
        ("unsloth", "2025.1.5", "2025.1.5+ga72a9d9", False),  # the commit after the release is not the release
        ("unsloth", "2025.1.5+ga72a9d9", "2025.1.5", False),
        ("transformers", "4.46.3", "4.48.0", False),
    ],
)
def test_versions_compare_as_the_stack_shows_them(package, pinned, installed, same):
    assert cellcheck.same_version(package, pinned, installed) is same
